"""The runner's storage: every state change it makes, as a compare-and-set function.

The runner (the algorithm) never sees SQL. Each change here is one transaction whose WHERE
clause states what must still hold for it to apply (the job's lease is this runner's, the
candidate's attempt is the current one and still running, the candidate is still queued)
and returns whether it took effect, so two runners racing for a job, a result reported
twice or a requeue that lost a race change nothing they should not. SQLite has no row
locks: a conditional UPDATE and its row count work on both databases.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, insert, or_, select, update

from nas_service.db import Database
from nas_service.models import (
    RESULT_COLUMNS,
    Candidate,
    CurvePoint,
    Enqueued,
    Job,
    JobEvent,
    Run,
    utcnow,
)

# A candidate row as the runner reads it: identity, lineage, status and the result columns.
ROW_FIELDS = (
    "id",
    "spec",
    "spec_hash",
    "parent_id",
    "mutation",
    "birth",
    "is_baseline",
    "status",
    "feasible",
    "attempt",
    *RESULT_COLUMNS,
)

# A run as the runner reads it.
RUN_FIELDS = (
    "id",
    "candidate_id",
    "stage",
    "rung",
    "seed",
    "origin",
    "budget",
    "status",
    "attempt",
    *RESULT_COLUMNS,
)

Event = tuple[str, str, dict[str, Any]]  # kind, message, data


def _as_dict(row: Candidate) -> dict[str, Any]:
    return {name: getattr(row, name) for name in ROW_FIELDS}


def _run_dict(row: Run) -> dict[str, Any]:
    return {name: getattr(row, name) for name in RUN_FIELDS}


# --- jobs and their leases -------------------------------------------------------------------


def _claimable(runner_id: str, now: datetime) -> tuple[Any, ...]:
    """Active jobs whose lease is free or ours, and cancelled ones that a runner still
    holds (it clears `runner_id` when it finishes a job): if that runner died, its trials
    may still be marked running, and the next runner finishes the job."""
    unfinished_cancel = and_(Job.status == "cancelled", Job.runner_id.is_not(None))
    return (
        or_(Job.status.in_(("queued", "running", "paused")), unfinished_cancel),
        or_(Job.runner_id.is_(None), Job.runner_id == runner_id, Job.lease_expires_at < now),
    )


def claimable_jobs(db: Database, runner_id: str) -> list[int]:
    with db.sessions() as session:
        return list(session.scalars(select(Job.id).where(*_claimable(runner_id, utcnow()))))


def claim_job(db: Database, job_id: int, runner_id: str, lease_s: float) -> bool:
    """Take the job's lease if it is still claimable; a queued job starts running."""
    now = utcnow()
    with db.transaction() as session:
        return bool(
            session.execute(
                update(Job)
                .where(Job.id == job_id, *_claimable(runner_id, now))
                .values(
                    runner_id=runner_id,
                    lease_expires_at=now + timedelta(seconds=lease_s),
                    status=case((Job.status == "queued", "running"), else_=Job.status),
                    started_at=func.coalesce(Job.started_at, now),
                )
            ).rowcount
        )


def renew_lease(db: Database, job_id: int, runner_id: str, lease_s: float) -> bool:
    """Extend the lease while it is ours; False means another runner took the job."""
    expires = utcnow() + timedelta(seconds=lease_s)
    with db.transaction() as session:
        return bool(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.runner_id == runner_id)
                .values(lease_expires_at=expires)
            ).rowcount
        )


def job_statuses(db: Database, job_ids: Sequence[int]) -> dict[int, str]:
    with db.sessions() as session:
        return dict(session.execute(select(Job.id, Job.status).where(Job.id.in_(job_ids))).all())


def any_active_job(db: Database) -> bool:
    """Any job queued or running, by whichever runner (it may be ours once its lease ends)."""
    with db.sessions() as session:
        active = Job.status.in_(("queued", "running"))
        return session.scalar(select(func.count()).select_from(Job).where(active)) > 0


