"""The HTTP client commands: submit, jobs, status, watch, pause, resume, cancel."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import yaml
from rich.console import Console
from rich.table import Table

from api.cli.space import fail

console = Console()
FINAL = ("completed", "failed", "cancelled")

Server = Annotated[str, typer.Option(envvar="NAS_SERVER", help="The service's URL.")]
Token = Annotated[
    str | None, typer.Option(envvar="NAS_API_TOKEN", help="API token (Bearer).", show_default=False)
]
JobId = Annotated[int, typer.Argument(help="Job id.")]
DEFAULT_SERVER = "http://127.0.0.1:8000"


def call(method: str, server: str, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
    """Call the API; refusals print the server's message with its field, and exit 2."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{server.rstrip('/')}/api/v1{path}"
    try:
        response = httpx.request(method, url, headers=headers, timeout=120, **kwargs)
    except httpx.TransportError:
        fail(f"no server at {server}: start one with `nas serve` (or pass --server)")
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        if isinstance(detail, list):
            detail = "; ".join(
                f"{'.'.join(str(p) for p in item.get('loc', [])[1:])}: {item.get('msg')}"
                for item in detail
            )
        fail(f"{response.status_code}: {detail}")
    return response


def request(method: str, server: str, path: str, token: str | None, **kwargs: Any) -> Any:
    response = call(method, server, path, token, **kwargs)
    return response.json() if response.content else None


def _summary(job: dict[str, Any]) -> str:
    p = job.get("progress") or {}
    best = p.get("best_perplexity")
    return (
        f"job {job['id']} {job['name']!r}: {job['status']}, {p.get('done', 0)}/{p.get('total')} "
        f"done, {p.get('running', 0)} running, best perplexity "
        f"{'-' if best is None else f'{best:.3f}'}"
    )


def _ratio_ms(pareto: dict[str, Any], candidate_id: int | None) -> str:
    """A scored candidate's step time, `step time 0.930x baseline (41.2 ms)` (from /pareto)."""
    points = pareto["points"]
    if candidate_id not in points["id"]:
        return ""
    i = points["id"].index(candidate_id)
    ms = points["step_time_ms"][i]
    return f"step time {points['step_time_ratio'][i]:.3f}x baseline" + (
        "" if ms is None else f" ({ms:.1f} ms)"
    )


def _best_lines(job: dict[str, Any], pareto: dict[str, Any]) -> list[str]:
    """The best candidate with its step time and the rule that chose it; in pareto mode the
    front's ids too."""
    p = job.get("progress") or {}
    best = p.get("best_candidate_id")
    lines = []
    if best is None:
        lines.append(f"best: none yet ({p.get('best_rule', '')})")
    else:
        timing = _ratio_ms(pareto, best)
        lines.append(
            f"best: candidate {best}, perplexity {p['best_perplexity']:.3f}"
            + (f", {timing}" if timing else "")
            + f" ({p.get('best_rule', '')})"
        )
    if (job.get("config") or {}).get("objective", {}).get("mode", "pareto") == "pareto":
        front = p.get("front", pareto["front"])
        lines.append(
            f"front by step-time ratio ({len(front)}): {', '.join(map(str, front)) or '-'}"
        )
    return lines


