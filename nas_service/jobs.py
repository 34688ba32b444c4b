"""Job lifecycle operations (the API and CLI call these; routes hold no SQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, or_, select, update

from nas_service import warm_start
from nas_service.db import Database
from nas_service.job_config import ConfirmConfig, JobConfig
from nas_service.models import JOB_ACTIVE, Candidate, Job, JobEvent, utcnow
from nas_service.settings import get_settings
from workers.data import DatasetError, load_dataset, resolve_source


class JobError(ValueError):
    """A request about a job that cannot be honoured; `field` names the offending input.

    `str()` is `field: message`; `message` is the words alone, so that a caller which names
    the field itself (the API's `loc`) does not name it twice.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class JobConflict(JobError):
    """The request conflicts with the job's current state (e.g. deleting a running job)."""


class JobNotFound(LookupError):
    pass


def prepare(config: JobConfig, base_dir: str | Path | None = None) -> tuple[JobConfig, str]:
    """Resolve the dataset to an absolute source and checksum it; check it fits the space.

    Workers on other nodes read the same absolute path: put it on shared storage.
    """
    settings = get_settings()
    try:
        roots = settings.data_roots
        source = resolve_source(config.dataset, base_dir, data_roots=roots)
        data = load_dataset(source, data_roots=roots, max_text_bytes=settings.max_text_bytes)
        space = config.search_space.space()
        data.check_fits(space.seq_len)
        data.validation_batches(config.trial.batch_size, space.seq_len, config.trial.eval_tokens)
    except DatasetError as exc:
        raise JobError("dataset", exc.message) from exc
    except OSError as exc:  # a backstop: the data module turns these into DatasetErrors
        raise JobError("dataset", f"cannot read {config.dataset!r}: {exc}") from exc
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
    """Validate the data, resolve the warm start and store the job as `queued`; nothing is
    stored on any error."""
    resolved, checksum = prepare(config, base_dir)
    try:
        warm = warm_start.resolve(db, resolved)
    except warm_start.UnknownJob as exc:
        raise JobError(f"warm_start.jobs.{exc.index}", str(exc)) from None
    with db.transaction() as session:
        job = Job(
            name=resolved.name,
            config=resolved.model_dump(mode="json"),
            owner=owner,
            data_checksum=checksum,
            status="queued",
            warm_start=warm,
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
    """Pause, resume or cancel; a compare-and-set so a racing runner never loses an update.

    Cancelling a job that no runner holds (no runner, or its lease has expired) finishes it
    here, as a runner would (`_finish`); a job a live runner holds is only marked
    `cancelled`, and that runner stops its trials and finishes it.
    """
    allowed, target = _TRANSITIONS[action]
    for _ in range(3):  # a runner may claim or release the job between the two updates
        now = utcnow()
        with db.transaction() as session:
            if action == "cancel" and _finish(session, job_id, now):
                return session.get(Job, job_id)
            where = [Job.id == job_id, Job.status.in_(allowed)]
            if action == "cancel":  # only while a live runner holds it: it finishes the job
                where.append(_lease_held(now))
            values: dict[str, Any] = {"status": target, "updated_at": now}
            if target == "cancelled":
                values["finished_at"] = now
            changed = session.execute(update(Job).where(*where).values(**values)).rowcount
            job = session.get(Job, job_id)
            if job is None:
                raise JobNotFound(f"job {job_id} not found")
            if changed:
                session.add(
                    JobEvent(job_id=job_id, kind="job", message=action, data={"status": target})
                )
                return job
            if job.status not in allowed:
                raise JobConflict("status", f"cannot {action} a job that is {job.status}")
    raise JobConflict("status", f"cannot {action} job {job_id} now: its runner keeps changing")


CANCELLED_WITHOUT_RUNNER = "job cancelled while no runner held it"


def _lease_held(now: Any) -> Any:
    """A runner holds the job: its lease has not expired."""
    return and_(Job.runner_id.is_not(None), Job.lease_expires_at >= now)


def _lease_free(now: Any) -> Any:
    """No runner holds the job (none ever did, or its lease expired): one may claim it."""
    return or_(Job.runner_id.is_(None), Job.lease_expires_at.is_(None), Job.lease_expires_at < now)


def _finish(session: Any, job_id: int, now: Any) -> bool:
    """Cancel an active job whose lease is free and finish it in this transaction, as the
    runner's `_finish_jobs` would: its queued and running candidates cancelled, the lease
    cleared, and the events a runner writes (each running trial's `cancelled`, then the
    job's final `cancelled`). A compare-and-set on the lease still being free, so a runner
    that claims the job at the same moment either wins (nothing changes here) or loses
    (its claim matches no row). False when the job is not active or a runner holds it."""
    finished = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(JOB_ACTIVE), _lease_free(now))
        .values(
            status="cancelled",
            updated_at=now,
            finished_at=now,
            runner_id=None,
            lease_expires_at=None,
        )
    ).rowcount
    if not finished:
        return False
    running = session.scalars(
        select(Candidate.id)
        .where(Candidate.job_id == job_id, Candidate.status == "running")
        .order_by(Candidate.id)
    ).all()
    session.execute(
        update(Candidate)
        .where(Candidate.job_id == job_id, Candidate.status.in_(("queued", "running")))
        .values(status="cancelled", reason=CANCELLED_WITHOUT_RUNNER, finished_at=now)
    )
    final = {"status": "cancelled"}
    session.add(JobEvent(job_id=job_id, kind="job", message="cancel", data=final))
    session.add_all(
        JobEvent(job_id=job_id, kind="trial", message="cancelled", data={"candidate_id": cid})
        for cid in running
    )
    session.add(JobEvent(job_id=job_id, kind="job", message="cancelled", data=final))
    return True


