"""A job's progress (trials by state, the best candidate under its objective, the Pareto
front) and deleting a job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select

from nas_service.db import Database
from nas_service.jobs import JobConflict, JobNotFound
from nas_service.models import Candidate, Job, utcnow
from nas_service.queries.fronts import FRONT_ELIGIBLE, cached_front
from nas_service.queries.ladder import top_rung_best


@dataclass(frozen=True)
class Progress:
    done: int
    running: int
    queued: int
    total: int
    best_perplexity: float | None  # the best candidate's perplexity (see best_rule)
    best_candidate_id: int | None
    best_rule: str  # how the best was chosen, in words
    front_size: int
    front: list[int]  # ids on the Pareto front, by step-time ratio (as `pareto`)
    rung: int  # the rung of the fidelity ladder the best and the front come from


def reference_device_kind(session: Any, job_id: int) -> str | None:
    """The device kind of the job's baseline row (its first `is_baseline` one); None when
    the baseline has none yet (not run, or a row from before device kinds were recorded)."""
    return session.scalar(
        select(Candidate.device_kind)
        .where(Candidate.job_id == job_id, Candidate.is_baseline.is_(True))
        .order_by(Candidate.birth, Candidate.id)
        .limit(1)
    )


def _best(session: Any, job: Job) -> tuple[Any, str]:
    """The job's best candidate (id, perplexity) under its objective, and the rule in words.

    Constrained mode: the lowest validation loss among completed candidates that are
    feasible (step-time ratio within the limit). Pareto mode: the lowest perplexity among the
    candidates that can be on the front (ties: the lower ratio), the front's low-perplexity
    end. Either way only candidates of the baseline's device kind compete, when it is known:
    perplexities under a wall-clock budget depend on the device.
    """
    objective = job.config.get("objective") or {}
    kind = reference_device_kind(session, job.id)
    where: list[Any] = [Candidate.job_id == job.id]
    if kind is not None:
        where.append(Candidate.device_kind == kind)
    on = f" on {kind}" if kind is not None else ""
    if objective.get("mode") == "constrained":
        limit = objective.get("max_step_time_ratio", 1.0)
        rule = f"lowest validation loss among feasible candidates (step time ratio <= {limit}){on}"
        where += [
            Candidate.status == "completed",
            Candidate.feasible.is_(True),
            Candidate.val_loss.is_not(None),
        ]
        order: tuple[Any, ...] = (Candidate.val_loss, Candidate.step_time_ratio, Candidate.id)
    else:
        rule = f"lowest perplexity on the Pareto front{f' ({kind})' if kind else ''}"
        where += list(FRONT_ELIGIBLE)
        order = (Candidate.perplexity, Candidate.step_time_ratio, Candidate.id)
    best = session.execute(
        select(Candidate.id, Candidate.perplexity).where(*where).order_by(*order).limit(1)
    ).first()
    return best, rule


def progress(db: Database, job: Job) -> Progress:
    """Trials by state, the best candidate under the job's objective (and how it was chosen),
    and the Pareto front (as `pareto`)."""
    with db.sessions() as session:
        counts = dict(
            session.execute(
                select(Candidate.status, func.count())
                .where(Candidate.job_id == job.id)
                .group_by(Candidate.status)
            ).all()
        )
        best, rule = _best(session, job)
        front = cached_front(db, session, job, counts.get("completed", 0))
    running, queued = counts.pop("running", 0), counts.pop("queued", 0)
    best_id, best_perplexity = (best.id, best.perplexity) if best else (None, None)
    rung = 0
    if (job.config.get("fidelity") or {}).get("rungs"):
        # The job's front and best are those of the highest rung with results.
        top, top_front, top_id, top_perplexity = top_rung_best(db, job.id)
        if top > 0:
            rung, front, best_id, best_perplexity = top, top_front, top_id, top_perplexity
            rule = f"{rule}, at rung {top} (means over its seeds)"
    return Progress(
        done=sum(counts.values()),
        running=running,
        queued=queued,
        total=job.config["limits"]["max_trials"],
        best_perplexity=best_perplexity,
        best_candidate_id=best_id,
        best_rule=rule,
        front_size=len(front),
        front=list(front),
        rung=rung,
    )


def delete_job(db: Database, job_id: int) -> None:
    """Remove a job and all its rows; refused while it is running or paused, or while a
    runner's lease on it is live (a cancelled job is finished by its runner). A job whose
    runner's lease has expired may go once its status is final. A compare-and-set DELETE,
    so a runner claiming the job at the same moment either wins (409) or finds nothing."""
    now = utcnow()
    with db.transaction() as session:
        deleted = session.execute(
            delete(Job).where(
                Job.id == job_id,
                Job.status.not_in(("running", "paused")),
                or_(
                    Job.runner_id.is_(None),
                    Job.lease_expires_at.is_(None),
                    Job.lease_expires_at < now,
                ),
            )
        ).rowcount
        if deleted:
            return
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} not found")
        if job.status in ("running", "paused"):
            raise JobConflict("status", f"job {job_id} is {job.status}: cancel it first")
        raise JobConflict(
            "status",
            f"job {job_id} is {job.status} and runner {job.runner_id} still holds it: "
            "retry once it has finished",
        )
