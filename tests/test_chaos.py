"""Chaos: a 30-trial search runs to its end while, at random moments drawn from a fixed seed,
its runner process is SIGKILLed (and restarted after a moment, as a supervisor would), a
worker actor's process is SIGKILLed mid-trial, and the PostgreSQL server restarts. Real
processes and real faults only: a throwaway PostgreSQL cluster (`initdb` + `pg_ctl`), `nas
runner` subprocesses on the session's local Ray, JAX trials on tinyshakespeare.

Afterwards the stored rows must say that nothing was lost or done twice: the job completed,
every candidate finished exactly once, no spec trained twice, every result recorded, and the
event log tells each attempt's start and each candidate's end once."""

from __future__ import annotations

import contextlib
import glob
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from spaces import SMALL_SPACE
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from test_runner import small_job

from nas_service import jobs
from nas_service.db import Database
from nas_service.models import CANDIDATE_FINISHED, Candidate, Job, JobEvent, Run

SEED = 20261130
TRIALS = 30
# Two attempts: a trial interrupted twice (a worker killed, then its runner) is given up,
# so the give-up paths run too, not only the retries.
MAX_ATTEMPTS = 2
# The whole job, faults included: CI's budget (2 cores). A machine shared with other work
# may need more: NAS_CHAOS_DEADLINE_S.
DEADLINE_S = float(os.environ.get("NAS_CHAOS_DEADLINE_S", "240"))
# Dense blocks of 2-3 layers: each new spec compiles in ~1-3 s on 2 cores (MoE layers take
# about twice that); the faults are the controller's, the blocks do not matter here.
SPACE = {**SMALL_SPACE, "layer_kinds": ["attention", "ffn"], "max_layers": 3}
FAULTS_PER_KIND = 2  # each kind at least this often (the plan has a few more)
LEASE_S, HEARTBEAT_S = 3.0, 0.5
# The reasons the runner gives a trial that the faults made it give up.
WORKER_DIED = "worker died during attempt"
READOPTED_LAST = "interrupted during its last attempt"


# --- a throwaway PostgreSQL server ---------------------------------------------------------


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
    return Path(versions[-1]).parent if versions else None


