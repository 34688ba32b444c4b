"""The runner's storage (`nas_service.store`) without Ray, on SQLite and PostgreSQL: each
state change applies only while its condition holds, whatever races it."""

import threading
from datetime import timedelta

from sqlalchemy import select, update

from nas_service import jobs, store
from nas_service.job_config import JobConfig
from nas_service.models import Candidate, CurvePoint, Job, JobEvent, utcnow


def new_job(database, max_attempts: int = 2) -> int:
    config = JobConfig(
        name="store", dataset="builtin:stdlib", workers={"max_attempts": max_attempts}
    )
    return jobs.submit(database, config).id


def running(database, job_id: int, birth: int = 0) -> int:
    new = store.NewCandidate(
        job_id=job_id,
        spec={"layers": birth},
        spec_hash=f"h{birth}",
        birth=birth,
        parent_id=None,
        mutation="",
        is_baseline=birth == 0,
    )
    return store.insert_running(database, new, slot=0)


def events(database, job_id: int) -> list[tuple[str, str]]:
    with database.sessions() as session:
        found = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id)).all()
    return [(e.kind, e.message) for e in sorted(found, key=lambda e: e.id)]


def test_two_runners_racing_for_a_job_one_wins(database):
    job_id = new_job(database)
    barrier = threading.Barrier(8)
    won: list[str] = []

    def claim(name: str) -> None:
        barrier.wait()
        if store.claim_job(database, job_id, name, lease_s=30):
            won.append(name)

    threads = [threading.Thread(target=claim, args=(f"r{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    assert jobs.get(database, job_id).runner_id == won[0]
    loser = next(f"r{i}" for i in range(8) if f"r{i}" not in won)
    assert store.claimable_jobs(database, loser) == []  # the lease is live
    assert not store.renew_lease(database, job_id, loser, 30)
    assert store.renew_lease(database, job_id, won[0], 30)
    with database.transaction() as session:  # the winner's lease runs out
        session.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    assert store.claim_job(database, job_id, loser, 30)
    assert not store.renew_lease(database, job_id, won[0], 30)  # it has lost the job


def test_a_result_is_recorded_once(database):
    job_id = new_job(database)
    candidate_id = running(database, job_id)
    values = {"status": "completed", "val_loss": 2.0, "perplexity": 7.39, "finished_at": utcnow()}
    outcome = store.Outcome(job_id, candidate_id, 1, values, [(0.1, 5.0), (0.2, 4.0)])
    assert store.record_outcomes(database, [outcome]) == [outcome]
    again = store.Outcome(job_id, candidate_id, 1, {**values, "val_loss": 9.0}, [(0.1, 1.0)])
    assert store.record_outcomes(database, [again]) == []  # a repeated report
    late = store.Outcome(job_id, candidate_id, 2, {**values, "val_loss": 9.0})
    assert store.record_outcomes(database, [late]) == []  # not its current attempt
    with database.sessions() as session:
        row = session.get(Candidate, candidate_id)
        points = session.scalars(
            select(CurvePoint).where(CurvePoint.candidate_id == candidate_id)
        ).all()
    assert row.val_loss == 2.0 and row.status == "completed" and len(points) == 2
    assert events(database, job_id).count(("trial", "completed")) == 1


def test_no_requeue_after_the_attempt_limit(database):
    job_id = new_job(database, max_attempts=2)
    candidate_id = running(database, job_id)
    assert store.requeue(database, job_id, candidate_id, 1, "the worker died", max_attempts=2)
    assert not store.requeue(database, job_id, candidate_id, 1, "again", max_attempts=2)
    assert store.start_retry(database, job_id, candidate_id, slot=1)[0] == 2
    assert store.start_retry(database, job_id, candidate_id, slot=1) is None  # running now
    assert not store.requeue(database, job_id, candidate_id, 2, "the worker died", max_attempts=2)
    with database.sessions() as session:
        row = session.get(Candidate, candidate_id)
    assert row.status == "running" and row.attempt == 2  # the runner records it failed
    # A trial the worker refused never ran: requeued with its attempt given back.
    assert store.requeue(database, job_id, candidate_id, 2, "busy", max_attempts=2, refund=True)
    with database.sessions() as session:
        row = session.get(Candidate, candidate_id)
    assert row.status == "queued" and row.attempt == 1


def test_adoption_requeues_interrupted_trials_within_their_attempts(database):
    job_id = new_job(database, max_attempts=2)
    first, second = running(database, job_id, 0), running(database, job_id, 1)
    store.requeue(database, job_id, second, 1, "the worker died", max_attempts=2)
    store.start_retry(database, job_id, second, slot=0)  # its last attempt, then interrupted
    assert store.claim_job(database, job_id, "next", 30)
    adopted = store.adopt_job(database, job_id)
    by_id = {row["id"]: row for row in adopted.rows}
    assert by_id[first]["status"] == "queued" and by_id[first]["attempt"] == 1
    assert by_id[second]["status"] == "failed" and "last attempt" in by_id[second]["reason"]
    assert events(database, job_id)[-1] == ("trial", "failed")  # its end is in the log


def test_finishing_a_job_needs_its_lease(database):
    job_id = new_job(database)
    store.claim_job(database, job_id, "owner", 30)
    queued = running(database, job_id)
    store.requeue(database, job_id, queued, 1, "the worker died", max_attempts=2)
    assert store.finish_job(database, job_id, "someone else", "completed", None) is None
    assert jobs.get(database, job_id).status == "running"
    with database.transaction() as session:  # the API cancels meanwhile: cancelled wins
        session.execute(update(Job).values(status="cancelled"))
    assert store.finish_job(database, job_id, "owner", "completed", None) == "cancelled"
    job = jobs.get(database, job_id)
    assert job.status == "cancelled" and job.runner_id is None and job.finished_at
    assert [c.status for c in jobs.candidates(database, job_id)] == ["cancelled"]
    assert events(database, job_id)[-1] == ("job", "cancelled")
    assert store.finish_job(database, job_id, "owner", "completed", None) is None  # once


def test_a_run_is_queued_once_per_key_and_recorded_once_per_attempt(database):
    job_id = new_job(database, max_attempts=2)
    candidate_id = running(database, job_id)
    new = store.NewRun(job_id, candidate_id, "rung", 1, 0, "rank", {"seconds": 4.0})
    other_seed = store.NewRun(job_id, candidate_id, "rung", 1, 1, "rank", {"seconds": 4.0})
    (queued, second) = store.insert_runs(database, [new, other_seed])
    assert store.insert_runs(database, [new]) == []  # the same promotion decided again
    with database.sessions() as session:
        assert session.get(Candidate, candidate_id).rung == 1
    run_id = queued["id"]
    attempt, spec = store.start_run(database, job_id, run_id, slot=1)
    assert attempt == 1 and spec == {"layers": 0}
    assert store.start_run(database, job_id, run_id, slot=1) is None  # running now
    # The worker died: back to the queue, and the next attempt runs.
    assert store.requeue(database, job_id, candidate_id, 1, "died", 2, run_id=run_id)
    assert store.start_run(database, job_id, run_id, slot=0)[0] == 2
    values = {"status": "completed", "val_loss": 2.0, "finished_at": utcnow()}
    late = store.Outcome(job_id, candidate_id, 1, values, [(0.1, 3.0)], run_id=run_id)
    assert store.record_outcomes(database, [late]) == []  # not its current attempt
    outcome = store.Outcome(job_id, candidate_id, 2, values, [(0.1, 3.0)], run_id=run_id)
    assert store.record_outcomes(database, [outcome]) == [outcome]
    assert store.record_outcomes(database, [outcome]) == []  # a repeated report
    with database.sessions() as session:
        row = session.get(Candidate, candidate_id)
        assert row.status == "running" and row.val_loss is None  # its own trial is apart
        assert session.scalars(select(CurvePoint)).all() == []
    # A runner that stops while the other seed runs on its last attempt: adoption fails it
    # (with its event) rather than running it a third time; the job's end cancels nothing
    # that has run.
    store.start_run(database, job_id, second["id"], slot=0)
    store.requeue(database, job_id, candidate_id, 1, "died", 2, run_id=second["id"])
    store.start_run(database, job_id, second["id"], slot=0)
    assert store.claim_job(database, job_id, "next", lease_s=30)
    adopted = store.adopt_job(database, job_id)
    by_id = {run["id"]: run for run in adopted.runs}
    assert by_id[run_id]["status"] == "completed" and by_id[run_id]["val_loss"] == 2.0
    assert by_id[second["id"]]["status"] == "failed"
    assert ("trial", "failed") in events(database, job_id)
