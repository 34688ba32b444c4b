"""`nas serve` in a child process, started and waited for: the demo, benchmarks and tests."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    *serve_args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    log: Path | None = None,
) -> tuple[subprocess.Popen, str]:
    """Start `nas serve --port <free> *serve_args`; return it and its URL once it answers.
    With `log`, the server's and its runner's output go to that file (else nowhere).

    Raises RuntimeError (the server stopped) or TimeoutError (it never answered)."""
    port = free_port()
    # The child keeps its own descriptor of the log once started.
    with nullcontext(subprocess.DEVNULL) if log is None else open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(port), *serve_args],
            env=None if env is None else dict(env),
            stdout=output,
            stderr=output,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with status {process.returncode}")
            try:
                if httpx.get(f"{url}/api/v1/healthz", timeout=1).status_code == 200:
                    return process, url
            except httpx.TransportError:
                time.sleep(0.2)
    except BaseException:  # e.g. Ctrl+C while it starts: stop it, not only this process
        stop_server(process, timeout=30)
        raise
    stop_server(process, timeout=30)
    raise TimeoutError(f"the server did not answer at {url} within {timeout:.0f} s")


def stop_server(process: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM, SIGKILL after `timeout`; then end what it leaves behind. Processes a local Ray
    started (its dashboard and runtime-env agents, workers) can outlive the one that started
    them when it is killed, or stop a few seconds after it: every descendant is ended too."""
    family = descendants(process.pid)
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    end_processes(family)


def descendants(pid: int) -> list[psutil.Process]:
    """The processes under `pid` now (none if it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def end_processes(processes: list[psutil.Process], grace: float = 5.0) -> None:
    """Give `processes` `grace` seconds to exit on their own, then SIGTERM the rest and SIGKILL
    what is left 3 s later. psutil checks each process's start time, so a pid reused by an
    unrelated process since is never signalled; a zombie (exited, not yet reaped) counts as
    gone."""
    alive = _wait(processes, grace)
    for signal_name in ("terminate", "kill"):
        for process in alive:
            with contextlib.suppress(psutil.Error):
                getattr(process, signal_name)()
        alive = _wait(alive, 3.0)


def _wait(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of `processes` still running after at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [process for process in processes if _running(process)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
