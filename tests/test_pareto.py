"""Pareto math against hand-worked examples and O(n^2) brute force."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nas_service.pareto import crowding_distance, hypervolume_2d, nondominated_ranks, pareto_front

small_ints = st.integers(min_value=0, max_value=6)
int_points = st.lists(st.tuples(small_ints, small_ints), max_size=14)
float_points = st.lists(
    st.tuples(*[st.floats(min_value=-1e3, max_value=1e3, allow_subnormal=False)] * 2),
    min_size=1,
    max_size=20,
)


def dominates(a, b):
    return a[0] <= b[0] and a[1] <= b[1] and a != b


def brute_front(points):
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]


def brute_ranks(points):
    """Peel fronts one at a time."""
    ranks, left, rank = [None] * len(points), set(range(len(points))), 0
    while left:
        front = {i for i in left if not any(dominates(points[j], points[i]) for j in left)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


def brute_hypervolume(points, reference):
    """Count the unit cells of the integer grid covered by some point's box."""
    rx, ry = reference
    return sum(any(x <= a and y <= b for x, y in points) for a in range(rx) for b in range(ry))


def test_front_and_ranks_by_hand():
    points = [(1, 5), (2, 2), (3, 3), (5, 1), (2, 2), (4, 4), (1, 6)]
    assert pareto_front(points) == [0, 1, 3, 4]
    assert nondominated_ranks(points) == [0, 0, 1, 0, 0, 2, 1]
    assert pareto_front([]) == [] and nondominated_ranks([]) == []


def test_equal_first_objective_dominates_by_second():
    assert nondominated_ranks([(1, 3), (1, 2), (1, 2), (1, 1)]) == [2, 1, 1, 0]


def test_crowding_distance_by_hand():
    points = [(0, 4), (1, 2), (2, 1), (4, 0)]
    # (1, 2): first-objective neighbours 0 and 2 over a range of 4, second 1 and 4 over 4.
    assert crowding_distance(points) == [math.inf, 2 / 4 + 3 / 4, 3 / 4 + 2 / 4, math.inf]
    assert crowding_distance([(1, 1), (2, 0)]) == [math.inf, math.inf]
    assert crowding_distance([]) == []


def test_crowding_distance_with_a_constant_objective():
    assert crowding_distance([(0, 1), (1, 1), (3, 1)]) == [math.inf, 1.0, math.inf]


def test_hypervolume_by_hand():
    points = [(1, 3), (2, 2), (3, 1)]
    # Horizontal strips under the staircase to (4, 4): 3 x 1 + 2 x 1 + 1 x 1.
    assert hypervolume_2d(points, (4, 4)) == 6.0
    assert hypervolume_2d([(0.5, 0.25)], (1.0, 1.0)) == 0.5 * 0.75
    assert hypervolume_2d([], (1.0, 1.0)) == 0.0


def test_points_not_strictly_better_than_the_reference_add_nothing():
    assert hypervolume_2d([(1, 0), (0, 1), (2, -1)], (1, 1)) == 0.0
    assert hypervolume_2d([(1, 0), (0, 0.5)], (1, 1)) == 0.5


@given(int_points)
def test_front_matches_brute_force(points):
    assert pareto_front(points) == brute_front(points)


@given(int_points)
def test_ranks_match_brute_force(points):
    assert nondominated_ranks(points) == brute_ranks(points)


@given(int_points, st.tuples(small_ints, small_ints))
def test_hypervolume_matches_grid_count(points, reference):
    assert hypervolume_2d(points, reference) == brute_hypervolume(points, reference)


@given(float_points, st.randoms(use_true_random=False))
def test_results_do_not_depend_on_the_order_of_points(points, random):
    order = list(range(len(points)))
    random.shuffle(order)
    shuffled = [points[i] for i in order]
    assert [nondominated_ranks(points)[i] for i in order] == nondominated_ranks(shuffled)
    assert sorted(pareto_front(points)) == sorted(order[i] for i in pareto_front(shuffled))
    reference = (1e3 + 1, 1e3 + 1)
    assert hypervolume_2d(shuffled, reference) == pytest.approx(hypervolume_2d(points, reference))


@given(float_points, st.floats(0, 100), st.floats(0, 100))
def test_dominated_points_do_not_change_the_hypervolume(points, dx, dy):
    reference = (1e3 + 1, 1e3 + 1)
    x, y = points[0]
    before = hypervolume_2d(points, reference)
    assert hypervolume_2d([*points, (x + dx, y + dy)], reference) == pytest.approx(before)
    front = [points[i] for i in pareto_front(points)]
    assert hypervolume_2d(front, reference) == pytest.approx(before)


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=3, max_size=20))
def test_crowding_distance_boundaries_are_infinite(points):
    distance = crowding_distance(points)
    assert sum(math.isinf(d) for d in distance) >= 2
    assert all(d >= 0 for d in distance)
