"""The ask/tell designers: phases, aging, tournaments, dedup, restart safety, and that it works."""

import numpy as np
import pytest

from nas_service.designer import (
    ArchSearchSpace,
    EvolutionConfig,
    RandomSearch,
    RegularizedEvolution,
    SearchExhausted,
    Trial,
    pareto_order,
)
from search_space import BASELINES, PRESETS, baseline


class Bits:
    """Bit strings of a fixed length; a mutation flips one bit."""

    def __init__(self, length: int) -> None:
        self.length = length

    def sample(self, rng):
        return tuple(int(bit) for bit in rng.integers(0, 2, self.length))

    def mutate(self, spec, rng):
        i = int(rng.integers(self.length))
        return (*spec[:i], 1 - spec[i], *spec[i + 1 :]), f"flip {i}"

    def key(self, spec):
        return "".join(map(str, spec))


def ones(spec) -> tuple[float, float]:
    """Minimise the number of ones; the cost is the index of the first one."""
    return float(sum(spec)), float(spec.index(1) if 1 in spec else len(spec))


def run(designer, n, objective=ones):
    for _ in range(n):
        proposal = designer.ask()
        designer.tell(proposal.key, objective(proposal.spec))
    return designer


def test_initial_members_come_first_then_random_samples():
    space = Bits(12)
    a, b = (0,) * 12, (1,) * 12
    designer = RegularizedEvolution(space, EvolutionConfig(5, 2), initial=[a, b, a])
    proposals = [designer.ask() for _ in range(5)]
    assert [p.spec for p in proposals[:2]] == [a, b]
    assert [p.mutation for p in proposals] == ["initial"] * 2 + ["random sample"] * 3
    assert [p.birth for p in proposals] == list(range(5))
    assert all(p.parent is None for p in proposals)


def test_random_samples_until_a_tournament_can_be_held():
    designer = RegularizedEvolution(Bits(12), EvolutionConfig(4, 3))
    first = [designer.ask() for _ in range(4)]
    for p in first[:2]:
        designer.tell(p.key, ones(p.spec))
    assert designer.ask().mutation == "random sample"
    designer.tell(first[2].key, ones(first[2].spec))
    child = designer.ask()
    assert child.parent in {p.key for p in first[:3]} and child.mutation.startswith("flip")


def test_population_is_the_last_finished_trials_by_birth():
    designer = RegularizedEvolution(Bits(12), EvolutionConfig(3, 2))
    keys = [designer.ask().key for _ in range(8)]
    for i in (7, 0, 1, 2, 5):
        designer.tell(keys[i], (float(i), 0.0))
    designer.tell(keys[4], None)  # failed: never a member; 3 and 6 are still running
    assert [t.key for t in designer.population()] == [keys[2], keys[5], keys[7]]
    assert [t.birth for t in designer.trials] == list(range(8))


@pytest.mark.parametrize("mode", ["pareto", "constrained"])
def test_infeasible_members_never_win(mode):
    designer = RegularizedEvolution(Bits(16), EvolutionConfig(6, 2, mode=mode))
    members = [designer.ask() for _ in range(6)]
    for i, p in enumerate(members):
        designer.tell(p.key, (float(i), float(-i)), feasible=i != 0)  # 0 is the best, infeasible
    parents = {designer.ask().parent for _ in range(40)}
    assert members[0].key not in parents and len(parents) >= 3


def test_constrained_tournament_takes_the_lowest_quality_then_the_younger():
    designer = RegularizedEvolution(Bits(12), EvolutionConfig(4, 4, mode="constrained"))
    members = [designer.ask() for _ in range(4)]
    for p, quality in zip(members, [3.0, 1.0, 1.0, 2.0], strict=True):
        designer.tell(p.key, (quality, -quality))
    assert {designer.ask().parent for _ in range(5)} == {members[2].key}


def test_pareto_order_by_hand():
    points = [(0, 4), (1, 2), (2, 1.5), (4, 0), (3, 3), (0, 0)]
    members = [Trial(str(i), None, i, objectives=p, feasible=i != 5) for i, p in enumerate(points)]
    keys = pareto_order(members)
    # Boundaries (inf crowding) first, the younger first; then crowding 1.25 > 1.125; then the
    # dominated (3, 3); the infeasible (0, 0) last although it dominates everything.
    assert sorted(range(6), key=keys.__getitem__) == [3, 0, 2, 1, 4, 5]


