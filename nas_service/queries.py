"""Read-side queries for the API and dashboard: progress, filtered and sorted candidate pages.

Sorting, filtering and pagination happen in SQL (indexes on job and status), so a page stays
fast with a hundred thousand candidates in a job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, func, select

from nas_service.db import Database
from nas_service.jobs import JobConflict, JobError, JobNotFound
from nas_service.models import CANDIDATE_STATUSES, RESULT_COLUMNS, Candidate, Job

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


def progress(db: Database, job: Job) -> Progress:
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
    running, queued = counts.pop("running", 0), counts.pop("queued", 0)
    return Progress(
        done=sum(counts.values()),
        running=running,
        queued=queued,
        total=job.config["limits"]["max_trials"],
        best_perplexity=best.perplexity if best else None,
        best_candidate_id=best.id if best else None,
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
