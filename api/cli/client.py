"""The HTTP client commands: submit, jobs, status, watch, pause, resume, cancel, export."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import yaml
from rich.console import Console
from rich.table import Table

from api.cli.space import fail
from api.client import ApiError, Client, Locate, problems, resolve_dataset

console = Console()

Server = Annotated[str, typer.Option(envvar="NAS_SERVER", help="The service's URL.")]
Token = Annotated[
    str | None, typer.Option(envvar="NAS_API_TOKEN", help="API token (Bearer).", show_default=False)
]
JobId = Annotated[int, typer.Argument(help="Job id.")]
DEFAULT_SERVER = "http://127.0.0.1:8000"


@contextmanager
def connect(server: str, token: str | None, locate: Locate | None = None) -> Iterator[Client]:
    """The API at `server`; a refusal prints the server's message with its field, and exits 2.
    With `locate` (the body came from a file), each refused field is printed on its own line
    with where it is in the file."""
    try:
        with Client(server, token) as api:
            yield api
    except httpx.TransportError:
        fail(f"no server at {server}: start one with `nas serve` (or pass --server)")
    except ApiError as exc:
        if locate is not None and exc.status_code == 422 and isinstance(exc.detail, list):
            *first, last = problems(exc.detail, locate) or [str(exc.detail)]
            for line in first:
                typer.echo(f"error: {line}", err=True)
            fail(last)
        fail(str(exc))


def request(
    method: str,
    server: str,
    path: str,
    token: str | None,
    locate: Locate | None = None,
    **kwargs: Any,
) -> Any:
    """One call of the API (its JSON body), refusals said as `connect` says them."""
    with connect(server, token, locate) as api:
        return api.request(method, path, **kwargs)


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    """A YAML syntax error in the person's terms: `job.yaml, line 3, column 5: what`, and the
    line with a caret (PyYAML's own text names `<unicode string>`, not the file)."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f"{path}: {exc}"
    problem = getattr(exc, "problem", None) or "not valid YAML"
    context, since = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and since is not None:
        problem += f" ({context} at line {since.line + 1}, column {since.column + 1})"
    elif context:
        problem += f" ({context})"
    snippet = mark.get_snippet()
    return f"{path}, line {mark.line + 1}, column {mark.column + 1}: {problem}" + (
        f"\n{snippet}" if snippet else ""
    )


def _key_lines(node: yaml.Node | None, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """The line (1-based) of every key and list item of a composed YAML document, by path."""
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        items = [(str(key.value), key, value) for key, value in node.value]
    elif isinstance(node, yaml.SequenceNode):
        items = [(str(i), item, item) for i, item in enumerate(node.value)]
    else:
        return lines
    for name, where, value in items:
        path = (*prefix, name)
        lines[path] = where.start_mark.line + 1
        lines.update(_key_lines(value, path))
    return lines


def load_job_file(path: Path) -> tuple[dict[str, Any], Locate]:
    """The job file's fields, and where each is in the file: every error, the server's too,
    then says `job.yaml, line 4: trail: unknown field; did you mean 'trial'?`."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read job file {path}: {getattr(exc, 'strerror', None) or exc}")
    try:
        lines = _key_lines(yaml.compose(text, Loader=yaml.SafeLoader))
        body = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        fail(_yaml_problem(path, exc))
    if not isinstance(body, dict):
        got = "nothing" if body is None else f"a {type(body).__name__}"
        fail(f"{path}: expected the job's fields (name: ..., dataset: ...), got {got}")

    def locate(loc: Sequence[str]) -> tuple[int, str]:
        for n in range(len(loc), 0, -1):  # the field, else the nearest section written
            if (line := lines.get(tuple(loc[:n]))) is not None:
                return line, f"{path}, line {line}: "
        return 0, f"{path}: "  # a field the file lacks (e.g. a required one)

    return body, locate


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


def _only_in_file(locate: Locate) -> Locate:
    """`locate`, saying nothing of fields the file lacks (they came from the job cloned)."""

    def where(loc: Sequence[str]) -> tuple[int, str]:
        line, text = locate(loc)
        return (line, text) if line else (0, "")

    return where


def submit_cmd(
    job_file: Annotated[
        Path | None,
        typer.Argument(help="Job configuration, YAML or JSON (with --like: fields to change)."),
    ] = None,
    like: Annotated[
        int | None,
        typer.Option("--like", metavar="JOB", help="Start from job JOB's configuration."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="The job's name.")] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Submit a search job; prints its id.

    With --like JOB: job JOB's configuration, the job file's fields over it, named
    `<its name> (copy)` unless told."""
    if job_file is None and like is None:
        fail("give JOB_FILE, or --like JOB")
    body: dict[str, Any] = {}
    locate = None
    if job_file is not None:
        body, locate = load_job_file(job_file)
        body = resolve_dataset(body, job_file.parent)
    if like is not None and locate is not None:
        locate = _only_in_file(locate)
    with connect(server, token, locate) as api:
        if like is not None:
            body = api.like(like, body)
        if name is not None:
            body["name"] = name
        typer.echo(api.submit(body)["id"])


def jobs_cmd(server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    """List jobs."""
    table = Table("id", "name", "status", "done", "running", "best perplexity")
    with connect(server, token) as api:
        jobs = api.jobs()
    for job in jobs:
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
    with connect(server, token) as api:
        job = api.job(job_id)
        if as_json:
            typer.echo(json.dumps(job, indent=2))
            return
        pareto = api.pareto(job_id)
    typer.echo("\n".join([_summary(job), *_best_lines(job, pareto)]))


def watch_cmd(
    job_id: JobId,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    interval: Annotated[float, typer.Option(min=0.2)] = 2.0,
) -> None:
    """Follow a job until it ends (a live line on a terminal, a line per finished trial when
    piped); then the best and the front."""
    from api.cli.follow import follow

    job = follow(server, job_id, token, interval, console, history=False)
    with connect(server, token) as api:
        pareto = api.pareto(job_id)
    typer.echo(f"{_summary(job)}, front {len(pareto['front'])}")
    for line in _best_lines(job, pareto):
        typer.echo(line)
    if job.get("error"):
        typer.echo(f"error: {job['error']}")


def _transition(action: str):
    def command(job_id: JobId, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
        with connect(server, token) as api:
            typer.echo(_summary(getattr(api, action)(job_id)))

    command.__doc__ = f"{action.capitalize()} a job."
    return command


pause_cmd, resume_cmd, cancel_cmd = (_transition(a) for a in ("pause", "resume", "cancel"))


def _declared_or_best(api: Client, job: int) -> int:
    """A confirmed job's declared winner; else the best under the job's objective."""
    confirmation = api.request("GET", f"/jobs/{job}/confirmation")
    if confirmation["status"] == "done":
        if confirmation["winner"] is None:
            fail(f"--job: job {job}'s confirmation declared no winner: {confirmation['verdict']}")
        typer.echo(f"job {job}'s declared winner: {confirmation['verdict']}", err=True)
        return confirmation["winner"]
    if confirmation["status"] in ("running", "requested"):
        fail(f"--job: job {job}'s confirmation is still running: wait for its winner")
    progress = api.job(job)["progress"]
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
    with connect(server, token) as api:
        if job is not None:
            candidate_id = _declared_or_best(api, job)
        text = api.export(candidate_id, format, target)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}")
