"""`nas demo`: the main job on the embedded default (SQLite, local Ray, built-in corpus).

Starts `nas serve` (API + runner), submits a small search sized for about five minutes on
2 CPU cores, follows it, then prints the Pareto front and exports the best candidate.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from api.cli.client import FINAL, request
from api.cli.local_server import start_server, stop_server
from api.cli.space import fail
from search_space import ArchSpec, describe

console = Console()


def demo(
    trials: Annotated[int, typer.Option(min=1, max=10_000, help="Trials in the search.")] = 20,
    budget: Annotated[float, typer.Option(min=0.5, help="Training seconds per trial.")] = 15.0,
    concurrency: Annotated[int, typer.Option(min=1, max=64)] = 2,
    home: Annotated[
        Path | None, typer.Option(help="State directory (default: NAS_HOME or ~/.nas-service).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where the best candidate's export goes.")] = Path(
        "nas-demo"
    ),
) -> None:
    """Run a small search end to end on this machine and export its best block."""
    env = dict(os.environ)
    if home is not None:
        env["NAS_HOME"] = str(home)
    try:
        server, url = start_server(env=env)
    except (RuntimeError, TimeoutError) as exc:
        fail(str(exc))
    try:
        job = request(
            "POST",
            url,
            "/jobs",
            None,
            json={
                "name": "demo",
                "dataset": "builtin:stdlib",
                "search_space": {"preset": "proxy-cpu"},
                "objective": {"mode": "pareto"},
                "trial": {"budget_s": budget},
                "limits": {"max_trials": trials},
                "evolution": {
                    "population_size": max(2, min(8, trials)),
                    "tournament_size": max(1, min(3, trials)),
                },
                "workers": {"concurrency": concurrency},
            },
        )
        console.print(
            f"job {job['id']} submitted: {trials} trials of {budget:g} s on "
            f"{concurrency} slots. Watch it live: {url}/#/jobs/{job['id']} "
            f"(API {url}/api/v1, docs {url}/docs)"
        )
        while job["status"] not in FINAL:
            time.sleep(2.0)
            job = request("GET", url, f"/jobs/{job['id']}", None)
            p = job["progress"]
            best = p["best_perplexity"]
            console.print(
                f"  {job['status']}: {p['done']}/{p['total']} done, {p['running']} running, "
                f"best perplexity {'-' if best is None else f'{best:.3f}'}"
                + (f", ETA {p['eta_s']:.0f} s" if p.get("eta_s") else "")
            )
        if job["status"] != "completed":
            fail(f"the search ended {job['status']}: {job.get('error')}")
        _report(url, job, out)
    finally:
        stop_server(server)


def _report(url: str, job: dict, out: Path) -> None:
    """The Pareto front as a table, and the best candidate exported into `out`."""
    pareto = request("GET", url, f"/jobs/{job['id']}/pareto", None)
    columns = pareto["points"]
    row_of = {candidate_id: i for i, candidate_id in enumerate(columns["id"])}
    table = Table(
        "candidate",
        "perplexity",
        "step / baseline",
        "step ms",
        "block",
        title="Pareto front (perplexity vs step time / the baseline's on the same slot)",
    )
    for candidate_id in pareto["front"]:
        detail = request("GET", url, f"/candidates/{candidate_id}", None)
        baseline = " (baseline)" if candidate_id in pareto["baselines"] else ""
        i = row_of[candidate_id]
        table.add_row(
            f"{candidate_id}{baseline}",
            f"{columns['perplexity'][i]:.3f}",
            f"{columns['step_time_ratio'][i]:.3f}",
            "-" if columns["step_time_ms"][i] is None else f"{columns['step_time_ms'][i]:.1f}",
            describe(ArchSpec.model_validate(detail["spec"])),
        )
    console.print(table)
    progress = job["progress"]
    best = progress["best_candidate_id"]
    console.print(f"best: candidate {best}, {progress['best_rule']}")
    console.print(f"front by step-time ratio: {', '.join(map(str, progress['front'])) or '-'}")
    if best is None:
        fail("the search has no best candidate to export")
    out.mkdir(parents=True, exist_ok=True)
    exports = {
        "best.json": {"format": "json"},
        "best_model.py": {"format": "flax"},
        "best_100M.json": {"format": "config", "target": "100M"},
    }
    for name, params in exports.items():
        response = httpx.get(f"{url}/api/v1/candidates/{best}/export", params=params, timeout=120)
        response.raise_for_status()
        (out / name).write_text(response.text)
    console.print(f"best candidate {best}: exported to {out}/ ({', '.join(exports)})")
