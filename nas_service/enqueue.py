"""Blocks added by hand: a person's spec, checked against the job's space, trained next.

The API stores the request; the job's runner picks it up within a second, gives it the next
birth (so the designer replays it like its own proposals) and trains it before the
designer's next proposal. It does not count against `limits.max_trials`: a job at its last
trials still trains what was added to it.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from nas_service.db import Database
from nas_service.job_config import JobConfig
from nas_service.jobs import JobConflict, JobError, JobNotFound
from nas_service.models import JOB_ACTIVE, Candidate, Enqueued, Job
from search_space import ArchSpec, SpaceViolation, spec_hash

ADDED_BY_HAND = "added by hand"


def _checked(spec: Any, config: JobConfig) -> ArchSpec:
    """The spec, or a `JobError` naming its first bad field (`spec.block.layers.0.hidden`)."""
    try:
        arch = ArchSpec.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in ("spec", *first["loc"]))
        raise JobError(where, first["msg"].removeprefix("Value error, ")) from None
    try:
        return config.search_space.space().check(arch)
    except SpaceViolation as exc:
        field, message = exc.problems[0]
        raise JobError(f"spec.{field}", f"outside the job's search space: {message}") from None


def enqueue(db: Database, job_id: int, spec: Any, note: str | None = None) -> Enqueued:
    """Queue a spec for job `job_id`: 422 (`JobError`) for a bad spec, 409 (`JobConflict`)
    when the job has ended or already has the block."""
    with db.transaction() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} not found")
        if job.status not in JOB_ACTIVE:
            raise JobConflict("status", f"job {job_id} has ended ({job.status})")
        arch = _checked(spec, JobConfig.model_validate(job.config))
        key = spec_hash(arch)
        existing = session.scalar(
            select(Candidate.id).where(Candidate.job_id == job_id, Candidate.spec_hash == key)
        )
        if existing is not None:
            raise JobConflict("spec", f"already candidate {existing} of job {job_id}")
        queued = session.scalar(
            select(Enqueued.id).where(Enqueued.job_id == job_id, Enqueued.spec_hash == key)
        )
        if queued is not None:
            raise JobConflict("spec", f"already added to job {job_id} (request {queued})")
        row = Enqueued(
            job_id=job_id,
            spec=arch.model_dump(mode="json"),
            spec_hash=key,
            note=note or None,
        )
        session.add(row)
    return row


def listed(db: Database, job_id: int) -> tuple[Job, list[Enqueued]]:
    """A job's blocks added by hand, oldest first."""
    with db.sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} not found")
        rows = session.scalars(
            select(Enqueued).where(Enqueued.job_id == job_id).order_by(Enqueued.id)
        ).all()
        return job, list(rows)


def status(row: Enqueued, job_status: str) -> str:
    """queued (waiting for the runner), started (a candidate trains or trained it) or
    dropped (the job ended first)."""
    if row.candidate_id is not None:
        return "started"
    return "queued" if job_status in JOB_ACTIVE else "dropped"