MAX_NOTE = 20_000


def _note(text: str) -> str | None:
    if len(text) > MAX_NOTE:
        raise JobError("note", f"{len(text)} characters; at most {MAX_NOTE}")
    return text or None  # an empty note clears it


def set_job_note(db: Database, job_id: int, text: str) -> Job:
    """A person's Markdown note on a job (any status: notes are about results too)."""
    note = _note(text)
    with db.transaction() as session:
        if not session.execute(update(Job).where(Job.id == job_id).values(note=note)).rowcount:
            raise JobNotFound(f"job {job_id} not found")
    return get(db, job_id)


def set_candidate_note(db: Database, candidate_id: int, text: str) -> None:
    note = _note(text)
    with db.transaction() as session:
        changed = session.execute(
            update(Candidate).where(Candidate.id == candidate_id).values(note=note)
        ).rowcount
        if not changed:
            raise JobNotFound(f"candidate {candidate_id} not found")


def candidate_job(db: Database, candidate_id: int) -> int:
    """The job a candidate belongs to (whose owner may change it)."""
    with db.sessions() as session:
        job_id = session.scalar(select(Candidate.job_id).where(Candidate.id == candidate_id))
    if job_id is None:
        raise JobNotFound(f"candidate {candidate_id} not found")
    return job_id


def candidates(db: Database, job_id: int) -> list[Candidate]:
    with db.sessions() as session:
        query = select(Candidate).where(Candidate.job_id == job_id).order_by(Candidate.birth)
        return list(session.scalars(query))


def request_confirmation(db: Database, job_id: int, confirm: ConfirmConfig) -> Job:
    """Confirm a completed job's best: its config gains the `confirm` section and it goes
    back to the queue, where a runner retrains the chosen blocks and finishes it again. A
    compare-and-set on (completed, no confirmation yet), so two requests confirm once."""
    with db.transaction() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} not found")
        if job.status != "completed":
            raise JobConflict(
                "status", f"only a completed job can be confirmed (it is {job.status})"
            )
        if job.config.get("confirm") is not None:
            raise JobConflict("confirm", f"job {job_id} has a confirmation already")
        config = {**job.config, "confirm": confirm.model_dump(mode="json")}
        try:
            JobConfig.model_validate(config)  # the job's own checks still hold
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = [str(part) for part in first["loc"]]
            # The body is the confirm section: its fields are named within it.
            field = ".".join(loc[1:]) if loc[:1] == ["confirm"] and len(loc) > 1 else "body"
            raise JobError(field, first["msg"].removeprefix("Value error, ")) from exc
        changed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "completed", Job.updated_at == job.updated_at)
            .values(config=config, status="queued", finished_at=None, updated_at=utcnow())
        ).rowcount
        if not changed:
            raise JobConflict("status", f"job {job_id} changed meanwhile: try again")
        session.add(JobEvent(job_id=job_id, kind="job", message="confirm", data=config["confirm"]))
    return get(db, job_id)
