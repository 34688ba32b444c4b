"""REST API over TestClient, on SQLite and PostgreSQL."""

import itertools
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from test_store import BAD

from nas_service.models import Candidate, CurvePoint, Job

API = "/api/v1"


def job_body(source: str, **sections) -> dict:
    return {"name": "api", "dataset": source, **sections}


def count_jobs(database) -> int:
    with database.sessions() as session:
        return session.scalar(select(func.count()).select_from(Job))


def test_submit_list_get(client, shakespeare):
    created = client.post(f"{API}/jobs", json=job_body(shakespeare))
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] == "queued" and job["config"]["dataset"].startswith("text:/")
    assert job["progress"]["total"] == 50 and job["progress"]["done"] == 0
    listed = client.get(f"{API}/jobs").json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == job["id"]
    assert client.get(f"{API}/jobs/{job['id']}").json()["name"] == "api"
    assert client.get(f"{API}/jobs/999").status_code == 404


@pytest.mark.parametrize(("change", "field"), BAD)
def test_bad_job_config_is_422_naming_the_field(client, database, change, field):
    response = client.post(f"{API}/jobs", json={"name": "t", "dataset": "builtin:stdlib", **change})
    assert response.status_code == 422
    locations = [".".join(str(p) for p in e["loc"][1:]) for e in response.json()["detail"]]
    assert field in locations
    assert count_jobs(database) == 0


@pytest.mark.parametrize(
    "body",
    [None, [], "text", {"dataset": "builtin:stdlib"}, {"name": "t"}],
)
def test_malformed_bodies_are_422(client, database, body):
    assert client.post(f"{API}/jobs", json=body).status_code == 422
    assert count_jobs(database) == 0


def test_bad_data_is_422_on_dataset(client, database, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for source in ("text:/nonexistent/x.txt", f"text:{empty}"):
        response = client.post(f"{API}/jobs", json=job_body(source))
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "dataset"]
    assert count_jobs(database) == 0


def test_pause_resume_cancel_delete(client, database, shakespeare):
    job = client.post(f"{API}/jobs", json=job_body(shakespeare)).json()
    url = f"{API}/jobs/{job['id']}"
    assert client.post(f"{url}/pause").json()["status"] == "paused"
    assert client.delete(url).status_code == 409  # a paused job is still alive
    assert client.post(f"{url}/pause").status_code == 409
    assert client.post(f"{url}/resume").json()["status"] == "running"
    assert client.post(f"{url}/cancel").json()["status"] == "cancelled"
    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404
    assert client.post(f"{API}/jobs/12345/cancel").status_code == 404


@pytest.fixture
def populated(client, database, shakespeare):
    """A job with 30 candidates of known metrics (rows written as the runner would)."""
    job = client.post(f"{API}/jobs", json=job_body(shakespeare)).json()
    with database.transaction() as session:
        parent = None
        for i in range(30):
            status = ["completed", "failed", "pruned"][i % 3]
            row = Candidate(
                job_id=job["id"],
                spec={"i": i},
                spec_hash=f"h{i}",
                birth=i,
                mutation=f"m{i}",
                status=status,
                parent_id=parent,
                perplexity=10.0 - i * 0.1 if status != "failed" else None,
                step_time_ms=100.0 + i,
                # Every other trial on a slot under twice the load: ms and ratios disagree.
                reference_step_time_ms=100.0 * (1 + i % 2),
                step_time_ratio=(100.0 + i) / (100.0 * (1 + i % 2)),
                reason="boom" if status == "failed" else None,
            )
            session.add(row)
            session.flush()
            session.add_all(
                CurvePoint(candidate_id=row.id, index=k, train_s=k * 0.5, loss=5.0 - k)
                for k in range(3)
            )
            parent = row.id
    return job


