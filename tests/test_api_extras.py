"""Live job events (SSE), Prometheus metrics and offline docs, on SQLite and PostgreSQL."""

import json
import re
import threading
import time
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from api.app import create_app
from api.deps import get_db
from api.routers import events
from nas_service import jobs
from nas_service.models import Candidate, Job, JobEvent, utcnow
from nas_service.settings import Settings, get_settings

API = "/api/v1"


@pytest.fixture
def app(database) -> FastAPI:
    app = create_app()  # events, metrics and offline docs included
    app.dependency_overrides[get_db] = lambda: database
    return app


@pytest.fixture
def client(app):
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def job_id(client, shakespeare) -> int:
    created = client.post(f"{API}/jobs", json={"name": "x", "dataset": shakespeare})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def add_events(database, job_id: int, *events: tuple[str, str, dict]) -> list[int]:
    with database.transaction() as session:
        rows = [JobEvent(job_id=job_id, kind=k, message=m, data=d) for k, m, d in events]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def finish(database, job_id: int, status: str = "completed") -> int:
    """What the runner does at the end: the final status and its event, in one transaction."""
    with database.transaction() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status))
        event = JobEvent(job_id=job_id, kind="job", message=status, data={"status": status})
        session.add(event)
        session.flush()
        return event.id


def read_stream(client, job_id: int, **kwargs) -> list[dict]:
    """The SSE messages of a stream that ends by itself; comments are dropped."""
    with client.stream("GET", f"{API}/jobs/{job_id}/events", **kwargs) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    messages = []
    for block in filter(None, text.split("\n\n")):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if fields:
            messages.append({**fields, "data": json.loads(fields["data"])})
    return messages


def test_events_stream_in_order_and_end_with_the_job(client, database, job_id):
    trial_ids = add_events(
        database,
        job_id,
        ("job", "claimed", {"runner": "r1", "candidates": 0}),
        ("trial", "completed", {"candidate_id": 7}),
        ("trial", "retry", {"candidate_id": 8, "attempt": 1}),
    )
    final_id = finish(database, job_id)

    messages = read_stream(client, job_id)

    ids = [int(m["id"]) for m in messages]
    assert ids == sorted(ids) and ids[-3:-1] == trial_ids[1:] and ids[-1] == final_id
    assert [m["event"] for m in messages] == ["job", "job", "trial", "trial", "job"]
    submitted, claimed, trial, retry, completed = (m["data"] for m in messages)
    assert submitted["message"] == "submitted" and submitted["status"] == "queued"
    assert claimed["status"] is None and claimed["data"]["runner"] == "r1"
    assert trial == trial | {"candidate_id": 7, "status": "completed", "job_id": job_id}
    assert retry["candidate_id"] == 8 and retry["status"] is None and retry["message"] == "retry"
    assert completed["status"] == completed["job_status"] == "completed"
    assert all(m["data"]["id"] == int(m["id"]) for m in messages)


def test_resume_from_last_event_id_or_since(client, database, job_id):
    first, second = add_events(
        database, job_id, ("trial", "completed", {"candidate_id": 1}), ("trial", "failed", {})
    )
    final_id = finish(database, job_id, "failed")

    def ids(**kwargs) -> list[int]:
        return [int(m["id"]) for m in read_stream(client, job_id, **kwargs)]

    assert ids(headers={"Last-Event-ID": str(first)}) == [second, final_id]
    assert ids(params={"since": second}) == [final_id]
    assert ids(params={"since": 0}, headers={"Last-Event-ID": str(second)}) == [final_id]
    assert ids(params={"since": final_id}) == []


def test_tail_starts_after_the_latest_event(client, database, job_id, monkeypatch):
    """`?tail=true` skips the history: a page that loads the job's state once the stream is
    open needs only what follows."""
    monkeypatch.setattr(events, "POLL_INTERVAL_S", 0.02)
    add_events(database, job_id, ("trial", "completed", {"candidate_id": 1}))

    def runner() -> None:
        add_events(database, job_id, ("trial", "failed", {"candidate_id": 2}))
        finish(database, job_id, "cancelled")

    timer = threading.Timer(0.3, runner)
    timer.start()
    try:
        messages = read_stream(client, job_id, params={"tail": "true"})
    finally:
        timer.join()
    assert [m["data"]["message"] for m in messages] == ["failed", "cancelled"]
    # A reconnecting browser's Last-Event-ID wins over tail.
    first = int(messages[0]["id"])
    again = read_stream(client, job_id, params={"tail": "true"}, headers={"Last-Event-ID": "0"})
    assert len(again) == 4 and int(again[2]["id"]) == first