def _version(path: str) -> tuple[int, ...]:
    number = Path(path).parts[-3]
    return tuple(int(part) for part in number.split(".") if part.isdigit())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A PostgreSQL cluster of its own in a temporary directory, on a free port, with trust
    authentication and no fsync; `restart()` is `pg_ctl restart -m fast` (connections drop).
    As root, the server runs as the `postgres` OS user (PostgreSQL refuses root)."""

    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="nas-chaos-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.restarts: list[float] = []  # seconds each restart took

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        command = [*self.as_user, str(self.bin / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)}: {done.stderr or done.stdout}\n{tail}")

    def start(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "50",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60")

    def restart(self) -> float:
        start = time.monotonic()
        self._run(
            "pg_ctl", "restart", "-m", "fast", "-D", str(self.data), "-l", str(self.log),
            "-w", "-t", "60",
        )  # fmt: skip
        took = time.monotonic() - start
        self.restarts.append(took)
        return took

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "stop", "-m", "immediate", "-D", str(self.data), "-w", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def throwaway_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own (initdb + pg_ctl), stopped and removed at the
    end; skipped where no PostgreSQL binaries are installed."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (pg_ctl, initdb) found")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# --- the faults ------------------------------------------------------------------------


class Supervisor:
    """Keeps one `nas runner` process up, as `nas serve` or an orchestrator would: when it
    dies it is started again after a moment, under a new runner id (a new process, so the
    job is taken over once the dead one's lease ends)."""

    def __init__(self, env: dict[str, str], logs: Path, restart_after_s: float = 1.0):
        self.env = env
        self.logs = logs
        self.restart_after_s = restart_after_s
        self.process: subprocess.Popen | None = None
        self.runner_id = ""
        self.started = 0
        self.exits: list[int] = []  # return codes of processes that ended by themselves
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="chaos-supervisor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        self.started += 1
        runner_id = f"chaos-{self.started}"
        log = (self.logs / f"{runner_id}.log").open("wb")
        nas = str(Path(sys.executable).with_name("nas"))
        with self._lock:
            self.process = subprocess.Popen(
                [nas, "runner"],
                env={**self.env, "NAS_RUNNER_ID": runner_id},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            self.runner_id = runner_id
        log.close()

    def kill(self) -> str:
        """SIGKILL the current runner process; returns its runner id."""
        with self._lock:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            return self.runner_id

    def alive(self) -> bool:
        with self._lock:
            return self.process is not None and self.process.poll() is None

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                rc = self.process.poll() if self.process else None
            if rc is None:
                continue
            if rc != -signal.SIGKILL:
                self.exits.append(rc)
            if self._stop.wait(self.restart_after_s):
                return
            self._spawn()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log_tail(self, chars: int = 6000) -> str:
        parts = []
        for path in sorted(self.logs.glob("chaos-*.log"), key=lambda p: p.stat().st_mtime):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts[-3:])


def trial_workers(gcs_address: str) -> list[tuple[int, bool]]:
    """(pid, busy) of the `TrialWorker` actor processes of this test session's Ray (children
    of its raylet; other Ray clusters on the machine are left alone)."""
    raylets = {
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any("raylet" in part for part in (p.info["cmdline"] or [])[:1])
        and gcs_address in " ".join(p.info["cmdline"] or [])
    }
    found = []
    for p in psutil.process_iter(["ppid", "cmdline"]):
        title = " ".join(p.info["cmdline"] or [])
        if p.info["ppid"] in raylets and title.startswith("ray::TrialWorker"):
            found.append((p.pid, title.startswith("ray::TrialWorker.run")))
    return found


class Chaos:
    """Injects the planned faults one after another, each after a random pause (from the
    seed) and only once the job has recorded a new result since the previous fault, so the
    search makes progress between faults. Records what it did and when."""

    def __init__(
        self,
        plan: list[str],
        seed: int,
        read: Callable[[Callable[[Any], Any]], Any],
        job_id: int,
        supervisor: Supervisor,
        gcs_address: str,
        postgres: PostgresServer | None,
        deadline: float,
    ):
        self.plan = plan
        self.rng = random.Random(seed)
        self.read = read
        self.job_id = job_id
        self.supervisor = supervisor
        self.gcs_address = gcs_address
        self.postgres = postgres
        self.deadline = deadline
        self.injected: Counter[str] = Counter()
        self.log: list[tuple[float, str, str]] = []  # (wall time, kind, detail)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drive, name="chaos-driver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _finished(self) -> int:
        return self.read(
            lambda session: len(
                session.scalars(
                    select(Candidate.id).where(
                        Candidate.job_id == self.job_id,
                        Candidate.status.in_(CANDIDATE_FINISHED),
                    )
                ).all()
            )
        )

    def _job_status(self) -> str:
        return self.read(
            lambda session: session.scalar(select(Job.status).where(Job.id == self.job_id))
        )

    def _wait(self, predicate: Callable[[], Any]) -> Any:
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            value = predicate()
            if value:
                return value
            if self._job_status() in ("completed", "failed", "cancelled"):
                return None
            self._stop.wait(0.2)
        return None

    def _drive(self) -> None:
        try:
            finished = 0
            for kind in self.plan:
                if self._stop.wait(self.rng.uniform(2.0, 6.0)):
                    return
                # progress since the last fault, and a runner up that holds the job
                if not self._wait(lambda done=finished: self._finished() > done):
                    return
                if not self._wait(self._runner_holds_job):
                    return
                if kind == "worker" and not self._wait(
                    lambda: [pid for pid, busy in trial_workers(self.gcs_address) if busy]
                ):
                    return
                detail = getattr(self, f"_{kind}")()
                self.injected[kind] += 1
                self.log.append((time.time(), kind, detail))
                finished = self._finished()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _runner_holds_job(self) -> bool:
        if not self.supervisor.alive():
            return False
        owner = self.read(
            lambda session: session.scalar(select(Job.runner_id).where(Job.id == self.job_id))
        )
        return owner == self.supervisor.runner_id

    def _runner(self) -> str:
        return f"SIGKILL runner {self.supervisor.kill()}"

    def _worker(self) -> str:
        for _ in range(50):  # the trial seen running may have ended meanwhile: pick again
            found = trial_workers(self.gcs_address)
            busy = sorted(pid for pid, running in found if running)
            pid = self.rng.choice(busy or sorted(pid for pid, _ in found) or [0])
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    return f"SIGKILL TrialWorker pid {pid} ({'mid-trial' if busy else 'idle'})"
            time.sleep(0.1)
        raise AssertionError("no TrialWorker process to kill")

    def _database(self) -> str:
        assert self.postgres is not None
        took = self.postgres.restart()
        return f"pg_ctl restart -m fast ({took:.1f} s)"


def _plan(kinds: list[str], rounds: int, rng: random.Random) -> list[str]:
    """Rounds of every kind in a random order: after n rounds, n of each."""
    plan = []
    for _ in range(rounds):
        round_ = list(kinds)
        rng.shuffle(round_)
        plan += round_
    return plan


# --- the test --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_search_survives_killed_runners_workers_and_database_restarts(
    backend, request, tmp_path, ray_local, shakespeare
):
    postgres: PostgresServer | None = None
    if backend == "postgresql":
        postgres = request.getfixturevalue("throwaway_postgres")
        url = postgres.url
    else:
        url = f"sqlite:///{tmp_path / 'nas.db'}"
    db = Database(url)
    db.upgrade()

    def read(query: Callable[[Any], Any]) -> Any:
        """A read that waits out a restarting server (the test's own connection drops too)."""
        for _ in range(300):
            try:
                with db.sessions() as session:
                    return query(session)
            except OperationalError:
                time.sleep(0.2)
        raise AssertionError("the database stayed unreachable for a minute")

    config = small_job(
        shakespeare,
        search_space={"preset": "proxy-cpu", "overrides": SPACE},
        objective={"baseline": "dense"},
        trial={
            "budget_s": None,  # small_job's
            "budget_steps": 5,
            "eval_tokens": 1024,
            "reference_steps": 2,
            "eval_at": [1.0],
        },
        limits={"max_trials": TRIALS},
        evolution={"population_size": 8, "tournament_size": 2},
        workers={"concurrency": 2, "max_attempts": MAX_ATTEMPTS},
        # Runs other than candidates' own trials go through the same faults.
        fidelity={"rungs": [{"budget_multiplier": 2, "promote": 0.2, "seeds": 2}]},
        confirm={"top_k": 1, "seeds": 2, "budget_multiplier": 2},
    )
    job = jobs.submit(db, config)
    gcs_address = ray_local.get_runtime_context().gcs_address
    env = {
        **os.environ,
        "NAS_DATABASE_URL": url,
        "NAS_RAY_ADDRESS": gcs_address,
        "NAS_LEASE_S": str(LEASE_S),
        "NAS_HEARTBEAT_S": str(HEARTBEAT_S),
        "NAS_POLL_S": "0.05",
        "NAS_HOME": str(tmp_path),
    }
    rng = random.Random(f"{SEED}-{backend}")
    kinds = ["runner", "worker"] + (["database"] if postgres else [])
    plan = _plan(kinds, FAULTS_PER_KIND + 1, rng)
    supervisor = Supervisor(env, tmp_path)
    start = time.monotonic()
    deadline = start + DEADLINE_S
    chaos = Chaos(
        plan, rng.randrange(2**32), read, job.id, supervisor, gcs_address, postgres, deadline
    )
    supervisor.start()
    chaos.start()
    status = None
    try:
        while time.monotonic() < deadline:
            status = read(lambda s: s.scalar(select(Job.status).where(Job.id == job.id)))
            if status in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.5)
    finally:
        chaos.stop()
        supervisor.stop()
    elapsed = time.monotonic() - start

    candidates = read(
        lambda s: s.scalars(
            select(Candidate).where(Candidate.job_id == job.id).order_by(Candidate.birth)
        ).all()
    )
    events = read(
        lambda s: s.scalars(
            select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id)
        ).all()
    )
    runs = read(lambda s: s.scalars(select(Run).where(Run.job_id == job.id).order_by(Run.id)).all())
    final_job = read(lambda s: s.get(Job, job.id))
    summary = _summary(backend, chaos, supervisor, postgres, candidates, events, elapsed)
    print(summary)
    assert chaos.error is None, f"the fault driver failed: {chaos.error!r}"
    assert status in ("completed", "failed", "cancelled"), (
        f"the job did not finish within {DEADLINE_S:.0f} s (status {status!r}); {summary}\n"
        f"{supervisor.log_tail()}"
    )
    for kind in kinds:
        assert chaos.injected[kind] >= FAULTS_PER_KIND, (
            f"only {chaos.injected[kind]} {kind} faults before the job ended: {summary}"
        )
    assert final_job.status == "completed", (final_job.status, final_job.error)
    assert final_job.finished_at is not None and final_job.runner_id is None
    assert not supervisor.exits, f"runner processes exited by themselves: {supervisor.exits}"

    # every candidate finished exactly once, and none is left queued or running
    assert len(candidates) == TRIALS
    assert [c.birth for c in candidates] == list(range(TRIALS))
    assert {c.status for c in candidates} <= set(CANDIDATE_FINISHED) - {"cancelled"}, [
        (c.id, c.status, c.reason) for c in candidates if c.status not in CANDIDATE_FINISHED
    ]
    assert all(c.finished_at is not None for c in candidates)
    # no spec trained twice in the job: one row per spec, each within its attempts
    assert len({c.spec_hash for c in candidates}) == TRIALS
    assert all(1 <= c.attempt <= MAX_ATTEMPTS for c in candidates), [
        (c.id, c.attempt) for c in candidates
    ]
    # no result lost: what the workers returned is recorded
    for c in candidates:
        if c.status in ("completed", "pruned"):
            assert c.val_loss is not None and c.steps and c.step_time_ms, (c.id, c.status)
            assert c.step_time_ratio is not None and c.device_kind, (c.id, c.status)
    assert sum(c.status in ("completed", "pruned") for c in candidates) >= TRIALS // 2
    # a trial fails here only by the faults: anything else means a result went wrong
    unexplained = [
        (c.id, c.reason)
        for c in candidates
        if c.status == "failed" and not c.reason.startswith((WORKER_DIED, READOPTED_LAST))
    ]
    assert not unexplained, unexplained

    # the event log: a start for each attempt that ran, one end per candidate and per job
    started: dict[int, list[int]] = {c.id: [] for c in candidates}
    started_events: dict[int, list[tuple[int, int]]] = {c.id: [] for c in candidates}
    ends: dict[int, list[JobEvent]] = {c.id: [] for c in candidates}
    own_events = [e for e in events if e.kind != "trial" or "run_id" not in e.data]
    for e in own_events:
        if e.kind == "trial" and e.message == "started":
            started[e.data["candidate_id"]].append(e.data["attempt"])
            started_events[e.data["candidate_id"]].append((e.id, e.data["attempt"]))
        elif e.kind == "trial" and e.message in CANDIDATE_FINISHED:
            ends[e.data["candidate_id"]].append(e)
    job_ends = [
        e for e in events if e.kind == "job" and e.message in ("completed", "failed", "cancelled")
    ]
    assert [e.message for e in job_ends] == ["completed"]
    for c in candidates:
        assert set(range(1, c.attempt + 1)) <= set(started[c.id]), (c.id, c.attempt, started[c.id])
        assert len(ends[c.id]) <= 1, (c.id, c.status, [e.message for e in ends[c.id]])
        if ends[c.id]:
            assert ends[c.id][0].message == c.status, (c.id, c.status, ends[c.id][0].message)
            again = [a for e, a in started_events[c.id] if e > ends[c.id][0].id]
            assert not again, f"candidate {c.id} started again after its result: {again}"
    silent = [c for c in candidates if not ends[c.id]]  # e.g. given up on re-adoption
    assert not silent, [(c.id, c.status, c.reason) for c in silent]
    _check_runs(runs, events)
    db.dispose()


