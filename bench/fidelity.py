"""How well does a short trial rank blocks like a longer one, and how big is seed noise?

Runs a search with the recommended ladder (`examples/ladder.yaml`, without its confirmation)
through the real runner on a local Ray and reports what the job measured of itself
(`GET /jobs/{id}/fidelity`): the rank correlation between rung 0 (the search's trials) and
rung 1 (4x the budget, 2 seeds) with bootstrap intervals and the number of candidates
behind them, top-k recall, and at each rung the seed noise next to the spread between
candidates.

    python bench/fidelity.py --json bench/out/fidelity.json
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray
import yaml
from figures import write_json
from proxy_throughput import DEFAULT_DATA

from nas_service import jobs, queries
from nas_service.db import Database
from nas_service.job_config import JobConfig
from nas_service.runner import Runner
from nas_service.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ladder.yaml"


def run_job(config: JobConfig, home: Path) -> tuple[Database, int, float]:
    """Submit and run one job to its end; (database, job id, wall seconds)."""
    db = Database(f"sqlite:///{home / 'nas.db'}")
    db.upgrade()
    job = jobs.submit(db, config)
    runner = Runner(Settings(runner_id="bench", jax_cache_dir=str(home / "jax")), db)
    start = time.perf_counter()
    runner.run(threading.Event(), until_idle=True)
    return db, job.id, time.perf_counter() - start


def _interval(pair: dict[str, Any], name: str) -> str:
    interval = pair[f"{name}_interval"]
    value = pair[name]
    if value is None:
        return "-"
    return f"{value:.2f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=f"text:{DEFAULT_DATA}")
    parser.add_argument("--trials", type=int, help="default: the example's")
    parser.add_argument("--budget", type=float, help="trial seconds; default: the example's")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    raw = yaml.safe_load(EXAMPLE.read_text())
    raw.pop("confirm")
    raw["dataset"] = args.data
    if args.trials:
        raw["limits"]["max_trials"] = args.trials
    if args.budget:
        raw["trial"]["budget_s"] = args.budget
    config = JobConfig.model_validate(raw)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as home:
        db, job_id, wall_s = run_job(config, Path(home))
        fidelity = queries.fidelity(db, job_id)
        rungs = queries.rungs(db, job_id)
        statuses: dict[str, int] = {}
        for row in jobs.candidates(db, job_id):
            statuses[row.status] = statuses.get(row.status, 0) + 1
        db.dispose()
    print(f"{config.limits.max_trials} trials of {config.trial.budget_s:g} s, ladder "
          f"{[r.model_dump() for r in config.fidelity.rungs]}, random share "
          f"{config.fidelity.random_share}, {wall_s / 60:.1f} min; rung 0: {statuses}")  # fmt: skip
    for pair in fidelity["pairs"]:
        origins: dict[str, int] = {}
        for point in pair["points"]:
            origins[point["origin"]] = origins.get(point["origin"], 0) + 1
        print(
            f"rung {pair['low']} vs {pair['high']}: n {pair['n']} ({origins}), Kendall "
            f"{_interval(pair, 'kendall')}, Spearman {_interval(pair, 'spearman')}, top-"
            f"{pair['top_k']} recall {pair['top_k_recall']}"
        )
    for noise in fidelity["noise"]:
        floor, spread = noise["noise_floor"], noise["spread"]
        print(
            f"rung {noise['rung']}: seed noise (val_loss sd) "
            f"{'-' if floor is None else f'{floor:.4f}'} over {noise['noise_candidates']} "
            f"candidates x seeds ({noise['noise_runs']} runs); spread between candidates "
            f"{'-' if spread is None else f'{spread:.4f}'} over {noise['spread_candidates']}"
        )
    print(f"hurdle margin (auto): {fidelity['margin']}")
    write_json(
        args.json,
        {
            "config": config.model_dump(mode="json"),
            "wall_s": wall_s,
            "rung0_statuses": statuses,
            "fidelity": fidelity,
            "rungs": rungs,
        },
    )


if __name__ == "__main__":
    main()
