"""Read-side queries for the API and dashboard: progress, filtered and sorted candidate pages.

Sorting, filtering and pagination happen in SQL (indexes on job and status), so a page stays
fast with a hundred thousand candidates in a job.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Float, and_, delete, func, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from nas_service.db import Database
from nas_service.jobs import JobConflict, JobError, JobNotFound
from nas_service.models import (
    CANDIDATE_FINISHED,
    CANDIDATE_STATUSES,
    RESULT_COLUMNS,
    Candidate,
    Job,
    JobEvent,
    utcnow,
)
from nas_service.pareto import hypervolume_2d, pareto_front


class EpochSeconds(FunctionElement):
    """Seconds since 1970 of a timestamp, computed by the database: reading tens of thousands
    of timestamps into Python datetimes costs more than the rest of a Pareto query."""

    type = Float()
    inherit_cache = True


@compiles(EpochSeconds, "sqlite")
def _epoch_sqlite(element: EpochSeconds, compiler: Any, **kw: Any) -> str:
    return f"((julianday({compiler.process(element.clauses, **kw)}) - 2440587.5) * 86400.0)"


@compiles(EpochSeconds, "postgresql")
def _epoch_postgresql(element: EpochSeconds, compiler: Any, **kw: Any) -> str:
    return f"EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})"


# Candidates that can be on a job's Pareto front of (perplexity, step-time ratio): completed,
# not over the step-time limit, both objectives measured. The ratio (step time over the
# baseline timed on the same slot under the same load) is the comparable step-time figure;
# raw milliseconds depend on the device and its load and are only displayed.
_FRONT_ELIGIBLE = (
    Candidate.status == "completed",
    Candidate.feasible.is_not(False),
    Candidate.perplexity.is_not(None),
    Candidate.step_time_ratio.is_not(None),
)

# JSON columns and free text are not sortable (PostgreSQL cannot order json values).
_UNSORTABLE = ("reason", "traceback", "moe", "device", "smoothed_loss_at", "val_loss_at")
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
        where += list(_FRONT_ELIGIBLE)
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
        front = _cached_front(db, session, job, counts.get("completed", 0))
    running, queued = counts.pop("running", 0), counts.pop("queued", 0)
    return Progress(
        done=sum(counts.values()),
        running=running,
        queued=queued,
        total=job.config["limits"]["max_trials"],
        best_perplexity=best.perplexity if best else None,
        best_candidate_id=best.id if best else None,
        best_rule=rule,
        front_size=len(front),
        front=list(front),
    )


# Finding the front reads every completed row of the job (about 0.35 s at 100,000
# candidates on SQLite), and the jobs list asks for it every few seconds. A completed row is
# recorded once and never changes, and candidates are only deleted with their job, so the
# job's submission time with the count and the highest id of its completed rows identify
# its front: it is found again only when one of them changes.
_fronts: dict[tuple[str, int], tuple[tuple[Any, int, int], tuple[int, ...]]] = {}


def _cached_front(db: Database, session: Any, job: Job, completed: int) -> tuple[int, ...]:
    last = session.scalar(
        select(func.max(Candidate.id)).where(
            Candidate.job_id == job.id, Candidate.status == "completed"
        )
    )
    key = (job.created_at, completed, last or 0)
    cached = _fronts.get((db.url, job.id))
    if cached is None or cached[0] != key:
        cached = (key, tuple(session.scalars(_front_ids(job.id))))
        _fronts[db.url, job.id] = cached
    return cached[1]


def _front_ids(job_id: int) -> Any:
    """The ids on the job's Pareto front by step-time ratio (then id), found by the database.

    Over the distinct (perplexity, ratio) points sorted by ratio then perplexity, a point is
    on the front when its perplexity is below every earlier one's; every candidate at such a
    point is on the front (equal copies all count), as in `pareto`.
    """
    points = (
        select(
            Candidate.perplexity.label("ppl"),
            Candidate.step_time_ratio.label("ratio"),
        )
        .where(Candidate.job_id == job_id, *_FRONT_ELIGIBLE)
        .group_by(Candidate.perplexity, Candidate.step_time_ratio)
        .subquery()
    )
    best_before = func.min(points.c.ppl).over(
        order_by=(points.c.ratio, points.c.ppl), rows=(None, -1)
    )
    ranked = select(points.c.ppl, points.c.ratio, best_before.label("best")).subquery()
    front = (
        select(ranked.c.ppl, ranked.c.ratio)
        .where(or_(ranked.c.best.is_(None), ranked.c.ppl < ranked.c.best))
        .subquery()
    )
    return (
        select(Candidate.id)
        .join(
            front,
            and_(
                Candidate.perplexity == front.c.ppl,
                Candidate.step_time_ratio == front.c.ratio,
            ),
        )
        .where(Candidate.job_id == job_id, *_FRONT_ELIGIBLE)
        .order_by(Candidate.step_time_ratio, Candidate.id)
    )


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


@dataclass(frozen=True)
class ScoredColumns:
    """A job's scored candidates column by column (one list per field, in id order)."""

    id: list[int]
    perplexity: list[float]
    step_time_ratio: list[float]  # step time / the baseline's on the same slot: ranked
    step_time_ms: list[float | None]  # raw, device- and load-dependent: displayed
    status: list[str]
    feasible: list[bool | None]
    is_baseline: list[bool]
    finished_s: list[float | None]  # seconds from the job's submission to the trial's end
    front: list[int]  # ids on the front of the feasible completed ones, by ratio (then id)