def _check_runs(runs: list[Run], events: list[JobEvent]) -> None:
    """Runs of the ladder and of confirmation: each key once, each finished and recorded
    exactly once within its attempts, none started again after its result."""
    assert any(r.stage == "rung" for r in runs) and any(r.stage == "confirm" for r in runs)
    keys = [(r.candidate_id, r.stage, r.rung, r.seed) for r in runs]
    assert len(keys) == len(set(keys))
    assert all(r.status in CANDIDATE_FINISHED for r in runs), [
        (r.id, r.status) for r in runs if r.status not in CANDIDATE_FINISHED
    ]
    assert all(r.attempt <= MAX_ATTEMPTS for r in runs)
    for r in runs:
        mine = [e for e in events if e.kind == "trial" and e.data.get("run_id") == r.id]
        ends = [e for e in mine if e.message in CANDIDATE_FINISHED]
        started = [e for e in mine if e.message == "started"]
        if r.attempt == 0:  # never ran: cancelled while queued
            assert r.status == "cancelled" and not started, (r.id, r.status)
            continue
        assert len(ends) == 1 and ends[0].message == r.status, (r.id, r.status, ends)
        assert not [e for e in started if e.id > ends[0].id], f"run {r.id} started again"
        if r.status == "completed":
            assert r.val_loss is not None and r.step_time_ratio is not None and r.curve