def test_candidates_filter_sort_paginate(client, populated):
    url = f"{API}/jobs/{populated['id']}/candidates"
    page = client.get(url, params={"limit": 7, "offset": 7}).json()
    assert page["total"] == 30 and [c["birth"] for c in page["items"]] == list(range(7, 14))
    failed = client.get(url, params={"status": "failed"}).json()
    assert failed["total"] == 10 and {c["status"] for c in failed["items"]} == {"failed"}
    best = client.get(url, params={"sort": "perplexity", "limit": 3}).json()["items"]
    assert [c["perplexity"] for c in best] == sorted(c["perplexity"] for c in best)
    assert best[0]["birth"] == 29
    worst_last = client.get(url, params={"sort": "perplexity", "order": "desc"}).json()["items"]
    assert worst_last[-1]["perplexity"] is None  # NULLs last either way
    assert client.get(url, params={"sort": "colour"}).status_code == 422
    assert client.get(url, params={"status": "lost"}).status_code == 422
    assert client.get(url, params={"limit": 0}).status_code == 422
    assert client.get(f"{API}/jobs/999/candidates").status_code == 404


def test_candidate_detail_has_curve_and_lineage(client, populated):
    items = client.get(
        f"{API}/jobs/{populated['id']}/candidates",
        params={"sort": "birth", "order": "desc", "limit": 1},
    ).json()["items"]
    detail = client.get(f"{API}/candidates/{items[0]['id']}").json()
    assert detail["spec"] == {"i": 29} and len(detail["curve"]) == 3
    assert len(detail["lineage"]) == 29 and detail["lineage"][0]["mutation"] == "m28"
    assert client.get(f"{API}/candidates/99999").status_code == 404


def test_presets_and_health(client):
    presets = client.get(f"{API}/search-space/presets").json()
    assert {p["name"] for p in presets["presets"]} == {"paper", "proxy-cpu", "proxy-gpu"}
    assert "search_space" in presets["job_config_schema"]["properties"]
    assert client.get(f"{API}/healthz").json() == {"status": "ok"}