def pareto(db: Database, job_id: int) -> ScoredColumns:
    """Every scored candidate of the job as a (perplexity, step-time ratio) point, and the
    Pareto front of the feasible completed ones. Pruned candidates are scored too (they are
    shown, never on the front). Rows are transposed into columns at C speed: with 100,000
    candidates, per-row Python objects cost more than the query."""
    with db.sessions() as session:
        if session.get(Job, job_id) is None:
            raise JobNotFound(f"job {job_id} not found")
        submitted = select(EpochSeconds(Job.created_at)).where(Job.id == job_id)
        rows = session.execute(
            select(
                Candidate.id,
                Candidate.perplexity,
                Candidate.step_time_ratio,
                Candidate.step_time_ms,
                Candidate.status,
                Candidate.feasible,
                Candidate.is_baseline,
                EpochSeconds(Candidate.finished_at) - submitted.scalar_subquery(),
            )
            .where(
                Candidate.job_id == job_id,
                Candidate.perplexity.is_not(None),
                Candidate.step_time_ratio.is_not(None),
            )
            .order_by(Candidate.id)
        ).all()
    columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 8
    ids, perplexity, ratio, _, status, feasible = columns[:6]
    eligible = [
        i
        for i, (state, ok) in enumerate(zip(status, feasible, strict=True))
        if state == "completed" and ok is not False
    ]
    on_front = [eligible[i] for i in pareto_front([(perplexity[i], ratio[i]) for i in eligible])]
    # Stable: equal ratios (equal copies) stay in id order, as `progress` lists them.
    front = [ids[i] for i in sorted(on_front, key=ratio.__getitem__)]
    return ScoredColumns(*columns, front=front)


def hypervolume_history(db: Database, job_id: int, max_points: int = 500) -> dict[str, Any]:
    """Hypervolume of the (perplexity, step-time ratio) front after each completed trial, in
    finishing order.

    Reference point: 1.1 x the worst perplexity and the worst ratio among the job's completed
    feasible candidates (fixed over the history, so the curve never decreases).
    """
    with db.sessions() as session:
        if session.get(Job, job_id) is None:
            raise JobNotFound(f"job {job_id} not found")
        rows = session.execute(
            select(Candidate.perplexity, Candidate.step_time_ratio)
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
    # The front so far, sorted by ratio (so perplexity strictly decreases along it).
    steps: list[float] = []
    ppls: list[float] = []
    trials, volumes = [], []
    volume, changed = 0.0, False
    for i, (ppl, step) in enumerate(rows):
        # The member with the largest ratio <= this one has the lowest perplexity of those
        # that could dominate (or equal) it.
        at = bisect.bisect_right(steps, step)
        if not (at and ppls[at - 1] <= ppl):
            # It joins; the members it dominates (ratio >= its, perplexity >= its) are a run
            # that starts where its ratio would go.
            start = end = bisect.bisect_left(steps, step)
            while end < len(steps) and ppls[end] >= ppl:
                end += 1
            steps[start:end], ppls[start:end] = [step], [ppl]
            changed = True
        if i in picks:
            if changed:  # late in a search the front rarely changes: reuse its volume
                front = list(zip(ppls, steps, strict=True))
                volume, changed = hypervolume_2d(front, reference), False
            trials.append(i + 1)
            volumes.append(volume)
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


JOB_FINAL = ("completed", "failed", "cancelled")


def events_after(
    db: Database, job_id: int, after: int, page: int = 500
) -> tuple[str | None, bool, list[JobEvent]]:
    """The job's status (None once deleted), whether it is still finishing, then up to page
    of its events with id > `after`.

    Finishing: the status is final (e.g. the API wrote `cancelled`) but a runner holds a
    live lease on the job and has not yet written the job's final event (a `job` event
    whose message is a final status; it stops the job's trials first, with their events).
    The status is read first and the final event looked for before the page is read, so the
    page includes every event committed with (or before) a final status, and the final
    event whenever it was found.
    """
    with db.sessions() as session:
        row = session.execute(
            select(Job.status, Job.runner_id, Job.lease_expires_at).where(Job.id == job_id)
        ).first()
        status = row.status if row else None
        finishing = (
            row is not None
            and row.status in JOB_FINAL
            and row.runner_id is not None
            and row.lease_expires_at is not None
            and row.lease_expires_at >= utcnow()
            and session.scalar(
                select(JobEvent.id)
                .where(
                    JobEvent.job_id == job_id,
                    JobEvent.kind == "job",
                    JobEvent.message.in_(JOB_FINAL),
                )
                .limit(1)
            )
            is None
        )
        query = (
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.id > after)
            .order_by(JobEvent.id)
            .limit(page)
        )
        return status, finishing, list(session.scalars(query))


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
