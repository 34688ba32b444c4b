"""`nas confirm`: retrain a finished job's best with fresh seeds, and its report as a table."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from api.cli.client import DEFAULT_SERVER, JobId, Server, Token, request
from api.client import FINAL

console = Console()


def _interval(summary: dict[str, Any] | None, digits: int = 4) -> str:
    if not summary or summary.get("mean") is None:
        return "-"
    mean = f"{summary['mean']:.{digits}f}"
    if summary.get("low") is None:
        return mean
    return f"{mean} [{summary['low']:.{digits}f}, {summary['high']:.{digits}f}]"


def report_table(report: dict[str, Any]) -> Table:
    """One row per retrained block: loss, perplexity, paired difference to the baseline,
    step-time ratio, each with its interval."""
    level = report.get("interval_confidence")
    table = Table(
        Column("block", no_wrap=True),
        "seeds",
        "val_loss (95%)",
        "perplexity (95%)",
        f"vs baseline ({level:.1%}, paired)" if level else "vs baseline",
        "p (one-sided)",
        "step-time ratio (95%)",
        "beats baseline",
        title=f"confirmation ({report['status']})",
    )
    for row in report.get("candidates", []):
        difference = row.get("difference")
        p_value = difference.get("p_value") if difference else None
        marker = " (winner)" if row["candidate_id"] == report.get("winner") else ""
        name = row["name"] or f"candidate {row['candidate_id']}"
        table.add_row(
            f"{name}{marker}",
            str(row["seeds"]),
            _interval(row["val_loss"]),
            _interval(row["perplexity"], 3),
            _interval(difference) if difference else "reference",
            "-" if p_value is None else f"{p_value:.3g}",
            _interval(row["step_time_ratio"], 3),
            "yes" if row["beats_baseline"] else "no",
        )
    return table


def confirm_cmd(
    job_id: JobId,
    top_k: Annotated[int | None, typer.Option(help="Candidates retrained (default 3).")] = None,
    seeds: Annotated[int | None, typer.Option(help="Fresh seeds per block (default 3).")] = None,
    budget_multiplier: Annotated[
        float | None, typer.Option(help="Budget as a multiple of the trial budget (default 4).")
    ] = None,
    baseline: Annotated[
        list[str] | None, typer.Option(help="Another baseline retrained beside them.")
    ] = None,
    report: Annotated[
        bool, typer.Option("--report", help="Only print the job's confirmation report.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Wait for the confirmation to finish.")] = True,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Confirm a completed job's best: retrain the top candidates and the baselines with
    fresh seeds at a longer budget, and print whether any beats the baseline beyond noise."""
    if not report:
        body = {
            key: value
            for key, value in {
                "top_k": top_k,
                "seeds": seeds,
                "budget_multiplier": budget_multiplier,
                "baselines": baseline,
            }.items()
            if value is not None
        }
        job = request("POST", server, f"/jobs/{job_id}/confirm", token, json=body)
        console.print(f"job {job_id}: confirmation queued")
        while wait and job["status"] not in FINAL:
            time.sleep(2.0)
            job = request("GET", server, f"/jobs/{job_id}", token)
    found = request("GET", server, f"/jobs/{job_id}/confirmation", token)
    if found["status"] in ("not_requested", "requested"):
        console.print(
            f"job {job_id}: its confirmation runs once the search ends"
            if found["status"] == "requested"
            else f"job {job_id} has no confirmation: run `nas confirm {job_id}`"
        )
        return
    console.print(report_table(found))
    console.print(found.get("verdict") or "")
