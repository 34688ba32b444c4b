"""Where a job's slot time goes: training steps, compiling, evaluating, timing the
reference, the rest of each trial (actor and JAX start-up, building the model, the result's
way back), and idle slots.

Runs the demo's job (20 trials of 15 s on 2 slots, the built-in corpus, pareto mode) through
the real runner on a local Ray, then reads the shares from the job's own records: every
trial's and run's `train_s`, `compile_s`, `eval_s`, `reference_s` and `data_s`, its wall time
(`started_at` to `finished_at`), and the job's span x its slots.

    python bench/utilisation.py --json bench/out/utilisation_demo.json
    python bench/utilisation.py --budget 60 --trials 8 --json bench/out/utilisation_60s.json
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray
from figures import write_json
from sqlalchemy import select

from nas_service import jobs
from nas_service.db import Database
from nas_service.job_config import JobConfig
from nas_service.models import Candidate, Job, Run
from nas_service.runner import Runner
from nas_service.settings import Settings

PARTS = ("train_s", "compile_s", "eval_s", "reference_s", "data_s")


def shares(db: Database, job_id: int) -> dict[str, Any]:
    """The job's slot time split into parts, from its rows."""
    with db.sessions() as session:
        job = session.get(Job, job_id)
        rows = [
            *session.scalars(select(Candidate).where(Candidate.job_id == job_id)),
            *session.scalars(select(Run).where(Run.job_id == job_id)),
        ]
    slots = job.config["workers"]["concurrency"]
    span = (job.finished_at - job.started_at).total_seconds()
    ran = [r for r in rows if r.started_at is not None and r.finished_at is not None]
    totals = {part: sum(getattr(r, part) or 0.0 for r in ran) for part in PARTS}
    walls = sum((r.finished_at - r.started_at).total_seconds() for r in ran)
    slot_time = span * slots
    figures = {part.removesuffix("_s"): totals[part] / slot_time for part in PARTS}
    figures["other in trial"] = (walls - sum(totals.values())) / slot_time
    figures["idle"] = 1.0 - walls / slot_time
    first_start = min(r.started_at for r in ran)
    return {
        "trials": len(ran),
        "slots": slots,
        "span_s": span,
        "to_first_trial_s": (first_start - job.started_at).total_seconds(),
        "mean_trial_wall_s": walls / len(ran),
        "shares": figures,
    }


def demo_config(trials: int, budget: float, data: str, population: int | None) -> JobConfig:
    """The job `nas demo` submits (its population: the job's default unless given)."""
    evolution = {"population_size": population, "tournament_size": 3} if population else {}
    return JobConfig.model_validate(
        {
            "name": "demo",
            "dataset": data,
            "search_space": {"preset": "proxy-cpu"},
            "objective": {"mode": "pareto"},
            "trial": {"budget_s": budget},
            "limits": {"max_trials": trials},
            "evolution": evolution,
            "workers": {"concurrency": 2},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--budget", type=float, default=15.0, help="training seconds per trial")
    parser.add_argument("--data", default="builtin:stdlib")
    parser.add_argument("--population", type=int, help="default: the job config's")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    config = demo_config(args.trials, args.budget, args.data, args.population)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as home:
        db = Database(f"sqlite:///{Path(home) / 'nas.db'}")
        db.upgrade()
        job = jobs.submit(db, config)
        runner = Runner(Settings(runner_id="bench", jax_cache_dir=str(Path(home) / "jax")), db)
        start = time.perf_counter()
        runner.run(threading.Event(), until_idle=True)
        wall = time.perf_counter() - start
        figures = shares(db, job.id)
        db.dispose()
    figures.update(trials_asked=args.trials, budget_s=args.budget, wall_s=wall)
    print(
        f"{figures['trials']} trials of {args.budget:g} s on {figures['slots']} slots: "
        f"span {figures['span_s']:.0f} s, first trial after {figures['to_first_trial_s']:.1f} s, "
        f"mean trial wall {figures['mean_trial_wall_s']:.1f} s"
    )
    for part, share in figures["shares"].items():
        print(f"  {part:>15}: {share:6.1%}")
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
