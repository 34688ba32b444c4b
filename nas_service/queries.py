"""Read-side queries for the API and dashboard: progress, filtered and sorted candidate pages.

Sorting, filtering and pagination happen in SQL (indexes on job and status), so a page stays
fast with a hundred thousand candidates in a job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import delete, func, select

from nas_service.db import Database
from nas_service.jobs import JobConflict, JobError, JobNotFound
from nas_service.models import (
    CANDIDATE_FINISHED,
    CANDIDATE_STATUSES,
    RESULT_COLUMNS,
    Candidate,
    Job,
    JobEvent,
)
from nas_service.pareto import hypervolume_2d, pareto_front

# Candidates that can be on a job's Pareto front: completed, not over the step-time limit.
_FRONT_ELIGIBLE = (
    Candidate.status == "completed",
    Candidate.feasible.is_not(False),
    Candidate.perplexity.is_not(None),
    Candidate.step_time_ms.is_not(None),
)

SORTABLE = (
    "id",
    "birth",
    "status",
    "attempt",
    "created_at",
    "finished_at",
    *(
        name
        for name in RESULT_COLUMNS
        if name not in ("reason", "traceback", "moe", "device", "smoothed_loss_at")
    ),
)


@dataclass(frozen=True)
class Progress:
    done: int
    running: int
    queued: int
    total: int
    best_perplexity: float | None
    best_candidate_id: int | None
    front_size: int


def progress(db: Database, job: Job) -> Progress:
    """Trials by state, the best perplexity and the size of the Pareto front (as `pareto`)."""
    with db.sessions() as session:
        counts = dict(
            session.execute(
                select(Candidate.status, func.count())
                .where(Candidate.job_id == job.id)
                .group_by(Candidate.status)
            ).all()
        )
        best = session.execute(
            select(Candidate.id, Candidate.perplexity)
            .where(
                Candidate.job_id == job.id,
                Candidate.status == "completed",
                Candidate.perplexity.is_not(None),
            )
            .order_by(Candidate.perplexity)
            .limit(1)
        ).first()
        scored = session.execute(
            select(Candidate.perplexity, Candidate.step_time_ms).where(
                Candidate.job_id == job.id, *_FRONT_ELIGIBLE
            )
        ).all()
    running, queued = counts.pop("running", 0), counts.pop("queued", 0)
    return Progress(
        done=sum(counts.values()),
        running=running,
        queued=queued,
        total=job.config["limits"]["max_trials"],
        best_perplexity=best.perplexity if best else None,
        best_candidate_id=best.id if best else None,
        front_size=len(pareto_front([tuple(row) for row in scored])),
    )


def candidate_page(
    db: Database,
    job_id: int,
    status: str | None = None,
    sort: str = "birth",
    order: Literal["asc", "desc"] = "asc",
    limit: int | None = 50,
    offset: int = 0,
) -> tuple[list[Candidate], int]:
    """One page of a job's candidates and the total matching the filter."""
    if sort not in SORTABLE:
        raise JobError("sort", f"cannot sort by {sort!r} (sortable: {', '.join(SORTABLE)})")
    if status is not None and status not in CANDIDATE_STATUSES:
        raise JobError(
            "status", f"unknown status {status!r} (known: {', '.join(CANDIDATE_STATUSES)})"
        )
    where: list[Any] = [Candidate.job_id == job_id]
    if status is not None:
        where.append(Candidate.status == status)
    column = getattr(Candidate, sort)
    key = column.asc().nulls_last() if order == "asc" else column.desc().nulls_last()
    with db.sessions() as session:
        if session.get(Job, job_id) is None:
            raise JobNotFound(f"job {job_id} not found")
        total = session.scalar(select(func.count()).select_from(Candidate).where(*where))
        query = select(Candidate).where(*where).order_by(key, Candidate.id).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        return list(session.scalars(query)), total


def candidate(
    db: Database, candidate_id: int
) -> tuple[Candidate, list[tuple[float, float | None]], list[Candidate]]:
    """A candidate, its learning curve and its parent chain (nearest parent first)."""
    with db.sessions() as session:
        row = session.get(Candidate, candidate_id)
        if row is None:
            raise JobNotFound(f"candidate {candidate_id} not found")
        curve = [(point.train_s, point.loss) for point in row.curve]
        chain, parent_id = [], row.parent_id
        while parent_id is not None and len(chain) < 10_000:
            parent = session.get(Candidate, parent_id)
            if parent is None:
                break
            chain.append(parent)
            parent_id = parent.parent_id
    return row, curve, chain


def delete_job(db: Database, job_id: int) -> None:
    """Remove a job and all its rows; refused while it runs."""
    with db.transaction() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} not found")
        if job.status in ("running", "paused") or job.runner_id is not None:
            raise JobConflict("status", f"job {job_id} is {job.status}: cancel it first")
        session.execute(delete(Job).where(Job.id == job_id))


@dataclass(frozen=True)
class FrontPoint:
    id: int
    perplexity: float
    step_time_ms: float
    status: str
    feasible: bool | None
    is_baseline: bool
    finished_at: datetime | None
    on_front: bool


