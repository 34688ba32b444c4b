"""Two-objective Pareto math: fronts, non-dominated ranks, crowding distance, hypervolume.

Both objectives are minimised. A point dominates another when it is no worse in both
objectives and differs from it; equal copies therefore never dominate each other and share
a rank. Pure numpy: the designer ranks its population with these, the dashboard draws the
fronts and the benchmarks score searches with the hypervolume.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

Point = tuple[float, float]


def _as_array(points: Sequence[Point]) -> np.ndarray:
    return np.asarray(points, dtype=float).reshape(-1, 2)


def nondominated_ranks(points: Sequence[Point]) -> list[int]:
    """Rank of each point: 0 on the Pareto front, 1 on the front once rank 0 is removed, ...

    Points are swept in (first, second) order, so every point that can dominate a point comes
    before it. Front k keeps the lowest second objective among its members so far; these
    minima never decrease with k, and a point joins the first front whose minimum is above
    its own second objective (each lower front holds a member dominating it). Equal copies
    share a rank. O(n log n).
    """
    pairs = [(float(x), float(y)) for x, y in points]
    ranks = [0] * len(pairs)
    front_minima: list[float] = []
    previous: int | None = None
    for i in sorted(range(len(pairs)), key=pairs.__getitem__):
        if previous is not None and pairs[i] == pairs[previous]:
            ranks[i] = ranks[previous]
            continue
        rank = bisect.bisect_right(front_minima, pairs[i][1])
        if rank == len(front_minima):
            front_minima.append(pairs[i][1])
        else:
            front_minima[rank] = pairs[i][1]
        ranks[i] = rank
        previous = i
    return ranks


def pareto_front(points: Sequence[Point]) -> list[int]:
    """Indices of the non-dominated points in input order, every equal copy included."""
    return [i for i, rank in enumerate(nondominated_ranks(points)) if rank == 0]


def crowding_distance(points: Sequence[Point]) -> list[float]:
    """NSGA-II crowding distance of each point of a set (normally one front).

    Per objective, points are sorted (stably, so equal values keep input order); the first
    and last get infinity and the others the gap between their neighbours over the range of
    the objective. An objective whose values are all equal adds nothing to interior points.
    Larger means lonelier, so preferring it keeps a front spread out.
    """
    array = _as_array(points)
    distance = np.zeros(len(array))
    if len(array) <= 2:
        return [float("inf")] * len(array)
    for column in array.T:
        order = np.argsort(column, kind="stable")
        values = column[order]
        span = values[-1] - values[0]
        if span > 0:
            distance[order[1:-1]] += (values[2:] - values[:-2]) / span
        distance[order[[0, -1]]] = np.inf
    return distance.tolist()


def hypervolume_2d(points: Sequence[Point], reference: Point) -> float:
    """Area dominated by the points and bounded by the reference point (exact).

    The reference is a nadir: the area counted is the union of the boxes [x, rx] x [y, ry],
    one per point (x, y). A point that is not strictly better than the reference in both
    objectives spans no area and is ignored, so the reference also acts as a cut-off: pick
    it no better than the worst value you care about. Sweep in the first objective,
    O(n log n).
    """
    array = _as_array(points)
    ref_x, ref_y = reference
    array = array[(array[:, 0] < ref_x) & (array[:, 1] < ref_y)]
    area, lowest = 0.0, float(ref_y)
    for x, y in array[np.lexsort((array[:, 1], array[:, 0]))]:
        if y < lowest:
            area += (ref_x - x) * (lowest - y)
            lowest = y
    return float(area)
