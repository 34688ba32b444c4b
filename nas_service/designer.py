"""Regularized (aging) evolution and random search behind an ask/tell interface.

A designer is pure (numpy and the standard library) and its whole state is the list of
trials: the proposal for birth n draws from `np.random.default_rng([seed, n])` and from the
trials as they stand, so any process can rebuild it from stored rows (`from_trials`) and
propose exactly what the original would have. It never proposes a key twice.

Evolution follows Real et al. (2019): the population is the last `population_size` finished
trials by birth (the oldest dies), a parent wins a tournament among `tournament_size`
distinct members drawn uniformly, and the child is one mutation of it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import numpy as np

from nas_service.pareto import crowding_distance, nondominated_ranks
from search_space import SearchSpace, mutate, sample, spec_hash

Objectives = tuple[float, float]  # (quality, cost), both minimised

MAX_DRAWS = 50  # mutations of the winner, then random samples, tried before giving up


@dataclass(frozen=True)
class Trial:
    """A proposal and, once told, its outcome: a designer's whole state is a list of these."""

    key: str
    spec: Any
    birth: int
    objectives: Objectives | None = None  # None while pending and when it failed
    feasible: bool = True  # False: violates the constraint, loses every tournament
    parent: str | None = None
    mutation: str = ""


@dataclass(frozen=True)
class Proposal:
    """What `ask` returns: a spec to evaluate, known by its key and birth."""

    spec: Any
    key: str
    birth: int
    parent: str | None  # key of the tournament winner, None when not a mutation
    mutation: str  # "initial", "random sample" or the space's description of the mutation


class SpaceLike(Protocol):
    """What a designer needs of a space; the NAS space, NAS-Bench-201 and test toys all fit.

    `sample` and `mutate` must draw only from the generator they are given (so proposals
    replay) and `key` must be canonical: equal specs, equal keys.
    """

    def sample(self, rng: np.random.Generator) -> Any: ...

    def mutate(self, spec: Any, rng: np.random.Generator) -> tuple[Any, str]: ...

    def key(self, spec: Any) -> str: ...


class ArchSearchSpace:
    """A `search_space.SearchSpace` seen as a `SpaceLike`: keys are canonical spec hashes."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def sample(self, rng: np.random.Generator) -> Any:
        return sample(self.space, rng)

    def mutate(self, spec: Any, rng: np.random.Generator) -> tuple[Any, str]:
        return mutate(spec, self.space, rng)

    def key(self, spec: Any) -> str:
        return spec_hash(spec)


class SearchExhausted(RuntimeError):
    """No unseen key turned up within the allowed draws: the space is (nearly) used up."""


# An ordering maps the population to one sort key per member; the smallest key wins.
Ordering = Callable[[Sequence[Trial]], list[tuple[float, ...]]]


def _objectives(trial: Trial) -> Objectives:
    assert trial.objectives is not None, "the population holds finished trials only"
    return trial.objectives


def constrained_order(members: Sequence[Trial]) -> list[tuple[float, ...]]:
    """Feasible first, then the lower quality objective; ties go to the younger member."""
    return [(not m.feasible, _objectives(m)[0], -m.birth) for m in members]


def pareto_order(members: Sequence[Trial]) -> list[tuple[float, ...]]:
    """NSGA-II's crowded comparison within the population, feasible members first.

    Ranks are computed among the feasible and the infeasible members separately and crowding
    distance within each front (comparing crowding across fronts means nothing). Remaining
    ties go to the younger member: it will outlive the other, so its line is the one to grow.
    """
    keys: list[tuple[float, ...]] = [()] * len(members)
    for feasible in (True, False):
        group = [i for i, m in enumerate(members) if m.feasible == feasible]
        points = [_objectives(members[i]) for i in group]
        ranks = nondominated_ranks(points)
        for rank in set(ranks):
            front = [j for j, r in enumerate(ranks) if r == rank]
            distances = crowding_distance([points[j] for j in front])
            for j, distance in zip(front, distances, strict=True):
                keys[group[j]] = (not feasible, rank, -distance, -members[group[j]].birth)
    return keys


ORDERINGS: dict[str, Ordering] = {"pareto": pareto_order, "constrained": constrained_order}


@dataclass(frozen=True)
class EvolutionConfig:
    """The paper leaves population and tournament sizes open (Primer used 100 and 10)."""

    population_size: int = 20
    tournament_size: int = 5
    mode: Literal["pareto", "constrained"] = "pareto"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.tournament_size <= self.population_size:
            raise ValueError(
                f"need 1 <= tournament_size <= population_size, got {self.tournament_size} "
                f"and {self.population_size}"
            )
        if self.mode not in ORDERINGS:
            raise ValueError(f"unknown mode {self.mode!r} (known: {sorted(ORDERINGS)})")


# A candidate proposal: spec, parent key, mutation description.
Candidate = tuple[Any, str | None, str]


class _Designer(ABC):
    """Trial bookkeeping and deduplicated, per-birth seeded proposals."""

    def __init__(self, space: SpaceLike, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        self._trials: list[Trial] = []
        self._births: dict[str, int] = {}

    @property
    def trials(self) -> list[Trial]:
        """Every trial, pending ones included, in birth order."""
        return list(self._trials)

    def ask(self) -> Proposal:
        """The next proposal, recorded at once as a pending trial (`SearchExhausted` if none)."""
        birth = len(self._trials)
        for spec, parent, mutation in self._candidates(np.random.default_rng([self.seed, birth])):
            key = self.space.key(spec)
            if key not in self._births:
                self._add(Trial(key, spec, birth, parent=parent, mutation=mutation))
                return Proposal(spec, key, birth, parent, mutation)
        raise SearchExhausted(f"every candidate drawn for birth {birth} was already proposed")

    def add(self, spec: Any, mutation: str) -> Proposal:
        """Record a spec chosen outside the designer (a block a person added) as the next
        trial; it replays like any other, since a designer's state is its trials."""
        key = self.space.key(spec)
        if key in self._births:
            raise ValueError(f"{key!r} was already proposed (birth {self._births[key]})")
        birth = len(self._trials)
        self._add(Trial(key, spec, birth, mutation=mutation))
        return Proposal(spec, key, birth, None, mutation)

    def retract(self, key: str) -> None:
        """Take back the latest proposal when it could not be stored, so that births stay
        those of the stored trials (a rebuilt designer must see the same history)."""
        if not self._trials or self._trials[-1].key != key:
            raise KeyError(f"only the latest proposal can be retracted, not {key!r}")
        trial = self._trials.pop()
        del self._births[trial.key]

    def tell(self, key: str, objectives: Objectives | None, feasible: bool = True) -> None:
        """Record a trial's outcome; None means it failed, diverged or was cancelled.

        `feasible=False` marks a finished trial that breaks the constraint (e.g. too slow): it
        stays in the population, so it ages out like any other, but never wins a tournament.
        A repeated report replaces the previous one (the controller keeps reports unique).
        """
        if key not in self._births:
            raise KeyError(f"no trial with key {key!r}")
        if objectives is not None:
            objectives = (float(objectives[0]), float(objectives[1]))
            if not all(map(math.isfinite, objectives)):
                raise ValueError(f"non-finite objectives {objectives} for {key!r}: report None")
        birth = self._births[key]
        self._trials[birth] = replace(self._trials[birth], objectives=objectives, feasible=feasible)

    def _add(self, trial: Trial) -> None:
        self._trials.append(trial)
        self._births[trial.key] = trial.birth

    def _load(self, trials: Iterable[Trial]) -> None:
        for birth, trial in enumerate(sorted(trials, key=lambda t: t.birth)):
            if trial.birth != birth or trial.key in self._births:
                raise ValueError(f"trials must have births 0..n-1 and unique keys: {trial}")
            self._add(trial)

    def _samples(self, rng: np.random.Generator) -> Iterator[Candidate]:
        for _ in range(MAX_DRAWS):
            yield self.space.sample(rng), None, "random sample"

    @abstractmethod
    def _candidates(self, rng: np.random.Generator) -> Iterator[Candidate]:
        """Candidates in order of preference; `ask` takes the first with an unseen key."""


