"""A job's progress (trials by state, the best candidate under its objective, the Pareto
front) and deleting a job."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select

from nas_service.db import Database
from nas_service.jobs import JobConflict, JobNotFound
from nas_service.models import Candidate, Job, Run, utcnow
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


def eta_s(db: Database, job: Job) -> float | None:
    """Seconds until a running job ends, from the measured wall time of its finished trials
    (compile, evaluation and reference timing included, not the budget alone): the trials
    not yet started, queued or running, and the queued and running runs of the ladder and
    confirmation (their training part scaled by their budget), shared by the job's slots.
    Promotions not yet decided are not counted. None until a trial has finished."""
    if job.status != "running":
        return None
    now = utcnow()
    with db.sessions() as session:
        rows = session.execute(
            select(
                Candidate.status, Candidate.started_at, Candidate.finished_at, Candidate.train_s
            ).where(Candidate.job_id == job.id, Candidate.reused_from_id.is_(None))
        ).all()
        runs = session.execute(
            select(Run.budget, Run.status, Run.started_at).where(
                Run.job_id == job.id, Run.status.in_(("queued", "running"))
            )
        ).all()
    finished = [r for r in rows if r.finished_at is not None and r.started_at is not None]
    if not finished:
        return None
    wall = statistics.median((r.finished_at - r.started_at).total_seconds() for r in finished)
    train = statistics.median(r.train_s or 0.0 for r in finished)
    overhead = max(0.0, wall - train)
    config = job.config
    ((_, trial_amount),) = _trial_budget(config).items()
    not_started = max(0, config["limits"]["max_trials"] - len(rows))
    work = (not_started + sum(r.status == "queued" for r in rows)) * wall
    work += sum(
        max(0.0, wall - (now - r.started_at).total_seconds())
        for r in rows
        if r.status == "running" and r.started_at is not None
    )
    for budget, status, started in runs:
        ((_, amount),) = budget.items()
        run_wall = overhead + train * amount / trial_amount
        elapsed = (now - started).total_seconds() if status == "running" and started else 0.0
        work += max(0.0, run_wall - elapsed)
    eta = work / config["workers"]["concurrency"]
    hours = config["limits"].get("max_hours")
    if hours is not None and job.started_at is not None:
        eta = min(eta, max(0.0, hours * 3600 - (now - job.started_at).total_seconds()))
    return eta


def _trial_budget(config: dict[str, Any]) -> dict[str, float]:
    trial = config["trial"]
    for name, kind in (("budget_steps", "steps"), ("budget_flops", "flops")):
        if trial.get(name) is not None:
            return {kind: trial[name]}
    return {"seconds": trial.get("budget_s") or 30.0}


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
