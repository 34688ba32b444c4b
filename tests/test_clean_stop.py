"""Ctrl+C and SIGTERM on `nas serve` and `nas demo`: no traceback, and nothing left running,
Ray's processes (raylet, GCS, workers, the dashboard and runtime-env agents) included.

Each command starts in its own session, as a terminal starts a command line; Ctrl+C is
SIGINT to its process group. Whatever it started is found by session id (what Ray starts
keeps it) and as the descendants seen just before the signal.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from api.cli.local_server import free_port

NAS = str(Path(sys.executable).with_name("nas"))
pytestmark = pytest.mark.slow


def in_session(sid: int) -> list[psutil.Process]:
    """Live (not zombie) processes of session `sid`."""
    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == sid and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (OSError, psutil.Error):
            continue
    return found


def names(processes: list[psutil.Process]) -> list[str]:
    described = []
    for process in processes:
        try:
            described.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
        except psutil.Error:
            continue
    return described


def wait_for(predicate, timeout: float, what: str, process: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode} before {what}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def ray_up(process: subprocess.Popen) -> None:
    """Wait for the runner's raylet, then (up to 60 s) for the agents it starts: those
    outlived a Ctrl+C before."""
    text = lambda: " ".join(names(in_session(process.pid)))  # noqa: E731
    wait_for(lambda: "raylet" in text(), 180, "the runner's Ray", process)
    agents = (("DashboardAgent", "dashboard/agent.py"), ("RuntimeEnvAgent", "runtime_env"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(any(name in text() for name in pair) for pair in agents):
            return
        time.sleep(0.5)


@pytest.fixture
def start(tmp_path: Path):
    """Start `nas *args` in its own session; a test that fails midway ends the session."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        env = {**os.environ, "NAS_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
        env.pop("NAS_RAY_ADDRESS", None)  # a local Ray, started by the service itself
        process = subprocess.Popen(
            [NAS, *args],
            stdout=(tmp_path / "stdout").open("wb"),
            stderr=(tmp_path / "stderr").open("wb"),
            start_new_session=True,
            env=env,
            cwd=tmp_path,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        for survivor in in_session(process.pid):
            with contextlib.suppress(psutil.Error):
                survivor.kill()


def stop_and_check(process: subprocess.Popen, how: str, tmp_path: Path) -> int:
    """Send the signal, then: the command exits, every process of its session and every
    descendant it had is gone within a minute, and nothing printed a traceback."""
    family = psutil.Process(process.pid).children(recursive=True)
    if how == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)
    else:
        os.kill(process.pid, signal.SIGTERM)
    try:
        code = process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"still running 120 s after {how}: {names(in_session(process.pid))}")
    deadline = time.monotonic() + 60
    left: list[psutil.Process] = []
    while time.monotonic() < deadline:
        left = in_session(process.pid)
        left += [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not left:
            break
        time.sleep(0.5)
    for survivor in left:  # never leave them to the next test
        with contextlib.suppress(psutil.Error):
            survivor.kill()
    assert not left, f"left running after {how}: {names(left)}"
    stderr = (tmp_path / "stderr").read_text(errors="replace")
    assert "Traceback" not in stderr, stderr[-4000:]
    return code


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_serve_stops_cleanly_with_its_ray(start, tmp_path, how):
    port = free_port()
    process = start("serve", "--port", str(port))
    url = f"http://127.0.0.1:{port}/api/v1/healthz"

    def serving() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(serving, 120, "the API to answer", process)
    ray_up(process)
    assert stop_and_check(process, how, tmp_path) == 0


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_demo_stops_cleanly_while_a_trial_runs(start, tmp_path, how):
    process = start("demo", "--trials", "3", "--budget", "30", "--out", "out")

    def job_url() -> str | None:
        stdout = (tmp_path / "stdout").read_text()
        found = re.search(r"(http://127\.0\.0\.1:\d+)/#/jobs/(\d+)", stdout)
        return found and f"{found.group(1)}/api/v1/jobs/{found.group(2)}"

    url = wait_for(job_url, 180, "the job's dashboard URL", process)
    wait_for(
        lambda: httpx.get(url, timeout=5).json()["progress"]["running"] >= 1,
        240,
        "a trial to run",
        process,
    )
    time.sleep(2.0)  # the trial's worker is training
    assert stop_and_check(process, how, tmp_path) == 130
    assert "interrupted: stopping the service" in (tmp_path / "stderr").read_text()


def test_demo_keeps_serving_until_ctrl_c(start, tmp_path):
    process = start("demo", "--trials", "1", "--budget", "0.5", "--out", "out", "--keep-serving")
    serving = re.compile(r"^serving (http://127\.0\.0\.1:\d+)/ until Ctrl\+C$", re.M)
    text = lambda: (tmp_path / "stdout").read_text()  # noqa: E731
    url = wait_for(lambda: serving.search(text()), 400, "the demo's end", process).group(1)
    stdout = text()
    assert "dashboard (stays up after the demo until Ctrl+C)" in stdout
    assert httpx.get(f"{url}/api/v1/healthz", timeout=5).status_code == 200
    assert "baseline: candidate" in stdout and "perplexity / baseline" in stdout
    assert (tmp_path / "out" / "best.json").exists()
    assert stop_and_check(process, "ctrl-c", tmp_path) == 0