def test_pareto_tournament_takes_the_front_member_with_most_room():
    designer = RegularizedEvolution(Bits(12), EvolutionConfig(5, 5, mode="pareto"))
    members = [designer.ask() for _ in range(5)]
    for p, objectives in zip(members, [(0, 4), (1, 2), (2, 1.5), (4, 0), (3, 3)], strict=True):
        designer.tell(p.key, objectives)
    assert designer.ask().parent == members[3].key
    designer.tell(members[3].key, (5.0, 5.0))  # dominated now: (2, 1.5) is the younger boundary
    assert designer.ask().parent == members[2].key


@pytest.mark.parametrize("kind", ["random", "evolution"])
def test_every_key_once_then_exhausted(kind):
    config = EvolutionConfig(4, 2)
    designer = RandomSearch(Bits(3)) if kind == "random" else RegularizedEvolution(Bits(3), config)
    run(designer, 8)
    assert len({t.key for t in designer.trials}) == 8
    with pytest.raises(SearchExhausted):
        designer.ask()


def test_tell_checks_its_input():
    designer = RandomSearch(Bits(8))
    key = designer.ask().key
    with pytest.raises(KeyError, match="no trial"):
        designer.tell("nope", (1.0, 1.0))
    with pytest.raises(ValueError, match="non-finite"):
        designer.tell(key, (float("nan"), 1.0))
    designer.tell(key, None)
    assert designer.trials[0].objectives is None


def test_config_and_trials_are_checked():
    with pytest.raises(ValueError, match="tournament_size"):
        EvolutionConfig(population_size=3, tournament_size=4)
    with pytest.raises(ValueError, match="mode"):
        EvolutionConfig(mode="lexicographic")
    gap = [Trial("0", (0,), 0), Trial("1", (1,), 2)]
    with pytest.raises(ValueError, match="births"):
        RegularizedEvolution.from_trials(Bits(1), EvolutionConfig(), gap)


def drive(designer, steps, rng, pending, objective):
    """Ask, and tell a random pending trial (some fail, some are infeasible), asynchronously."""
    proposals = []
    for _ in range(steps):
        proposal = designer.ask()
        proposals.append(proposal)
        pending.append(proposal)
        while pending and rng.random() < 0.6:
            done = pending.pop(int(rng.integers(len(pending))))
            outcome = None if rng.random() < 0.1 else objective(done.spec)
            designer.tell(done.key, outcome, feasible=rng.random() < 0.8)
    return proposals


def arch_objective(spec):
    return float(spec.block.d_model), float(len(spec.block.layers))


@pytest.mark.parametrize("mode", ["pareto", "constrained"])
@pytest.mark.parametrize(
    ("space", "initial", "objective", "steps"),
    [
        (Bits(24), [(0,) * 24], ones, 60),
        (
            ArchSearchSpace(PRESETS["proxy-cpu"]),
            [baseline(name) for name in ("dense", "glam", "glam-ec")],
            arch_objective,
            25,
        ),
    ],
    ids=["bits", "proxy-cpu"],
)
def test_rebuilt_designer_proposes_what_the_original_would(mode, space, initial, objective, steps):
    config = EvolutionConfig(population_size=8, tournament_size=3, mode=mode, seed=7)
    original = RegularizedEvolution(space, config, initial)
    pending: list = []
    drive(original, steps, np.random.default_rng(1), pending, objective)
    rebuilt = RegularizedEvolution.from_trials(space, config, original.trials, initial)
    assert rebuilt.trials == original.trials
    # Both go on with the same reports: every proposal must match.
    ahead = drive(original, steps, np.random.default_rng(2), list(pending), objective)
    again = drive(rebuilt, steps, np.random.default_rng(2), list(pending), objective)
    assert ahead == again
    assert any(p.parent is not None for p in ahead)
    fresh = RegularizedEvolution(space, config, initial)
    assert [p.key for p in run(fresh, 5, objective).trials] == [t.key for t in original.trials[:5]]