@dataclass(frozen=True)
class AdoptedJob:
    config: dict[str, Any]
    status: str
    data_checksum: str | None
    warm_start: list[dict[str, Any]]  # the resolved warm start's specs (empty: none)
    elapsed_s: float
    rows: list[dict[str, Any]]  # in birth order
    runs: list[dict[str, Any]]  # in id order


def adopt_job(db: Database, job_id: int) -> AdoptedJob:
    """Read a job just claimed. Trials interrupted under a previous runner go back to the
    queue (same row), unless that was their last attempt: those are recorded `failed`."""
    with db.transaction() as session:
        job = session.get(Job, job_id)
        last = job.config["workers"]["max_attempts"]
        interrupted = (Candidate.job_id == job_id, Candidate.status == "running")
        spent = list(
            session.scalars(select(Candidate.id).where(*interrupted, Candidate.attempt >= last))
        )
        if spent:
            session.execute(
                update(Candidate)
                .where(Candidate.id.in_(spent))
                .values(
                    status="failed",
                    reason=f"interrupted during its last attempt (attempt {last} of {last}): "
                    "the runner or its worker stopped",
                    finished_at=utcnow(),
                )
            )
            failed = {"job_id": job_id, "kind": "trial", "message": "failed"}
            session.execute(
                insert(JobEvent), [{**failed, "data": {"candidate_id": c}} for c in spent]
            )
        session.execute(update(Candidate).where(*interrupted).values(status="queued"))
        _requeue_interrupted_runs(session, job_id, last)
        rows = session.scalars(
            select(Candidate).where(Candidate.job_id == job_id).order_by(Candidate.birth)
        ).all()
        runs = session.scalars(select(Run).where(Run.job_id == job_id).order_by(Run.id)).all()
        return AdoptedJob(
            config=job.config,
            status=job.status,
            data_checksum=job.data_checksum,
            warm_start=job.warm_start or [],
            elapsed_s=(utcnow() - job.started_at).total_seconds(),
            rows=[_as_dict(row) for row in rows],
            runs=[_run_dict(run) for run in runs],
        )


def _requeue_interrupted_runs(session: Any, job_id: int, last: int) -> None:
    """Runs interrupted under a previous runner: queued again, or failed after their last
    attempt (as candidates' own rows are)."""
    interrupted = (Run.job_id == job_id, Run.status == "running")
    spent = session.execute(
        select(Run.id, Run.candidate_id).where(*interrupted, Run.attempt >= last)
    ).all()
    if spent:
        session.execute(
            update(Run)
            .where(Run.id.in_([run.id for run in spent]))
            .values(
                status="failed",
                reason=f"interrupted during its last attempt (attempt {last} of {last}): "
                "the runner or its worker stopped",
                finished_at=utcnow(),
            )
        )
        failed = {"job_id": job_id, "kind": "trial", "message": "failed"}
        session.execute(
            insert(JobEvent),
            [{**failed, "data": {"candidate_id": r.candidate_id, "run_id": r.id}} for r in spent],
        )
    session.execute(update(Run).where(*interrupted).values(status="queued"))


def sibling_configs(db: Database, job_id: int, checksum: str | None) -> list[tuple[int, dict]]:
    """Other jobs on the same data (candidates for result reuse), with their configs."""
    with db.sessions() as session:
        return [
            (other, config)
            for other, config in session.execute(
                select(Job.id, Job.config).where(Job.id != job_id, Job.data_checksum == checksum)
            ).all()
        ]


def finish_job(
    db: Database, job_id: int, runner_id: str, status: str, error: str | None
) -> str | None:
    """End a job this runner still owns: queued candidates are cancelled, the lease is
    released and the final event written. Returns the final status (`cancelled` wins over
    what the runner decided if the API cancelled meanwhile), or None if not ours."""
    with db.transaction() as session:
        final = session.scalar(
            update(Job)
            .where(Job.id == job_id, Job.runner_id == runner_id)
            .values(
                status=case((Job.status == "cancelled", "cancelled"), else_=status),
                error=error,
                finished_at=func.coalesce(Job.finished_at, utcnow()),
                runner_id=None,
                lease_expires_at=None,
            )
            .returning(Job.status)
        )
        if final is not None:
            ended = {"status": "cancelled", "reason": "job ended before it ran"}
            session.execute(
                update(Candidate)
                .where(Candidate.job_id == job_id, Candidate.status == "queued")
                .values(**ended, finished_at=utcnow())
            )
            session.execute(
                update(Run)
                .where(Run.job_id == job_id, Run.status == "queued")
                .values(**ended, finished_at=utcnow())
            )
            session.add(JobEvent(job_id=job_id, kind="job", message=final, data={"status": final}))
        return final


