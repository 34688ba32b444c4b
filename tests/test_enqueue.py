"""Blocks added by hand: validated against the job's space (422 naming the field, nothing
stored), refused once the job has ended (409), trained next by the runner and marked in the
lineage."""

import numpy as np
import pytest
from fake_trainer import fake_job, run_fake

from nas_service import enqueue, jobs
from nas_service.jobs import JobConflict, JobError
from search_space import sample
from search_space.space import PROXY_CPU

API = "/api/v1"


def a_spec(seed: int = 1) -> dict:
    return sample(PROXY_CPU, np.random.default_rng(seed)).model_dump(mode="json")


def submit(client) -> int:
    response = client.post(f"{API}/jobs", json=fake_job().model_dump(mode="json"))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def listed(client, job_id: int) -> list[dict]:
    response = client.get(f"{API}/jobs/{job_id}/enqueued")
    assert response.status_code == 200
    return response.json()["items"]


def test_bad_specs_are_refused_naming_the_field_and_nothing_is_stored(client):
    job_id = submit(client)
    outside = a_spec()
    layer = next(i for i, lay in enumerate(outside["block"]["layers"]) if "hidden" in lay)
    outside["block"]["layers"][layer]["hidden"] = 999
    invalid = {**a_spec(), "repeats": "three"}
    missing = {k: v for k, v in a_spec().items() if k != "block"}
    cases = [
        (outside, ["body", "spec", "block", "layers", str(layer), "hidden"], "not an allowed"),
        (invalid, ["body", "spec", "repeats"], "integer"),
        (missing, ["body", "spec", "block"], "required"),
    ]
    for spec, loc, words in cases:
        response = client.post(f"{API}/jobs/{job_id}/candidates", json={"spec": spec})
        assert response.status_code == 422, response.text
        (problem,) = response.json()["detail"]
        assert problem["loc"] == loc and words in problem["msg"]
    response = client.post(f"{API}/jobs/{job_id}/candidates", json={"spec": a_spec(), "x": 1})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "x"]
    assert listed(client, job_id) == []


def test_a_block_is_queued_once_and_not_after_the_job_ended(client):
    job_id = submit(client)
    body = {"spec": a_spec(), "note": "a **wide** FFN first"}
    response = client.post(f"{API}/jobs/{job_id}/candidates", json=body)
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["status"] == "queued" and queued["candidate_id"] is None
    assert queued["note"] == body["note"] and len(queued["spec_hash"]) == 64
    again = client.post(f"{API}/jobs/{job_id}/candidates", json=body)
    assert again.status_code == 409 and "already added" in again.json()["detail"][0]["msg"]
    assert client.post(f"{API}/jobs/{job_id}/cancel").status_code == 200
    late = client.post(f"{API}/jobs/{job_id}/candidates", json={"spec": a_spec(2)})
    assert late.status_code == 409
    assert late.json()["detail"][0]["loc"] == ["body", "status"]
    (item,) = listed(client, job_id)
    assert item["id"] == queued["id"] and item["status"] == "dropped"
    assert client.post(f"{API}/jobs/999/candidates", json=body).status_code == 404


@pytest.mark.slow
def test_the_runner_trains_a_block_added_by_hand_next(sqlite_db, ray_local):
    config = fake_job(limits={"max_trials": 4})
    job = jobs.submit(sqlite_db, config)
    spec = a_spec(3)
    added = enqueue.enqueue(sqlite_db, job.id, spec, note="try *this*")
    run_fake(sqlite_db)
    assert jobs.get(sqlite_db, job.id).status == "completed"
    rows = jobs.candidates(sqlite_db, job.id)
    # The baseline first, then the block added by hand, ahead of the designer's proposals;
    # it does not use up one of the job's max_trials.
    assert [row.birth for row in rows] == list(range(5))
    hand = rows[1]
    assert hand.spec == spec and hand.mutation == enqueue.ADDED_BY_HAND
    assert hand.parent_id is None and hand.note == "try *this*" and hand.status == "completed"
    _, (request,) = enqueue.listed(sqlite_db, job.id)
    assert request.id == added.id and request.candidate_id == hand.id
    assert enqueue.status(request, "completed") == "started"
    with pytest.raises(JobConflict, match="has ended"):
        enqueue.enqueue(sqlite_db, job.id, a_spec(4))
    # A block the job already has is refused, naming the candidate.
    job2 = jobs.submit(sqlite_db, config)
    enqueue.enqueue(sqlite_db, job2.id, spec)
    with pytest.raises(JobConflict, match="already added"):
        enqueue.enqueue(sqlite_db, job2.id, spec)
    with pytest.raises(JobError) as bad:
        enqueue.enqueue(sqlite_db, job2.id, {**spec, "seq_len": 65})
    assert bad.value.field == "spec.seq_len"