def submit_cmd(
    job_file: Annotated[Path, typer.Argument(help="Job configuration, YAML or JSON.")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Submit a search job; prints its id."""
    try:
        body = yaml.safe_load(job_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        fail(f"cannot read job file {job_file}: {exc}")
    # Relative dataset paths are relative to the job file, wherever the server runs.
    dataset = body.get("dataset") if isinstance(body, dict) else None
    if isinstance(dataset, str) and dataset.partition(":")[0] in ("text", "tokens"):
        scheme, _, path = dataset.partition(":")
        if path and not Path(path).expanduser().is_absolute():
            body["dataset"] = f"{scheme}:{(job_file.parent / path).resolve()}"
    job = request("POST", server, "/jobs", token, json=body)
    typer.echo(job["id"])


def jobs_cmd(server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """List jobs."""
    table = Table("id", "name", "status", "done", "running", "best perplexity")
    for job in request("GET", server, "/jobs", token)["items"]:
        p = job["progress"] or {}
        best = p.get("best_perplexity")
        table.add_row(
            str(job["id"]),
            job["name"],
            job["status"],
            f"{p.get('done')}/{p.get('total')}",
            str(p.get("running")),
            "-" if best is None else f"{best:.3f}",
        )
    console.print(table)


def status_cmd(
    job_id: JobId,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show one job."""
    job = request("GET", server, f"/jobs/{job_id}", token)
    if as_json:
        typer.echo(json.dumps(job, indent=2))
        return
    pareto = request("GET", server, f"/jobs/{job_id}/pareto", token)
    typer.echo("\n".join([_summary(job), *_best_lines(job, pareto)]))


def watch_cmd(
    job_id: JobId,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    interval: Annotated[float, typer.Option(min=0.2)] = 2.0,
) -> None:
    """Follow a job until it ends: progress, best so far, front size; then the best and the
    front."""
    while True:
        job = request("GET", server, f"/jobs/{job_id}", token)
        pareto = request("GET", server, f"/jobs/{job_id}/pareto", token)
        typer.echo(f"{_summary(job)}, front {len(pareto['front'])}")
        if job["status"] in FINAL:
            for line in _best_lines(job, pareto):
                typer.echo(line)
            if job.get("error"):
                typer.echo(f"error: {job['error']}")
            return
        time.sleep(interval)


def _transition(action: str):
    def command(job_id: JobId, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
        typer.echo(_summary(request("POST", server, f"/jobs/{job_id}/{action}", token)))

    command.__doc__ = f"{action.capitalize()} a job."
    return command


pause_cmd, resume_cmd, cancel_cmd = (_transition(a) for a in ("pause", "resume", "cancel"))


def _declared_or_best(server: str, job: int, token: str | None) -> int:
    """A confirmed job's declared winner; else the best under the job's objective."""
    confirmation = request("GET", server, f"/jobs/{job}/confirmation", token)
    if confirmation["status"] == "done":
        if confirmation["winner"] is None:
            fail(f"--job: job {job}'s confirmation declared no winner: {confirmation['verdict']}")
        typer.echo(f"job {job}'s declared winner: {confirmation['verdict']}", err=True)
        return confirmation["winner"]
    if confirmation["status"] in ("running", "requested"):
        fail(f"--job: job {job}'s confirmation is still running: wait for its winner")
    progress = request("GET", server, f"/jobs/{job}", token)["progress"]
    candidate_id = progress["best_candidate_id"]
    if candidate_id is None:
        fail(f"--job: job {job} has no best candidate yet ({progress.get('best_rule')})")
    typer.echo(f"job {job}'s best: candidate {candidate_id} ({progress['best_rule']})", err=True)
    return candidate_id


def export_cmd(
    candidate_id: Annotated[
        int | None, typer.Argument(help="Candidate id (or use --job with --best).")
    ] = None,
    job: Annotated[int | None, typer.Option(help="Export this job's best candidate.")] = None,
    best: Annotated[
        bool,
        typer.Option(
            help="With --job: its declared winner when it was confirmed (the report goes in "
            "the manifest), else its best candidate under the job's objective."
        ),
    ] = False,
    format: Annotated[str, typer.Option(help="json, flax or config.")] = "json",
    target: Annotated[str | None, typer.Option(help="100M, 1B, 8B or a number.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write.")] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Export a candidate: JSON with its manifest, a standalone Flax module, or a scaled config."""
    if (candidate_id is None) == (job is None) or (job is not None and not best):
        fail("give CANDIDATE_ID, or --job JOB --best")
    if job is not None:
        candidate_id = _declared_or_best(server, job, token)
    params = {"format": format, **({"target": target} if target else {})}
    response = call("GET", server, f"/candidates/{candidate_id}/export", token, params=params)
    if output is None:
        typer.echo(response.text)
    else:
        output.write_text(response.text)
        typer.echo(f"wrote {output}")
