"""Working with results: `nas compare`, `nas importance`, `nas enqueue` and `nas note`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from api.cli.client import DEFAULT_SERVER, JobId, Server, Token, connect
from api.cli.space import fail

console = Console()


def _show(table: Table) -> None:
    # Piped (a log), rich would wrap the table at 80 columns, one word per line.
    (console if console.is_terminal else Console(width=240)).print(table)


def _budget(budget: dict[str, float]) -> str:
    """`30 s`, `500 steps` or `1e+12 FLOPs`."""
    if "seconds" in budget:
        return f"{budget['seconds']:g} s"
    if "steps" in budget:
        return f"{budget['steps']:g} steps"
    return f"{budget['flops']:.3g} FLOPs" if "flops" in budget else "-"


def _best(values: list[float]) -> str:
    return f"{min(values):.3f}" if values else "-"


def compare_cmd(
    jobs: Annotated[list[int], typer.Argument(help="Job ids.")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Compare jobs' Pareto fronts, each against its own baseline.

    Each front is normalised by its own job's baseline, so that jobs on other devices or
    budgets read together."""
    with connect(server, token) as api:
        compared = api.compare(jobs)
    table = Table(
        "job",
        "device",
        "budget",
        "baseline",
        "front",
        "best perplexity ratio",
        "fastest step-time ratio",
        title="Fronts against each job's own baseline (lower is better)",
    )
    for job in compared:
        front = job["front"]
        table.add_row(
            f"{job['id']} {job['name']}",
            job["device_kind"] or "-",
            _budget(job["budget"]),
            job["baseline"],
            str(len(front)),
            _best([p["perplexity_ratio"] for p in front if p["perplexity_ratio"] is not None]),
            _best([p["step_time_ratio"] for p in front if p["step_time_ratio"] is not None]),
        )
    _show(table)
    for job in compared:
        if job.get("message"):
            console.print(f"job {job['id']}: {job['message']}", highlight=False)


def importance_cmd(
    job_id: JobId,
    top: Annotated[int, typer.Option(min=1, help="Features shown.")] = 10,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """What makes a block good or fast: the features that explain a job's results.

    Each feature's share of the variance of perplexity and of step time over the job's
    completed candidates, most important first."""
    with connect(server, token) as api:
        found = api.importance(job_id)
    fit = ", ".join(
        f"{name.replace('_', ' ')} {value:.2f}"
        for name, value in found["r2"].items()
        if value is not None
    )
    console.print(
        f"job {job_id}: {found['candidates']} completed candidates"
        + (f", held-out R² {fit}" if fit else ""),
        highlight=False,
    )
    if found.get("message"):
        console.print(found["message"], highlight=False)
    if found["features"]:
        table = Table("feature", "perplexity share", "step-time share")
        for feature in found["features"][:top]:
            table.add_row(
                feature["name"], f"{feature['perplexity']:.1%}", f"{feature['step_time']:.1%}"
            )
        _show(table)
        console.print(f"method: {found['method']}", style="dim", highlight=False)


def _spec(path: Path) -> dict[str, Any]:
    """A block from a file: an ArchSpec (JSON or YAML), or a `nas export` JSON's spec."""
    try:
        body = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read spec file {path}: {getattr(exc, 'strerror', None) or exc}")
    except yaml.YAMLError as exc:
        fail(f"{path}: not JSON (nor YAML): {exc}")
    if not isinstance(body, dict):
        fail(f"{path}: expected a block's spec (block: ..., repeats: ...)")
    return body["spec"] if isinstance(body.get("spec"), dict) else body


def enqueue_cmd(
    job_id: JobId,
    spec_file: Annotated[
        Path, typer.Argument(help="The block: a spec JSON (`nas space sample`) or an export.")
    ],
    note: Annotated[str | None, typer.Option(help="Why it was added, in Markdown.")] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Add a block by hand: the job trains it next (its lineage says "added by hand")."""
    spec = _spec(spec_file)
    with connect(server, token) as api:
        queued = api.enqueue(job_id, spec, note)
    typer.echo(
        f"job {job_id}: request {queued['id']} {queued['status']}, spec "
        f"{queued['spec_hash'][:12]}: it trains next"
    )


def note_cmd(
    args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[JOB] [TEXT]",
            help="The job (not with --candidate) and the note in Markdown: `-` reads it from "
            "stdin, '' clears it, none prints it.",
            show_default=False,
        ),
    ] = None,
    candidate: Annotated[int | None, typer.Option(help="A candidate's note, not a job's.")] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Set or print the Markdown note of a job or (--candidate ID) of a candidate."""
    args = list(args or [])
    if candidate is None:
        if not args or not args[0].isdigit():
            fail("give JOB [TEXT], or --candidate ID [TEXT]")
        job_id = int(args.pop(0))
    if len(args) > 1:
        fail("give the note as one argument (quote it), or `-` to read it from stdin")
    text = sys.stdin.read() if args == ["-"] else (args[0] if args else None)
    what = f"candidate {candidate}" if candidate is not None else f"job {job_id}"
    with connect(server, token) as api:
        if text is None:
            found = api.candidate(candidate) if candidate is not None else api.job(job_id)
        elif candidate is not None:
            found = api.candidate_note(candidate, text)
        else:
            found = api.note(job_id, text)
    if text is not None:
        typer.echo(f"{what}: note {'saved' if text else 'cleared'}")
    elif found.get("note"):
        typer.echo(found["note"], nl=not found["note"].endswith("\n"))
    else:
        typer.echo(f"{what} has no note", err=True)
