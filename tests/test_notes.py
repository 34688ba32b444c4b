"""Markdown notes on jobs and candidates: set, cleared, rendered without raw HTML, bounded."""

from fake_trainer import fake_job

from nas_service.models import Candidate

API = "/api/v1"


def test_a_job_note_is_set_rendered_and_cleared(client):
    job_id = client.post(f"{API}/jobs", json=fake_job().model_dump(mode="json")).json()["id"]
    assert client.get(f"{API}/jobs/{job_id}").json()["note"] is None
    text = "# Idea\n\nMoE **late** beats early.\n\n<script>alert(1)</script>"
    response = client.put(f"{API}/jobs/{job_id}/note", json={"note": text})
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["note"] == text
    assert "<h1>Idea</h1>" in job["note_html"] and "<strong>late</strong>" in job["note_html"]
    assert "<script>" not in job["note_html"] and "&lt;script&gt;" in job["note_html"]
    assert client.get(f"{API}/jobs").json()["items"][0]["note"] == text
    too_long = client.put(f"{API}/jobs/{job_id}/note", json={"note": "x" * 20_001})
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["body", "note"]
    assert client.get(f"{API}/jobs/{job_id}").json()["note"] == text  # unchanged
    cleared = client.put(f"{API}/jobs/{job_id}/note", json={"note": ""}).json()
    assert cleared["note"] is None and cleared["note_html"] is None
    assert client.put(f"{API}/jobs/999/note", json={"note": "x"}).status_code == 404


def test_a_candidate_note_is_set_and_listed(client, database):
    job_id = client.post(f"{API}/jobs", json=fake_job().model_dump(mode="json")).json()["id"]
    with database.transaction() as session:
        row = Candidate(
            job_id=job_id, spec={}, spec_hash="a" * 64, birth=0, mutation="initial", status="queued"
        )
        session.add(row)
        session.flush()
        candidate_id = row.id
    response = client.put(
        f"{API}/candidates/{candidate_id}/note", json={"note": "[x](javascript:alert(1)) *ok*"}
    )
    assert response.status_code == 200, response.text
    detail = response.json()
    assert "<em>ok</em>" in detail["note_html"] and "<a" not in detail["note_html"]  # no link
    items = client.get(f"{API}/jobs/{job_id}/candidates").json()["items"]
    assert items[0]["note"] == detail["note"]
    assert client.put(f"{API}/candidates/999/note", json={"note": "x"}).status_code == 404