def test_stream_follows_a_running_job_until_it_finishes(client, database, job_id, monkeypatch):
    monkeypatch.setattr(events, "POLL_INTERVAL_S", 0.02)

    def runner() -> None:
        add_events(database, job_id, ("trial", "completed", {"candidate_id": 3}))
        finish(database, job_id, "cancelled")

    timer = threading.Timer(0.2, runner)
    timer.start()
    try:
        messages = read_stream(client, job_id)
    finally:
        timer.join()
    assert [m["data"]["message"] for m in messages] == ["submitted", "completed", "cancelled"]
    assert messages[1]["data"]["candidate_id"] == 3


def hold(database, job_id: int, lease_s: float = 60.0) -> int:
    """A live runner r1 holds the job with one trial running; the trial's id."""
    with database.transaction() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status="running",
                runner_id="r1",
                lease_expires_at=utcnow() + timedelta(seconds=lease_s),
            )
        )
        trial = Candidate(job_id=job_id, spec={}, spec_hash="h", birth=0, status="running")
        session.add(trial)
        session.flush()
        return trial.id


def test_stream_outlives_a_cancel_until_the_runner_finishes(client, database, job_id, monkeypatch):
    """The API writes `cancelled` at once; the runner holding the job cancels its trial and
    writes the job's final event a moment later: a watching client receives both."""
    monkeypatch.setattr(events, "POLL_INTERVAL_S", 0.02)
    trial_id = hold(database, job_id)

    def api_then_runner() -> None:
        jobs.transition(database, job_id, "cancel")
        time.sleep(0.4)  # the runner notices and cancels its trial
        with database.transaction() as session:
            session.execute(
                update(Candidate).where(Candidate.id == trial_id).values(status="cancelled")
            )
            session.add(
                JobEvent(
                    job_id=job_id,
                    kind="trial",
                    message="cancelled",
                    data={"candidate_id": trial_id},
                )
            )
        time.sleep(0.3)  # then finishes the job, as `_finish_jobs`
        with database.transaction() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(runner_id=None, lease_expires_at=None, finished_at=utcnow())
            )
            session.add(
                JobEvent(
                    job_id=job_id, kind="job", message="cancelled", data={"status": "cancelled"}
                )
            )

    timer = threading.Timer(0.2, api_then_runner)
    timer.start()
    try:
        messages = read_stream(client, job_id)
    finally:
        timer.join()
    assert [(m["event"], m["data"]["message"]) for m in messages] == [
        ("job", "submitted"),
        ("job", "cancel"),
        ("trial", "cancelled"),
        ("job", "cancelled"),
    ]
    assert messages[2]["data"]["candidate_id"] == trial_id
    assert messages[2]["data"]["job_status"] == "cancelled"
    # Resuming after the final event ends at once.
    assert read_stream(client, job_id, params={"since": messages[-1]["id"]}) == []


def test_stream_of_a_cancelled_job_ends_when_its_runner_never_finishes(
    app, client, database, job_id, monkeypatch
):
    """Bounded: the lease duration plus a margin after the final status, or the lease's
    end, whichever comes first."""
    monkeypatch.setattr(events, "POLL_INTERVAL_S", 0.02)
    monkeypatch.setattr(events, "FINAL_EVENT_MARGIN_S", 0.2)
    app.dependency_overrides[get_settings] = lambda: Settings(lease_s=0.3)
    hold(database, job_id, lease_s=60)
    jobs.transition(database, job_id, "cancel")
    start = time.monotonic()
    messages = read_stream(client, job_id)
    assert 0.4 < time.monotonic() - start < 10
    assert [m["data"]["message"] for m in messages] == ["submitted", "cancel"]
    # A runner whose lease has lapsed will write nothing more: no wait at all.
    monkeypatch.setattr(events, "FINAL_EVENT_MARGIN_S", 60)
    with database.transaction() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    start = time.monotonic()
    assert len(read_stream(client, job_id)) == 2
    assert time.monotonic() - start < 5


