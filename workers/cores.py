"""Which CPU cores a trial actor pins itself to, chosen per node.

Ray counts CPUs per node but does not say which cores an actor gets, and slot indices are
global (several pools, several nodes), so they cannot pick cores. Instead each actor locks
one file per core ("seat") in a node-local directory with `flock`; the kernel drops the locks
when the process dies, SIGKILL included, so a dead or restarted actor frees its cores
without any bookkeeping. A core may have more seats when it has to be shared: the number of
locked seats is how contended it is.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

LOCK_DIR_ENV = "NAS_CORE_LOCK_DIR"
WAIT_S = 5.0  # long enough for a restarted actor's predecessor to finish exiting
_SEAT = re.compile(r"cpu(\d+)\.(\d+)\.lock")

log = logging.getLogger(__name__)


def lock_dir() -> Path:
    """This node's lock directory: `NAS_CORE_LOCK_DIR`, or one per user in the temp dir."""
    configured = os.environ.get(LOCK_DIR_ENV)
    path = Path(configured or Path(tempfile.gettempdir()) / f"nas-service-cores-{os.getuid()}")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


@dataclass
class CoreLease:
    """Cores held by this process until `release` or exit; `shared` if others use them too."""

    cores: list[int]
    shared: bool
    _fds: list[int] = field(default_factory=list, repr=False)

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive lock on `path`, or None if someone has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def _survey(directory: Path, cores: list[int]) -> tuple[dict[int, int], dict[int, int]]:
    """Per core: how many seats are held, and a descriptor locking its lowest free seat."""
    seats: dict[int, set[int]] = {core: {0} for core in cores}
    for name in os.listdir(directory):
        match = _SEAT.fullmatch(name)
        if match and int(match[1]) in seats:
            seats[int(match[1])].add(int(match[2]))
    load: dict[int, int] = {}
    free: dict[int, int] = {}
    for core in cores:
        load[core] = 0
        for seat in sorted(seats[core]):
            fd = _try_lock(directory / f"cpu{core}.{seat}.lock")
            if fd is None:
                load[core] += 1
            elif core in free:
                os.close(fd)
            else:
                free[core] = fd
        seat = max(seats[core])
        while core not in free:  # every seat is taken: add one
            seat += 1
            fd = _try_lock(directory / f"cpu{core}.{seat}.lock")
            if fd is not None:
                free[core] = fd
    return load, free


def _tightest(cores: list[int], count: int) -> list[int]:
    """The `count` of the sorted `cores` spanning the fewest ids (a contiguous block if any)."""
    start = min(range(len(cores) - count + 1), key=lambda i: cores[i + count - 1] - cores[i])
    return cores[start : start + count]


def allocate(
    count: int,
    available: Iterable[int] | None = None,
    wait_s: float = WAIT_S,
    directory: Path | None = None,
) -> CoreLease:
    """Lock `count` cores of `available` (default: this process's affinity mask) that no
    live holder has, preferring a contiguous block; after `wait_s` without enough free
    cores, share the least contended ones and say so (`shared=True`) rather than fail."""
    cores = sorted(set(os.sched_getaffinity(0) if available is None else available))
    count = max(1, min(count, len(cores)))
    directory = directory or lock_dir()
    deadline = time.monotonic() + wait_s
    while True:
        # One allocator at a time per node, so two never both see a core as free.
        mutex = os.open(directory / "allocate.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(mutex, fcntl.LOCK_EX)
            load, free = _survey(directory, cores)
            idle = [core for core in cores if load[core] == 0]
            last_try = time.monotonic() >= deadline
            if len(idle) >= count:
                chosen, shared = _tightest(idle, count), False
            elif last_try:
                chosen = sorted(sorted(cores, key=lambda core: (load[core], core))[:count])
                shared = True
            else:
                chosen = []
            for core, fd in free.items():
                if core not in chosen:
                    os.close(fd)
        finally:
            os.close(mutex)  # also releases the flock
        if chosen:
            break
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    if shared:
        log.warning(
            "only %d of the %d cores are free (%s); sharing cores %s with other trials",
            len(idle),
            len(cores),
            idle,
            chosen,
        )
    return CoreLease(chosen, shared, [free[core] for core in chosen])