def add_event(db: Database, job_id: int, kind: str, message: str, data: dict[str, Any]) -> None:
    with db.transaction() as session:
        session.add(JobEvent(job_id=job_id, kind=kind, message=message, data=data))


# --- runs of candidates ------------------------------------------------------------------------


def _current(candidate_id: int, attempt: int) -> tuple[Any, ...]:
    """The candidate only while `attempt` is its current, running attempt."""
    return (
        Candidate.id == candidate_id,
        Candidate.attempt == attempt,
        Candidate.status == "running",
    )


def _started(job_id: int, candidate_id: int, attempt: int) -> Any:
    return insert(JobEvent).values(
        job_id=job_id,
        kind="trial",
        message="started",
        data={"candidate_id": candidate_id, "attempt": attempt},
    )


def start_retry(
    db: Database, job_id: int, candidate_id: int, slot: int
) -> tuple[int, dict[str, Any]] | None:
    """Run a queued candidate again as its next attempt on `slot`: (attempt, spec), or None
    if it is no longer queued."""
    with db.transaction() as session:
        started = session.execute(
            update(Candidate)
            .where(Candidate.id == candidate_id, Candidate.status == "queued")
            .values(
                status="running",
                attempt=Candidate.attempt + 1,
                started_at=utcnow(),
                slot=slot,
            )
            .returning(Candidate.attempt, Candidate.spec)
        ).first()
        if started is None:
            return None
        session.execute(_started(job_id, candidate_id, started.attempt))
        return started.attempt, started.spec


@dataclass(frozen=True)
class NewCandidate:
    job_id: int
    spec: dict[str, Any]
    spec_hash: str
    birth: int
    parent_id: int | None
    mutation: str
    is_baseline: bool
    note: str | None = None


def _link_enqueued(session: Any, enqueued: int | None, candidate_id: int) -> None:
    """A block added by hand is now candidate `candidate_id` (in the same transaction)."""
    if enqueued is not None:
        session.execute(
            update(Enqueued)
            .where(Enqueued.id == enqueued, Enqueued.candidate_id.is_(None))
            .values(candidate_id=candidate_id)
        )


def insert_running(db: Database, new: NewCandidate, slot: int, enqueued: int | None = None) -> int:
    """A proposal becomes a row, running its first attempt on `slot`, before it is sent
    (restart-safe: a runner that dies after this re-runs it). `enqueued`: the block added by
    hand that it trains."""
    with db.transaction() as session:
        row = Candidate(**new.__dict__, status="running", attempt=1, started_at=utcnow(), slot=slot)
        session.add(row)
        session.flush()
        session.execute(_started(new.job_id, row.id, 1))
        _link_enqueued(session, enqueued, row.id)
        return row.id


