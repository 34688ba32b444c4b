"""Following a job until it ends, for `nas watch` and `nas demo`.

On a terminal: one live line (elapsed time, trials done, running, best so far, ETA) with each
finished trial printed above it. Piped (logs, CI): one line per finished trial, nothing in
between, so a log reads as the search's history rather than a status every two seconds.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

from api.cli.client import request
from api.client import FINAL, PAGE

TRIAL_FINISHED = ("completed", "failed", "pruned", "diverged", "cancelled")


class TrialFeed:
    """Candidates of a job that finished since the last call, in birth order.

    Births are 0..n-1, so the page at `offset` = the first birth not yet finished holds
    everything new: a long job costs one page per poll, not its whole history."""

    def __init__(self, server: str, job_id: int, token: str | None) -> None:
        self.server, self.job_id, self.token = server, job_id, token
        self.offset = 0  # every birth below has finished and was returned
        self.seen: set[int] = set()  # finished and returned, at or above offset

    def new(self) -> list[dict[str, Any]]:
        fresh: list[dict[str, Any]] = []
        while True:
            page = request(
                "GET",
                self.server,
                f"/jobs/{self.job_id}/candidates",
                self.token,
                params={"sort": "birth", "limit": PAGE, "offset": self.offset},
            )
            items = page["items"]
            prefix = True  # still in the run of finished births from offset on
            for candidate in items:
                finished = candidate["status"] in TRIAL_FINISHED
                if finished and candidate["id"] not in self.seen:
                    fresh.append(candidate)
                    self.seen.add(candidate["id"])
                prefix = prefix and finished
                if prefix:
                    self.offset += 1
                    self.seen.discard(candidate["id"])
            if len(items) < PAGE or not prefix:
                return fresh


def origin(candidate: dict[str, Any]) -> str:
    """Where a trial came from: `baseline`, `initial`, `random sample`, or the tournament
    winner it mutates and how."""
    if candidate["is_baseline"]:
        return "the baseline"
    if candidate["parent_id"] is not None:
        return f"child of {candidate['parent_id']} ({candidate['mutation']})"
    return candidate["mutation"] or "proposal"


def trial_line(candidate: dict[str, Any], done: int, total: int) -> str:
    """`trial 6/20: candidate 7 completed, perplexity 9.812, step 0.913x baseline; child of 3
    (layer 2 hidden: 256 -> 384)`."""
    status = candidate["status"]
    parts = [f"trial {done}/{total}: candidate {candidate['id']} {status}"]
    if candidate.get("perplexity") is not None:
        parts.append(f"perplexity {candidate['perplexity']:.3f}")
    if candidate.get("step_time_ratio") is not None:
        parts.append(f"step {candidate['step_time_ratio']:.3f}x baseline")
    if status != "completed" and candidate.get("reason"):
        parts.append(str(candidate["reason"]).splitlines()[0][:120])
    if candidate.get("reused_from_id") is not None:
        parts.append(f"reused the result of candidate {candidate['reused_from_id']}")
    return ", ".join(parts) + f"; {origin(candidate)}"


def status_text(job: dict[str, Any], elapsed_s: float | None) -> str:
    p = job.get("progress") or {}
    best = p.get("best_perplexity")
    text = (
        f"{job['status']}, {_clock(elapsed_s)} elapsed, {p.get('running', 0)} running, "
        f"best perplexity {'-' if best is None else f'{best:.3f}'}"
    )
    return text + (f", ETA {_clock(p['eta_s'])}" if p.get("eta_s") else "")


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def follow(
    server: str,
    job_id: int,
    token: str | None = None,
    interval: float = 2.0,
    console: Console | None = None,
    history: bool = True,
) -> dict[str, Any]:
    """Follow `job_id` until its status is final; returns the job as last read. Without
    `history`, trials finished before the first poll are counted in one line, not listed
    (`nas watch` on a long job)."""
    console = console or Console()
    feed = TrialFeed(server, job_id, token)
    done = 0

    def finished_lines(total: int) -> list[str]:
        nonlocal done, history
        fresh = feed.new()
        if not history:
            history, done = True, len(fresh)
            return [f"{done} trials had finished before this"] if fresh else []
        lines = []
        for candidate in fresh:
            done += 1
            lines.append(trial_line(candidate, done, total))
        return lines

    if not console.is_terminal:
        while True:
            job = request("GET", server, f"/jobs/{job_id}", token)
            for line in finished_lines((job.get("progress") or {}).get("total", 0)):
                print(line, flush=True)
            if job["status"] in FINAL:
                return job
            time.sleep(interval)
    columns = (
        SpinnerColumn(),
        TextColumn(f"job {job_id}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("trials, {task.fields[status]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("", total=None, status="starting")
        while True:
            job = request("GET", server, f"/jobs/{job_id}", token)
            polled = time.monotonic()
            p = job.get("progress") or {}
            for line in finished_lines(p.get("total", 0)):
                progress.console.print(line, soft_wrap=True, highlight=False)
            final = job["status"] in FINAL
            while True:  # the elapsed time ticks between polls
                elapsed = p.get("elapsed_s")
                if job["status"] == "running" and elapsed is not None:
                    elapsed += time.monotonic() - polled
                progress.update(
                    task,
                    completed=p.get("done", 0),
                    total=p.get("total"),
                    status=status_text(job, elapsed),
                )
                if final or time.monotonic() - polled >= interval:
                    break
                time.sleep(0.25)
            if final:
                return job