def test_unknown_job_is_404_and_bad_resume_points_422(client, job_id):
    assert client.get(f"{API}/jobs/{job_id + 1}/events").status_code == 404
    assert client.get(f"{API}/jobs/{job_id}/events", params={"since": -1}).status_code == 422
    bad = client.get(f"{API}/jobs/{job_id}/events", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 422


def metric_samples(client) -> dict[str, list]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/")
    families = text_string_to_metric_families(response.text)
    return {family.name: family.samples for family in families}


def test_metrics_report_trials_queue_and_latency(client, database, job_id):
    rows = [("completed", 10.0), ("completed", 5.5), ("failed", 1.0), ("queued", None)]
    with database.transaction() as session:
        session.add_all(
            Candidate(job_id=job_id, spec={}, spec_hash=f"h{i}", birth=i, status=s, train_s=t)
            for i, (s, t) in enumerate(rows)
        )
    assert client.get(f"{API}/jobs").status_code == 200

    samples = metric_samples(client)

    trials = {s.labels["status"]: s.value for s in samples["nas_trials"]}
    assert trials == {"queued": 1, "running": 0, "completed": 2, "failed": 1} | {
        "pruned": 0,
        "diverged": 0,
        "cancelled": 0,
    }
    assert samples["nas_trial_train_seconds"][0].value == pytest.approx(16.5)
    queue = {s.labels["queue"]: s.value for s in samples["nas_queue_depth"]}
    assert queue == {"candidates": 1, "jobs": 1}
    counts = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in samples["nas_http_request_duration_seconds"]
        if s.name.endswith("_count")
    }
    assert counts[("GET", f"{API}/jobs", "200")] == 1
    assert counts[("POST", f"{API}/jobs", "201")] == 1
    client.get(f"{API}/jobs/424242")
    client.get("/no/such/path")
    counts = {
        (s.labels["route"], s.labels["status"])
        for s in metric_samples(client)["nas_http_request_duration_seconds"]
    }
    assert (f"{API}/jobs/{{job_id}}", "404") in counts and ("<unmatched>", "404") in counts


def test_each_app_has_its_own_registry(database):
    apps = [create_app() for _ in range(2)]
    assert apps[0].state.metrics is not apps[1].state.metrics


def test_docs_are_served_without_a_cdn():
    with TestClient(create_app()) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "SwaggerUIBundle" in page.text
        assert not re.search(r"(src|href)=\"https?://", page.text)
        assets = re.findall(r"(?:src|href)=\"(/[^\"]+)\"", page.text)
        assert {a.rsplit(".", 1)[-1] for a in assets} == {"js", "css", "png"}
        for asset in assets:
            response = client.get(asset)
            assert response.status_code == 200 and len(response.content) > 1000
        assert (
            client.get("/static/swagger/swagger-ui-bundle.js")
            .headers["content-type"]
            .startswith(("text/javascript", "application/javascript"))
        )
        assert "text/css" in client.get("/static/swagger/swagger-ui.css").headers["content-type"]
        assert client.get("/openapi.json").json()["openapi"].startswith("3.")
        assert client.get("/docs/oauth2-redirect").status_code == 200


def test_dashboard_page_and_plotly_are_served_without_a_cdn():
    with TestClient(create_app()) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert not re.search(r"(src|href)=\"https?://", page.text)
        assets = re.findall(r"(?:src|href)=\"(static/[^\"]+)\"", page.text)
        assert "static/plotly.min.js" in assets and "static/dashboard/app.js" in assets
        for asset in assets:
            response = client.get(f"/{asset}")
            assert response.status_code == 200, asset
        plotly = client.get("/static/plotly.min.js", headers={"Accept-Encoding": "gzip"})
        assert "Plotly" in plotly.text[:2000] and len(plotly.content) > 1_000_000
        assert plotly.headers["content-encoding"] == "gzip"  # 4.8 MB -> about 1.4 MB
        assert "max-age" in plotly.headers["cache-control"]
        assert client.get("/static/dashboard/nothing.js").status_code == 404
