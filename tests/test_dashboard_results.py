"""Working with results in the dashboard, in a real browser (Debian's headless Chromium via
Playwright, against `nas serve` over real HTTP; tests/test_dashboard.py's fixtures): what
matters (importance bars, parallel coordinates), the compare view, clone, blocks added by hand
and notes.

Each test fails on a console error, an uncaught exception or a failed request (the `page`
fixture), and saves a screenshot under test-artifacts/dashboard/.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import test_dashboard
from dashboard_seed import seed_job
from playwright.sync_api import expect
from sqlalchemy import select, update
from test_dashboard import api, open_view, serve

from api.cli.local_server import stop_server
from nas_service.models import Candidate
from search_space import ArchSpec, mutate, spec_hash
from search_space.features import block_features
from search_space.space import PROXY_CPU

pytestmark = pytest.mark.slow
# Chromium and a page that fails on any console error or failed request, as there.
browser = test_dashboard.browser
page = test_dashboard.page

OTHER_DEVICE = "gpu:NVIDIA H100 80GB HBM3"
REJECTED = ["HTTP 422", "422 (Unprocessable"]  # a field error the test asks for


def drive_by_features(database, job_id: int) -> None:
    """Make the attention share drive perplexity and the MoE share step time (little noise),
    so that the importance shares are not all 0."""
    rng = np.random.default_rng(5)
    with database.transaction() as session:
        for row in session.scalars(select(Candidate).where(Candidate.job_id == job_id)):
            if row.perplexity is None:
                continue
            features = block_features(ArchSpec.model_validate(row.spec))
            row.perplexity = 6 + 8 * features["attention_fraction"] + rng.normal(0, 0.05)
            row.val_loss = math.log(row.perplexity)
            ratio = 0.6 + 0.8 * features["moe_fraction"] + rng.normal(0, 0.01)
            row.step_time_ratio = 1.0 if row.is_baseline else ratio


@pytest.fixture(scope="module")
def site(tmp_path_factory, shakespeare):
    """Jobs to read: `matters` (80 candidates, metrics driven by two features), `few` (too few
    completed for importance), `steps` (a step budget, on another device) and `ended`
    (completed)."""
    database, process, base = serve(tmp_path_factory.mktemp("dashboard-results"))
    jobs = {
        "matters": seed_job(database, shakespeare, 80, "what-matters", seed=0),
        "few": seed_job(database, shakespeare, 5, "too-few", seed=1),
        "steps": seed_job(
            database, shakespeare, 30, "by-steps", seed=2, trial={"budget_steps": 400}
        ),
        "ended": seed_job(database, shakespeare, 12, "ended", seed=3, status="completed"),
    }
    drive_by_features(database, jobs["matters"].id)
    with database.transaction() as session:
        session.execute(
            update(Candidate)
            .where(Candidate.job_id == jobs["steps"].id)
            .values(device_kind=OTHER_DEVICE)
        )
    yield base, database, jobs
    stop_server(process)
    database.dispose()


def completed(base: str, job_id: int) -> list[dict]:
    return api(base, f"jobs/{job_id}/candidates", status="completed", limit=1000)["items"]


def open_what_matters(page, base: str, job_id: int) -> None:
    open_view(page, base, f"jobs/{job_id}")
    page.locator("#what-matters").scroll_into_view_if_needed()  # it loads once in view
    page.wait_for_selector("#what-matters[data-loaded]", timeout=60_000)


def test_importance_bars_follow_the_importance_order(page, site):
    base, _, jobs = site
    job_id = jobs["matters"].id
    report = api(base, f"jobs/{job_id}/importance")
    assert report["features"], report
    open_what_matters(page, base, job_id)
    rows = page.locator("#importance-table tbody tr")
    names = [rows.nth(i).get_attribute("data-feature") for i in range(rows.count())]
    assert names == [f["name"] for f in report["features"]]
    # Both shares side by side, as the API gives them, each bar as long as its share.
    top = max(max(f["perplexity"], f["step_time"]) for f in report["features"])
    assert top > 0, report["r2"]
    for i, feature in enumerate(report["features"][:3]):
        for kind in ("perplexity", "step_time"):
            cell = rows.nth(i).locator(f"td.share.{kind}")
            assert cell.locator(".share-value").inner_text() == f"{100 * feature[kind]:.1f}%"
            width = cell.locator(".share-bar span").evaluate("(s) => parseFloat(s.style.width)")
            assert width == pytest.approx(100 * max(0, feature[kind]) / top, abs=0.06)
    summary = page.locator("#importance-summary").inner_text()
    assert f"Over {report['candidates']} completed candidates" in summary


def test_parallel_coordinates_highlight_the_front(page, site):
    base, _, jobs = site
    job_id = jobs["matters"].id
    report = api(base, f"jobs/{job_id}/importance")
    front = set(api(base, f"jobs/{job_id}/pareto")["front"])
    candidates = completed(base, job_id)
    open_what_matters(page, base, job_id)
    trace = page.evaluate(
        """() => { const t = document.getElementById('parcoords-plot').data[0];
            return { type: t.type, color: Array.from(t.line.color),
                     dims: t.dimensions.map((d) => ({ label: d.label,
                                                      values: Array.from(d.values) })) }; }"""
    )
    assert trace["type"] == "parcoords"
    top = [f["name"] for f in report["features"][:5]]
    labels = [d["label"] for d in trace["dims"]]
    assert labels == [*top, "perplexity", "step time / baseline"]
    assert len(trace["color"]) == len(candidates)
    # The front's lines (colour 1) are exactly the front's completed candidates.
    on_front = [c for c in candidates if c["id"] in front]
    assert 2 < len(on_front) < len(candidates)
    perplexity = trace["dims"][-2]["values"]
    highlighted = sorted(p for p, c in zip(perplexity, trace["color"], strict=True) if c == 1)
    assert highlighted == pytest.approx(sorted(c["perplexity"] for c in on_front))
    others = sorted(p for p, c in zip(perplexity, trace["color"], strict=True) if c == 0)
    assert others == pytest.approx(
        sorted(c["perplexity"] for c in candidates if c["id"] not in front)
    )
    # A feature axis carries each candidate's feature.
    first = trace["dims"][0]["values"]
    assert sorted(first) == pytest.approx(sorted(c["features"][top[0]] for c in candidates))
    # Drawn: an axis per dimension and the WebGL line layers.
    assert page.locator("#parcoords-plot g.y-axis").count() == len(labels)
    assert page.locator("#parcoords-plot canvas").count() >= 1
    caption = page.locator("#parcoords-caption").inner_text()
    assert f"the Pareto front ({len(on_front)})" in caption


def test_too_few_candidates_say_how_many_are_needed(page, site):
    base, _, jobs = site
    job_id = jobs["few"].id
    report = api(base, f"jobs/{job_id}/importance")
    assert report["features"] == [] and report["message"]
    open_what_matters(page, base, job_id)
    assert page.locator("#importance-message").inner_text() == report["message"]
    assert page.locator("#importance-table").count() == 0
    assert not page.locator("#parcoords-plot").is_visible()


def test_compare_view_overlays_the_fronts_with_device_and_budget(page, site):
    base, _, jobs = site
    chosen = [jobs["matters"].id, jobs["steps"].id, jobs["ended"].id]
    page.goto(base + "/")
    button = page.locator("#compare-button")
    page.locator(f"tr[data-job='{chosen[0]}'] .select-job").check()
    assert button.is_disabled()  # one job: nothing to compare
    for job_id in chosen[1:]:
        page.locator(f"tr[data-job='{job_id}'] .select-job").check()
    assert button.inner_text() == "Compare 3 jobs"
    button.click()
    page.wait_for_selector("#view[data-loaded]", timeout=30_000)
    assert page.evaluate("location.hash") == "#/compare?jobs=" + ",".join(map(str, chosen))
    report = api(base, "compare", jobs=",".join(map(str, chosen)))
    traces = page.evaluate(
        """() => document.getElementById('compare-plot').data.map((t) => ({
            meta: t.meta, name: t.name, x: Array.from(t.x), y: Array.from(t.y) }))"""
    )
    fronts = {t["meta"]: t for t in traces if t["meta"] != "reference"}
    assert sorted(fronts) == sorted(chosen)
    for job in report["jobs"]:
        trace = fronts[job["id"]]
        assert job["front"], job
        front = sorted(job["front"], key=lambda p: p["step_time_ratio"])
        assert trace["x"] == pytest.approx([p["step_time_ratio"] for p in front])
        assert trace["y"] == pytest.approx([p["perplexity_ratio"] for p in front])
        assert job["name"] in trace["name"] and job["device_kind"] in trace["name"]
        budget = job["budget"]
        words = f"{budget['steps']:g} steps" if "steps" in budget else f"{budget['seconds']:g}s"
        assert words in trace["name"], (words, trace["name"])
    assert report["jobs"][1]["device_kind"] == OTHER_DEVICE
    assert report["jobs"][1]["budget"] == {"steps": 400}
    (reference,) = [t for t in traces if t["meta"] == "reference"]
    assert reference["x"] == [1] and reference["y"] == [1]
    # The legend as drawn names each job's device and budget.
    legend = page.eval_on_selector_all(
        "#compare-plot .legendtext", "(texts) => texts.map((t) => t.textContent)"
    )
    assert any(OTHER_DEVICE in text and "400 steps" in text for text in legend)
    assert page.locator("#compare-plot .scatterlayer .trace").count() == len(chosen) + 1
    assert page.locator("#compare-table tbody tr[data-job]").count() == len(chosen)


def test_clone_submits_a_new_job_with_the_same_config(page, site):
    base, _, jobs = site
    source = api(base, f"jobs/{jobs['matters'].id}")
    open_view(page, base, f"jobs/{source['id']}")
    page.locator("[data-action='clone']").click()
    page.wait_for_selector("#clone-form")
    assert page.locator("#clone-name").input_value() == "what-matters (copy)"
    text = page.locator("#clone-config")
    shown = json.loads(text.input_value())
    assert shown == {k: v for k, v in source["config"].items() if k != "name"}
    # Ticking warm start writes it into the text that is submitted; unticking takes it out.
    page.locator("#clone-warm").check()
    warm = json.loads(text.input_value())["warm_start"]
    assert warm == {"jobs": [source["id"]], "top": 5}
    page.locator("#clone-warm").uncheck()
    assert json.loads(text.input_value()) == shown
    # A bad value: the server's error names the field, nothing is submitted.
    page.allowed.extend(REJECTED)
    text.fill(json.dumps({**shown, "seed": -1}))
    page.locator("[data-action='submit-job']").click()
    expect(page.locator("#clone-error")).to_have_text(re.compile(r"^seed: "))
    total = api(base, "jobs")["total"]
    text.fill(json.dumps(shown))
    page.locator("[data-action='submit-job']").click()
    page.wait_for_url(re.compile(r"#/jobs/\d+$"))
    page.wait_for_selector("#view[data-loaded]")
    new_id = int(page.evaluate("location.hash").rsplit("/", 1)[1])
    assert new_id != source["id"]
    created = api(base, f"jobs/{new_id}")
    assert created["name"] == "what-matters (copy)" and api(base, "jobs")["total"] == total + 1
    assert {k: v for k, v in created["config"].items() if k != "name"} == shown
    assert "what-matters (copy)" in page.locator("h1").inner_text()


def new_spec(base: str, job_id: int, start: dict) -> ArchSpec:
    """A block in the job's space (a mutant of `start`) that is not yet one of its candidates."""
    taken = {c["spec_hash"] for c in api(base, f"jobs/{job_id}/candidates", limit=1000)["items"]}
    rng = np.random.default_rng(7)
    spec = ArchSpec.model_validate(start)
    while spec_hash(spec) in taken:
        spec, _ = mutate(spec, PROXY_CPU, rng)
    return spec


