"""Which block features explain a job's perplexity and step time (`nas_service.importance`
over its completed candidates), cached until another candidate completes."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict
from typing import Any

from sqlalchemy import func, select

from nas_service import importance as forest
from nas_service.db import Database
from nas_service.jobs import JobNotFound
from nas_service.models import Candidate, Job
from nas_service.queries.fronts import spread
from nas_service.queries.jobs import reference_device_kind
from search_space.features import spec_features

# Results by job, the most recent _KEPT jobs. A completed row never changes and candidates
# are deleted only with their job, so the job's submission time with the count and highest
# id of the rows used identifies a result (as `fronts.cached_front` does a front).
_results: OrderedDict[tuple[str, int], tuple[Any, dict[str, Any]]] = OrderedDict()
_KEPT = 32


def _eligible(job_id: int, kind: str | None) -> list[Any]:
    """The conditions on the candidates that count: completed with both objectives, of the
    baseline's device kind when it is known (as the job's best: perplexity under a
    wall-clock budget depends on the device). Reused results count; failed, pruned and
    diverged trials do not."""
    where = [
        Candidate.job_id == job_id,
        Candidate.status == "completed",
        Candidate.perplexity.is_not(None),
        Candidate.step_time_ratio.is_not(None),
    ]
    if kind is not None:
        where.append(Candidate.device_kind == kind)
    return where


def job_importance(db: Database, job_id: int) -> dict[str, Any]:
    """The fields of `ImportancePublic` for the job: its features ranked by the shares of
    perplexity's and step time's variance they explain over its completed candidates (a
    fixed pseudo-random sample of `forest.MAX_ROWS` of them above that many)."""
    with db.sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} not found")
        where = _eligible(job_id, reference_device_kind(session, job_id))
        completed, last = session.execute(
            select(func.count(), func.max(Candidate.id)).where(*where)
        ).one()
        key = (job.created_at, completed, last)
        cached = _results.get((db.url, job_id))
        if cached is not None and cached[0] == key:
            _results.move_to_end((db.url, job_id))
            return cached[1]
        # The same fixed pseudo-random order of ids as the Pareto scatter's.
        rows = session.execute(
            select(Candidate.spec, Candidate.perplexity, Candidate.step_time_ratio)
            .where(*where)
            .order_by(spread(Candidate.id))
            .limit(forest.MAX_ROWS)
        ).all()
    result = _rank(job_id, completed, rows)
    _results[db.url, job_id] = (key, result)
    _results.move_to_end((db.url, job_id))
    while len(_results) > _KEPT:
        _results.popitem(last=False)
    return result


def _rank(job_id: int, completed: int, rows: list[Any]) -> dict[str, Any]:
    features, targets = [], {"perplexity": [], "step_time": []}
    for spec, perplexity, ratio in rows:
        row = spec_features(spec)
        if row:  # a stored spec that does not validate has no features
            features.append(row)
            targets["perplexity"].append(perplexity)
            targets["step_time"].append(ratio)
    answer: dict[str, Any] = {
        "job_id": job_id,
        "candidates": len(features),
        "completed": completed,
        "min_candidates": forest.MIN_CANDIDATES,
        "method": forest.METHOD,
        "r2": dict.fromkeys(forest.OBJECTIVES),
        "features": [],
        "equivalent": {},
        "message": None,
    }
    if len(features) < forest.MIN_CANDIDATES:
        answer["message"] = (
            f"{len(features)} completed candidate(s) with results; importance needs at least "
            f"{forest.MIN_CANDIDATES}"
        )
        return answer
    ranked = forest.importance(features, targets)
    if len(rows) < completed:
        answer["message"] = (
            f"fitted on a fixed pseudo-random sample of {len(rows)} of the {completed} "
            "completed candidates"
        )
    answer.update(
        r2=ranked.r2,
        features=[asdict(share) for share in ranked.features],
        equivalent=ranked.equivalent,
    )
    return answer
