"""A job's Pareto front of (perplexity, step-time ratio), its scored points (all of them, or
the front plus a binned scatter above a point budget) and the hypervolume history."""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Float, and_, case, cast, func, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from nas_service.db import Database
from nas_service.jobs import JobNotFound
from nas_service.models import CANDIDATE_STATUSES, Candidate, Job
from nas_service.pareto import hypervolume_2d, pareto_front

# The scatter a client gets unless it asks for another size (`pareto(max_points=...)`).
DEFAULT_MAX_POINTS = 5_000


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


class Bin(FunctionElement):
    """The integer part of a non-negative float (a grid cell's index), by the database."""

    type = BigInteger()
    inherit_cache = True


@compiles(Bin)
def _bin(element: Bin, compiler: Any, **kw: Any) -> str:
    return f"CAST(FLOOR({compiler.process(element.clauses, **kw)}) AS BIGINT)"


@compiles(Bin, "sqlite")
def _bin_sqlite(element: Bin, compiler: Any, **kw: Any) -> str:
    # CAST truncates toward zero: the floor of the non-negative offsets binned here (and
    # FLOOR needs SQLite's optional math functions).
    return f"CAST({compiler.process(element.clauses, **kw)} AS INTEGER)"


# Candidates that can be on a job's Pareto front of (perplexity, step-time ratio): completed,
# not over the step-time limit, both objectives measured. The ratio (step time over the
# baseline timed on the same slot under the same load) is the comparable step-time figure;
# raw milliseconds depend on the device and its load and are only displayed.
FRONT_ELIGIBLE = (
    Candidate.status == "completed",
    Candidate.feasible.is_not(False),
    Candidate.perplexity.is_not(None),
    Candidate.step_time_ratio.is_not(None),
)

# Finding the front reads every completed row of the job (about 0.35 s at 100,000
# candidates on SQLite), and the jobs list asks for it every few seconds. A completed row is
# recorded once and never changes, and candidates are only deleted with their job, so the
# job's submission time with the count and the highest id of its completed rows identify
# its front: it is found again only when one of them changes.
_fronts: dict[tuple[str, int], tuple[tuple[Any, int, int], tuple[int, ...]]] = {}


def cached_front(db: Database, session: Any, job: Job, completed: int) -> tuple[int, ...]:
    """The ids on the job's front by ratio (then id); `completed`: its completed rows."""
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
        .where(Candidate.job_id == job_id, *FRONT_ELIGIBLE)
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
        .where(Candidate.job_id == job_id, *FRONT_ELIGIBLE)
        .order_by(Candidate.step_time_ratio, Candidate.id)
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
    total: int = 0  # scored candidates in all (as many as `id` unless reduced)
    reduced: bool = False  # True: the front and baselines plus one point per grid cell


def _columns(job_id: int) -> tuple[Any, ...]:
    submitted = select(EpochSeconds(Job.created_at)).where(Job.id == job_id)
    return (
        Candidate.id,
        Candidate.perplexity,
        Candidate.step_time_ratio,
        Candidate.step_time_ms,
        Candidate.status,
        Candidate.feasible,
        Candidate.is_baseline,
        EpochSeconds(Candidate.finished_at) - submitted.scalar_subquery(),
    )


