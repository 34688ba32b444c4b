"""The controller under faults caused for real: a runner restarted mid-trial, a database
locked beyond its busy timeout, a job's lease taken while its trial runs, a runner process
SIGKILLed under `nas serve`."""

import os
import signal
import sqlite3
import subprocess
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update
from test_runner import rows, small_job, wait_for

from api.cli.local_server import start_server, stop_server
from nas_service import jobs, queries
from nas_service.db import Database
from nas_service.designer import ArchSearchSpace, EvolutionConfig, RegularizedEvolution
from nas_service.models import Candidate, Job, utcnow
from nas_service.runner import Runner
from nas_service.settings import Settings
from nas_service.slots import SlotPool
from search_space import PRESETS, baseline


def test_readoption_fails_trials_interrupted_in_their_last_attempt(sqlite_db, shakespeare):
    config = small_job(shakespeare, workers={"max_attempts": 3})
    job = jobs.submit(sqlite_db, config)
    space = config.search_space.space()
    with sqlite_db.transaction() as session:
        for birth, (name, attempt) in enumerate((("glam", 3), ("dense", 1))):
            spec = baseline(name, space)
            session.add(
                Candidate(
                    job_id=job.id,
                    spec=spec.model_dump(mode="json"),
                    spec_hash=ArchSearchSpace(space).key(spec),
                    birth=birth,
                    is_baseline=birth == 0,
                    status="running",
                    attempt=attempt,
                )
            )
        session.execute(  # the runner that ran them is gone: its lease has ended
            update(Job)
            .where(Job.id == job.id)
            .values(status="running", runner_id="gone", lease_expires_at=utcnow())
        )
    runner = Runner(Settings(runner_id="new"), sqlite_db)
    runner._claim()
    last, other = rows(sqlite_db, job.id)
    assert last.status == "failed" and "last attempt (attempt 3 of 3)" in last.reason
    assert other.status == "queued" and other.attempt == 1
    assert list(runner.jobs[job.id].retry) == [other.id]


def test_a_proposal_that_could_not_be_stored_is_retracted():
    space = PRESETS["proxy-cpu"]
    designer = RegularizedEvolution(
        ArchSearchSpace(space), EvolutionConfig(population_size=4, tournament_size=2)
    )
    first = designer.ask()
    second = designer.ask()
    with pytest.raises(KeyError):
        designer.retract(first.key)  # only the latest
    designer.retract(second.key)
    assert [t.key for t in designer.trials] == [first.key]
    assert designer.ask().birth == 1  # births stay contiguous, as the stored rows


@pytest.mark.slow
def test_the_runner_survives_a_database_locked_beyond_its_busy_timeout(
    tmp_path, ray_local, shakespeare
):
    path = tmp_path / "nas.db"
    db = Database(f"sqlite:///{path}", busy_timeout_s=0.3)
    db.upgrade()
    job = jobs.submit(db, small_job(shakespeare, limits={"max_trials": 4}))
    runner = Runner(Settings(runner_id="locked", heartbeat_s=0.3, poll_s=0.05), db)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            runner.run(threading.Event(), until_idle=True)
        except BaseException as exc:  # the old runner died here
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(lambda: any(c.status == "completed" for c in rows(db, job.id)), 120, "a result")
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # no other connection may write for 4 s
    time.sleep(4.0)
    lock.execute("COMMIT")
    lock.close()
    thread.join(timeout=240)
    assert not failure, failure
    assert jobs.get(db, job.id).status == "completed"
    found = rows(db, job.id)
    assert len(found) == 4 and all(c.status in ("completed", "pruned") for c in found)
    assert all(c.attempt == 1 for c in found)  # no result lost and trained again
    db.dispose()


@pytest.mark.slow
def test_a_slot_is_held_until_the_trial_of_a_lost_job_has_stopped(
    sqlite_db, ray_local, shakespeare
):
    long = small_job(
        shakespeare,
        trial={"budget_s": 60.0},
        limits={"max_trials": 2},
        workers={"concurrency": 1},
        hurdle={"enabled": False},
    )
    lost = jobs.submit(sqlite_db, long)
    runner = Runner(Settings(runner_id="one", heartbeat_s=0.3, poll_s=0.05), sqlite_db)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: any(c.status == "running" for c in rows(sqlite_db, lost.id)), 120, "a trial")
    time.sleep(1.0)
    with sqlite_db.transaction() as session:  # another runner takes the job over
        session.execute(
            update(Job)
            .where(Job.id == lost.id)
            .values(runner_id="thief", lease_expires_at=utcnow() + timedelta(hours=1))
        )
    short = small_job(
        shakespeare,
        limits={"max_trials": 2},
        workers={"concurrency": 1},
        hurdle={"enabled": False},
    ).model_copy(update={"seed": 1})
    other = jobs.submit(sqlite_db, short)  # same slot shape: it gets the same worker
    try:
        wait_for(lambda: jobs.get(sqlite_db, other.id).status == "completed", 180, "the job")
    finally:
        stop.set()
        thread.join(timeout=60)
    found = rows(sqlite_db, other.id)
    assert [c.status for c in found] == ["completed", "completed"], [c.reason for c in found]
    assert all(c.attempt == 1 for c in found)


