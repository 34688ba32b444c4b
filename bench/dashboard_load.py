"""Dashboard responsiveness with large jobs, in headless Chromium against `nas serve`.

For each job size: the job page from navigation to every plot and the table drawn; a finished
trial from its commit to its point on the page (the live path: event stream, refresh, redraw);
the next page of the trials table; the Pareto payload with and without gzip.

    python bench/dashboard_load.py --candidates 1000 10000 --json bench/out/dashboard.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from api_latency import DEVICE_KIND, REFERENCE_MS, populate
from figures import write_json
from sqlalchemy import update

from api.cli.local_server import start_server, stop_server
from nas_service.db import Database
from nas_service.models import Candidate, Job, JobEvent

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
POINTS_JS = """() => document.getElementById('pareto-plot').data
    .filter((t) => t.meta === 'points').reduce((s, t) => s + t.x.length, 0)"""


def add_trial(db: Database, job_id: int, birth: int) -> None:
    """One more completed trial and its event, committed together as the runner does."""
    with db.transaction() as session:
        row = Candidate(
            job_id=job_id,
            spec={"i": birth},
            spec_hash=f"live{birth:060x}",
            birth=birth,
            mutation="",
            status="completed",
            attempt=1,
            perplexity=3.0,
            step_time_ms=100.0,
            reference_step_time_ms=REFERENCE_MS,
            step_time_ratio=100.0 / REFERENCE_MS,
            device_kind=DEVICE_KIND,
            feasible=True,
        )
        session.add(row)
        session.flush()
        session.add(
            JobEvent(
                job_id=job_id, kind="trial", message="completed", data={"candidate_id": row.id}
            )
        )


def payload(url: str, job_id: int) -> dict[str, Any]:
    path = f"{url}/api/v1/jobs/{job_id}/pareto?max_points=10000"  # what the page asks for
    out: dict[str, Any] = {}
    for encoding in ("identity", "gzip"):
        times, size = [], 0
        for _ in range(5):
            start = time.perf_counter()
            with httpx.stream("GET", path, headers={"Accept-Encoding": encoding}) as response:
                size = sum(len(chunk) for chunk in response.iter_raw())
            times.append((time.perf_counter() - start) * 1e3)
        out[encoding] = {"bytes": size, "ms_median": statistics.median(times)}
    return out


def measure(
    page, url: str, db: Database, job_id: int, n: int, repeats: int, shots: Path | None
) -> dict[str, Any]:
    loads = []
    for _ in range(repeats):
        page.goto("about:blank")
        start = time.perf_counter()
        page.goto(f"{url}/#/jobs/{job_id}")
        page.wait_for_selector("#view[data-loaded]", timeout=120_000)
        loads.append(time.perf_counter() - start)
    points = page.evaluate(POINTS_JS)
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / f"dashboard_{n}.png"))
    page.wait_for_selector("#live[data-state='live']")
    page.wait_for_selector("#view[data-loaded='2']", timeout=120_000)
    live, refresh_ms = [], []
    for k in range(repeats):
        time.sleep(1.0)  # let the previous refresh settle
        start = time.perf_counter()
        add_trial(db, job_id, n + k)
        page.wait_for_function(f"() => ({POINTS_JS})() === {points + k + 1}", timeout=120_000)
        live.append(time.perf_counter() - start)
        refresh_ms.append(int(page.locator("#view").get_attribute("data-refresh-ms")))
    pages = []
    for _ in range(repeats):
        label = page.locator(".page-label")
        before = label.inner_text()
        start = time.perf_counter()
        page.get_by_role("button", name="Next page").click()
        page.wait_for_function(
            "(b) => document.querySelector('.page-label').innerText !== b", arg=before
        )
        pages.append(time.perf_counter() - start)
    return {
        "candidates": n,
        "points": points,
        "page_load_s": {"median": statistics.median(loads), "all": loads},
        "live_update_s": {"median": statistics.median(live), "all": live},
        "refresh_ms": {"median": statistics.median(refresh_ms), "all": refresh_ms},
        "table_next_page_s": {"median": statistics.median(pages), "all": pages},
        "pareto_payload": payload(url, job_id),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--screenshots", type=Path, help="Save the loaded page of each job here.")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    results = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        url = f"sqlite:///{tmp}/nas.db"
        jobs = []
        for n in args.candidates:
            job_id, _ = populate(url, n)
            jobs.append((job_id, n))
        db = Database(url)
        with db.transaction() as session:  # running: the page follows its event stream
            session.execute(update(Job).values(status="running"))
        env = {**os.environ, "NAS_DATABASE_URL": url, "NAS_HOME": tmp}
        server, base = start_server("--no-runner", env=env)
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            webgl = page.evaluate("() => !!document.createElement('canvas').getContext('webgl2')")
            for job_id, n in jobs:
                result = measure(page, base, db, job_id, n, args.repeats, args.screenshots)
                results.append(result)
                gz = result["pareto_payload"]
                print(
                    f"{n:>7} candidates ({result['points']} points): "
                    f"page {result['page_load_s']['median']:.2f} s, "
                    f"live update {result['live_update_s']['median']:.2f} s "
                    f"(a refresh {result['refresh_ms']['median']:.0f} ms), "
                    f"next table page {result['table_next_page_s']['median'] * 1e3:.0f} ms, "
                    f"pareto {gz['identity']['bytes'] / 1e3:.0f} kB "
                    f"({gz['gzip']['bytes'] / 1e3:.0f} kB gzipped)"
                )
        finally:
            browser.close()
            stop_server(server)
            db.dispose()
    print(f"WebGL in this browser: {webgl}")
    if args.json:
        write_json(args.json, {"webgl": webgl, "jobs": results})


if __name__ == "__main__":
    main()
