"""Multi-node Ray on one machine, for real: a head and a second node started as separate
`ray start` processes (1 CPU, so one trial slot, each), the service (`nas serve`) pointed at
the head with NAS_RAY_ADDRESS. A first job trains on both nodes (the candidates' Ray node
ids); during a second job the second node is killed mid-trial (every process of it, as when a
machine dies) and the job completes on the head's slot, the interrupted trial retried as
attempt 2 of the same row, no candidate lost. About a minute on a 2-vCPU machine.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from spaces import SMALL_SPACE
from test_runner import wait_for

from api.cli.local_server import free_port, start_server, stop_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

RAY = str(Path(sys.executable).with_name("ray"))
API = "/api/v1"
FINAL = ("completed", "failed", "cancelled")

# Connects as a driver, waits until `alive` nodes are alive, prints the nodes as JSON.
NODES_SCRIPT = """
import json, sys, time
import ray
address, alive, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ray.init(address=address, log_to_driver=False)
deadline = time.monotonic() + timeout
while True:
    nodes = ray.nodes()
    if sum(n["Alive"] for n in nodes) == alive or time.monotonic() > deadline:
        break
    time.sleep(0.2)
print(json.dumps([
    {"id": n["NodeID"], "alive": n["Alive"], "resources": n["Resources"]} for n in nodes
]))
"""


def ray_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NAS_", "RAY_ADDRESS"))}
    env.update(
        RAY_AUTH_MODE="disabled",  # a token file may exist: every node and driver must agree
        # Declare a node dead after about 3 s of failed health checks (default: 15 s or more).
        RAY_health_check_period_ms="1000",
        RAY_health_check_timeout_ms="1000",
        RAY_health_check_failure_threshold="3",
    )
    return env


def session_pids(sid: int) -> list[int]:
    """Living (not zombie) processes of a session: `ray start` was its leader, and Ray's
    daemons and workers stay in it (workers take process groups of their own)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, sid
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(entry))
    return found


