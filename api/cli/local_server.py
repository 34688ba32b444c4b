"""`nas serve` in a child process, started and waited for: the demo, benchmarks and tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path

import httpx


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
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/api/v1/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise TimeoutError(f"the server did not answer at {url} within {timeout:.0f} s")


def stop_server(process: subprocess.Popen, timeout: float = 60) -> None:
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