def test_arch_space_starts_with_the_baselines_and_stays_in_the_space():
    space = PRESETS["proxy-cpu"]
    initial = [baseline(name, space) for name in BASELINES]
    initial = [spec for spec in initial if space.contains(spec)]  # Switch's top-1 is not
    designer = RegularizedEvolution(ArchSearchSpace(space), EvolutionConfig(6, 2), initial)
    proposals = [p.spec for p in run(designer, 20, arch_objective).trials]
    assert proposals[: len(initial)] == initial
    for spec in proposals:
        space.check(spec)


def test_evolution_beats_random_search_on_a_planted_optimum():
    """Hamming distance to a hidden string of 20 bits, 150 evaluations, 20 seeds.

    Random search ends near distance 4 and evolution near 1; a tournament that ignored the
    objective (or preferred the worst) would walk randomly and lose to random search.
    """

    def best_distance(designer, target):
        def distance(spec):
            return float(np.sum(np.array(spec) != target)), 0.0

        return min(t.objectives[0] for t in run(designer, 150, distance).trials)

    space, re_best, rs_best = Bits(20), [], []
    for seed in range(20):
        target = np.random.default_rng([99, seed]).integers(0, 2, 20)
        config = EvolutionConfig(20, 5, mode="constrained", seed=seed)
        re_best.append(best_distance(RegularizedEvolution(space, config), target))
        rs_best.append(best_distance(RandomSearch(space, seed), target))
    assert np.mean(re_best) + 2 < np.mean(rs_best)


def children_when_run_as_the_runner_does(config, seed: int, baseline_alone: bool) -> list:
    """The proposals of a job's search, dispatched as the runner does: the objective's
    baseline first (alone until it finishes with `baseline_alone`, as while the runner
    calibrates the hurdle's margin), up to `workers.concurrency` trials in flight, each told
    when it finishes (durations vary); every trial succeeds."""
    from nas_service.designer import EvolutionConfig as Sizes
    from nas_service.runner import Runner

    space = config.search_space.space()
    sizes = Sizes(
        population_size=config.evolution.population_size,
        tournament_size=config.evolution.tournament_size,
        mode=config.objective.mode,
        seed=config.seed,
    )
    initial = Runner._initial(None, config)  # pure: the baseline first, then those in the space
    designer = RegularizedEvolution(ArchSearchSpace(space), sizes, initial)
    rng = np.random.default_rng(seed)
    proposals, running, clock = [], [], 0.0
    while len(proposals) < config.limits.max_trials or running:
        alone = baseline_alone and len(proposals) == 1 and running
        slots = 1 if alone else config.workers.concurrency
        while len(running) < slots and len(proposals) < config.limits.max_trials:
            proposal = designer.ask()
            proposals.append(proposal)
            running.append((clock + rng.uniform(1.0, 2.0), proposal))
            if baseline_alone and len(proposals) == 1:
                break
        running.sort(key=lambda item: item[0])
        clock, done = running.pop(0)
        designer.tell(done.key, (float(rng.uniform(5, 10)), float(rng.uniform(0.5, 2))))
    return proposals


@pytest.mark.parametrize("baseline_alone", [False, True])
@pytest.mark.parametrize("source", ["demo-20", "demo-6", "quick.yaml"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_derived_sizes_make_most_trials_children_of_tournaments(source, seed, baseline_alone):
    """With evolution's sizes left unset (the demo, examples/quick.yaml), at least half the
    trials mutate a tournament's winner; the former population of 20 gave none."""
    from pathlib import Path

    import yaml

    from api.cli.demo import demo_job
    from nas_service.job_config import JobConfig

    if source == "quick.yaml":
        path = Path(__file__).resolve().parents[1] / "examples" / "quick.yaml"
        data = yaml.safe_load(path.read_text())
    else:
        data = demo_job(int(source.split("-")[1]), 15.0, 2)
    assert "population_size" not in data.get("evolution", {})
    config = JobConfig.model_validate(data)
    proposals = children_when_run_as_the_runner_does(config, seed, baseline_alone)
    assert len(proposals) == config.limits.max_trials
    children = [p for p in proposals if p.parent is not None]
    assert 2 * len(children) >= len(proposals), [p.mutation for p in proposals]
    assert proposals[0].spec == baseline(config.objective.baseline)  # the reference first