def _summary(
    backend: str,
    chaos: Chaos,
    supervisor: Supervisor,
    postgres: PostgresServer | None,
    candidates: list[Candidate],
    events: list[JobEvent],
    elapsed: float,
) -> str:
    """What was injected, how long recovery took, and what the rows say."""
    claims = [
        e.created_at.timestamp() for e in events if e.kind == "job" and e.message == "claimed"
    ]
    results = [
        e.created_at.timestamp()
        for e in events
        if e.kind == "trial" and e.message in CANDIDATE_FINISHED
    ]
    takeover, recovery = [], {kind: [] for kind in ("runner", "worker", "database")}
    for at, kind, _ in chaos.log:
        after = [t - at for t in results if t > at]
        if after:
            recovery[kind].append(min(after))
        if kind == "runner":
            claimed = [t - at for t in claims if t > at]
            if claimed:
                takeover.append(min(claimed))
    statuses = Counter(c.status for c in candidates)
    attempts = Counter(c.attempt for c in candidates)
    retries = sum(e.kind == "trial" and e.message == "retry" for e in events)
    logs = [path.read_text(errors="replace") for path in supervisor.logs.glob("chaos-*.log")]
    db_retries = sum(text.count("as it raised") for text in logs)  # tenacity's retries
    failed_steps = sum(text.count("runner step failed") for text in logs)

    def span(values: list[float]) -> str:
        return f"{min(values):.1f}-{max(values):.1f} s" if values else "-"

    lines = [
        f"chaos[{backend}]: {elapsed:.0f} s, faults {dict(chaos.injected)}, "
        f"runner processes started {supervisor.started}",
        f"  candidates {dict(statuses)}, attempts {dict(sorted(attempts.items()))}, "
        f"retry events {retries}",
        f"  runner logs: {db_retries} steps retried through a database error, "
        f"{failed_steps} failed steps",
        f"  runner takeover (kill -> claimed) {span(takeover)}; next result after a fault: "
        + ", ".join(f"{kind} {span(v)}" for kind, v in recovery.items() if v),
    ]
    if postgres is not None:
        lines.append(f"  pg_ctl restart -m fast took {span(postgres.restarts)}")
    lines += [
        f"  {time.strftime('%H:%M:%S', time.localtime(at))} {detail}" for at, _, detail in chaos.log
    ]
    return "\n".join(lines)
