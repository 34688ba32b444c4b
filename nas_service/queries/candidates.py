"""Candidates of a job: filtered, sorted pages; one candidate with its curve and lineage."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import func, literal, select

from nas_service.db import Database
from nas_service.jobs import JobError, JobNotFound
from nas_service.models import CANDIDATE_STATUSES, RESULT_COLUMNS, Candidate, Job

# JSON columns and free text are not sortable (PostgreSQL cannot order json values).
_UNSORTABLE = (
    "reason",
    "traceback",
    "precision",
    "moe",
    "device",
    "smoothed_loss_at",
    "val_loss_at",
)
SORTABLE = (
    "id",
    "birth",
    "status",
    "attempt",
    "device_kind",
    "created_at",
    "finished_at",
    *(name for name in RESULT_COLUMNS if name not in _UNSORTABLE),
)

# The longest parent chain followed (a guard against a cycle in corrupted rows).
MAX_LINEAGE = 10_000


def candidate_page(
    db: Database,
    job_id: int,
    status: str | None = None,
    sort: str = "birth",
    order: Literal["asc", "desc"] = "asc",
    limit: int | None = 50,
    offset: int = 0,
    device_kind: str | None = None,
) -> tuple[list[Candidate], int]:
    """One page of a job's candidates and the total matching the filter (status and/or
    device kind)."""
    if sort not in SORTABLE:
        raise JobError("sort", f"cannot sort by {sort!r} (sortable: {', '.join(SORTABLE)})")
    if status is not None and status not in CANDIDATE_STATUSES:
        raise JobError(
            "status", f"unknown status {status!r} (known: {', '.join(CANDIDATE_STATUSES)})"
        )
    where: list[Any] = [Candidate.job_id == job_id]
    if status is not None:
        where.append(Candidate.status == status)
    if device_kind is not None:
        where.append(Candidate.device_kind == device_kind)
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


def _lineage(parent_id: int) -> Any:
    """The parent chain from `parent_id` up, nearest first, in one recursive query: each
    step joins the rows found so far to their parents, at most MAX_LINEAGE steps (a
    missing parent ends the chain)."""
    chain = (
        select(Candidate.id, Candidate.parent_id, literal(1).label("depth"))
        .where(Candidate.id == parent_id)
        .cte("lineage", recursive=True)
    )
    chain = chain.union_all(
        select(Candidate.id, Candidate.parent_id, chain.c.depth + 1)
        .join(chain, Candidate.id == chain.c.parent_id)
        .where(chain.c.depth < MAX_LINEAGE)
    )
    return select(Candidate).join(chain, Candidate.id == chain.c.id).order_by(chain.c.depth)


def candidate(
    db: Database, candidate_id: int
) -> tuple[Candidate, list[tuple[float, float | None]], list[Candidate]]:
    """A candidate, its learning curve and its parent chain (nearest parent first)."""
    with db.sessions() as session:
        row = session.get(Candidate, candidate_id)
        if row is None:
            raise JobNotFound(f"candidate {candidate_id} not found")
        curve = [(point.train_s, point.loss) for point in row.curve]
        chain = [] if row.parent_id is None else list(session.scalars(_lineage(row.parent_id)))
    return row, curve, chain


def export_inputs(db: Database, candidate_id: int) -> tuple[dict, dict, list[dict]]:
    """A candidate and its job as plain dicts shaped like their rows, and its lineage."""
    row, _, chain = candidate(db, candidate_id)
    with db.sessions() as session:
        job = session.get(Job, row.job_id)
        job_data = {c.name: getattr(job, c.name) for c in Job.__table__.columns}
    row_data = {c.name: getattr(row, c.name) for c in Candidate.__table__.columns}
    lineage = [{"id": c.id, "spec_hash": c.spec_hash, "mutation": c.mutation} for c in chain]
    return row_data, job_data, lineage
