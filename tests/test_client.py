"""The Python client (api.client) against a real server: `nas serve` on seeded jobs."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from dashboard_seed import seed_job

from api.cli.local_server import start_server, stop_server
from api.client import ApiError, Client, merge
from nas_service.db import Database
from search_space import PRESETS, baseline, sample
from search_space.features import FEATURES

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quick.yaml"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, shakespeare):
    """A server over two finished seeded jobs (30 and 20 candidates, no training)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('client') / 'nas.db'}"
    db = Database(url)
    db.upgrade()
    jobs = [
        seed_job(db, shakespeare, 30, "first", status="completed"),
        seed_job(db, shakespeare, 20, "second", seed=1, status="completed"),
    ]
    db.dispose()
    process, server = start_server("--no-runner", "--database-url", url, timeout=60)
    with Client(server) as api:
        yield api, jobs
    stop_server(process)


@pytest.fixture
def api(seeded):
    return seeded[0]


def test_submit_a_dict_or_a_file_and_read_the_job(api, shakespeare):
    job = api.submit({"name": "from a dict", "dataset": shakespeare})
    assert job["status"] == "queued" and job["name"] == "from a dict"
    assert api.job(job["id"])["config"] == job["config"]
    from_file = api.submit(EXAMPLE)
    assert from_file["config"]["trial"]["budget_s"] == 5.0
    assert {job["id"], from_file["id"]} <= {j["id"] for j in api.jobs()}


def test_refusals_name_the_field(api):
    with pytest.raises(ApiError) as refused:
        api.submit({"name": "bad", "dataset": "builtin:stdlib", "workers": {"concurrency": 0}})
    assert refused.value.status_code == 422
    [problem] = refused.value.problems
    assert problem.startswith("workers.concurrency: "), problem
    assert str(refused.value).startswith("422: workers.concurrency: ")
    with pytest.raises(ApiError) as missing:
        api.job(424242)
    assert missing.value.status_code == 404


def test_candidates_as_records_and_as_a_frame(seeded):
    api, (first, _) = seeded
    records = api.candidates(first.id)
    assert [c["id"] for c in records] == first.candidate_ids  # every one, in birth order
    pruned = api.candidates(first.id, status="pruned")
    assert pruned and all(c["status"] == "pruned" for c in pruned)
    by_perplexity = api.candidates(first.id, status="completed", sort="perplexity")
    values = [c["perplexity"] for c in by_perplexity]
    assert values == sorted(values)
    frame = api.candidates(first.id, frame=True)
    assert isinstance(frame, pd.DataFrame) and list(frame["id"]) == first.candidate_ids
    assert {f"feature.{name}" for name in FEATURES} <= set(frame.columns)
    assert "features" not in frame.columns
    assert frame["feature." + FEATURES[0]].tolist() == [c["features"][FEATURES[0]] for c in records]


def test_every_page_is_read(seeded, monkeypatch):
    api, (first, _) = seeded
    monkeypatch.setattr("api.client.PAGE", 7)  # 30 candidates: 5 pages, the last short
    assert [c["id"] for c in api.candidates(first.id)] == first.candidate_ids


def test_the_front_in_the_order_of_the_pareto_endpoint(seeded):
    api, (first, _) = seeded
    front_ids = api.pareto(first.id)["front"]
    front = api.front(first.id)
    assert front_ids and [c["id"] for c in front] == front_ids
    ratios = [c["step_time_ratio"] for c in front]
    assert ratios == sorted(ratios)
    frame = api.front(first.id, frame=True)
    assert list(frame["id"]) == front_ids and "feature." + FEATURES[0] in frame.columns


