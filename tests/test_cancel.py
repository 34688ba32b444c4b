"""Cancelling a job that no runner holds finishes it in the API; deleting checks the lease.

On SQLite and PostgreSQL. Runner state is set up by writing the rows it would write.
"""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from nas_service import jobs
from nas_service.job_config import JobConfig
from nas_service.models import Candidate, Job, JobEvent, utcnow
from nas_service.runner import Runner
from nas_service.settings import Settings
from search_space import baseline

API = "/api/v1"


@pytest.fixture
def job_id(client, shakespeare) -> int:
    created = client.post(f"{API}/jobs", json={"name": "c", "dataset": shakespeare})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def hold(database, job_id: int, runner: str, lease_s: float) -> dict[str, int]:
    """The job as a runner left it: running under `runner`'s lease (expired when lease_s < 0),
    one trial completed, one running, one queued."""
    now = utcnow()
    with database.transaction() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status="running",
                runner_id=runner,
                lease_expires_at=now + timedelta(seconds=lease_s),
                started_at=now - timedelta(minutes=5),
            )
        )
        rows = {
            status: Candidate(
                job_id=job_id, spec={}, spec_hash=f"h{i}", birth=i, status=status, attempt=1
            )
            for i, status in enumerate(("completed", "running", "queued"))
        }
        session.add_all(rows.values())
        session.flush()
        return {status: row.id for status, row in rows.items()}


def stored(database, job_id: int) -> tuple[Job | None, dict[int, Candidate], list[JobEvent]]:
    with database.sessions() as session:
        job = session.get(Job, job_id)
        found = session.scalars(select(Candidate).where(Candidate.job_id == job_id)).all()
        events = session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
        ).all()
    return job, {c.id: c for c in found}, list(events)


def test_cancel_with_a_stale_lease_finishes_the_job_and_delete_works(client, database, job_id):
    ids = hold(database, job_id, "dead-runner", lease_s=-60)
    before = len(stored(database, job_id)[2])

    response = client.post(f"{API}/jobs/{job_id}/cancel")

    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    job, candidates, events = stored(database, job_id)
    assert job.status == "cancelled" and job.finished_at is not None
    assert job.runner_id is None and job.lease_expires_at is None
    assert candidates[ids["completed"]].status == "completed"  # finished trials keep theirs
    for name in ("running", "queued"):
        row = candidates[ids[name]]
        assert row.status == "cancelled" and row.finished_at is not None
        assert row.reason == jobs.CANCELLED_WITHOUT_RUNNER
    written = [(e.kind, e.message, e.data) for e in events[before:]]
    assert written == [
        ("job", "cancel", {"status": "cancelled"}),
        ("trial", "cancelled", {"candidate_id": ids["running"]}),
        ("job", "cancelled", {"status": "cancelled"}),  # the final event, as a runner's
    ]
    assert client.post(f"{API}/jobs/{job_id}/cancel").status_code == 409
    assert client.delete(f"{API}/jobs/{job_id}").status_code == 204
    assert stored(database, job_id)[0] is None


def test_cancel_with_a_live_lease_leaves_the_finish_to_the_runner(client, database, job_id):
    ids = hold(database, job_id, "r1", lease_s=60)
    before = len(stored(database, job_id)[2])

    assert client.post(f"{API}/jobs/{job_id}/cancel").json()["status"] == "cancelled"

    job, candidates, events = stored(database, job_id)
    assert job.runner_id == "r1" and job.lease_expires_at is not None
    assert candidates[ids["running"]].status == "running"  # the runner stops it
    assert candidates[ids["queued"]].status == "queued"
    assert [(e.kind, e.message) for e in events[before:]] == [("job", "cancel")]
    assert client.delete(f"{API}/jobs/{job_id}").status_code == 409  # r1 is still finishing
    # r1 died before finishing: once its lease has expired, the cancelled job may go.
    with database.transaction() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    assert client.delete(f"{API}/jobs/{job_id}").status_code == 204


def test_delete_refuses_an_active_job_even_with_a_stale_lease(client, database, job_id):
    hold(database, job_id, "dead-runner", lease_s=-60)
    assert client.delete(f"{API}/jobs/{job_id}").status_code == 409  # running: cancel first
    with database.transaction() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="paused"))
    assert client.delete(f"{API}/jobs/{job_id}").status_code == 409


def test_a_claim_before_the_cancel_wins(database, shakespeare):
    job = jobs.submit(database, JobConfig(name="c", dataset=shakespeare))
    runner = Runner(Settings(runner_id="r", lease_s=30), database)
    runner._claim()
    assert list(runner.jobs) == [job.id]
    assert jobs.transition(database, job.id, "cancel").status == "cancelled"
    row, _, events = stored(database, job.id)
    assert row.runner_id == "r" and [e.message for e in events][-1] == "cancel"


def test_a_cancel_before_the_claim_wins(database, shakespeare):
    job = jobs.submit(database, JobConfig(name="c", dataset=shakespeare))
    assert jobs.transition(database, job.id, "cancel").status == "cancelled"
    runner = Runner(Settings(runner_id="r", lease_s=30), database)
    runner._claim()
    assert runner.jobs == {}
    row, _, events = stored(database, job.id)
    assert row.runner_id is None and [e.message for e in events][-1] == "cancelled"


def at_once(*calls) -> list[BaseException]:
    """Run the calls in threads released together; the exceptions they raised."""
    barrier = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def run(call) -> None:
        try:
            barrier.wait()
            call()
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_a_claim_racing_a_cancel_either_wins_or_loses_cleanly(database, shakespeare):
    """Runner._claim and the API's cancel at the same moment, many times over: either the
    runner holds the job and it is only marked cancelled, or the cancel finished it and the
    runner never adopted it; never both, never neither."""
    template = jobs.submit(database, JobConfig(name="c", dataset=shakespeare))
    jobs.transition(database, template.id, "cancel")
    config = JobConfig.model_validate(template.config)
    spec = baseline(config.objective.baseline, config.search_space.space()).model_dump(mode="json")
    runner = Runner(Settings(runner_id="r", lease_s=30), database)
    outcomes = []
    for _ in range(8):
        with database.transaction() as session:
            job = Job(
                name="race",
                config=template.config,
                data_checksum=template.data_checksum,
                status="running",
                runner_id="dead-runner",
                lease_expires_at=utcnow() - timedelta(seconds=5),
                started_at=utcnow(),
            )
            session.add(job)
            session.flush()
            session.add(
                Candidate(job_id=job.id, spec=spec, spec_hash="h", birth=0, status="running")
            )
        errors = at_once(
            runner._claim, lambda job_id=job.id: jobs.transition(database, job_id, "cancel")
        )
        assert not errors, errors
        row, candidates, events = stored(database, job.id)
        messages = [e.message for e in events]
        assert row.status == "cancelled" and messages.count("cancel") == 1
        (trial,) = candidates.values()
        if job.id in runner.jobs:  # the runner won: it holds the job and will finish it
            assert row.runner_id == "r" and "cancelled" not in messages
            assert trial.status == "queued"  # re-queued by the runner's adoption
            outcomes.append("runner")
        else:  # the cancel won: finished here, the claim matched nothing
            assert row.runner_id is None and row.lease_expires_at is None
            assert messages[-1] == "cancelled" and trial.status == "cancelled"
            outcomes.append("cancel")
    assert len(outcomes) == 8
