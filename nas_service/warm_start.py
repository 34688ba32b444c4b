"""Warm starts: the best blocks of earlier jobs join a new job's initial population.

Resolved once, when the job is submitted (the earlier jobs may go on, or be deleted, later),
and stored with the job, so that every runner that adopts it seeds the same designer.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from nas_service.db import Database
from nas_service.job_config import JobConfig
from nas_service.models import Candidate, Job
from nas_service.pareto import nondominated_ranks
from search_space import ArchSpec, SearchSpace, spec_hash


class UnknownJob(LookupError):
    def __init__(self, index: int, job_id: int):
        self.index = index
        super().__init__(f"job {job_id} not found")


def ranked_specs(session: Any, job: Job) -> list[tuple[int, dict[str, Any]]]:
    """A job's searched blocks, best first (its baselines left out: a new job seeds its own),
    as (candidate id, spec): in pareto mode by non-dominated rank of (perplexity, step-time
    ratio), then perplexity; in constrained mode the feasible ones first, then perplexity."""
    rows = session.execute(
        select(
            Candidate.id,
            Candidate.spec,
            Candidate.perplexity,
            Candidate.step_time_ratio,
            Candidate.feasible,
        ).where(
            Candidate.job_id == job.id,
            Candidate.status == "completed",
            Candidate.is_baseline.is_(False),
            Candidate.perplexity.is_not(None),
            Candidate.step_time_ratio.is_not(None),
        )
    ).all()
    if job.config.get("objective", {}).get("mode", "pareto") == "pareto":
        ranks = nondominated_ranks([(r.perplexity, r.step_time_ratio) for r in rows])
    else:
        ranks = [int(r.feasible is False) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: (ranks[i], rows[i].perplexity, rows[i].id))
    return [(rows[i].id, rows[i].spec) for i in order]


def resolve(db: Database, config: JobConfig) -> list[dict[str, Any]] | None:
    """The warm start's specs in the order they join the population: each named job's best
    `top` of those that lie in this job's space, a spec named twice kept once. `UnknownJob`
    names the position of a job that does not exist."""
    warm = config.warm_start
    if warm is None:
        return None
    space: SearchSpace = config.search_space.space()
    chosen: list[dict[str, Any]] = []
    seen: set[str] = set()
    with db.sessions() as session:
        for index, job_id in enumerate(warm.jobs):
            job = session.get(Job, job_id)
            if job is None:
                raise UnknownJob(index, job_id)
            taken = 0
            for candidate_id, spec in ranked_specs(session, job):
                if taken == warm.top:
                    break
                try:
                    arch = ArchSpec.model_validate(spec)
                except ValidationError:  # a spec of an older schema: not this space's
                    continue
                key = spec_hash(arch)
                if key in seen or not space.contains(arch):
                    continue
                seen.add(key)
                taken += 1
                chosen.append({"job_id": job_id, "candidate_id": candidate_id, "spec": spec})
    return chosen


def mutation(entry: dict[str, Any]) -> str:
    """What a warm-started candidate's lineage says of where it came from."""
    return f"warm start from job {entry['job_id']} (candidate {entry['candidate_id']})"