def test_frames_need_pandas_and_say_how_to_install_it(api, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed
    job_id = api.jobs()[0]["id"]
    with pytest.raises(ImportError, match="pip install pandas"):
        api.candidates(job_id, frame=True)
    assert isinstance(api.candidates(job_id), list)


def test_export_a_candidate(seeded):
    api, (first, _) = seeded
    body = json.loads(api.export(first.baseline_id))
    assert body["candidate"]["id"] == first.baseline_id and body["manifest"]["job"]["id"]
    scaled = json.loads(api.export(first.baseline_id, format="config", target="1B"))
    assert scaled["scale"]["target"] == "1B"
    compile(api.export(first.baseline_id, format="flax"), "module.py", "exec")
    with pytest.raises(ApiError) as refused:
        api.export(first.baseline_id, format="config", target="huge")
    assert refused.value.problems[0].startswith("target: ")


def test_wait_returns_the_job_once_it_ends(api, shakespeare):
    job = api.submit({"name": "to cancel", "dataset": shakespeare})
    with pytest.raises(TimeoutError, match="still queued"):
        api.wait(job["id"], progress=False, interval=0.05, timeout=0.2)  # no runner
    api.cancel(job["id"])
    ended = api.wait(job["id"], interval=0.05)
    assert ended["status"] == "cancelled" and ended["id"] == job["id"]


def test_pause_and_resume(api, shakespeare):
    job = api.submit({"name": "paused", "dataset": shakespeare})
    assert api.pause(job["id"])["status"] == "paused"
    assert api.resume(job["id"])["status"] in ("queued", "running")
    with pytest.raises(ApiError) as refused:
        api.resume(job["id"])
    assert refused.value.status_code == 409


def test_merge_replaces_the_budget_and_keeps_the_other_sections():
    base = {"name": "a", "trial": {"budget_s": 5.0, "batch_size": 16}, "seed": 0}
    merged = merge(base, {"trial": {"budget_steps": 50}, "seed": 3})
    assert merged == {"name": "a", "trial": {"batch_size": 16, "budget_steps": 50}, "seed": 3}
    assert base["trial"]["budget_s"] == 5.0  # not changed in place


def test_like_is_a_jobs_config_ready_to_resubmit(api):
    original = api.submit(EXAMPLE)
    config = api.like(original["id"])
    assert config["name"] == "quick (copy)"
    clone = api.submit(config)
    assert {**clone["config"], "name": "quick"} == original["config"]
    longer = api.submit(api.like(original["id"], {"name": "longer", "trial": {"budget_steps": 9}}))
    trial = longer["config"]["trial"]
    assert longer["name"] == "longer" and trial["budget_steps"] == 9 and trial["budget_s"] is None
    assert trial["batch_size"] == original["config"]["trial"]["batch_size"]


# --- the endpoints of issue 16 --------------------------------------------------------------


def test_notes_on_a_job_and_a_candidate(seeded):
    api, (first, _) = seeded
    job = api.note(first.id, "# Why\n*ratio* over order")
    assert job["note"] == "# Why\n*ratio* over order" and "<em>ratio</em>" in job["note_html"]
    assert api.job(first.id)["note"] == job["note"]
    candidate = api.candidate_note(first.baseline_id, "the reference")
    assert candidate["note"] == "the reference" and candidate["id"] == first.baseline_id
    assert api.note(first.id, "")["note"] is None
    with pytest.raises(ApiError) as refused:
        api.note(first.id, "x" * 20_001)
    assert refused.value.problems[0].startswith("note: ")


def test_enqueue_a_block_by_hand(api, shakespeare):
    import numpy as np

    job = api.submit(
        {"name": "by hand", "dataset": shakespeare, "search_space": {"preset": "proxy-cpu"}}
    )
    spec = sample(PRESETS["proxy-cpu"], np.random.default_rng(5))
    queued = api.enqueue(job["id"], spec, note="try this one")
    assert queued["status"] == "queued" and queued["job_id"] == job["id"]
    assert queued["note"] == "try this one"
    bad = spec.model_dump(mode="json")
    bad["block"]["d_model"] = -1
    with pytest.raises(ApiError) as refused:
        api.enqueue(job["id"], bad)
    assert refused.value.status_code == 422
    assert refused.value.problems[0].startswith("spec.block.d_model"), refused.value.problems
    api.cancel(job["id"])
    with pytest.raises(ApiError) as ended:
        api.enqueue(job["id"], baseline("glam"))
    assert ended.value.status_code == 409


def test_compare_as_records_and_a_frame(seeded):
    api, (first, second) = seeded
    jobs = api.compare([first.id, second.id])
    assert [job["id"] for job in jobs] == [first.id, second.id]
    for job in jobs:
        assert job["baseline_candidate_id"] is not None and job["front"]
        for point in job["front"]:
            expected = point["perplexity"] / job["baseline_perplexity"]
            assert point["perplexity_ratio"] == pytest.approx(expected)
    frame = api.compare([first.id, second.id], frame=True)
    assert len(frame) == sum(len(job["front"]) for job in jobs)
    assert set(frame["job_id"]) == {first.id, second.id}
    assert {"job", "device_kind", "perplexity_ratio", "step_time_ratio"} <= set(frame.columns)
    with pytest.raises(ApiError) as refused:
        api.compare([first.id, first.id])
    assert refused.value.status_code == 422 and refused.value.problems[0].startswith("jobs")


def test_importance_of_a_seeded_job_and_of_one_with_too_few(seeded, shakespeare):
    api, (first, _) = seeded
    found = api.importance(first.id)
    assert found["job_id"] == first.id and found["candidates"] >= found["min_candidates"]
    names = [feature["name"] for feature in found["features"]]
    assert names and set(names) <= set(FEATURES) and len(names) == len(set(names))
    empty = api.submit({"name": "nothing yet", "dataset": shakespeare})
    few = api.importance(empty["id"])
    assert few["features"] == [] and str(few["min_candidates"]) in few["message"]
