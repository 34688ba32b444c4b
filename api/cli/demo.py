"""`nas demo`: the main job on the embedded default (SQLite, local Ray, built-in corpus).

Starts `nas serve` (API + runner), submits a small search sized for about five minutes on
2 CPU cores, follows it, then prints the Pareto front next to the baseline and exports the
best candidate. The service stops with the demo (`--keep-serving` keeps it up until Ctrl+C).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from api.cli.client import connect
from api.cli.follow import follow
from api.cli.local_server import start_server, stop_server
from api.cli.space import fail
from api.client import Client
from search_space import ArchSpec, describe

console = Console(soft_wrap=True)  # lines are never cut: a cut URL cannot be clicked


def demo_job(trials: int, budget: float, concurrency: int) -> dict[str, Any]:
    """The demo's job. Evolution's sizes are left to the job's rule (derived from the trial
    count), which makes most trials children of tournaments: the demo shows evolution."""
    return {
        "name": "demo",
        "dataset": "builtin:stdlib",
        "search_space": {"preset": "proxy-cpu"},
        "objective": {"mode": "pareto"},
        "trial": {"budget_s": budget},
        "limits": {"max_trials": trials},
        "workers": {"concurrency": concurrency},
    }


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
    keep_serving: Annotated[
        bool,
        typer.Option(
            "--keep-serving",
            help="Keep the service and its dashboard up after the demo, until Ctrl+C.",
        ),
    ] = False,
) -> None:
    """Run a small search end to end on this machine and export its best block.

    Ctrl+C (or SIGTERM) stops the search and the service it started, Ray included."""
    env = dict(os.environ)
    if home is not None:
        env["NAS_HOME"] = str(home)
    signal.signal(signal.SIGTERM, _interrupt)  # as Ctrl+C: the service is stopped, not left
    server = None
    done = False
    try:
        try:
            server, url = start_server(env=env)
        except (RuntimeError, TimeoutError) as exc:
            fail(str(exc))
        _run(url, trials, budget, concurrency, out, keep_serving)
        done = True
        if keep_serving:
            console.print(f"serving {url}/ until Ctrl+C")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        if not done:
            print("interrupted: stopping the service", file=sys.stderr, flush=True)
    finally:
        # A second Ctrl+C must not cut the service's shutdown short (its Ray would stay).
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        if server is not None:
            stop_server(server)
    if not done:
        raise typer.Exit(130)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _run(
    url: str, trials: int, budget: float, concurrency: int, out: Path, keep_serving: bool
) -> None:
    """Submit the demo's job, follow it, report its front and export its best."""
    with connect(url, None) as api:
        job = api.submit(demo_job(trials, budget, concurrency))
    closes = (
        "stays up after the demo until Ctrl+C"
        if keep_serving
        else "closes when the demo ends; --keep-serving keeps it up"
    )
    console.print(
        f"job {job['id']} submitted: {trials} trials of {budget:g} s on {concurrency} slots",
    )
    console.print(f"dashboard ({closes}):")
    console.print(f"  {url}/#/jobs/{job['id']}", highlight=False)
    console.print(f"API {url}/api/v1, docs {url}/docs", highlight=False)
    job = follow(url, job["id"], None, 2.0, console)
    if job["status"] != "completed":
        fail(f"the search ended {job['status']}: {job.get('error')}")
    with connect(url, None) as api:
        _report(api, job, out)


def evolution_line(candidates: list[dict[str, Any]]) -> str:
    """How the trials came about: children of tournaments (the evolution), initial
    baselines and random samples."""
    children = sum(c["parent_id"] is not None for c in candidates)
    initial = sum(c["mutation"] == "initial" or c["is_baseline"] for c in candidates)
    return (
        f"evolution: {children} of {len(candidates)} trials were mutations of a tournament's "
        f"winner; {initial} initial baselines, {len(candidates) - children - initial} random "
        "samples"
    )


def _report(api: Client, job: dict, out: Path) -> None:
    """The Pareto front next to the baseline, and the best candidate exported into `out`."""
    pareto = api.pareto(job["id"])
    candidates = api.candidates(job["id"])
    console.print(evolution_line(candidates))
    columns = pareto["points"]
    row_of = {candidate_id: i for i, candidate_id in enumerate(columns["id"])}
    base = next((c for c in candidates if c["is_baseline"]), None)
    base_ppl = base["perplexity"] if base else None
    if base is not None:
        ms = base["step_time_ms"]
        console.print(
            f"baseline: candidate {base['id']}, perplexity "
            f"{'-' if base_ppl is None else f'{base_ppl:.3f}'}, step time "
            f"{'-' if ms is None else f'{ms:.1f} ms'} (each trial's step time is divided by "
            "the baseline's timed on the same slot)",
        )
    table = Table(
        "candidate",
        "perplexity",
        "perplexity / baseline",
        "step time / baseline",
        "step ms",
        "block",
        title="Pareto front against the baseline (lower is better in both)",
    )
    for candidate_id in pareto["front"]:
        detail = api.candidate(candidate_id)
        baseline = " (baseline)" if candidate_id in pareto["baselines"] else ""
        i = row_of[candidate_id]
        ppl = columns["perplexity"][i]
        table.add_row(
            f"{candidate_id}{baseline}",
            f"{ppl:.3f}",
            "-" if not base_ppl else f"{ppl / base_ppl:.3f}",
            f"{columns['step_time_ratio'][i]:.3f}",
            "-" if columns["step_time_ms"][i] is None else f"{columns['step_time_ms'][i]:.1f}",
            describe(ArchSpec.model_validate(detail["spec"])),
        )
    # Piped (a log), rich would wrap the table at 80 columns, one word per line.
    (console if console.is_terminal else Console(width=240)).print(table)
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
        (out / name).write_text(api.export(best, **params))
    console.print(f"best candidate {best}: exported to {out}/ ({', '.join(exports)})")
