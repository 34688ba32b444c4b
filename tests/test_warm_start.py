"""Warm starts: the best blocks of earlier jobs join a new job's initial population, their
results reused where the trial settings, data and device are equal and retrained otherwise."""

import pytest
from fake_trainer import fake_job, run_fake

from nas_service import jobs, warm_start
from nas_service.models import Candidate
from nas_service.pareto import nondominated_ranks
from search_space import baseline
from search_space.space import PROXY_CPU

API = "/api/v1"


def best(db, job_id: int, top: int) -> list[int]:
    """The job's best `top` searched blocks, worked out here from its rows."""
    done = [c for c in jobs.candidates(db, job_id) if c.status == "completed" and not c.is_baseline]
    ranks = nondominated_ranks([(c.perplexity, c.step_time_ratio) for c in done])
    order = sorted(range(len(done)), key=lambda i: (ranks[i], done[i].perplexity))
    return [done[i].id for i in order[:top]]


def test_unknown_or_repeated_jobs_are_refused_naming_the_field(client):
    body = fake_job().model_dump(mode="json")
    first = client.post(f"{API}/jobs", json=body).json()["id"]
    for warm, loc, words in [
        ({"jobs": [first, 999]}, ["body", "warm_start", "jobs", "1"], "job 999 not found"),
        ({"jobs": [first, first]}, ["body", "warm_start", "jobs"], "named twice"),
        ({"jobs": []}, ["body", "warm_start", "jobs"], "at least 1"),
        ({"jobs": [first], "top": 0}, ["body", "warm_start", "top"], "greater than"),
    ]:
        response = client.post(f"{API}/jobs", json={**body, "warm_start": warm})
        assert response.status_code == 422, response.text
        (problem,) = response.json()["detail"]
        assert problem["loc"] == loc and words in problem["msg"]
    assert client.get(f"{API}/jobs").json()["total"] == 1  # nothing stored


@pytest.mark.slow
def test_a_warm_start_reuses_equal_trials_and_retrains_others(sqlite_db, ray_local):
    db = sqlite_db
    first = jobs.submit(db, fake_job(limits={"max_trials": 8}))
    run_fake(db)
    chosen = best(db, first.id, 2)
    assert len(chosen) == 2
    warm = {"jobs": [first.id], "top": 2}
    # The same trial settings and data (another seed): results are copied, not retrained.
    same = jobs.submit(db, fake_job(seed=1, limits={"max_trials": 5}, warm_start=warm))
    # Another learning rate: the same blocks join, and are trained again.
    other = jobs.submit(
        db, fake_job(limits={"max_trials": 5}, trial={"learning_rate": 1e-3}, warm_start=warm)
    )
    assert [entry["candidate_id"] for entry in jobs.get(db, same.id).warm_start] == chosen
    run_fake(db)
    sources = {c.id: c for c in jobs.candidates(db, first.id)}
    for job, reused in ((same, True), (other, False)):
        assert jobs.get(db, job.id).status == "completed"
        rows = jobs.candidates(db, job.id)
        joined = [c for c in rows if c.mutation.startswith("warm start")]
        assert [c.mutation for c in joined] == [
            f"warm start from job {first.id} (candidate {cid})" for cid in chosen
        ]
        for row, cid in zip(joined, chosen, strict=True):
            assert row.spec == sources[cid].spec and row.status == "completed"
            assert (row.reused_from_id == cid) is reused
            assert row.perplexity == sources[cid].perplexity  # the fake trainer is exact


def test_only_blocks_in_the_new_space_join(sqlite_db):
    db = sqlite_db
    first = jobs.submit(db, fake_job())
    narrow = fake_job(
        search_space={"preset": "proxy-cpu", "overrides": {"d_model": [96]}},
        warm_start={"jobs": [first.id], "top": 3},
    )
    with db.transaction() as session:
        for i, d_model in enumerate((128, 96, 96)):
            spec = baseline("dense", PROXY_CPU).model_copy(deep=True).model_dump(mode="json")
            spec["block"]["d_model"] = d_model
            spec["block"]["layers"][-1]["hidden"] = (256, 384, 512)[i]
            session.add(
                Candidate(
                    job_id=first.id,
                    spec=spec,
                    spec_hash=f"{i}" * 64,
                    birth=i + 1,
                    mutation="random sample",
                    status="completed",
                    perplexity=10.0 + i,
                    step_time_ratio=1.0 - 0.1 * i,
                )
            )
    resolved = warm_start.resolve(db, narrow)
    assert [entry["spec"]["block"]["d_model"] for entry in resolved] == [96, 96]
    assert [entry["spec"]["block"]["layers"][-1]["hidden"] for entry in resolved] == [384, 512]
