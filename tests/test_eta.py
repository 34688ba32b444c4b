"""A running job's ETA comes from the measured wall time of its trials (compile, evaluation
and reference timing included), not from the budget or the elapsed time per trial."""

from datetime import timedelta

import pytest

from nas_service import jobs, queries, store
from nas_service.job_config import JobConfig
from nas_service.models import Candidate, Job, Run, utcnow


def test_eta_counts_the_measured_wall_time_of_what_is_left(database):
    config = JobConfig(
        name="eta",
        dataset="builtin:stdlib",
        trial={"budget_s": 15},
        limits={"max_trials": 10},
        workers={"concurrency": 2},
    )
    job = jobs.submit(database, config)
    assert store.claim_job(database, job.id, "r", lease_s=60)
    now = utcnow()
    with database.transaction() as session:
        # The job started 5 minutes ago: the first trial waited, as the baseline's does.
        session.get(Job, job.id).started_at = now - timedelta(seconds=300)
        for i in range(4):  # finished: 20 s of wall each, 15 s of it training
            start = now - timedelta(seconds=200 - 30 * i)
            session.add(
                Candidate(
                    job_id=job.id, spec={}, spec_hash=f"h{i}", birth=i, status="completed",
                    started_at=start, finished_at=start + timedelta(seconds=20), train_s=15.0,
                )
            )  # fmt: skip
        running = Candidate(
            job_id=job.id, spec={}, spec_hash="h4", birth=4, status="running",
            started_at=now - timedelta(seconds=5),
        )  # fmt: skip
        session.add(running)
        session.flush()
        session.add(
            Run(
                job_id=job.id, candidate_id=running.id, stage="rung", rung=1, seed=0,
                origin="rank", budget={"seconds": 60.0}, status="queued", attempt=0,
            )
        )  # fmt: skip
    found = jobs.get(database, job.id)
    # 5 trials not started x 20 s + the running one's 15 s left + the run's 5 s of overhead
    # and 60 s of training, over 2 slots.
    assert queries.eta_s(database, found) == pytest.approx((5 * 20 + 15 + 65) / 2, abs=1.0)
    elapsed_rule = (utcnow() - found.started_at).total_seconds() / 4 * 6  # the old estimate
    assert elapsed_rule > 2 * queries.eta_s(database, found)