def pareto(db: Database, job_id: int) -> tuple[Job, list[FrontPoint]]:
    """The job and every scored candidate of it as a (perplexity, step time) point, flagged
    when it lies on the Pareto front of the feasible completed ones. Pruned candidates are
    scored too (they are shown, never on the front)."""
    with db.sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} not found")
        rows = session.execute(
            select(
                Candidate.id,
                Candidate.perplexity,
                Candidate.step_time_ms,
                Candidate.status,
                Candidate.feasible,
                Candidate.is_baseline,
                Candidate.finished_at,
            )
            .where(
                Candidate.job_id == job_id,
                Candidate.perplexity.is_not(None),
                Candidate.step_time_ms.is_not(None),
            )
            .order_by(Candidate.id)
        ).all()
    eligible = [
        i for i, r in enumerate(rows) if r.status == "completed" and r.feasible is not False
    ]
    front = {
        eligible[i]
        for i in pareto_front([(rows[i].perplexity, rows[i].step_time_ms) for i in eligible])
    }
    return job, [FrontPoint(*row, on_front=i in front) for i, row in enumerate(rows)]


def hypervolume_history(db: Database, job_id: int, max_points: int = 500) -> dict[str, Any]:
    """Hypervolume of the front after each completed trial, in finishing order.

    Reference point: 1.1 x the worst perplexity and the worst step time among the job's
    completed feasible candidates (fixed over the history, so the curve never decreases).
    """
    with db.sessions() as session:
        if session.get(Job, job_id) is None:
            raise JobNotFound(f"job {job_id} not found")
        rows = session.execute(
            select(Candidate.perplexity, Candidate.step_time_ms)
            .where(Candidate.job_id == job_id, *_FRONT_ELIGIBLE)
            .order_by(Candidate.finished_at, Candidate.id)
        ).all()
    if not rows:
        return {"reference": None, "trials": [], "hypervolume": []}
    reference = (1.1 * max(r[0] for r in rows), 1.1 * max(r[1] for r in rows))
    n = len(rows)
    # Sample the curve at most `max_points` times; the front is kept up to date at every trial
    # (cheap), the hypervolume computed only where sampled.
    picks = (
        {round(i * (n - 1) / (max_points - 1)) for i in range(max_points)}
        if n > max_points
        else set(range(n))
    )
    front: list[tuple[float, float]] = []
    trials, volumes = [], []
    for i, row in enumerate(rows):
        point = (float(row[0]), float(row[1]))
        if not any(p[0] <= point[0] and p[1] <= point[1] for p in front):
            front = [p for p in front if not (point[0] <= p[0] and point[1] <= p[1])] + [point]
        if i in picks:
            trials.append(i + 1)
            volumes.append(hypervolume_2d(front, reference))
    return {"reference": reference, "trials": trials, "hypervolume": volumes}


def export_inputs(db: Database, candidate_id: int) -> tuple[dict, dict, list[dict]]:
    """A candidate and its job as plain dicts shaped like their rows, and its lineage."""
    row, _, chain = candidate(db, candidate_id)
    with db.sessions() as session:
        job = session.get(Job, row.job_id)
        job_data = {c.name: getattr(job, c.name) for c in Job.__table__.columns}
    row_data = {c.name: getattr(row, c.name) for c in Candidate.__table__.columns}
    lineage = [{"id": c.id, "spec_hash": c.spec_hash, "mutation": c.mutation} for c in chain]
    return row_data, job_data, lineage


def events_after(
    db: Database, job_id: int, after: int, page: int = 500
) -> tuple[str | None, list[JobEvent]]:
    """The job's status (None once deleted), then up to page of its events with id > `after`.

    The status is read first, so the events read after it include every event committed
    with (or before) a final status.
    """
    with db.sessions() as session:
        status = session.scalar(select(Job.status).where(Job.id == job_id))
        query = (
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.id > after)
            .order_by(JobEvent.id)
            .limit(page)
        )
        return status, list(session.scalars(query))


def last_event_id(db: Database, job_id: int) -> int:
    """The id of the job's latest event, 0 when it has none."""
    with db.sessions() as session:
        latest = session.scalar(select(func.max(JobEvent.id)).where(JobEvent.job_id == job_id))
    return latest or 0


@dataclass(frozen=True)
class Snapshot:
    trials: dict[str, int]
    trial_seconds: float
    queued_candidates: int
    queued_jobs: int


def snapshot(db: Database) -> Snapshot:
    """Candidates by status, training seconds of finished ones, and queued work."""
    with db.sessions() as session:
        counts = session.execute(
            select(Candidate.status, func.count()).group_by(Candidate.status)
        ).all()
        seconds = session.scalar(
            select(func.coalesce(func.sum(Candidate.train_s), 0.0)).where(
                Candidate.status.in_(CANDIDATE_FINISHED)
            )
        )
        queued_jobs = session.scalar(
            select(func.count()).select_from(Job).where(Job.status == "queued")
        )
    trials = {status: count for status, count in counts}
    return Snapshot(
        trials=trials,
        trial_seconds=float(seconds or 0.0),
        queued_candidates=trials.get("queued", 0),
        queued_jobs=queued_jobs or 0,
    )
