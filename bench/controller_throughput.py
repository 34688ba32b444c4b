"""Controller throughput with instant trials: designer -> database -> Ray -> database.

A no-op evaluator on real Ray actors answers every trial at once, so what is measured is
the controller: proposing (designer ask), writing the candidate row, dispatching to an
actor, recording the result once (row update, curve points, event) and telling the designer.
Reports sustained trials/s and p50/p99 controller time per trial, on SQLite and PostgreSQL.

    python bench/controller_throughput.py --trials 2000 \
        --postgres postgresql://postgres@127.0.0.1:5432/test --json bench/out/controller.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import ray
from figures import write_json
from sqlalchemy import create_engine, text

from nas_service import jobs
from nas_service.db import Database, normalize_url
from nas_service.job_config import JobConfig
from nas_service.runner import Runner
from nas_service.settings import Settings


class InstantWorker:
    """Answers a trial immediately with plausible metrics derived from the spec."""

    def __init__(self, slot: int):
        self.slot = slot

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        digest = hashlib.sha256(json.dumps(request["spec"], sort_keys=True).encode()).digest()
        quality = 2.0 + digest[0] / 255
        step_ms = 50.0 + digest[1] / 2.55
        result = {
            "status": "ok",
            "val_loss": float(np.log(quality)),
            "perplexity": quality,
            "step_time_ms": step_ms,
            "reference_step_time_ms": 100.0,
            "step_time_ratio": step_ms / 100.0,
            "steps": 10,
            "curve": [[0.1 * i, 5.0 - 0.2 * i] for i in range(10)],
            "smoothed_loss_at": {"0.25": 4.0, "0.5": 3.5, "1": 3.0},
            "device": {"platform": "none", "device_kind": "instant"},
        }
        return {
            "candidate_id": request["candidate_id"],
            "attempt": request["attempt"],
            "node_id": "instant",
            "slot": self.slot,
            "result": result,
        }

    def cancel(self, candidate_id: int, attempt: int) -> None:
        pass


def instant_actor(slot: int, **_: Any) -> Any:
    return ray.remote(InstantWorker).options(num_cpus=0, max_concurrency=2).remote(slot)


class TimedRunner(Runner):
    """Adds up the controller's own time per candidate (ask + write, send, record + tell)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.spent: dict[int, float] = defaultdict(float)
        self.first_dispatch: float | None = None

    def _start_next(self, state, slot):
        start = time.perf_counter()
        started = super()._start_next(state, slot)
        if started is not None:
            self.spent[started[0]] += time.perf_counter() - start
            self.first_dispatch = self.first_dispatch or start
        return started

    def _send(self, state, candidate_id, *args):
        start = time.perf_counter()
        super()._send(state, candidate_id, *args)
        self.spent[candidate_id] += time.perf_counter() - start

    def _record(self, reports):
        start = time.perf_counter()
        super()._record(reports)
        share = (time.perf_counter() - start) / len(reports)  # one transaction for the batch
        for _, flight, _ in reports:
            self.spent[flight.candidate_id] += share


def measure(url: str, trials: int, concurrency: int, data: str) -> dict[str, float]:
    db = Database(url, durable=False)  # as the runner opens it
    db.upgrade()
    config = JobConfig.model_validate(
        {
            "name": "throughput",
            "dataset": data,
            "limits": {"max_trials": trials},
            "evolution": {"population_size": 20, "tournament_size": 5},
            "workers": {"concurrency": concurrency, "cpus_per_trial": 0},
        }
    )
    job = jobs.submit(db, config)
    settings = Settings(runner_id=f"bench-{uuid.uuid4().hex[:6]}", poll_s=0.01, heartbeat_s=1.0)
    runner = TimedRunner(settings, db, worker_factory=instant_actor)
    runner.run(threading.Event(), until_idle=True)
    end = time.perf_counter()
    assert jobs.get(db, job.id).status == "completed"
    statuses = {c.status for c in jobs.candidates(db, job.id)}
    assert statuses == {"completed"}, f"instant trials must all complete, got {statuses}"
    spent_ms = np.array(list(runner.spent.values())) * 1e3
    elapsed = end - runner.first_dispatch
    db.dispose()
    return {
        "trials": len(spent_ms),
        "seconds": elapsed,
        "trials_per_s": len(spent_ms) / elapsed,
        "overhead_p50_ms": float(np.percentile(spent_ms, 50)),
        "overhead_p99_ms": float(np.percentile(spent_ms, 99)),
    }


def postgres_schema_url(base: str) -> tuple[str, Any]:
    base = normalize_url(base)
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--data", default="builtin:stdlib")
    parser.add_argument("--postgres", help="PostgreSQL URL (a throwaway schema is used)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    ray.init(include_dashboard=False, log_to_driver=False)
    figures: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "concurrency": args.concurrency,
    }
    with tempfile.TemporaryDirectory() as tmp:
        figures["sqlite"] = measure(
            f"sqlite:///{tmp}/bench.db", args.trials, args.concurrency, args.data
        )
    if args.postgres:
        url, drop = postgres_schema_url(args.postgres)
        try:
            figures["postgresql"] = measure(url, args.trials, args.concurrency, args.data)
        finally:
            drop()
    ray.shutdown()
    print(f"{'database':12} {'trials':>7} {'trials/s':>9} {'p50 ms':>7} {'p99 ms':>7}")
    for name in ("sqlite", "postgresql"):
        if name in figures:
            f = figures[name]
            print(
                f"{name:12} {f['trials']:7d} {f['trials_per_s']:9.1f} "
                f"{f['overhead_p50_ms']:7.2f} {f['overhead_p99_ms']:7.2f}"
            )
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
