"""The ladder's endpoints over HTTP on both databases: each rung's front with standard
errors, fidelity between rungs, the confirmation report and its winner, a candidate's runs,
confirming on request, and the winner's export carrying the report."""

import numpy as np
import pytest
from dashboard_seed import seed_job, seed_ladder_job
from scipy import stats


@pytest.fixture
def ladder(database, shakespeare):
    return seed_ladder_job(database, shakespeare, 30, "laddered", seed=4)


def test_rungs_have_their_own_fronts_and_the_job_takes_the_top_one(client, ladder):
    body = client.get(f"/api/v1/jobs/{ladder.job.id}/rungs").json()
    assert body["top_rung"] == 1
    rung0, rung1 = body["rungs"]
    assert rung0["candidates"] == 30 and rung1["seeds"] == 3
    points = {p["candidate_id"]: p for p in rung1["points"]}
    assert set(points) == set(ladder.rung1)
    for cid, values in ladder.rung1.items():
        done = [v for v in values if v is not None]
        summary = points[cid]["val_loss"]
        assert summary["mean"] == pytest.approx(np.mean(done)) and summary["n"] == len(done)
        assert summary["se"] == pytest.approx(stats.sem(done))
        assert points[cid]["origin"] == ladder.origins[cid]
    assert set(rung1["front"]) <= set(points)
    progress = client.get(f"/api/v1/jobs/{ladder.job.id}").json()["progress"]
    assert progress["rung"] == 1 and "at rung 1" in progress["best_rule"]
    assert progress["best_candidate_id"] in points and progress["front"] == rung1["front"]


def test_fidelity_correlates_the_rungs_and_reports_the_noise(client, ladder):
    body = client.get(f"/api/v1/jobs/{ladder.job.id}/fidelity").json()
    (pair,) = body["pairs"]
    shared = sorted(ladder.rung1)
    low = [ladder.rung0[c] for c in shared]
    high = [ladder.rung1_means[c] for c in shared]
    assert pair["n"] == len(shared)
    assert pair["spearman"] == pytest.approx(stats.spearmanr(low, high).statistic)
    assert pair["kendall"] == pytest.approx(stats.kendalltau(low, high).statistic)
    lo, hi = pair["kendall_interval"]
    assert lo <= pair["kendall"] <= hi
    noise = {n["rung"]: n for n in body["noise"]}
    assert noise[0]["noise_candidates"] == 1 and noise[0]["noise_runs"] == 3  # the baseline
    assert noise[1]["noise_candidates"] == len(ladder.rung1)
    assert noise[1]["spread"] > noise[1]["noise_floor"] > 0


def test_the_confirmation_declares_the_winner_against_the_baseline(client, ladder):
    body = client.get(f"/api/v1/jobs/{ladder.job.id}/confirmation").json()
    assert body["status"] == "done" and body["winner"] == ladder.winner
    rows = {row["candidate_id"]: row for row in body["candidates"]}
    base = ladder.confirm[ladder.job.baseline_id]
    difference = rows[ladder.winner]["difference"]
    expected = np.subtract(ladder.confirm[ladder.winner], base)
    assert difference["mean"] == pytest.approx(expected.mean()) and difference["high"] < 0
    assert rows[ladder.runner_up]["beats_baseline"] is False
    assert rows[ladder.job.baseline_id]["difference"] is None
    assert f"candidate {ladder.winner} beats the baseline" in body["verdict"]
    exported = client.get(f"/api/v1/candidates/{ladder.winner}/export").json()
    assert exported["manifest"]["confirmation"]["winner"] == ladder.winner


def test_a_candidate_lists_its_runs_with_their_seeds(client, ladder):
    cid = ladder.winner
    body = client.get(f"/api/v1/candidates/{cid}").json()
    assert body["rung"] == 1
    own, *others = body["runs"]
    assert own["id"] is None and own["origin"] == "search" and own["seed"] == ladder.seed
    rung1 = [r for r in others if r["stage"] == "rung"]
    assert [r["seed"] for r in rung1] == [ladder.seed + i for i in range(3)]
    summaries = {(r["stage"], r["rung"]): r for r in body["rungs"]}
    assert summaries[("rung", 1)]["val_loss"]["mean"] == pytest.approx(ladder.rung1_means[cid])
    assert summaries[("confirm", 1)]["runs"] == 3


def test_confirming_on_request_checks_the_job_and_the_body(client, database, ladder, shakespeare):
    url = f"/api/v1/jobs/{ladder.job.id}/confirm"
    assert client.post(url, json={}).status_code == 409  # it has one already
    plain = seed_job(
        database, shakespeare, 6, "plain", status="completed", evolution={"initial": ["glam"]}
    )
    url = f"/api/v1/jobs/{plain.id}/confirm"
    bad = client.post(url, json={"seeds": 1})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "seeds"
    foreign = client.post(url, json={"baselines": ["switch"]})  # not a candidate of the job
    assert foreign.status_code == 422
    assert foreign.json()["detail"][0]["loc"] == ["body", "baselines", "0"]
    assert client.get(f"/api/v1/jobs/{plain.id}").json()["status"] == "completed"  # unchanged
    accepted = client.post(url, json={"top_k": 2})
    assert accepted.status_code == 202 and accepted.json()["status"] == "queued"
    assert accepted.json()["config"]["confirm"]["top_k"] == 2
    confirmation = client.get(f"/api/v1/jobs/{plain.id}/confirmation").json()
    assert confirmation["status"] == "requested" and confirmation["winner"] is None
    assert client.post("/api/v1/jobs/999999/confirm", json={}).status_code == 404
    running = seed_job(database, shakespeare, 4, "live")
    assert client.post(f"/api/v1/jobs/{running.id}/confirm", json={}).status_code == 409
