"""The fidelity ladder, noise calibration and confirmation, run by the real runner on a
local Ray with real JAX training (tiny budgets), and read back through the API."""

import pytest
from sqlalchemy import select
from test_runner import small_job, start_runner

from nas_service import jobs, queries
from nas_service.job_config import ConfirmConfig
from nas_service.models import JobEvent, Run

LADDER = {
    "rungs": [{"budget_multiplier": 2, "promote": 0.5, "seeds": 2}],
    "random_share": 0.25,
    "noise_seeds": 3,
}


def runs_of(db, job_id: int) -> list[Run]:
    with db.sessions() as session:
        return list(session.scalars(select(Run).where(Run.job_id == job_id).order_by(Run.id)))


@pytest.mark.slow
def test_a_job_climbs_its_ladder_then_confirms(sqlite_db, ray_local, shakespeare):
    config = small_job(
        shakespeare,
        limits={"max_trials": 6},
        fidelity=LADDER,
        hurdle={"margin": "auto"},
        confirm={"top_k": 2, "seeds": 2, "budget_multiplier": 1.5},
    )
    job = jobs.submit(sqlite_db, config)
    _, thread = start_runner(sqlite_db)
    thread.join(timeout=600)
    assert not thread.is_alive()
    assert jobs.get(sqlite_db, job.id).status == "completed"
    runs = runs_of(sqlite_db, job.id)
    candidates = jobs.candidates(sqlite_db, job.id)
    baseline = next(c for c in candidates if c.is_baseline)

    noise = [r for r in runs if r.origin == "noise"]
    assert [r.seed for r in noise] == [1, 2] and {r.candidate_id for r in noise} == {baseline.id}
    assert all(r.rung == 0 and r.status == "completed" for r in noise)
    with sqlite_db.sessions() as session:
        calibrated = session.scalars(
            select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.message == "calibrated")
        ).one()
    assert calibrated.data["measured"] and 0 < calibrated.data["margin"] < 1
    # No candidate started before the baseline and its noise seeds had finished.
    calibration_end = max(r.finished_at for r in noise)
    assert all(c.started_at >= calibration_end for c in candidates if not c.is_baseline)

    rung1 = [r for r in runs if r.stage == "rung" and r.rung == 1]
    promoted = {r.candidate_id for r in rung1}
    assert baseline.id in promoted and len(promoted) >= 2
    for cid in promoted:  # every promoted candidate trained with both of the rung's seeds
        assert sorted(r.seed for r in rung1 if r.candidate_id == cid) == [0, 1]
    assert all(r.budget == {"seconds": 2.0} for r in rung1)
    by_id = {c.id: c for c in candidates}
    assert all(by_id[cid].rung == 1 for cid in promoted)
    assert all(c.rung == 0 for c in candidates if c.id not in promoted)

    confirm = [r for r in runs if r.stage == "confirm"]
    confirmed = {r.candidate_id for r in confirm}
    assert baseline.id in confirmed and 2 <= len(confirmed) <= 3
    assert {r.seed for r in confirm} == {1_000_003, 1_000_004}
    assert all(r.budget == {"seconds": 1.5} for r in confirm)

    report = queries.confirmation(sqlite_db, job.id)
    assert report["status"] == "done" and report["baseline_id"] == baseline.id
    assert {c["candidate_id"] for c in report["candidates"]} == confirmed
    assert report["winner"] is None or report["winner"] in confirmed - {baseline.id}
    fidelity = queries.fidelity(sqlite_db, job.id)
    (pair,) = fidelity["pairs"]
    scored = {r.candidate_id for r in rung1 if r.status == "completed"}
    assert pair["n"] == len(scored & {c.id for c in candidates if c.status == "completed"})
    ladder = queries.rungs(sqlite_db, job.id)
    assert ladder["top_rung"] == 1 and [r["rung"] for r in ladder["rungs"]] == [0, 1]


@pytest.mark.slow
def test_a_completed_job_is_confirmed_on_request(sqlite_db, ray_local, shakespeare):
    job = jobs.submit(sqlite_db, small_job(shakespeare, limits={"max_trials": 4}))
    _, thread = start_runner(sqlite_db)
    thread.join(timeout=300)
    assert jobs.get(sqlite_db, job.id).status == "completed"
    assert queries.confirmation(sqlite_db, job.id) == {"status": "not_requested"}
    before = {c.id: (c.val_loss, c.status) for c in jobs.candidates(sqlite_db, job.id)}

    requested = jobs.request_confirmation(sqlite_db, job.id, ConfirmConfig(top_k=1, seeds=2))
    assert requested.status == "queued" and requested.config["confirm"]["seeds"] == 2
    with pytest.raises(jobs.JobConflict):  # once only
        jobs.request_confirmation(sqlite_db, job.id, ConfirmConfig(seeds=2))
    assert queries.confirmation(sqlite_db, job.id) == {"status": "requested"}
    _, thread = start_runner(sqlite_db, runner_id="second")
    thread.join(timeout=300)
    assert jobs.get(sqlite_db, job.id).status == "completed"
    report = queries.confirmation(sqlite_db, job.id)
    assert report["status"] == "done" and len(report["candidates"]) == 2
    assert all(c["seeds"] + c["failed_runs"] == 2 for c in report["candidates"])
    # The search's results are as they were.
    assert {c.id: (c.val_loss, c.status) for c in jobs.candidates(sqlite_db, job.id)} == before