def _transpose(rows: list[Any]) -> list[list[Any]]:
    """Rows into columns at C speed: per-row Python objects cost more than the query."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(8)]


def pareto(db: Database, job_id: int, max_points: int | None = None) -> ScoredColumns:
    """The job's scored candidates as (perplexity, step-time ratio) points, and the Pareto
    front of the feasible completed ones. Pruned candidates are scored too (they are shown,
    never on the front).

    Every point when the job has at most `max_points` (or `max_points` is None); beyond
    that, the front and the baselines exactly plus a binned scatter of at most `max_points`
    others (see `_binned`), with `reduced` set and `total` counting every scored point.
    """
    with db.sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} not found")
        if max_points is not None:
            # Read from the (job, status) index alone: rows by status and the job's id range.
            by_status = session.execute(
                select(
                    Candidate.status, func.count(), func.min(Candidate.id), func.max(Candidate.id)
                )
                .where(Candidate.job_id == job_id)
                .group_by(Candidate.status)
            ).all()
            # Every row of the job is an upper bound on its scored ones.
            if sum(row[1] for row in by_status) > max_points:
                last_finished = session.scalar(
                    select(func.max(Candidate.finished_at)).where(Candidate.job_id == job_id)
                )
                key = (job.created_at, max_points, sorted(map(tuple, by_status)), last_finished)
                cached = _scatters.get((db.url, job_id))
                if cached is not None and cached[0] == key:
                    _scatters.move_to_end((db.url, job_id))
                    return cached[1]
                completed = sum(row[1] for row in by_status if row[0] == "completed")
                ids = (min(row[2] for row in by_status), max(row[3] for row in by_status))
                binned = _binned(db, session, job, completed, ids, max_points)
                if binned is not None:
                    _scatters[db.url, job_id] = (key, binned)
                    _scatters.move_to_end((db.url, job_id))
                    while len(_scatters) > _SCATTERS_KEPT:
                        _scatters.popitem(last=False)
                    return binned
        rows = session.execute(
            select(*_columns(job_id))
            .where(
                Candidate.job_id == job_id,
                Candidate.perplexity.is_not(None),
                Candidate.step_time_ratio.is_not(None),
            )
            .order_by(Candidate.id)
        ).all()
    columns = _transpose(rows)
    ids, perplexity, ratio, _, status, feasible = columns[:6]
    eligible = [
        i
        for i, (state, ok) in enumerate(zip(status, feasible, strict=True))
        if state == "completed" and ok is not False
    ]
    on_front = [eligible[i] for i in pareto_front([(perplexity[i], ratio[i]) for i in eligible])]
    # Stable: equal ratios (equal copies) stay in id order, as `progress` lists them.
    front = [ids[i] for i in sorted(on_front, key=ratio.__getitem__)]
    return ScoredColumns(*columns, front=front, total=len(ids))


# The binned scatters last sent, by job (its last `max_points` only), the most recent
# _SCATTERS_KEPT jobs. A scored row changes only when its trial finishes: its status changes
# (so the job's count of rows of some status and their id range do) and its finish time is
# the job's latest. So with the job's submission time these identify a scatter, and a
# dashboard refreshing a job that did not change (or a second viewer) gets it for two index
# lookups instead of reading every row again.
_scatters: OrderedDict[tuple[str, int], tuple[Any, ScoredColumns]] = OrderedDict()
_SCATTERS_KEPT = 16

# A fixed pseudo-random order of ids (Knuth's multiplicative hash, a bijection on ids below
# 2**32, PostgreSQL's integer ids all):
# a cell's representative is the member first in this order, a uniform pick among the
# cell's members that does not depend on when they finished and is the same on every call.
_HASH, _HASH_MOD = 2654435761, 1 << 32
_UNHASH = pow(_HASH, -1, _HASH_MOD)


def spread(ids: Any) -> Any:
    """Candidate ids in that fixed pseudo-random order (SQL): a sample taken in it favours
    neither early nor late trials and changes little as a job grows."""
    return (cast(ids, BigInteger) * _HASH) % _HASH_MOD


_GROUPS = 2 * (len(CANDIDATE_STATUSES) + 1)  # (status, infeasible) pairs, unknown status last


def _binned(
    db: Database,
    session: Any,
    job: Job,
    completed: int,
    ids: tuple[int, int],
    max_points: int,
) -> ScoredColumns | None:
    """The front and baselines exactly, plus a binned scatter of the other scored points:
    a grid over (step-time ratio, perplexity) between the job's extremes, one point per
    occupied cell per (status, infeasible) group, the grid as fine as fits in `max_points`.

    One grouped query reads every scored row of the job but returns only its occupied cells
    of a fine grid (2**k a side) with a representative and a count each; the grid is
    coarsened here, one axis halved at a time, until the cells fit; then the points of the
    chosen ids are read. `completed`: the job's completed rows; `ids`: its lowest and
    highest id. None when the job has at most `max_points` scored points after all
    (or extremes that cannot be binned): the caller sends everything.
    """
    job_id = job.id
    ratio, ppl = Candidate.step_time_ratio, Candidate.perplexity
    # Min and max of a column of the job: one index lookup each ((job_id, column) indexes).
    extremes = [
        select(aggregate(column)).where(Candidate.job_id == job_id).scalar_subquery()
        for column in (ratio, ppl)
        for aggregate in (func.min, func.max)
    ]
    x0, x1, y0, y1 = session.execute(select(*extremes)).one()
    if not all(v is not None and math.isfinite(v) for v in (x0, x1, y0, y1)):
        return None
    bits = min(9, max(2, round(math.log(max_points, 4))))
    side = 1 << bits
    sx = side / (x1 - x0) if x1 > x0 else 0.0
    sy = side / (y1 - y0) if y1 > y0 else 0.0
    status = case(
        {state: i for i, state in enumerate(CANDIDATE_STATUSES)},
        value=Candidate.status,
        else_=len(CANDIDATE_STATUSES),
    )
    group = status * 2 + case((Candidate.feasible.is_(False), 1), else_=0)
    cell = (Bin((ratio - x0) * sx) * (side + 1) + Bin((ppl - y0) * sy)) * _GROUPS + group
    sqlite = session.get_bind().dialect.name == "sqlite"
    if sqlite:
        # SQLite would walk an index of the job (a b-tree descent into the table per row, in
        # the (job, ratio) index's case in random order); reading the table along the job's
        # id range makes this query 1.7x faster at 100,000 candidates (`+ 0` keeps it off
        # those indexes).
        where = [Candidate.id.between(*ids), Candidate.job_id + 0 == job_id]
    else:
        where = [Candidate.job_id == job_id]
    per_row = (
        select(
            # Baselines are kept one by one: each its own group (negative keys).
            case((Candidate.is_baseline.is_(True), -Candidate.id), else_=cell).label("k"),
            spread(Candidate.id).label("h"),
        )
        .where(*where, ppl.is_not(None), ratio.is_not(None))
        .subquery()
    )
    cells = session.execute(
        select(per_row.c.k, func.min(per_row.c.h), func.count()).group_by(per_row.c.k)
    ).all()
    total = sum(n for _, _, n in cells)
    if total <= max_points:
        return None
    baselines = {-k for k, _, _ in cells if k < 0}
    front = cached_front(db, session, job, completed)
    # Fine cells (x, y, group) -> the smallest hash; a value of `side` (the maximum itself,
    # or rounding) belongs to the last cell.
    grid: dict[tuple[int, int, int], int] = {}
    for k, h, _ in cells:
        if k >= 0:
            xy, g = divmod(k, _GROUPS)
            x, y = divmod(xy, side + 1)
            at = (min(x, side - 1), min(y, side - 1), g)
            grid[at] = min(h, grid.get(at, h))
    shift = [0, 0]
    while len(grid) > max_points and shift[1] < bits:
        axis = 0 if shift[0] <= shift[1] else 1
        shift[axis] += 1
        coarser: dict[tuple[int, int, int], int] = {}
        for (x, y, g), h in grid.items():
            at = (x >> 1, y, g) if axis == 0 else (x, y >> 1, g)
            coarser[at] = min(h, coarser.get(at, h))
        grid = coarser
    # One cell a side and still too many groups (a budget under 16): the first in hash order.
    kept = sorted(grid.values())[:max_points]
    chosen = {(h * _UNHASH) % _HASH_MOD for h in kept}
    chosen.update(front, baselines)
    wanted = sorted(chosen)
    rows: list[Any] = []
    for start in range(0, len(wanted), 5000):  # within every driver's parameter limit
        chunk = Candidate.id.in_(wanted[start : start + 5000])
        # By primary key (SQLite would rather scan the (job, ratio) index for `job_id = ?`).
        job_of = Candidate.job_id + 0 if sqlite else Candidate.job_id
        rows += session.execute(
            select(*_columns(job_id)).where(chunk, job_of == job_id).order_by(Candidate.id)
        ).all()
    return ScoredColumns(*_transpose(rows), front=list(front), total=total, reduced=True)


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
            .where(Candidate.job_id == job_id, *FRONT_ELIGIBLE)
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