def test_enqueue_form_names_a_bad_field_then_queues_a_good_block(page, site):
    base, _, jobs = site
    job_id = jobs["matters"].id
    best = api(base, f"jobs/{job_id}")["progress"]["best_candidate_id"]
    best_spec = api(base, f"candidates/{best}")["spec"]
    open_view(page, base, f"jobs/{job_id}")
    page.locator("#enqueue summary").click()
    page.wait_for_selector("#enqueue[data-ready]")
    spec = page.locator("#enqueue-spec")
    assert json.loads(spec.input_value()) == best_spec  # starts from the best block
    assert "No blocks added by hand yet" in page.locator("#enqueued").inner_text()
    submit = page.locator("[data-action='enqueue']")
    error = page.locator("#enqueue-error")
    # Not JSON: said before anything is sent.
    spec.fill("{ not json")
    submit.click()
    expect(error).to_have_text(re.compile(r"^spec: not valid JSON"))
    # Outside the space: the server's 422 names the field.
    page.allowed.extend(REJECTED)
    spec.fill(json.dumps({**best_spec, "repeats": 0}))
    submit.click()
    expect(error).to_have_text(re.compile(r"^spec\.repeats: "))
    # Already a candidate of the job: 409, said as the server says it.
    page.allowed.extend(["HTTP 409", "409 (Conflict)"])
    spec.fill(json.dumps(best_spec))
    submit.click()
    expect(error).not_to_have_text(re.compile(r"^spec\.repeats"))
    expect(error).to_be_visible()
    # A new block: queued, trains next, listed.
    good = new_spec(base, job_id, best_spec)
    spec.fill(good.model_dump_json())
    page.locator("#enqueue-note").fill("all attention, for contrast")
    submit.click()
    done = page.locator("#enqueue-done")
    done.wait_for()
    assert "trains this block next" in done.inner_text() and not error.is_visible()
    (request,) = api(base, f"jobs/{job_id}/enqueued")["items"]
    assert request["spec_hash"] == spec_hash(good) and request["status"] == "queued"
    assert request["note"] == "all attention, for contrast"
    row = page.locator(f"#enqueued-table tr[data-request='{request['id']}']")
    assert "queued" in row.inner_text() and spec_hash(good)[:10] in row.inner_text()


