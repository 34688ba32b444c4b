"""Per-node core allocation: the lock-file allocator in plain processes (several holders,
SIGKILL, exhaustion), then trial actors of two pools on a real local Ray."""

import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from workers.actor import worker_actor
from workers.cores import LOCK_DIR_ENV, allocate, lock_dir

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="CPU pinning needs sched_setaffinity"
)

ROOT = Path(__file__).resolve().parents[1]

# Takes cores, prints them, and holds them until killed.
HOLDER = """
import json, sys, time
from pathlib import Path
from workers.cores import allocate
count, available, wait_s, directory = sys.argv[1:]
lease = allocate(int(count), json.loads(available), float(wait_s), Path(directory))
print(json.dumps({"cores": lease.cores, "shared": lease.shared}), flush=True)
time.sleep(600)
"""


class Holder:
    def __init__(self, directory: Path, count: int, available: list[int], wait_s: float = 0.0):
        args = [str(count), json.dumps(available), str(wait_s), str(directory)]
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lease: dict | None = None

    @property
    def lease(self) -> dict:
        if self._lease is None:
            line = self.process.stdout.readline()
            assert line, self.process.stderr.read()
            self._lease = json.loads(line)
        return self._lease

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def holders(tmp_path):
    started: list[Holder] = []

    def start(count: int, available: list[int], wait_s: float = 0.0) -> Holder:
        started.append(Holder(tmp_path, count, available, wait_s))
        return started[-1]

    yield start
    for holder in started:
        if holder.process.poll() is None:
            holder.kill()
        holder.process.stdout.close()
        holder.process.stderr.close()


def test_concurrent_holders_get_disjoint_contiguous_blocks(holders):
    widths = [2, 1, 3, 2]
    started = [holders(width, list(range(8))) for width in widths]  # all racing at once
    leases = [holder.lease for holder in started]
    taken = [core for lease in leases for core in lease["cores"]]
    assert sorted(taken) == list(range(8))  # each core exactly once
    for width, lease in zip(widths, leases, strict=True):
        assert not lease["shared"]
        assert lease["cores"] == list(range(lease["cores"][0], lease["cores"][0] + width))


def test_a_killed_holders_cores_are_free_again(holders, tmp_path):
    first = holders(2, [0, 1, 2, 3])
    assert first.lease["cores"] == [0, 1]
    assert holders(2, [0, 1, 2, 3]).lease["cores"] == [2, 3]
    first.kill()
    lease = allocate(2, [0, 1, 2, 3], wait_s=0, directory=tmp_path)
    try:
        assert lease.cores == [0, 1] and not lease.shared
    finally:
        lease.release()
    lease = allocate(4, [0, 1, 2, 3], wait_s=0, directory=tmp_path)
    lease.release()
    assert lease.shared  # [2, 3] are still held


def test_waits_for_a_holder_that_is_exiting(holders, tmp_path):
    holder = holders(2, [0, 1])
    assert holder.lease["cores"] == [0, 1]
    threading.Timer(0.5, holder.kill).start()
    start = time.monotonic()
    lease = allocate(1, [0, 1], wait_s=10, directory=tmp_path)
    lease.release()
    assert 0.4 < time.monotonic() - start < 5
    assert lease.cores == [0] and not lease.shared


def test_exhaustion_shares_the_least_contended_cores_and_says_so(holders, tmp_path, caplog):
    assert holders(3, [0, 1, 2, 3]).lease["cores"] == [0, 1, 2]
    second = holders(2, [0, 1, 2, 3], wait_s=0.3)
    assert second.lease == {"cores": [0, 3], "shared": True}  # 3 was free, 0 the first of 0-2
    caplog.set_level(logging.WARNING, logger="workers.cores")
    start = time.monotonic()
    lease = allocate(2, [0, 1, 2, 3], wait_s=0.3, directory=tmp_path)
    lease.release()
    assert time.monotonic() - start >= 0.3  # waited before giving up on free cores
    assert lease.cores == [1, 2] and lease.shared  # loads were 0: 2, 1: 1, 2: 1, 3: 1
    assert "sharing cores [1, 2]" in caplog.text
    assert holders(8, [0, 1, 2, 3]).lease == {"cores": [0, 1, 2, 3], "shared": True}


def test_lock_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
    assert lock_dir() == tmp_path / "locks" and lock_dir().is_dir()
    monkeypatch.delenv(LOCK_DIR_ENV)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert lock_dir() == tmp_path / f"nas-service-cores-{os.getuid()}"


# On a real Ray: actors of two pools on one node, labelled with global slot indices (those
# in between run on other nodes), must pin to disjoint cores, and a restarted actor gets its
# cores back. Fractional CPUs make the pools fit the test Ray's 2 logical CPUs.


def start_actors(ray, tmp_path, shapes: list[tuple[int, float]]) -> list:
    env = {"env_vars": {LOCK_DIR_ENV: str(tmp_path / "locks")}}
    return [worker_actor(slot=slot, cpus_per_slot=cpus, runtime_env=env) for slot, cpus in shapes]


def restart(ray, actor, info: dict) -> dict:
    """Kill the actor's process; Ray restarts it. Its new info."""
    ray.kill(actor, no_restart=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            new = ray.get(actor.info.remote(), timeout=30)
        except ray.exceptions.RayActorError:
            time.sleep(0.2)
            continue
        if new["pid"] != info["pid"]:
            return new
    raise AssertionError("the actor was not restarted")


def check_pools(ray, tmp_path, shapes: list[tuple[int, float]]) -> None:
    actors = start_actors(ray, tmp_path, shapes)
    try:
        infos = ray.get([actor.info.remote() for actor in actors], timeout=120)
        widths = [math.ceil(cpus) for _, cpus in shapes]
        assert [len(info["cores"]) for info in infos] == widths
        assert not any(info["cores_shared"] for info in infos)
        taken = [core for info in infos for core in info["cores"]]
        assert len(taken) == len(set(taken)), infos  # no core pinned by two actors
        assert set(taken) <= os.sched_getaffinity(0)
        # Ray restarts a killed actor in a new process: it takes back the cores freed by the
        # old one (the lowest free block), while the others keep theirs.
        new = restart(ray, actors[0], infos[0])
        assert new["cores"] == infos[0]["cores"] and not new["cores_shared"]
        assert ray.get([actor.info.remote() for actor in actors[1:]]) == infos[1:]
    finally:
        for actor in actors:
            ray.kill(actor)


@pytest.mark.slow
def test_two_pools_with_interleaved_slots_pin_disjoint_cores(ray_local, tmp_path):
    # Global slots 0 and N (N = this node's cores) on one node: the old slot-derived pinning
    # put both on the same core.
    check_pools(ray_local, tmp_path, [(0, 1), (len(os.sched_getaffinity(0)), 1)])


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 3, reason="needs 3 cores: 2 + 1")
def test_pools_of_one_and_two_cores_pin_disjoint_cores(ray_local, tmp_path):
    # A 2-core pool's slot 0 and a 1-core pool's slot 1: the old pinning gave [0, 1] and [1].
    check_pools(ray_local, tmp_path, [(0, 1.5), (1, 0.5)])