@pytest.mark.slow
def test_nas_serve_restarts_a_killed_runner(tmp_path, ray_local):
    log = tmp_path / "serve.log"
    env = {
        **os.environ,
        "NAS_HOME": str(tmp_path),
        "NAS_RAY_ADDRESS": ray_local.get_runtime_context().gcs_address,
    }
    process, _ = start_server(env=env, log=log)

    def runner_pid() -> int | None:
        found = subprocess.run(
            ["pgrep", "-P", str(process.pid), "-f", "api.cli runner"],
            capture_output=True,
            text=True,
        ).stdout.split()
        return int(found[0]) if found else None

    try:
        first = wait_for(runner_pid, 60, "the runner process")
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: (pid := runner_pid()) != first and pid, 60, "a new runner")
        assert second != first
        time.sleep(1.0)
        assert runner_pid() == second  # it stays up
    finally:
        stop_server(process)
    assert "the runner stopped (signal SIGKILL); restarting" in log.read_text()


def test_a_job_cancelled_under_a_runner_that_then_died_is_finished_by_the_next(
    sqlite_db, shakespeare
):
    job = jobs.submit(sqlite_db, small_job(shakespeare))
    space = small_job(shakespeare).search_space.space()
    spec = baseline("glam", space)
    with sqlite_db.transaction() as session:
        session.add(
            Candidate(
                job_id=job.id,
                spec=spec.model_dump(mode="json"),
                spec_hash=ArchSearchSpace(space).key(spec),
                birth=0,
                is_baseline=True,
                status="running",
                attempt=1,
            )
        )
        session.execute(  # "gone" holds the job
            update(Job)
            .where(Job.id == job.id)
            .values(
                status="running", runner_id="gone", lease_expires_at=utcnow() + timedelta(hours=1)
            )
        )
    jobs.transition(sqlite_db, job.id, "cancel")  # marked only: "gone" is to finish it
    assert jobs.get(sqlite_db, job.id).runner_id == "gone"
    with sqlite_db.transaction() as session:  # ... but it dies: its lease runs out
        session.execute(update(Job).where(Job.id == job.id).values(lease_expires_at=utcnow()))
    runner = Runner(Settings(runner_id="next"), sqlite_db)
    runner._claim()
    runner._finish_jobs()
    finished = jobs.get(sqlite_db, job.id)
    assert finished.status == "cancelled" and finished.finished_at and finished.runner_id is None
    assert [c.status for c in rows(sqlite_db, job.id)] == ["cancelled"]
    _, _, events = queries.events_after(sqlite_db, job.id, 0)
    assert [(e.kind, e.message) for e in events][-1] == ("job", "cancelled")


def hung_actor(slot: int, **_: object):
    """A worker that never answers (as one on a node that vanished)."""
    import ray

    class Hung:  # defined here so that Ray ships it by value to the worker
        def info(self) -> dict:
            time.sleep(3600)
            return {}

    return ray.remote(Hung).options(num_cpus=0, max_concurrency=2).remote()


def test_a_worker_that_stops_answering_is_replaced(sqlite_db, ray_local):
    settings = Settings(runner_id="replace", probe_timeout_s=0.5, poll_s=0.05)
    runner = Runner(settings, sqlite_db, worker_factory=hung_actor)
    pool = runner.pools[(0.0, 0.0, ())] = SlotPool((0.0, 0.0, ()), None, hung_actor)
    pool.grow(1, 0)
    slot = pool.slots[0]
    old = slot.actor
    runner._probe(slot)  # e.g. after its trial's reference raised ActorUnavailableError
    runner._check_probes()
    assert slot.busy and runner.probing  # still waiting for it
    time.sleep(0.7)
    runner._check_probes()
    assert slot.actor is not old and not slot.busy and not runner.probing
    ray_local.kill(slot.actor)


@pytest.mark.slow
def test_a_trial_refused_by_a_busy_worker_is_retried_without_using_an_attempt(
    sqlite_db, ray_local, shakespeare
):
    config = small_job(
        shakespeare,
        limits={"max_trials": 1},
        workers={"concurrency": 1, "max_attempts": 1},
        hurdle={"enabled": False},
    )
    job = jobs.submit(sqlite_db, config)
    runner = Runner(Settings(runner_id="busy", heartbeat_s=0.3, poll_s=0.05), sqlite_db)
    runner.start()
    pool = runner.pools[(1.0, 0.0, ())] = SlotPool((1.0, 0.0, ()), None)
    pool.grow(1, 0)
    spec = baseline("dense", config.search_space.space()).model_dump(mode="json")
    elsewhere = {  # the worker is busy with a trial the runner did not send (e.g. a lost job's)
        "candidate_id": 10_000,
        "attempt": 1,
        "spec": spec,
        "budget": {"seconds": 6.0},
        "data": config.dataset,
    }
    actor = pool.slots[0].actor
    actor.run.remote(elsewhere)
    wait_for(lambda: ray_local.get(actor.info.remote())["busy"], 120, "the worker to be busy")
    thread = threading.Thread(target=runner.run, args=(threading.Event(), True), daemon=True)
    thread.start()
    thread.join(timeout=180)
    (only,) = rows(sqlite_db, job.id)
    assert only.status == "completed" and only.attempt == 1, only.reason  # not "failed"
    _, _, events = queries.events_after(sqlite_db, job.id, 0)
    assert [e.message for e in events if e.kind == "trial"].count("retry") >= 1