def test_enqueue_form_is_hidden_once_the_job_ended(page, site):
    base, _, jobs = site
    open_view(page, base, f"jobs/{jobs['ended'].id}")
    assert page.locator("#enqueue").count() == 1
    assert not page.locator("#enqueue").is_visible()


NOTE = (
    "# Findings\n\nThe **ratio** of layer types matters.\n\n"
    "<script>window.__pwned = 1</script>\n\n<img src=x onerror='window.__pwned = 2'>\n"
)


def edit_note(page, panel: str, text: str) -> None:
    page.locator(f"#{panel} [data-action='edit-note']").click()
    page.locator(f"#{panel}-text").fill(text)
    page.locator(f"#{panel} [data-action='save-note']").click()
    page.locator(f"#{panel}-text").wait_for(state="hidden")


def assert_rendered_safely(page, panel: str, heading: str, title: str) -> None:
    body = page.locator(f"#{panel}-body")
    assert body.locator(heading).inner_text() == title
    assert body.locator("script, img").count() == 0  # raw HTML is text, not elements
    assert "<script>window.__pwned = 1</script>" in body.inner_text()
    assert page.evaluate("window.__pwned") is None


def test_job_note_edits_saves_and_renders_markdown_safely(page, site):
    base, _, jobs = site
    job_id = jobs["ended"].id
    open_view(page, base, f"jobs/{job_id}")
    assert "No note yet" in page.locator("#job-note-body").inner_text()
    # Cancel leaves it as it was.
    page.locator("#job-note [data-action='edit-note']").click()
    page.locator("#job-note-text").fill("# not saved")
    page.locator("#job-note [data-action='cancel-note']").click()
    assert "No note yet" in page.locator("#job-note-body").inner_text()
    edit_note(page, "job-note", NOTE)
    assert_rendered_safely(page, "job-note", "h1", "Findings")
    assert page.locator("#job-note-body strong").inner_text() == "ratio"
    assert api(base, f"jobs/{job_id}")["note"] == NOTE
    page.reload()  # stored, not only shown
    page.wait_for_selector("#view[data-loaded]")
    assert_rendered_safely(page, "job-note", "h1", "Findings")
    page.locator("#job-note [data-action='edit-note']").click()
    assert page.locator("#job-note-text").input_value() == NOTE


def test_candidate_note_edits_saves_and_renders_markdown_safely(page, site):
    base, _, jobs = site
    candidate_id = jobs["ended"].candidate_ids[3]
    open_view(page, base, f"candidates/{candidate_id}")
    edit_note(page, "candidate-note", NOTE.replace("# Findings", "## Why it is fast"))
    assert_rendered_safely(page, "candidate-note", "h2", "Why it is fast")
    assert api(base, f"candidates/{candidate_id}")["note"].startswith("## Why it is fast")
    # An empty note clears it.
    edit_note(page, "candidate-note", "")
    assert "No note yet" in page.locator("#candidate-note-body").inner_text()
    assert api(base, f"candidates/{candidate_id}")["note"] in (None, "")