def kill_session(sid: int, timeout: float = 10) -> list[int]:
    """SIGKILL every process of the session until none is left; returns the survivors."""
    deadline = time.monotonic() + timeout
    while (pids := session_pids(sid)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    return pids


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    head: subprocess.Popen
    second: subprocess.Popen
    head_id: str = ""
    second_id: str = ""

    def nodes(self, alive: int, timeout: float = 60) -> list[dict]:
        done = subprocess.run(
            [sys.executable, "-c", NODES_SCRIPT, self.address, str(alive), str(timeout)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout + 60,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def kill_second(self) -> None:
        """Every process of the second node at once (raylet, agents, its worker actors)."""
        assert not kill_session(self.second.pid)
        self.second.wait(timeout=30)


def ray_start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as output:
        return subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", *args],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a session of its own: the node's processes, all of them
        )


def wait_for_port(port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"ray start exited with {process.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the Ray head did not listen on {port} within {timeout:.0f} s")


@pytest.fixture
def cluster(tmp_path):
    """A head and a second node, 1 CPU each (one trial slot each), told apart by a custom
    resource. Every process of both is killed afterwards, whatever happened."""
    env = ray_env()
    temp_dir = tempfile.mkdtemp(prefix="r", dir="/tmp")  # unix socket paths: 107 bytes at most
    port = free_port()
    started: list[subprocess.Popen] = []
    try:
        head = ray_start(
            [
                "--head",
                f"--port={port}",
                "--num-cpus=1",
                "--node-ip-address=127.0.0.1",
                "--include-dashboard=false",
                f"--temp-dir={temp_dir}",
                '--resources={"head_node": 1}',
            ],
            env,
            tmp_path / "ray-head.log",
        )
        started.append(head)
        wait_for_port(port, head, timeout=60)
        second = ray_start(
            [
                f"--address=127.0.0.1:{port}",
                "--num-cpus=1",
                "--node-ip-address=127.0.0.1",
                '--resources={"second_node": 1}',
            ],
            env,
            tmp_path / "ray-second.log",
        )
        started.append(second)
        found = Cluster(f"127.0.0.1:{port}", env, head, second)
        nodes = found.nodes(alive=2)
        assert [n["alive"] for n in nodes] == [True, True], nodes
        found.head_id = next(n["id"] for n in nodes if "head_node" in n["resources"])
        found.second_id = next(n["id"] for n in nodes if "second_node" in n["resources"])
        yield found
    finally:
        for process in reversed(started):  # `ray start --block` stops its node on SIGTERM
            process.terminate()
        for process in reversed(started):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        left = [pid for process in started for pid in kill_session(process.pid)]
        for process in started:
            process.wait(timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes survived the test: {left}"


def candidates(client: httpx.Client, job_id: int) -> list[dict]:
    page = client.get(f"{API}/jobs/{job_id}/candidates", params={"limit": 1000})
    page.raise_for_status()
    return page.json()["items"]


def events(client: httpx.Client, job_id: int) -> list[dict]:
    """Every event of a finished job (the stream ends once the job is finished)."""
    stream = client.get(f"{API}/jobs/{job_id}/events", params={"since": 0}, timeout=30)
    stream.raise_for_status()
    return [
        json.loads(line.removeprefix("data:"))
        for line in stream.text.splitlines()
        if line.startswith("data:")
    ]


def submit(client: httpx.Client, shakespeare: str, max_trials: int, seed: int) -> int:
    body = {
        "name": f"multinode-{seed}",
        "dataset": shakespeare,
        "seed": seed,  # a seed of its own: nothing reused from the other job, all trained
        "search_space": {"preset": "proxy-cpu", "overrides": SMALL_SPACE},
        "trial": {"budget_s": 2.0, "batch_size": 8, "eval_tokens": 2048},
        "limits": {"max_trials": max_trials},
        "evolution": {"population_size": 4, "tournament_size": 2},
        "workers": {"concurrency": 2},  # the slots of both nodes: one each
        "hurdle": {"enabled": False},  # the retried trial must finish, not be pruned
    }
    created = client.post(f"{API}/jobs", json=body)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def wait_until_finished(client: httpx.Client, job_id: int, message: str) -> dict:
    def finished() -> dict | None:
        job = client.get(f"{API}/jobs/{job_id}").json()
        return job if job["status"] in FINAL else None

    return wait_for(finished, 180, message)


def report(cluster: Cluster, job_id: int, rows: list[dict]) -> None:
    names = {cluster.head_id: "head", cluster.second_id: "second"}
    for c in rows:
        print(
            f"  job {job_id} candidate {c['id']} birth {c['birth']}: {c['status']}, "
            f"attempt {c['attempt']} on {names.get(c['node_id'])} ({(c['node_id'] or '')[:8]}) "
            f"slot {c['slot']}, {c['started_at']} .. {c['finished_at']}"
        )


def test_trials_run_on_both_nodes_and_survive_the_second_dying(cluster, tmp_path, shakespeare):
    began = time.monotonic()
    env = {
        **cluster.env,
        "NAS_RAY_ADDRESS": cluster.address,
        "NAS_DATABASE_URL": f"sqlite:///{tmp_path / 'nas.db'}",
        "NAS_HOME": str(tmp_path / "home"),
    }
    log = tmp_path / "serve.log"
    server, url = start_server(env=env, log=log, timeout=60)
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            trials_run_on_both_nodes(client, cluster, shakespeare)
            print(f"phase 1 done at {time.monotonic() - began:.1f} s")
            the_job_survives_the_second_node(client, cluster, shakespeare)
            print(f"phase 2 done at {time.monotonic() - began:.1f} s")
    finally:
        stop_server(server)
        print(f"--- nas serve output (tail) ---\n{log.read_text()[-6000:]}")


def trials_run_on_both_nodes(client: httpx.Client, cluster: Cluster, shakespeare: str) -> None:
    """Two slots, one on each node, both busy from the start (a trial starts beside the
    baseline): the job's trials ran on both nodes."""
    job_id = submit(client, shakespeare, max_trials=3, seed=0)
    job = wait_until_finished(client, job_id, "the first job")
    rows = candidates(client, job_id)
    report(cluster, job_id, rows)
    assert job["status"] == "completed", job
    assert [(c["status"], c["attempt"]) for c in rows] == [("completed", 1)] * 3
    assert {c["node_id"] for c in rows} == {cluster.head_id, cluster.second_id}


def the_job_survives_the_second_node(client: httpx.Client, cluster: Cluster, shakespeare: str):
    """Kill the second node while it trains a trial: the trial is retried on the head (same
    row, attempt 2), the job completes on the head's slot, no candidate lost or failed."""
    max_trials = 4
    job_id = submit(client, shakespeare, max_trials=max_trials, seed=1)

    def running_on_second() -> dict | None:
        """Two slots: the baseline's node tells which slot is on which node."""
        rows = candidates(client, job_id)
        baseline = rows[0] if rows else None
        if baseline is None or baseline["status"] != "completed":
            return None
        for c in rows[1:]:
            if c["status"] == "running":
                started = datetime.fromisoformat(c["started_at"]).timestamp()
                same_node = c["slot"] == baseline["slot"]
                on_second = same_node == (baseline["node_id"] == cluster.second_id)
                if on_second and time.time() - started >= 0.5:  # dispatched, far from done
                    return c
        return None

    victim = wait_for(running_on_second, 120, "a trial running on the second node")
    cluster.kill_second()
    killed_at = time.time()
    nodes = cluster.nodes(alive=1)  # Ray itself sees the node dead
    assert {n["id"]: n["alive"] for n in nodes} == {cluster.head_id: True, cluster.second_id: False}

    job = wait_until_finished(client, job_id, "the second job to finish on the head alone")
    rows = candidates(client, job_id)
    print(f"killed the second node during candidate {victim['id']}")
    report(cluster, job_id, rows)
    assert job["status"] == "completed", job
    # No candidate lost: every trial of the budget is a row, completed, none failed.
    assert sorted(c["birth"] for c in rows) == list(range(max_trials))
    assert [c["status"] for c in rows] == ["completed"] * max_trials
    retried = next(c for c in rows if c["id"] == victim["id"])
    assert retried["attempt"] == 2 and retried["node_id"] == cluster.head_id
    assert retried["slot"] != victim["slot"]  # the head's slot, not the dead node's
    assert all(c["attempt"] == 1 for c in rows if c["id"] != victim["id"])
    for c in rows:  # after the kill, everything ran on the head
        if datetime.fromisoformat(c["started_at"]).timestamp() > killed_at:
            assert c["node_id"] == cluster.head_id and c["slot"] == retried["slot"]
    retried_ids = [
        e["candidate_id"]
        for e in events(client, job_id)
        if (e["kind"], e["message"]) == ("trial", "retry")
    ]
    assert retried_ids == [victim["id"]]  # one interruption, one retry
