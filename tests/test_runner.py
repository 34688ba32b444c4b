"""The runner end to end on a local Ray with real JAX training on tinyshakespeare."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from spaces import SMALL_SPACE
from sqlalchemy import select

from nas_service import jobs
from nas_service.job_config import JobConfig
from nas_service.models import Candidate, CurvePoint, Job, JobEvent
from nas_service.pareto import pareto_front
from nas_service.runner import Runner
from nas_service.settings import Settings


def small_job(source: str, **sections) -> JobConfig:
    base = {
        "name": "small",
        "dataset": source,
        "search_space": {"preset": "proxy-cpu", "overrides": SMALL_SPACE},
        "trial": {"budget_s": 1.0, "batch_size": 8, "eval_tokens": 2048},
        "limits": {"max_trials": 6},
        "evolution": {"population_size": 4, "tournament_size": 2},
        "workers": {"concurrency": 2},
    }
    for name, section in sections.items():
        base[name] = {**base.get(name, {}), **section} if isinstance(section, dict) else section
    return JobConfig.model_validate(base)


def start_runner(db, runner_id: str = "test") -> tuple[Runner, threading.Thread]:
    runner = Runner(Settings(runner_id=runner_id, heartbeat_s=0.5, poll_s=0.05), db)
    thread = threading.Thread(target=runner.run, args=(threading.Event(), True), daemon=True)
    thread.start()
    return runner, thread


def rows(db, job_id: int) -> list[Candidate]:
    return jobs.candidates(db, job_id)


def wait_for(predicate, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {message}")


@pytest.mark.slow
def test_a_small_search_completes_with_metrics(database, ray_local, shakespeare):
    job = jobs.submit(database, small_job(shakespeare))
    _, thread = start_runner(database)
    thread.join(timeout=240)
    assert not thread.is_alive()
    assert jobs.get(database, job.id).status == "completed"
    found = rows(database, job.id)
    assert len(found) == 6 and [c.birth for c in found] == list(range(6))
    assert found[0].is_baseline and found[0].mutation == "initial"
    assert found[0].started_at <= min(c.started_at for c in found[1:])
    assert found[0].started_at <= min(c.started_at for c in found[1:])  # the baseline first
    # ... and a trial beside it: no slot waits for the baseline's result.
    assert found[1].started_at < found[0].finished_at
    assert any(c.parent_id is not None for c in found)  # evolution produced children
    done = [c for c in found if c.status == "completed"]
    assert len(done) >= 3
    for c in done:
        assert c.perplexity > 1 and c.step_time_ms > 0 and c.steps > 0 and c.attempt == 1
        assert c.device["platform"] == "cpu" and c.node_id and c.device_kind.startswith("cpu:")
        assert c.step_time_ratio == pytest.approx(c.step_time_ms / c.reference_step_time_ms)
    assert len({c.spec_hash for c in found}) == 6
    front = pareto_front([(c.perplexity, c.step_time_ratio) for c in done])  # the ratio ranks
    assert front
    with database.sessions() as session:
        events = session.scalars(select(JobEvent).where(JobEvent.job_id == job.id)).all()
    started = [e.data["candidate_id"] for e in events if e.message == "started"]
    assert sorted(started) == sorted(c.id for c in found)  # every trial announced
    last_front = [e.data["front"] for e in events if e.kind == "front"][-1]
    assert set(last_front) == {done[i].id for i in front}
    with database.sessions() as session:
        assert session.scalars(
            select(CurvePoint).where(CurvePoint.candidate_id == done[0].id)
        ).all()


@pytest.mark.slow
def test_diverging_candidates_are_recorded_and_the_search_goes_on(
    sqlite_db, ray_local, shakespeare
):
    database = sqlite_db
    config = small_job(
        shakespeare,
        trial={"learning_rate": 1e3},
        limits={"max_trials": 3},
        hurdle={"enabled": False},
    )
    job = jobs.submit(database, config)
    _, thread = start_runner(database)
    thread.join(timeout=180)
    assert jobs.get(database, job.id).status == "completed"
    found = rows(database, job.id)
    assert len(found) == 3
    for c in found:
        assert c.status == "diverged" and "nan" in c.reason.lower()
        assert c.val_loss is None and c.perplexity is None


def running_candidate(db, job_id: int, after_s: float = 0.0) -> Candidate | None:
    for c in rows(db, job_id):
        started = c.started_at
        running = c.status == "running" and started is not None and not c.is_baseline
        if running and time.time() - started.timestamp() >= after_s:
            return c
    return None


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_its_trial_retried(sqlite_db, ray_local, shakespeare):
    config = small_job(
        shakespeare,
        trial={"budget_s": 8.0},
        limits={"max_trials": 2},
        workers={"concurrency": 1},
        hurdle={"enabled": False},  # the retried trial must finish, not be pruned
    )
    job = jobs.submit(sqlite_db, config)
    runner, thread = start_runner(sqlite_db)
    victim = wait_for(
        lambda: running_candidate(sqlite_db, job.id, after_s=3.0), 120, "a running trial"
    )
    slot = next(s for pool in runner.pools.values() for s in pool.slots if s.index == victim.slot)
    ray_local.kill(slot.actor, no_restart=False)
    thread.join(timeout=180)
    retried = next(c for c in rows(sqlite_db, job.id) if c.id == victim.id)
    assert retried.status == "completed" and retried.attempt == 2
    with sqlite_db.sessions() as session:
        events = session.scalars(select(JobEvent).where(JobEvent.message == "retry")).all()
    assert [e.data["candidate_id"] for e in events] == [victim.id]
    assert jobs.get(sqlite_db, job.id).status == "completed"


@pytest.mark.slow
def test_cancel_stops_running_trials_within_seconds(sqlite_db, ray_local, shakespeare):
    config = small_job(shakespeare, trial={"budget_s": 60.0}, limits={"max_trials": 4})
    job = jobs.submit(sqlite_db, config)
    _, thread = start_runner(sqlite_db)
    wait_for(
        lambda: any(c.status == "running" for c in rows(sqlite_db, job.id)), 120, "a running trial"
    )
    time.sleep(2.0)
    start = time.monotonic()
    jobs.transition(sqlite_db, job.id, "cancel")
    thread.join(timeout=60)
    assert time.monotonic() - start < 15
    assert jobs.get(sqlite_db, job.id).status == "cancelled"
    assert {c.status for c in rows(sqlite_db, job.id)} == {"cancelled"}


@pytest.mark.slow
def test_a_sigkilled_runner_is_resumed_by_another(tmp_path, ray_local, shakespeare):
    from nas_service.db import Database

    url = f"sqlite:///{tmp_path / 'nas.db'}"
    db = Database(url)
    db.upgrade()
    job = jobs.submit(db, small_job(shakespeare, trial={"budget_s": 2.0}, limits={"max_trials": 5}))
    env = {
        **os.environ,
        "NAS_DATABASE_URL": url,
        "NAS_RAY_ADDRESS": ray_local.get_runtime_context().gcs_address,
        "NAS_LEASE_S": "3",
        "NAS_HEARTBEAT_S": "0.5",
        "NAS_HOME": str(tmp_path),
    }
    nas = str(Path(sys.executable).with_name("nas"))

    def runner_process(name: str) -> subprocess.Popen:
        return subprocess.Popen(
            [nas, "runner", "--until-idle"],
            env={**env, "NAS_RUNNER_ID": name},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    first = runner_process("first")
    try:
        wait_for(
            lambda: (
                sum(c.status == "completed" for c in rows(db, job.id)) >= 2
                and running_candidate(db, job.id, after_s=0.5)
            ),
            180,
            "two results and a trial",
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    before = {c.id: (c.status, c.attempt) for c in rows(db, job.id)}
    interrupted = [cid for cid, (status, _) in before.items() if status == "running"]
    assert interrupted
    second = runner_process("second")
    try:
        second.wait(timeout=240)
    finally:
        second.kill()
    after = rows(db, job.id)
    assert jobs.get(db, job.id).status == "completed"
    assert len(after) == 5 and sorted(c.birth for c in after) == list(range(5))
    for c in after:
        status, attempt = before.get(c.id, (None, 0))
        if status == "completed":
            assert c.attempt == attempt == 1  # never trained twice
        if c.id in interrupted:
            assert c.attempt == 2 and c.status in ("completed", "pruned")
    with db.sessions() as session:
        owner = session.scalar(select(Job.runner_id).where(Job.id == job.id))
    assert owner is None
    db.dispose()


@pytest.mark.slow
def test_a_spec_trained_by_another_job_reuses_its_result(sqlite_db, ray_local, shakespeare):
    config = small_job(shakespeare, limits={"max_trials": 4})  # all four are initial members
    first = jobs.submit(sqlite_db, config)
    _, thread = start_runner(sqlite_db)
    thread.join(timeout=240)
    second = jobs.submit(sqlite_db, config)
    _, thread = start_runner(sqlite_db)
    thread.join(timeout=240)
    assert jobs.get(sqlite_db, second.id).status == "completed"
    trained = {c.spec_hash: c for c in rows(sqlite_db, first.id)}
    again = rows(sqlite_db, second.id)
    assert [c.spec_hash for c in again] == list(trained)  # same seed, same initial members
    assert again[0].attempt == 1 and again[0].reused_from_id is None  # the baseline runs
    for c in again[1:]:
        source = trained[c.spec_hash]
        if source.status == "completed":
            assert c.reused_from_id == source.id and c.attempt == 0
            assert c.perplexity == source.perplexity and c.status == "completed"


@pytest.mark.slow
def test_running_jobs_share_the_slots_fairly(sqlite_db, ray_local, shakespeare):
    config = small_job(
        shakespeare,
        trial={"budget_s": 0.5},
        limits={"max_trials": 3},
        workers={"concurrency": 1},
        hurdle={"enabled": False},
    )
    other_seed = config.model_copy(update={"seed": 1})  # nothing to reuse between them
    first, second = jobs.submit(sqlite_db, config), jobs.submit(sqlite_db, other_seed)
    _, thread = start_runner(sqlite_db)
    thread.join(timeout=240)
    started = sorted(
        (c.started_at, c.job_id) for job in (first, second) for c in rows(sqlite_db, job.id)
    )
    order = [job_id for _, job_id in started]
    assert sorted(order) == sorted([first.id] * 3 + [second.id] * 3)
    # one slot, two jobs: they take turns instead of one job running to completion first
    assert order == [first.id, second.id] * 3


@pytest.mark.slow
def test_pause_holds_dispatch_and_resume_continues(sqlite_db, ray_local, shakespeare):
    config = small_job(shakespeare, limits={"max_trials": 4}, workers={"concurrency": 1})
    job = jobs.submit(sqlite_db, config)
    _, thread = start_runner(sqlite_db)
    wait_for(lambda: running_candidate(sqlite_db, job.id), 120, "a trial after the baseline")
    jobs.transition(sqlite_db, job.id, "pause")
    wait_for(
        lambda: not any(c.status == "running" for c in rows(sqlite_db, job.id)),
        60,
        "the running trial to finish",
    )
    held = len(rows(sqlite_db, job.id))
    time.sleep(3.0)
    assert len(rows(sqlite_db, job.id)) == held  # nothing new while paused
    assert jobs.get(sqlite_db, job.id).status == "paused"
    jobs.transition(sqlite_db, job.id, "resume")
    thread.join(timeout=180)
    assert jobs.get(sqlite_db, job.id).status == "completed"
    assert len(rows(sqlite_db, job.id)) == 4


@pytest.mark.slow
def test_a_job_ends_at_its_time_limit(sqlite_db, ray_local, shakespeare):
    config = small_job(shakespeare, trial={"budget_s": 120.0}, limits={"max_hours": 0.002})
    job = jobs.submit(sqlite_db, config)  # 7.2 s of wall time, trials of 2 minutes
    start = time.monotonic()
    _, thread = start_runner(sqlite_db)
    thread.join(timeout=120)
    assert time.monotonic() - start < 60
    assert jobs.get(sqlite_db, job.id).status == "completed"
    assert {c.status for c in rows(sqlite_db, job.id)} == {"cancelled"}
