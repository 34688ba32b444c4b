"""Step time is ranked by the same-slot ratio on every read path, and `best` obeys the job's
objective and device kind (REST API over TestClient and the queries, SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from nas_service import jobs, queries
from nas_service.job_config import JobConfig
from nas_service.models import Candidate, Job
from nas_service.pareto import hypervolume_2d, pareto_front

API = "/api/v1"
CPU = "cpu:Intel(R) Xeon(R) Platinum 8480+"
GPU = "gpu:NVIDIA H200"


def submit(client, shakespeare: str, **objective) -> int:
    body = {"name": "ratio", "dataset": shakespeare, "objective": objective or {"mode": "pareto"}}
    created = client.post(f"{API}/jobs", json=body)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def add(database, job_id: int, *rows: dict) -> list[int]:
    """Completed candidates (births in order; the first is the baseline unless said)."""
    with database.transaction() as session:
        start = len(session.query(Candidate).filter_by(job_id=job_id).all())
        added = []
        for k, values in enumerate(rows):
            birth = start + k
            row = Candidate(
                **{
                    "job_id": job_id,
                    "spec": {"birth": birth},
                    "spec_hash": f"h{birth}",
                    "birth": birth,
                    "mutation": "",
                    "status": "completed",
                    "is_baseline": birth == 0,
                    **values,
                }
            )
            session.add(row)
            session.flush()
            added.append(row.id)
    return added


def point(ppl: float, ms: float, ratio: float, **extra) -> dict:
    return {
        "perplexity": ppl,
        "val_loss": float(np.log(ppl)),
        "step_time_ms": ms,
        "reference_step_time_ms": ms / ratio,
        "step_time_ratio": ratio,
        "feasible": True,
        **extra,
    }


def progress(client, job_id: int) -> dict:
    return client.get(f"{API}/jobs/{job_id}").json()["progress"]


def test_front_and_hypervolume_follow_the_ratio_not_milliseconds(client, database, shakespeare):
    job_id = submit(client, shakespeare)
    # In ms, `fast_ms` (8, 50 ms) dominates both others; in ratios (the slot `fast_ms` ran
    # on was unloaded, `fast_ratio`'s loaded) `fast_ratio` dominates the baseline instead.
    baseline, fast_ms, fast_ratio = add(
        database,
        job_id,
        point(10.0, 100.0, 1.0),
        point(8.0, 50.0, 1.5),
        point(9.0, 150.0, 0.8),
    )
    pareto = client.get(f"{API}/jobs/{job_id}/pareto").json()
    assert pareto["front"] == [fast_ratio, fast_ms]  # by ratio
    columns = pareto["points"]
    assert columns["step_time_ratio"] == [1.0, 1.5, 0.8]
    assert columns["step_time_ms"] == [100.0, 50.0, 150.0]  # kept for display
    assert pareto["baselines"] == [baseline]
    p = progress(client, job_id)
    assert p["front_size"] == 2 and p["front"] == pareto["front"]
    history = client.get(f"{API}/jobs/{job_id}/hypervolume").json()
    assert history["reference"] == pytest.approx([11.0, 1.65])
    points = [(10.0, 1.0), (8.0, 1.5), (9.0, 0.8)]
    assert history["hypervolume"] == [
        pytest.approx(hypervolume_2d(points[:k], tuple(history["reference"])))
        for k in history["trials"]
    ]


def test_candidates_without_a_ratio_are_not_scored(client, database, shakespeare):
    job_id = submit(client, shakespeare)
    scored, _ = add(
        database,
        job_id,
        point(10.0, 100.0, 1.0),
        {"perplexity": 5.0, "step_time_ms": 10.0, "feasible": True},  # no same-slot reference
    )
    assert client.get(f"{API}/jobs/{job_id}/pareto").json()["points"]["id"] == [scored]
    p = progress(client, job_id)
    assert p["front"] == [scored] and p["best_candidate_id"] == scored


def test_pareto_best_is_the_low_perplexity_end_of_the_front(client, database, shakespeare):
    job_id = submit(client, shakespeare)
    ids = add(
        database,
        job_id,
        point(10.0, 100.0, 1.0, device_kind=CPU),
        point(7.0, 90.0, 1.3, device_kind=CPU),
        point(7.0, 80.0, 1.1, device_kind=CPU),  # the same perplexity, faster: wins the tie
        point(6.0, 300.0, 2.0, device_kind=CPU, feasible=False),  # never on the front
        point(8.0, 70.0, 0.9, device_kind=CPU),
    )
    p = progress(client, job_id)
    front = client.get(f"{API}/jobs/{job_id}/pareto").json()["front"]
    assert front == [ids[4], ids[2]] == p["front"]
    assert p["best_candidate_id"] == ids[2] == front[-1] and p["best_perplexity"] == 7.0
    assert p["best_rule"] == f"lowest perplexity on the Pareto front ({CPU})"


def test_constrained_best_skips_infeasible_lower_loss(client, database, shakespeare):
    job_id = submit(client, shakespeare, mode="constrained", max_step_time_ratio=1.2)
    ids = add(
        database,
        job_id,
        point(10.0, 100.0, 1.0),
        point(5.0, 150.0, 1.5, feasible=False),  # the lowest loss, too slow
        point(6.0, 110.0, 1.1),
        point(4.0, 100.0, 1.0, feasible=None),  # not judged: not a winner
        point(5.5, 110.0, 1.1, status="pruned"),
    )
    p = progress(client, job_id)
    assert p["best_candidate_id"] == ids[2] and p["best_perplexity"] == 6.0
    assert p["best_rule"] == (
        "lowest validation loss among feasible candidates (step time ratio <= 1.2)"
    )
    # The lowest validation loss, not the lowest perplexity (they disagree on legacy rows).
    (lower,) = add(database, job_id, point(6.5, 100.0, 1.0, val_loss=1.0))
    assert progress(client, job_id)["best_candidate_id"] == lower


@pytest.mark.parametrize("mode", ["pareto", "constrained"])
def test_best_is_never_of_another_device_kind(client, database, shakespeare, mode):
    job_id = submit(client, shakespeare, mode=mode)
    baseline, other, same, unknown = add(
        database,
        job_id,
        point(10.0, 100.0, 1.0, device_kind=CPU),
        point(3.0, 10.0, 0.5, device_kind=GPU),  # better in every way, on another device
        point(8.0, 90.0, 0.9, device_kind=CPU),
        point(2.0, 90.0, 0.9),  # no device kind recorded: not known to be comparable
    )
    p = progress(client, job_id)
    assert p["best_candidate_id"] == same and CPU in p["best_rule"]
    if mode == "pareto":  # the front itself is every device's (ratios are same-slot)
        assert other in p["front"]
    # Before the baseline's device kind is known, nothing is filtered.
    with database.transaction() as session:
        session.get(Candidate, baseline).device_kind = None
    p = progress(client, job_id)
    assert p["best_candidate_id"] == unknown and CPU not in p["best_rule"]


def test_no_best_before_a_completed_candidate(client, shakespeare):
    job_id = submit(client, shakespeare, mode="constrained")
    p = progress(client, job_id)
    assert p["best_candidate_id"] is None and p["best_perplexity"] is None
    assert p["front"] == [] and p["front_size"] == 0 and "feasible" in p["best_rule"]


def test_new_columns_in_pages_csv_and_detail(client, database, shakespeare):
    job_id = submit(client, shakespeare)
    at = {"0.25": 3.1, "0.5": 2.7, "1": 2.4}
    first, second = add(
        database,
        job_id,
        point(10.0, 100.0, 1.0, device_kind=CPU, val_loss_at=at),
        point(9.0, 300.0, 0.9, device_kind=GPU, val_loss_inference=2.25),
    )
    url = f"{API}/jobs/{job_id}/candidates"
    page = client.get(url, params={"sort": "step_time_ratio"}).json()["items"]
    assert [c["id"] for c in page] == [second, first]
    assert page[0]["step_time_ratio"] == 0.9 and page[0]["reference_step_time_ms"] == 300 / 0.9
    assert page[0]["val_loss_inference"] == 2.25 and page[0]["device_kind"] == GPU
    for sort in ("reference_step_time_ms", "val_loss_inference", "device_kind"):
        assert client.get(url, params={"sort": sort}).status_code == 200
    assert client.get(url, params={"sort": "val_loss_at"}).status_code == 422
    only = client.get(url, params={"device_kind": CPU}).json()
    assert only["total"] == 1 and only["items"][0]["id"] == first
    rows = list(csv.DictReader(io.StringIO(client.get(url, params={"format": "csv"}).text)))
    assert [r["device_kind"] for r in rows] == [CPU, GPU]
    assert [r["step_time_ratio"] for r in rows] == ["1.0", "0.9"]
    assert rows[1]["val_loss_inference"] == "2.25" and rows[0]["val_loss_inference"] == ""
    assert float(rows[0]["reference_step_time_ms"]) == 100.0
    detail = client.get(f"{API}/candidates/{first}").json()
    assert detail["val_loss_at"] == at and detail["device_kind"] == CPU
    assert client.get(f"{API}/candidates/{second}").json()["val_loss_at"] is None


def test_openapi_says_what_the_measurements_mean(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    public = schemas["CandidatePublic"]["properties"]
    for name in ("step_time_ratio", "reference_step_time_ms", "device_kind", "step_time_ms"):
        assert public[name]["description"], name
    assert "same worker slot" in public["reference_step_time_ms"]["description"]
    assert "inference" in public["val_loss_inference"]["description"]
    assert "budget" in schemas["CandidateDetail"]["properties"]["val_loss_at"]["description"]
    progress_fields = schemas["Progress"]["properties"]
    assert {"best_rule", "front"} <= set(progress_fields)
    assert "step_time_ratio" in schemas["ScoredPoints"]["properties"]
    assert "ratio" in schemas["HypervolumePublic"]["properties"]["reference"]["description"]


def test_front_found_in_sql_matches_the_pareto_math(database, shakespeare):
    """Progress finds the front in SQL (a window over distinct points, joined back to rows);
    it must agree with nas_service.pareto and `pareto` on ties, equal copies, infeasible and
    unfinished candidates, and follow a new completed trial through its cache."""
    rng = np.random.default_rng(0)
    for round_ in range(6):
        job = jobs.submit(database, JobConfig(name=f"front {round_}", dataset=shakespeare))
        rows = []
        for i in range(40):  # a coarse grid: many ties and exact copies
            status = ("completed", "completed", "completed", "pruned", "failed")[i % 5]
            scored = status != "failed"
            rows.append(
                Candidate(
                    job_id=job.id,
                    spec={},
                    spec_hash=f"{round_}-{i}",
                    birth=i,
                    status=status,
                    feasible=bool(rng.random() > 0.2),
                    perplexity=float(rng.integers(1, 6)) if scored else None,
                    step_time_ratio=float(rng.integers(1, 6)) / 4 if scored else None,
                    step_time_ms=float(rng.integers(1, 100)) if scored else None,  # noise
                )
            )
        with database.transaction() as session:
            session.add_all(rows)
            session.flush()
            ids = [r.id for r in rows]
        eligible = [
            i for i, r in enumerate(rows) if r.status == "completed" and r.feasible is not False
        ]
        on_front = [
            eligible[k]
            for k in pareto_front([(rows[i].perplexity, rows[i].step_time_ratio) for i in eligible])
        ]
        expected = [ids[i] for i in sorted(on_front, key=lambda i: (rows[i].step_time_ratio, i))]
        with database.sessions() as session:
            stored = session.get(Job, job.id)
        got = queries.progress(database, stored)
        assert got.front == expected == queries.pareto(database, job.id).front
        assert got.front_size == len(expected)
        key = {ids[i]: (rows[i].perplexity, rows[i].step_time_ratio, ids[i]) for i in eligible}
        assert got.best_candidate_id == min(key, key=key.__getitem__)
        assert key[got.best_candidate_id][:2] == key[expected[-1]][:2]  # the front's end
        with database.transaction() as session:
            session.add(
                Candidate(
                    job_id=job.id,
                    spec={},
                    spec_hash=f"{round_}-best",
                    birth=40,
                    status="completed",
                    feasible=True,
                    perplexity=0.5,
                    step_time_ratio=0.1,
                    step_time_ms=1000.0,
                )
            )
        again = queries.progress(database, stored)
        assert again.front_size == 1 and again.front == [again.best_candidate_id]
