"""Comparing jobs: each front normalised by its own job's baseline, device and budget named."""

import pytest
from test_importance import finish, specs

from nas_service import store
from nas_service.job_config import JobConfig
from nas_service.jobs import submit
from search_space import spec_hash

API = "/api/v1"


def seeded_job(db, shakespeare, name, kind, baseline_ppl, trials, **sections) -> int:
    """A job whose baseline (birth 0) has `baseline_ppl` at ratio 1 and 100 ms, and whose
    other trials are (perplexity, ratio) pairs (None: failed)."""
    job = submit(db, JobConfig(name=name, dataset=shakespeare, **sections))
    pool = specs(len(trials) + 1, seed=len(name))
    finish(
        db, job.id, pool[0], 0, baseline_ppl, 1.0, is_baseline=True, step_time_ms=100.0, kind=kind
    )
    for birth, (ppl, ratio) in enumerate(trials, start=1):
        status = "completed" if ppl is not None else "failed"
        step = None if ratio is None else 100.0 * ratio
        finish(db, job.id, pool[birth], birth, ppl, ratio, status, step_time_ms=step, kind=kind)
    return job.id


def test_fronts_normalised_by_their_own_baseline(client, database, shakespeare):
    a = seeded_job(
        database,
        shakespeare,
        "cpu-job",
        "cpu:A",
        20.0,
        [(18.0, 1.2), (22.0, 0.8), (25.0, 1.5), (None, None)],
    )
    b = seeded_job(
        database,
        shakespeare,
        "gpu-job",
        "gpu:B",
        10.0,
        [(9.0, 1.1), (12.0, 0.5)],
        trial={"budget_steps": 200},
        objective={"baseline": "dense"},
    )
    response = client.get(f"{API}/compare", params={"jobs": f"{b}, {a}"})
    assert response.status_code == 200, response.text
    second, first = response.json()["jobs"]  # in the order asked for
    assert (first["id"], first["name"], second["id"]) == (a, "cpu-job", b)
    assert (first["device_kind"], first["budget"], first["baseline"]) == (
        "cpu:A",
        {"seconds": 30.0},
        "glam",
    )
    assert (second["device_kind"], second["budget"], second["baseline"]) == (
        "gpu:B",
        {"steps": 200.0},
        "dense",
    )
    assert first["baseline_perplexity"] == 20.0 and first["baseline_step_time_ms"] == 100.0
    assert first["completed"] == 4 and second["completed"] == 3  # the failed one not counted
    assert first["message"] is None and first["status"] == "queued"
    # Fronts by step-time ratio; the dominated (25, 1.5) and the failed trial are not on it.
    assert [(p["perplexity"], p["step_time_ratio"]) for p in first["front"]] == [
        (22.0, 0.8),
        (20.0, 1.0),
        (18.0, 1.2),
    ]
    assert [p["perplexity_ratio"] for p in first["front"]] == pytest.approx([1.1, 1.0, 0.9])
    assert [p["perplexity_ratio"] for p in second["front"]] == pytest.approx([1.2, 1.0, 0.9])
    assert first["front"][1]["candidate_id"] == first["baseline_candidate_id"]
    assert first["front"][0]["step_time_ms"] == pytest.approx(80.0)


def test_baseline_without_result(client, database, shakespeare):
    job = submit(database, JobConfig(name="early", dataset=shakespeare))
    base, other = specs(2, seed=3)
    new = store.NewCandidate(
        job_id=job.id,
        spec=base.model_dump(mode="json"),
        spec_hash=spec_hash(base),
        birth=0,
        parent_id=None,
        mutation="",
        is_baseline=True,
    )
    store.insert_running(database, new, slot=0)  # still training
    finish(database, job.id, other, 1, 15.0, 0.9)
    (entry,) = client.get(f"{API}/compare", params={"jobs": str(job.id)}).json()["jobs"]
    assert entry["baseline_perplexity"] is None and entry["device_kind"] is None
    assert [p["perplexity_ratio"] for p in entry["front"]] == [None]
    assert entry["front"][0]["step_time_ratio"] == 0.9
    assert "baseline" in entry["message"]


@pytest.mark.parametrize(
    ("jobs", "words"),
    [
        ("", "at least one"),
        ("1,a", "'a' is not a job id"),
        ("1,,2", "'' is not a job id"),
        ("0", "'0' is not a job id"),
        ("-1", "'-1' is not a job id"),
        ("99999999999", "is not a job id"),
        ("1,2,1", "job 1 is named twice"),
        (",".join(map(str, range(1, 22))), "at most 20 jobs"),
    ],
)
def test_bad_job_lists_are_422_naming_jobs(client, jobs, words):
    response = client.get(f"{API}/compare", params={"jobs": jobs})
    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["query", "jobs"] and words in problem["msg"]


def test_missing_list_and_unknown_job(client, database, shakespeare):
    response = client.get(f"{API}/compare")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "jobs"]
    job = submit(database, JobConfig(name="known", dataset=shakespeare))
    response = client.get(f"{API}/compare", params={"jobs": f"{job.id},4242"})
    assert response.status_code == 404 and "4242" in response.json()["detail"]
