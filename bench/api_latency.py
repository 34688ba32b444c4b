"""API latency with a 100,000-candidate job, over real HTTP (uvicorn in its own process).

Endpoints: a page of candidates (first and deep), sorted by a metric, filtered by status, a
job with its progress, the Pareto front with the scatter as a client gets it by default (the
front exactly plus a binned scatter of at most 5,000 points; once computed it is served
from a cache until a trial finishes), binned anew on every request, and with every scored
point (`max_points=1000000`), column by column, the hypervolume history, a candidate in full,
the feature importance (fitted on the first request, then cached until a trial completes)
and the comparison of two jobs (a second job of as many candidates). Each is timed alone
(sequential requests after one first request, whose time is `first_ms`), then mixed
requests from several concurrent clients measure latency under load.

Candidates have real specs sampled from the proxy-cpu space (their features feed the
importance); their metrics are random, as before.

    python bench/api_latency.py --candidates 100000 --json bench/out/api_latency.json
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from figures import write_json
from sqlalchemy import insert

from api.cli.local_server import start_server, stop_server
from nas_service.db import Database
from nas_service.job_config import JobConfig
from nas_service.models import Candidate, Job
from search_space import sample, spec_hash
from search_space.space import PROXY_CPU

STATUSES = ("completed", "completed", "completed", "pruned", "failed", "diverged")
REFERENCE_MS = 100.0  # the baseline's step time on every slot
DEVICE_KIND = "cpu:benchmark"


def distinct_specs(n: int, rng: np.random.Generator) -> list[tuple[dict, str]]:
    """`n` distinct specs of the proxy-cpu space (as JSON, with their hash)."""
    found: dict[str, dict] = {}
    while len(found) < n:
        spec = sample(PROXY_CPU, rng)
        found.setdefault(spec_hash(spec), spec.model_dump(mode="json"))
    return [(spec, digest) for digest, spec in found.items()]


def populate(url: str, n: int, seed: int = 0) -> tuple[int, int]:
    """A finished job with `n` candidates of random metrics; returns (job id, a candidate id)."""
    db = Database(url)
    db.upgrade()
    rng = np.random.default_rng(seed)
    specs = distinct_specs(n, rng)
    config = JobConfig(
        name="latency", dataset="builtin:stdlib", limits={"max_trials": n}
    ).model_dump(mode="json")
    with db.transaction() as session:
        job = Job(name="latency", config=config, status="completed")
        session.add(job)
        session.flush()
        job_id, start_time = job.id, job.created_at
    step = rng.uniform(50, 300, n)
    quality = 2.0 + 40.0 / step + rng.exponential(0.3, n)  # a trade-off with noise
    for start in range(0, n, 5000):
        rows = []
        for i in range(start, min(n, start + 5000)):
            status = STATUSES[i % len(STATUSES)]
            scored = status in ("completed", "pruned")
            rows.append(
                {
                    "job_id": job_id,
                    "spec": specs[i][0],
                    "spec_hash": specs[i][1],
                    "birth": i,
                    "mutation": "",
                    "status": status,
                    "attempt": 1,
                    "is_baseline": i == 0,
                    "perplexity": float(quality[i]) if scored else None,
                    "step_time_ms": float(step[i]) if scored else None,
                    # the baseline block timed at 100 ms on the same slot
                    "reference_step_time_ms": REFERENCE_MS if scored else None,
                    "step_time_ratio": float(step[i]) / REFERENCE_MS if scored else None,
                    "device_kind": DEVICE_KIND,
                    "feasible": True,
                    "reason": None if scored else "benchmark",
                    "finished_at": start_time + timedelta(seconds=2 * i),
                }
            )
        with db.transaction() as session:
            session.execute(insert(Candidate), rows)
    db.dispose()
    return job_id, n // 2


def timed(client: httpx.Client, path: str) -> float:
    start = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed * 1e3


def measure(url: str, n: int, requests: int, concurrency: int, load_s: float) -> dict[str, Any]:
    job_id, candidate_id = populate(url, n)
    other_job, _ = populate(url, n, seed=1)
    server, base = start_server("--no-runner", "--database-url", url)
    try:
        job = f"/api/v1/jobs/{job_id}"
        endpoints = {
            "page": f"{job}/candidates?limit=50",
            "deep_page": f"{job}/candidates?limit=50&offset={n // 2}",
            "sort_perplexity": f"{job}/candidates?sort=perplexity&limit=50",
            "filter_failed": f"{job}/candidates?status=failed&limit=50",
            "job_progress": job,
            "pareto": f"{job}/pareto",
            # Budgets alternating between requests: the server keeps one scatter per job, so
            # every request bins the job again (as after each finished trial of a live job).
            "pareto_uncached": [f"{job}/pareto?max_points={5000 - k}" for k in (1, 0)],
            "pareto_every_point": f"{job}/pareto?max_points=1000000",
            "hypervolume": f"{job}/hypervolume",
            "candidate": f"/api/v1/candidates/{candidate_id}",
            "importance": f"{job}/importance",
            "compare": f"/api/v1/compare?jobs={job_id},{other_job}",
        }
        figures: dict[str, Any] = {"endpoints": {}}
        with httpx.Client(base_url=base, timeout=120) as client:
            for name, path in endpoints.items():
                paths = path if isinstance(path, list) else [path]
                first = timed(client, paths[-1])  # warms (and fills) the server's caches
                times = [timed(client, paths[i % len(paths)]) for i in range(requests)]
                last = client.get(paths[-1])
                figures["endpoints"][name] = {
                    "p50_ms": float(np.percentile(times, 50)),
                    "p99_ms": float(np.percentile(times, 99)),
                    "first_ms": first,
                    "bytes": len(last.content),
                }
                if "/pareto" in paths[-1]:
                    body = last.json()
                    figures["endpoints"][name].update(
                        points=len(body["points"]["id"]),
                        front=len(body["front"]),
                        total=body.get("total"),
                        reduced=body.get("reduced"),
                    )
        light: list[Any] = [
            endpoints[k]
            for k in ("page", "sort_perplexity", "filter_failed", "job_progress", "candidate")
        ]
        samples: list[float] = []
        stop = time.monotonic() + load_s

        def client_loop(offset: int) -> None:
            with httpx.Client(base_url=base, timeout=120) as client:
                i = offset
                while time.monotonic() < stop:
                    samples.append(timed(client, light[i % len(light)]))
                    i += 1

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        figures["under_load"] = {
            "clients": concurrency,
            "requests_per_s": len(samples) / load_s,
            "p50_ms": float(np.percentile(samples, 50)),
            "p99_ms": float(np.percentile(samples, 99)),
        }
        return figures
    finally:
        stop_server(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=30, help="per endpoint, sequential")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--load-seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure(
            f"sqlite:///{tmp}/latency.db",
            args.candidates,
            args.requests,
            args.concurrency,
            args.load_seconds,
        )
    figures.update(candidates=args.candidates, when=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    print(f"{'endpoint':18} {'p50 ms':>8} {'p99 ms':>8} {'first ms':>9} {'bytes':>10}")
    for name, row in figures["endpoints"].items():
        points = f"  {row['points']:,d} points" if "points" in row else ""
        print(
            f"{name:18} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f} {row['first_ms']:9.1f} "
            f"{row['bytes']:10,d}{points}"
        )
    load = figures["under_load"]
    print(
        f"under load, {load['clients']} clients: {load['requests_per_s']:.0f} req/s, "
        f"p50 {load['p50_ms']:.1f} ms, p99 {load['p99_ms']:.1f} ms"
    )
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