def test_candidates_as_csv(client, populated):
    import csv
    import io

    response = client.get(f"{API}/jobs/{populated['id']}/candidates", params={"format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 30 and rows[0]["birth"] == "0" and "perplexity" in rows[0]
    for column in ("step_time_ratio", "reference_step_time_ms", "val_loss_inference"):
        assert column in rows[0]
    assert "device_kind" in rows[0] and float(rows[1]["step_time_ratio"]) == 101.0 / 200.0


def test_pareto_and_hypervolume(client, database, populated):
    from nas_service.pareto import pareto_front

    result = client.get(f"{API}/jobs/{populated['id']}/pareto").json()
    columns = result["points"]
    points = [{name: columns[name][i] for name in columns} for i in range(len(columns["id"]))]
    completed = [p for p in points if p["status"] == "completed"]
    expected = {
        completed[i]["id"]
        for i in pareto_front([(p["perplexity"], p["step_time_ratio"]) for p in completed])
    }
    assert set(result["front"]) == expected and expected
    job = client.get(f"{API}/jobs/{populated['id']}").json()
    assert job["progress"]["front_size"] == len(expected)
    assert job["progress"]["front"] == result["front"]
    with database.transaction() as session:
        row = session.get(Candidate, result["front"][0])
        row.finished_at = session.get(Job, populated["id"]).created_at + timedelta(seconds=90)
    columns = client.get(f"{API}/jobs/{populated['id']}/pareto").json()["points"]
    finished = dict(zip(columns["id"], columns["finished_s"], strict=True))
    assert finished.pop(result["front"][0]) == 90.0 and set(finished.values()) == {None}
    assert {p["status"] for p in points} == {"completed", "pruned"}
    history = client.get(f"{API}/jobs/{populated['id']}/hypervolume").json()
    assert history["trials"] == list(range(1, 11))
    volumes = history["hypervolume"]
    assert all(b >= a for a, b in itertools.pairwise(volumes)) and volumes[-1] > 0
    assert client.get(f"{API}/jobs/999/pareto").status_code == 404


def test_export_formats(client, database, shakespeare):
    import json as jsonlib

    from search_space import baseline, spec_hash

    job = client.post(f"{API}/jobs", json=job_body(shakespeare)).json()
    spec = baseline("glam")
    with database.transaction() as session:
        parent = Candidate(
            job_id=job["id"],
            spec=spec.model_dump(mode="json"),
            birth=0,
            spec_hash=spec_hash(spec),
            mutation="initial",
            status="completed",
        )
        session.add(parent)
        session.flush()
        child = Candidate(
            job_id=job["id"],
            spec=spec.model_dump(mode="json"),
            birth=1,
            spec_hash="other",
            mutation="swap 0 and 1",
            status="completed",
            parent_id=parent.id,
            perplexity=7.5,
            step_time_ms=90.0,
            device={"platform": "cpu"},
        )
        session.add(child)
        session.flush()
        child_id = child.id
    url = f"{API}/candidates/{child_id}/export"
    bundle = client.get(url).json()
    assert bundle["spec"] == spec.model_dump(mode="json")
    assert bundle["metrics"]["perplexity"] == 7.5
    assert bundle["lineage"][0]["mutation"] == "initial"
    manifest = bundle["manifest"]
    assert manifest["dataset"]["checksum"] == job["data_checksum"]
    assert manifest["device"] == {"platform": "cpu"} and manifest["versions"]["jax"]
    jsonlib.dumps(bundle, allow_nan=False)
    config = client.get(url, params={"format": "config", "target": "1B"}).json()
    assert config["scale"]["within_tolerance"] and config["spec"]["repeats"] == 6
    module = client.get(url, params={"format": "flax"})
    assert module.headers["content-type"].startswith("text/x-python")
    compile(module.text, "candidate.py", "exec")
    bad = client.get(url, params={"format": "config", "target": "lots"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "target"]
    assert client.get(url, params={"format": "zip"}).status_code == 422
    assert client.get(f"{API}/candidates/99999/export").status_code == 404


@pytest.fixture
def tokens(monkeypatch):
    from api.auth import get_auth_settings

    monkeypatch.setenv("NAS_API_TOKENS", "ada:secret-a,bob:secret-b")
    get_auth_settings.cache_clear()
    yield monkeypatch
    get_auth_settings.cache_clear()


def test_writes_need_a_token_and_record_its_owner(client, database, shakespeare, tokens):
    body = job_body(shakespeare)
    missing = client.post(f"{API}/jobs", json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = client.post(f"{API}/jobs", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and "nope" not in wrong.text
    assert count_jobs(database) == 0
    created = client.post(f"{API}/jobs", json=body, headers={"Authorization": "Bearer secret-b"})
    assert created.status_code == 201 and created.json()["owner"] == "bob"
    job_url = f"{API}/jobs/{created.json()['id']}"
    assert client.get(job_url).status_code == 200  # reads stay open by default
    assert client.post(f"{job_url}/cancel").status_code == 401


def test_reads_can_be_closed(client, shakespeare, tokens):
    from api.auth import get_auth_settings

    tokens.setenv("NAS_AUTH_READS", "true")
    get_auth_settings.cache_clear()
    assert client.get(f"{API}/jobs").status_code == 401
    ok = client.get(f"{API}/jobs", headers={"Authorization": "Bearer secret-a"})
    assert ok.status_code == 200
    assert client.get(f"{API}/healthz").status_code == 200  # probes stay open


def test_stream_tokens_open_the_event_stream_when_reads_are_closed(client, shakespeare, tokens):
    from api.auth import get_auth_settings

    tokens.setenv("NAS_AUTH_READS", "true")
    get_auth_settings.cache_clear()
    auth = {"Authorization": "Bearer secret-a"}
    job = client.post(f"{API}/jobs", json=job_body(shakespeare), headers=auth).json()
    client.post(f"{API}/jobs/{job['id']}/cancel", headers=auth)  # so the stream ends
    events = f"{API}/jobs/{job['id']}/events"
    assert client.get(events).status_code == 401
    token = client.get(f"{API}/jobs/{job['id']}/stream-token", headers=auth).json()
    assert token["expires_in_s"] > 0
    streamed = client.get(events, params={"stream_token": token["stream_token"]})
    assert streamed.status_code == 200 and "cancel" in streamed.text
    forged = client.get(events, params={"stream_token": token["stream_token"][:-2] + "xx"})
    assert forged.status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/jobs/9223372036854775808",
        "/jobs/0/cancel",
        "/candidates/2147483648",
        "/jobs/1/candidates?offset=9223372036854775808",
    ],
)
def test_out_of_range_ids_are_422_not_a_database_error(client, path):
    method = client.post if path.endswith("cancel") else client.get
    assert method(f"{API}{path}").status_code == 422
