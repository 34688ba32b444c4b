"""Job lifecycle operations (the API and CLI call these; routes hold no SQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from nas_service.db import Database
from nas_service.job_config import JobConfig
from nas_service.models import JOB_ACTIVE, Candidate, Job, JobEvent, utcnow
from workers.data import DatasetError, load_dataset, resolve_source


class JobError(ValueError):
    """A request about a job that cannot be honoured; `field` names the offending input."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class JobConflict(JobError):
    """The request conflicts with the job's current state (e.g. deleting a running job)."""


class JobNotFound(LookupError):
    pass


def prepare(config: JobConfig, base_dir: str | Path | None = None) -> tuple[JobConfig, str]:
    """Resolve the dataset to an absolute source and checksum it; check it fits the space.

    Workers on other nodes read the same absolute path: put it on shared storage.
    """
    try:
        source = resolve_source(config.dataset, base_dir)
        data = load_dataset(source)
        space = config.search_space.space()
        data.check_fits(space.seq_len)
        data.validation_batches(config.trial.batch_size, space.seq_len, config.trial.eval_tokens)
    except DatasetError as exc:
        raise JobError("dataset", str(exc)) from exc
    if data.vocab_size > space.vocab_size:
        raise JobError(
            "dataset",
            f"vocabulary of {data.vocab_size} exceeds the search space's vocab_size "
            f"{space.vocab_size} (override search_space.overrides.vocab_size)",
        )
    return config.model_copy(update={"dataset": source}), data.checksum


def submit(
    db: Database, config: JobConfig, owner: str | None = None, base_dir: str | Path | None = None
) -> Job:
    """Validate the data and store the job as `queued`; nothing is stored on any error."""
    resolved, checksum = prepare(config, base_dir)
    with db.transaction() as session:
        job = Job(
            name=resolved.name,
            config=resolved.model_dump(mode="json"),
            owner=owner,
            data_checksum=checksum,
            status="queued",
        )
        session.add(job)
        session.flush()
        session.add(
            JobEvent(job_id=job.id, kind="job", message="submitted", data={"status": "queued"})
        )
    return job


def get(db: Database, job_id: int) -> Job:
    with db.sessions() as session:
        job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"job {job_id} not found")
    return job


def list_jobs(db: Database) -> list[Job]:
    with db.sessions() as session:
        return list(session.scalars(select(Job).order_by(Job.id.desc())))


_TRANSITIONS = {
    "pause": (("queued", "running"), "paused"),
    "resume": (("paused",), "running"),
    "cancel": (JOB_ACTIVE, "cancelled"),
}


def transition(db: Database, job_id: int, action: str) -> Job:
    """Pause, resume or cancel; a compare-and-set so a racing runner never loses an update."""
    allowed, target = _TRANSITIONS[action]
    with db.transaction() as session:
        values: dict[str, Any] = {"status": target, "updated_at": utcnow()}
        if target == "cancelled":
            values["finished_at"] = utcnow()
        changed = session.execute(
            update(Job).where(Job.id == job_id, Job.status.in_(allowed)).values(**values)
        ).rowcount
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} not found")
        if not changed:
            raise JobConflict("status", f"cannot {action} a job that is {job.status}")
        session.add(JobEvent(job_id=job_id, kind="job", message=action, data={"status": target}))
    return job


def candidates(db: Database, job_id: int) -> list[Candidate]:
    with db.sessions() as session:
        query = select(Candidate).where(Candidate.job_id == job_id).order_by(Candidate.birth)
        return list(session.scalars(query))