def pending_enqueued(db: Database, job_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Blocks added by hand to these jobs that no candidate trains yet, oldest first."""
    with db.sessions() as session:
        rows = session.execute(
            select(Enqueued.id, Enqueued.job_id, Enqueued.spec, Enqueued.spec_hash, Enqueued.note)
            .where(Enqueued.job_id.in_(job_ids), Enqueued.candidate_id.is_(None))
            .order_by(Enqueued.id)
        ).all()
        return [row._asdict() for row in rows]


def link_enqueued(db: Database, enqueued: int, candidate_id: int) -> None:
    """A block added by hand that the job already had (its designer proposed it meanwhile)."""
    with db.transaction() as session:
        _link_enqueued(session, enqueued, candidate_id)


def find_reusable(
    db: Database, spec_hash: str, job_ids: Sequence[int], device: dict[str, Any]
) -> dict[str, Any] | None:
    """A completed result of the same spec in one of `job_ids`, measured on `device`."""
    with db.sessions() as session:
        found = session.scalars(
            select(Candidate)
            .where(
                Candidate.spec_hash == spec_hash,
                Candidate.status == "completed",
                Candidate.job_id.in_(job_ids),
            )
            .limit(20)
        ).all()
        match = next((c for c in found if c.device == device), None)
        return None if match is None else {**_as_dict(match), "device_kind": match.device_kind}


def insert_reused(
    db: Database,
    new: NewCandidate,
    source: dict[str, Any],
    feasible: bool | None,
    enqueued: int | None = None,
) -> int:
    """A proposal another job already trained: a completed row with a copy of that result
    and its learning curve."""
    now = utcnow()
    copied = {name: source[name] for name in (*RESULT_COLUMNS, "device_kind")}
    with db.transaction() as session:
        row = Candidate(
            **new.__dict__,
            **copied,
            status="completed",
            feasible=feasible,
            reused_from_id=source["id"],
            started_at=now,
            finished_at=now,
        )
        session.add(row)
        session.flush()
        _link_enqueued(session, enqueued, row.id)
        points = session.scalars(
            select(CurvePoint).where(CurvePoint.candidate_id == source["id"])
        ).all()
        session.add_all(
            CurvePoint(candidate_id=row.id, index=p.index, train_s=p.train_s, loss=p.loss)
            for p in points
        )
        session.add(
            JobEvent(
                job_id=new.job_id,
                kind="trial",
                message="reused",
                data={"candidate_id": row.id, "from": source["id"]},
            )
        )
        return row.id


@dataclass
class Outcome:
    """A finished attempt to record: the new column values and the curve of the candidate's
    own row, or of one of its runs (`run_id`)."""

    job_id: int
    candidate_id: int
    attempt: int
    values: dict[str, Any]
    curve: list[tuple[float, float | None]] = field(default_factory=list)
    run_id: int | None = None


def record_outcomes(
    db: Database,
    outcomes: Sequence[Outcome],
    extra_events: Callable[[Outcome], list[Event]] = lambda _: [],
) -> list[Outcome]:
    """Record finished attempts in one transaction (one commit however many finished), each
    only while it is still the candidate's current, running attempt: a late or repeated
    report changes nothing. `extra_events(outcome)` adds events in the same transaction for
    each that was recorded. Returns those recorded."""
    recorded = []
    with db.transaction() as session:
        for outcome in outcomes:
            if outcome.run_id is not None:
                took = session.execute(
                    update(Run)
                    .where(*_current_run(outcome.run_id, outcome.attempt))
                    .values(**outcome.values, curve=[list(point) for point in outcome.curve])
                ).rowcount
            else:
                took = session.execute(
                    update(Candidate)
                    .where(*_current(outcome.candidate_id, outcome.attempt))
                    .values(**outcome.values)
                ).rowcount
            if not took:
                continue
            curve = [
                {"candidate_id": outcome.candidate_id, "index": i, "train_s": t, "loss": loss}
                for i, (t, loss) in enumerate(outcome.curve)
            ]
            if curve and outcome.run_id is None:  # one multi-row INSERT, not one per point
                session.execute(insert(CurvePoint), curve)
            data = {"candidate_id": outcome.candidate_id}
            if outcome.run_id is not None:
                data["run_id"] = outcome.run_id
            events = [("trial", outcome.values["status"], data), *extra_events(outcome)]
            session.execute(
                insert(JobEvent),
                [
                    {"job_id": outcome.job_id, "kind": kind, "message": message, "data": data}
                    for kind, message, data in events
                ],
            )
            recorded.append(outcome)
    return recorded


def requeue(
    db: Database,
    job_id: int,
    candidate_id: int,
    attempt: int,
    reason: str,
    max_attempts: int,
    refund: bool = False,
    run_id: int | None = None,
) -> bool:
    """Put a running attempt (of the candidate's row, or of its run `run_id`) back in the
    queue (same row) while attempts are left; False if none is left or it is no longer the
    current attempt. `refund`: it never ran (the worker refused it), so its attempt is given
    back and the limit does not apply."""
    table = Candidate if run_id is None else Run
    values: dict[str, Any] = {"status": "queued", "reason": f"{reason} (attempt {attempt})"}
    where = [
        *(_current(candidate_id, attempt) if run_id is None else _current_run(run_id, attempt))
    ]
    if refund:
        values["attempt"] = table.attempt - 1
    else:
        where.append(table.attempt < max_attempts)
    with db.transaction() as session:
        took = session.execute(update(table).where(*where).values(**values)).rowcount
        if took:
            data = {"candidate_id": candidate_id, "attempt": attempt}
            if run_id is not None:
                data["run_id"] = run_id
            session.add(JobEvent(job_id=job_id, kind="trial", message="retry", data=data))
        return bool(took)


# --- runs: higher rungs, noise seeds, confirmation ---------------------------------------------


def _current_run(run_id: int, attempt: int) -> tuple[Any, ...]:
    return (Run.id == run_id, Run.attempt == attempt, Run.status == "running")


@dataclass(frozen=True)
class NewRun:
    job_id: int
    candidate_id: int
    stage: str
    rung: int
    seed: int
    origin: str
    budget: dict[str, float]


def insert_runs(db: Database, runs: Sequence[NewRun]) -> list[dict[str, Any]]:
    """Queue runs, skipping those whose key (candidate, stage, rung, seed) exists (a
    promotion decided twice, by two runners or after a restart, queues it once); a rung run
    raises its candidate's `rung`. Returns the runs queued now."""
    if not runs:
        return []
    queued = []
    with db.transaction() as session:
        candidate_ids = {run.candidate_id for run in runs}
        existing = set(
            session.execute(
                select(Run.candidate_id, Run.stage, Run.rung, Run.seed).where(
                    Run.candidate_id.in_(candidate_ids)
                )
            ).all()
        )
        for new in runs:
            key = (new.candidate_id, new.stage, new.rung, new.seed)
            if key in existing:
                continue
            existing.add(key)
            row = Run(**new.__dict__, status="queued", attempt=0)
            session.add(row)
            session.flush()
            queued.append(_run_dict(row))
            if new.stage == "rung" and new.rung > 0:
                session.execute(
                    update(Candidate)
                    .where(Candidate.id == new.candidate_id, Candidate.rung < new.rung)
                    .values(rung=new.rung)
                )
            session.add(
                JobEvent(
                    job_id=new.job_id,
                    kind="run",
                    message="queued",
                    data={
                        "candidate_id": new.candidate_id,
                        "run_id": row.id,
                        "stage": new.stage,
                        "rung": new.rung,
                        "seed": new.seed,
                        "origin": new.origin,
                    },
                )
            )
    return queued


def start_run(
    db: Database, job_id: int, run_id: int, slot: int
) -> tuple[int, dict[str, Any]] | None:
    """Run a queued run as its next attempt on `slot`: (attempt, the candidate's spec), or
    None if it is no longer queued."""
    with db.transaction() as session:
        started = session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == "queued")
            .values(status="running", attempt=Run.attempt + 1, started_at=utcnow(), slot=slot)
            .returning(Run.attempt, Run.candidate_id)
        ).first()
        if started is None:
            return None
        spec = session.scalar(select(Candidate.spec).where(Candidate.id == started.candidate_id))
        session.add(
            JobEvent(
                job_id=job_id,
                kind="trial",
                message="started",
                data={
                    "candidate_id": started.candidate_id,
                    "run_id": run_id,
                    "attempt": started.attempt,
                },
            )
        )
        return started.attempt, spec


def cancel_queued_runs(db: Database, job_id: int, why: str) -> None:
    """Queued runs that will not run (the job's time is up)."""
    with db.transaction() as session:
        session.execute(
            update(Run)
            .where(Run.job_id == job_id, Run.status == "queued")
            .values(status="cancelled", reason=f"not run: {why}", finished_at=utcnow())
        )