class RandomSearch(_Designer):
    """Uniform samples, never a key twice: the baseline that evolution has to beat."""

    def _candidates(self, rng: np.random.Generator) -> Iterator[Candidate]:
        return self._samples(rng)


class RegularizedEvolution(_Designer):
    """Aging evolution with tournament selection; `config.mode` picks the tournament order.

    Births start with the `initial` specs, then the `warm` ones (specs of earlier searches,
    each with the words its mutation says), duplicates by key skipped; then random samples
    until `population_size` proposals exist; after that a child mutates the tournament
    winner, or is sampled at random while fewer than `tournament_size` trials have finished.
    """

    def __init__(
        self,
        space: SpaceLike,
        config: EvolutionConfig,
        initial: Sequence[Any] = (),
        warm: Sequence[tuple[Any, str]] = (),
    ):
        super().__init__(space, config.seed)
        self.config = config
        seeded = [*((spec, "initial") for spec in initial), *warm]
        self._initial: dict[str, tuple[Any, str]] = {}  # dicts keep the order
        for spec, mutation in seeded:
            self._initial.setdefault(space.key(spec), (spec, mutation))

    @classmethod
    def from_trials(
        cls,
        space: SpaceLike,
        config: EvolutionConfig,
        trials: Iterable[Trial],
        initial: Sequence[Any] = (),
        warm: Sequence[tuple[Any, str]] = (),
    ) -> RegularizedEvolution:
        """The designer that proposed and was told `trials` (same config and seeded specs)."""
        designer = cls(space, config, initial, warm)
        designer._load(trials)
        return designer

    def population(self) -> list[Trial]:
        """The living members: the last `population_size` finished trials by birth."""
        living: list[Trial] = []
        for trial in reversed(self._trials):
            if len(living) == self.config.population_size:
                break
            if trial.objectives is not None:
                living.append(trial)
        return living[::-1]

    def _candidates(self, rng: np.random.Generator) -> Iterator[Candidate]:
        pending = next((k for k in self._initial if k not in self._births), None)
        if pending is not None:
            spec, mutation = self._initial[pending]
            yield spec, None, mutation
            return
        population = self.population()
        if (
            len(self._trials) >= self.config.population_size
            and len(population) >= self.config.tournament_size
        ):
            parent = self._tournament(population, rng)
            for _ in range(MAX_DRAWS):
                child, mutation = self.space.mutate(parent.spec, rng)
                yield child, parent.key, mutation
        yield from self._samples(rng)

    def _tournament(self, population: list[Trial], rng: np.random.Generator) -> Trial:
        keys = ORDERINGS[self.config.mode](population)
        drawn = rng.choice(len(population), size=self.config.tournament_size, replace=False)
        return population[min(drawn.tolist(), key=keys.__getitem__)]
