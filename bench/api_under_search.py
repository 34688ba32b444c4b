"""The API under dashboard load while a real search runs, and what that load costs the runner.

Starts `nas serve` (SQLite in a temporary NAS_HOME, a local Ray) and one search on the
proxy-cpu space (hurdles off: every trial trains its full budget). Once `--warmup-trials`
have finished (Ray's workers up, the baseline compiled) the runner is timed for `--window`
seconds with no API load, then for as long again while `--clients` threads poll what the
dashboard polls for the job (the jobs list, the job, `/pareto`, `/hypervolume`, a page of 25
trials) as fast as they can and `--streams` event streams stay open (one per open job page);
then the job is cancelled. The runner's trials/s come from the job's own records (the trials
whose `finished_at` falls in each window, over the window); the API's latency from the
clients. Clients, API and runner share the machine's cores: that is what this measures.

    python bench/api_under_search.py --json bench/out/api_under_search.json

Fails (exit 1) when the API answers any request with a 5xx.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from figures import write_json

from api.cli.local_server import start_server, stop_server

FINAL = {"completed", "failed", "cancelled"}
API = "/api/v1"


def submit(
    client: httpx.Client,
    name: str,
    data: str,
    trials: int,
    budget: float,
    concurrency: int,
    seed: int,
) -> dict[str, Any]:
    response = client.post(
        f"{API}/jobs",
        json={
            "name": name,
            "dataset": data,
            "search_space": {"preset": "proxy-cpu"},
            "objective": {"mode": "pareto"},
            "trial": {"budget_s": budget},
            "limits": {"max_trials": trials},
            "evolution": {"population_size": 8, "tournament_size": 3},
            "hurdle": {"enabled": False},  # every trial trains its full budget
            "workers": {"concurrency": concurrency},
            "seed": seed,
        },
    )
    if response.status_code != 201:
        raise RuntimeError(f"submitting {name}: {response.status_code} {response.text}")
    return response.json()


def job(client: httpx.Client, job_id: int) -> dict[str, Any]:
    return client.get(f"{API}/jobs/{job_id}").raise_for_status().json()


def warm_up(client: httpx.Client, job_id: int, trials: int, timeout: float) -> None:
    """Until `trials` trials of the job have finished: Ray's workers started, the baseline
    trained and compiled, the first proposals out."""
    deadline = time.monotonic() + timeout
    while True:
        found = job(client, job_id)
        if found["status"] in FINAL:
            raise RuntimeError(f"job {job_id} ended {found['status']}: {found.get('error')}")
        if found["progress"]["done"] >= trials:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id}: {found['progress']['done']} trials in {timeout} s")
        time.sleep(1.0)


def candidates(client: httpx.Client, job_id: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        page = (
            client.get(
                f"{API}/jobs/{job_id}/candidates",
                params={"sort": "birth", "order": "asc", "limit": 1000, "offset": len(rows)},
            )
            .raise_for_status()
            .json()
        )
        rows += page["items"]
        if len(rows) >= page["total"] or not page["items"]:
            return rows


def window_rate(rows: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """Trials/s in [start, end) (epoch seconds) from the job's records: the trials whose
    `finished_at` falls in the window over its length; with the medians of what those trials
    spent (training is the fixed budget; the rest is compiling, evaluating and timing the
    reference) and of their training throughput."""
    inside = [
        r
        for r in rows
        if r["finished_at"] and start <= datetime.fromisoformat(r["finished_at"]).timestamp() < end
    ]
    statuses: dict[str, int] = {}
    for r in inside:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1

    def median(key: str) -> float | None:
        values = [r[key] for r in inside if r.get(key) is not None]
        return float(np.median(values)) if values else None

    return {
        "seconds": end - start,
        "trials": len(inside),
        "statuses": statuses,
        "trials_per_s": len(inside) / (end - start),
        "median_s": {k: median(k) for k in ("train_s", "compile_s", "eval_s", "reference_s")},
        "median_tokens_per_s": median("tokens_per_s"),
    }


class Load:
    """`clients` threads polling the dashboard's endpoints round-robin, each with its own
    connection, and `streams` event streams held open; bounded by a deadline, a request count
    per client and a stop flag."""

    def __init__(
        self, base: str, job_id: int, clients: int, streams: int, seconds: float, max_requests: int
    ) -> None:
        job = f"{API}/jobs/{job_id}"
        self.endpoints = {
            "jobs list": f"{API}/jobs",
            "job": job,
            "pareto": f"{job}/pareto",
            "hypervolume": f"{job}/hypervolume",
            "candidates page": f"{job}/candidates?sort=birth&order=desc&limit=25&offset=0",
        }
        self.base, self.job_id = base, job_id
        self.clients, self.streams = clients, streams
        self.deadline = time.monotonic() + seconds
        self.max_requests = max_requests
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {name: [] for name in self.endpoints}
        self.server_errors: list[str] = []  # 5xx
        self.errors: list[str] = []  # anything else that is not a 200
        self.stream_stats: list[dict[str, Any]] = []
        self.threads: list[threading.Thread] = []

    def _running(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def _poll(self, offset: int) -> None:
        names = list(self.endpoints)
        times: dict[str, list[float]] = {name: [] for name in names}
        server_errors, errors = [], []
        with httpx.Client(base_url=self.base, timeout=60) as client:
            for i in range(offset, offset + self.max_requests):
                if not self._running():
                    break
                name = names[i % len(names)]
                start = time.perf_counter()
                try:
                    response = client.get(self.endpoints[name])
                    response.read()
                except httpx.HTTPError as exc:
                    errors.append(f"{name}: {type(exc).__name__}: {exc}")
                    continue
                elapsed = (time.perf_counter() - start) * 1e3
                if response.status_code >= 500:
                    server_errors.append(f"{name}: {response.status_code} {response.text[:200]}")
                elif response.status_code != 200:
                    errors.append(f"{name}: {response.status_code} {response.text[:200]}")
                else:
                    times[name].append(elapsed)
        with self.lock:
            for name, values in times.items():
                self.latency[name] += values
            self.server_errors += server_errors
            self.errors += errors

    def _stream(self) -> None:
        """One dashboard tab's event stream (`tail=true`, as the page opens it): time to the
        response headers, events received, and each event's delay from its commit."""
        stats: dict[str, Any] = {"open_ms": None, "events": 0, "lag_ms": [], "error": None}
        start = time.perf_counter()
        try:
            timeout = httpx.Timeout(60, read=30)  # a ping comes every 15 s
            with (
                httpx.Client(base_url=self.base, timeout=timeout) as client,
                client.stream(
                    "GET", f"{API}/jobs/{self.job_id}/events", params={"tail": "true"}
                ) as response,
            ):
                stats["open_ms"] = (time.perf_counter() - start) * 1e3
                if response.status_code != 200:
                    stats["error"] = f"status {response.status_code}"
                    if response.status_code >= 500:
                        with self.lock:
                            self.server_errors.append(f"events: {response.status_code}")
                else:
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            event = json.loads(line[5:])
                            created = datetime.fromisoformat(event["created_at"])
                            stats["events"] += 1
                            stats["lag_ms"].append((time.time() - created.timestamp()) * 1e3)
                        if not self._running():
                            break  # checked after each line; a ping comes every 15 s
        except httpx.HTTPError as exc:
            stats["error"] = f"{type(exc).__name__}: {exc}"
        with self.lock:
            self.stream_stats.append(stats)
            if stats["error"] and not stats["error"].startswith("status 5"):
                self.errors.append(f"events: {stats['error']}")

    def start(self) -> None:
        self.started = time.perf_counter()
        self.threads = [
            threading.Thread(target=self._stream, daemon=True) for _ in range(self.streams)
        ] + [
            threading.Thread(target=self._poll, args=(i,), daemon=True) for i in range(self.clients)
        ]
        for thread in self.threads:
            thread.start()

    def alive(self) -> bool:
        """Any poller still going (each stops at the deadline or its request count)."""
        return any(t.is_alive() for t in self.threads[self.streams :])

    def finish(self) -> dict[str, Any]:
        for thread in self.threads[self.streams :]:
            thread.join(timeout=70)  # the pollers stop at the deadline by themselves
        seconds = time.perf_counter() - self.started  # the time the pollers ran
        self.stop.set()
        for thread in self.threads[: self.streams]:
            thread.join(timeout=40)  # a stream sees the flag at its next line (ping: 15 s)
        every = [t for values in self.latency.values() for t in values]

        def summary(values: list[float]) -> dict[str, Any]:
            if not values:
                return {"requests": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
            return {
                "requests": len(values),
                "p50_ms": float(np.percentile(values, 50)),
                "p99_ms": float(np.percentile(values, 99)),
                "max_ms": float(np.max(values)),
            }

        lags = [lag for s in self.stream_stats for lag in s["lag_ms"]]
        opens = [s["open_ms"] for s in self.stream_stats if s["open_ms"] is not None]
        return {
            "clients": self.clients,
            "seconds": seconds,
            "requests_per_s": len(every) / seconds,
            "endpoints": {name: summary(values) for name, values in self.latency.items()},
            "overall": summary(every),
            "server_errors": len(self.server_errors),
            "errors": len(self.errors),
            "error_samples": (self.server_errors + self.errors)[:10],
            "streams": {
                "open": len(self.stream_stats),
                "open_p50_ms": float(np.median(opens)) if opens else None,
                "events": sum(s["events"] for s in self.stream_stats),
                "lag_p50_ms": float(np.percentile(lags, 50)) if lags else None,
                "lag_p99_ms": float(np.percentile(lags, 99)) if lags else None,
                "still_alive_threads": sum(t.is_alive() for t in self.threads),
            },
        }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="builtin:stdlib", help="builtin:stdlib or text:PATH")
    parser.add_argument("--budget", type=float, default=2.0, help="training seconds per trial")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--max-trials", type=int, default=200, help="the job's cap")
    parser.add_argument("--warmup-trials", type=int, default=3, help="finished before timing")
    parser.add_argument("--window", type=float, default=120.0, help="seconds per measurement")
    parser.add_argument("--clients", type=int, default=8, help="polling threads")
    parser.add_argument("--streams", type=int, default=8, help="event streams held open")
    parser.add_argument("--max-requests", type=int, default=100_000, help="per client")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    figures: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "load_average": {"start": load_average()},
    }
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "NAS_HOME": home, "RAY_AUTH_MODE": "disabled"}
        env.pop("NAS_DATABASE_URL", None)  # SQLite in NAS_HOME
        env.pop("NAS_RAY_ADDRESS", None)  # a local Ray
        log = Path(home) / "serve.log"
        server, base = start_server(env=env, timeout=180, log=log)
        try:
            with httpx.Client(base_url=base, timeout=60) as client:
                job_id = submit(
                    client,
                    "under-load",
                    args.data,
                    args.max_trials,
                    args.budget,
                    args.concurrency,
                    seed=0,
                )["id"]
                warm_up(client, job_id, args.warmup_trials, timeout=180)
                # No API load: only this loop's one request a second.
                figures["load_average"]["quiet_start"] = load_average()
                quiet_start = time.time()
                while time.time() < quiet_start + args.window:
                    if job(client, job_id)["status"] in FINAL:
                        raise RuntimeError(f"job {job_id} ended during the quiet window")
                    time.sleep(1.0)
                figures["load_average"]["quiet_end"] = load_average()
                loaded_start = time.time()
                load = Load(
                    base, job_id, args.clients, args.streams, args.window, args.max_requests
                )
                load.start()
                while time.time() < loaded_start + args.window and load.alive():
                    time.sleep(0.5)
                loaded_end = time.time()
                figures["load_average"]["loaded_end"] = load_average()
                api = load.finish()
                rows = candidates(client, job_id)
                final = job(client, job_id)["status"]
                client.post(f"{API}/jobs/{job_id}/cancel")
        finally:
            stop_server(server)
            if server.returncode not in (0, None, -15):
                print(log.read_text()[-3000:])
    if final in FINAL:
        raise SystemExit(f"FAIL: the job ended ({final}) before the loaded window did")
    quiet = window_rate(rows, quiet_start, quiet_start + args.window)
    loaded = window_rate(rows, loaded_start, loaded_end)
    figures.update(job_id=job_id, quiet=quiet, loaded=loaded, api=api)
    figures["wall_s"] = time.monotonic() - began
    figures["ratio_trials_per_s"] = (
        loaded["trials_per_s"] / quiet["trials_per_s"] if quiet["trials"] else None
    )

    print(
        f"\nAPI under load: {api['clients']} clients + {api['streams']['open']} event streams, "
        f"{api['seconds']:.0f} s, {api['requests_per_s']:.0f} req/s"
    )
    print(f"{'endpoint':16} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, row in [*api["endpoints"].items(), ("overall", api["overall"])]:
        if row["requests"]:
            print(
                f"{name:16} {row['requests']:9d} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f} "
                f"{row['max_ms']:8.1f}"
            )
    s = api["streams"]
    print(
        f"event streams: {s['open']} open (p50 {s['open_p50_ms'] or 0:.0f} ms to headers), "
        f"{s['events']} events, delay from commit p50 {s['lag_p50_ms'] or 0:.0f} ms, "
        f"p99 {s['lag_p99_ms'] or 0:.0f} ms"
    )
    print(f"5xx: {api['server_errors']}, other errors: {api['errors']}")
    print(
        f"\n{'runner':8} {'window s':>8} {'trials':>6} {'trials/s':>9} {'compile s':>9} "
        f"{'eval s':>7} {'ref s':>6} {'tokens/s':>9}"
    )
    for name, row in (("quiet", quiet), ("loaded", loaded)):
        m = row["median_s"]

        def f(x: float | None, spec: str) -> str:
            return "-" if x is None else format(x, spec)

        print(
            f"{name:8} {row['seconds']:8.0f} {row['trials']:6d} {row['trials_per_s']:9.3f} "
            f"{f(m['compile_s'], '9.2f')} {f(m['eval_s'], '7.2f')} "
            f"{f(m['reference_s'], '6.2f')} {f(row['median_tokens_per_s'], '9.0f')}"
        )
    ratio = figures["ratio_trials_per_s"]
    print(f"loaded / quiet trials/s: {'-' if ratio is None else f'{ratio:.3f}'}")
    print(f"load average: {figures['load_average']}; wall {figures['wall_s']:.0f} s")
    write_json(args.json, figures)
    if api["server_errors"]:
        raise SystemExit(
            f"FAIL: the API answered {api['server_errors']} requests with a 5xx: "
            f"{api['error_samples']}"
        )


if __name__ == "__main__":
    main()
