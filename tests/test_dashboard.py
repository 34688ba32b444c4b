"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, against
`nas serve` over real HTTP with jobs whose candidates are known (tests/dashboard_seed.py).

Every test fails on a console error, an uncaught exception or a failed request, and saves a
screenshot under test-artifacts/dashboard/ (or $NAS_TEST_ARTIFACTS).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from dashboard_seed import (
    CONFIRM_WINNER_DIFF,
    LADDER,
    add_finished,
    seed_job,
    seed_ladder_job,
)
from scipy import stats

from api.cli.local_server import start_server, stop_server
from nas_service.db import Database
from search_space import ArchSpec, describe

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("NAS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("NAS_TEST_ARTIFACTS", Path(__file__).parents[1] / "test-artifacts"))
TOKEN = "dashboard-secret-token"
DASH, TIMES = "\u2013", "\u00d7"  # as the page prints ranges and dims


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def serve(tmp: Path, env: dict[str, str] | None = None):
    url = f"sqlite:///{tmp / 'nas.db'}"
    database = Database(url)
    database.upgrade()
    environment = {**os.environ, "NAS_DATABASE_URL": url, "NAS_HOME": str(tmp), **(env or {})}
    process, base = start_server("--no-runner", env=environment)
    return database, process, base


@pytest.fixture(scope="module")
def site(tmp_path_factory, shakespeare):
    """A server with three jobs: `known` (60 candidates, left alone), `live` (gets a new trial
    while a page is open) and `actions` (paused and resumed)."""
    database, process, base = serve(tmp_path_factory.mktemp("dashboard"))
    jobs = {
        "known": seed_job(database, shakespeare, 60, "brainformer-proxy", seed=0),
        "live": seed_job(database, shakespeare, 12, "live-updates", seed=1),
        "actions": seed_job(database, shakespeare, 3, "pause-me", seed=2),
    }
    yield base, database, jobs
    stop_server(process)
    database.dispose()


@pytest.fixture
def page(browser, request):
    """A 1280x800 page that records every console error, page error and failed request."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    # Leaving a job's page closes its event stream, which the browser reports as aborted.
    page.allowed = ["/events?tail=true net::ERR_ABORTED"]
    page.on(
        "response",
        lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
    )
    page.problems = problems
    yield page
    folder = ARTIFACTS / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{request.node.name}.png"), full_page=True)
    context.close()
    unexpected = [p for p in problems if not any(a in p for a in page.allowed)]
    assert not unexpected, unexpected


def api(base: str, path: str, **params) -> dict:
    response = httpx.get(f"{base}/api/v1/{path}", params=params, timeout=30)
    response.raise_for_status()
    return response.json()


def open_view(page, base: str, route: str) -> None:
    page.goto(f"{base}/#/{route}")
    page.wait_for_selector("#view[data-loaded]", timeout=30_000)


def plot_traces(page, plot: str) -> list[dict]:
    return page.evaluate(
        """(id) => document.getElementById(id).data.map((t) => ({
            meta: t.meta || null, name: t.name, n: t.x.length,
            ids: t.customdata || [], symbol: t.marker && t.marker.symbol }))""",
        plot,
    )


def plot_xy(page, plot: str) -> list[dict]:
    return page.evaluate(
        """(id) => document.getElementById(id).data.map((t) => ({
            name: t.name, x: Array.from(t.x), ids: t.customdata || [] }))""",
        plot,
    )


def test_jobs_list_shows_progress_front_and_best(page, site):
    base, _, jobs = site
    known = api(base, f"jobs/{jobs['known'].id}")["progress"]
    page.goto(base + "/")
    row = page.locator(f"tr[data-job='{jobs['known'].id}']")
    row.wait_for()
    text = row.inner_text()
    assert "brainformer-proxy" in text and "running" in text
    assert f"{known['done']} / {known['total']}" in text
    assert known["front_size"] > 1 and row.locator("td").nth(6).inner_text() == str(
        known["front_size"]
    )
    best = row.locator(f"a[href='#/candidates/{known['best_candidate_id']}']")
    assert best.inner_text() == f"{known['best_perplexity']:.3f}"
    assert best.get_attribute("title") == f"best: {known['best_rule']}"
    assert "lowest validation loss among feasible candidates" in known["best_rule"]
    assert page.locator("#jobs-table tbody tr").count() == 3


def test_pause_and_resume_from_the_list(page, site):
    base, _, jobs = site
    job_id = jobs["actions"].id
    page.goto(base + "/")
    row = page.locator(f"tr[data-job='{job_id}']")
    row.locator("[data-action='pause']").click()
    row.locator("[data-action='resume']").wait_for()
    assert api(base, f"jobs/{job_id}")["status"] == "paused"
    assert "paused" in row.inner_text()
    row.locator("[data-action='resume']").click()
    row.locator("[data-action='pause']").wait_for()
    status = api(base, f"jobs/{job_id}")["status"]
    assert status != "paused" and status in row.inner_text()


def test_pareto_plot_has_every_scored_point_the_front_and_the_baseline(page, site):
    base, _, jobs = site
    known = jobs["known"]
    pareto = api(base, f"jobs/{known.id}/pareto")
    open_view(page, base, f"jobs/{known.id}")
    traces = plot_traces(page, "pareto-plot")
    points = [t for t in traces if t["meta"] == "points"]
    assert sum(t["n"] for t in points) == known.scored == len(pareto["points"]["id"])
    (front,) = [t for t in traces if t["meta"] == "front"]
    assert front["ids"] == pareto["front"] and len(pareto["front"]) > 2
    by_name = {t["name"].split(" (")[0]: t for t in points}
    assert by_name["baseline"]["ids"] == [known.baseline_id]
    assert by_name["infeasible"]["n"] == known.statuses.count("infeasible")
    assert by_name["pruned"]["n"] == known.statuses.count("pruned")
    # Status is shape as well as colour.
    assert len({t["symbol"] for t in points}) == len(points)
    # Drawn, not only handed to plotly: one SVG marker per point, plus the front's rings.
    drawn = page.locator("#pareto-plot .scatterlayer path.point").count()
    assert drawn == known.scored + len(pareto["front"])
    # The x axis is the step-time ratio (same-slot), not milliseconds: the seeded slots carry
    # different loads, so the two disagree.
    ratio = dict(zip(pareto["points"]["id"], pareto["points"]["step_time_ratio"], strict=True))
    ms = dict(zip(pareto["points"]["id"], pareto["points"]["step_time_ms"], strict=True))
    plotted = plot_xy(page, "pareto-plot")
    for trace in plotted:
        assert trace["x"] == [ratio[i] for i in trace["ids"]], trace["name"]
        assert trace["x"] != [ms[i] for i in trace["ids"]]
    assert sorted(ratio, key=ratio.get) != sorted(ms, key=ms.get)
    layout = page.evaluate(
        """() => { const l = document.getElementById('pareto-plot').layout;
                   return { title: l.xaxis.title.text, limit: l.shapes.map((s) => s.x0) }; }"""
    )
    assert layout["title"] == "step time / baseline on the same slot (1.0 = baseline)"
    assert layout["limit"] == [1.2]  # constrained: the dashed line at max_step_time_ratio
    assert ratio[known.baseline_id] == 1.0
    hv = api(base, f"jobs/{known.id}/hypervolume")
    (curve,) = plot_traces(page, "hv-plot")
    assert curve["n"] == len(hv["trials"]) > 0
    progress = [t for t in plot_traces(page, "progress-plot") if t["meta"] == "points"]
    assert sum(t["n"] for t in progress) == known.scored
    # Below the page's budget nothing is reduced, and nothing says so.
    assert pareto["reduced"] is False and pareto["total"] == known.scored
    assert page.locator("#pareto-plot").get_attribute("data-reduced") == "false"


def test_a_reduced_scatter_keeps_the_front_exact_and_says_so(page, site):
    """A job with more scored points than the page asks for: the server sends the front and
    the baseline exactly plus a binned scatter, and both plots say it is reduced."""
    base, _, jobs = site
    known = jobs["known"]
    page.add_init_script("window.NAS_MAX_POINTS = 10")
    pareto = api(base, f"jobs/{known.id}/pareto", max_points=10)
    assert pareto["reduced"] and pareto["total"] == known.scored > len(pareto["points"]["id"])
    open_view(page, base, f"jobs/{known.id}")
    traces = plot_traces(page, "pareto-plot")
    points = [t for t in traces if t["meta"] == "points"]
    assert sum(t["n"] for t in points) == len(pareto["points"]["id"])
    (front,) = [t for t in traces if t["meta"] == "front"]
    assert front["ids"] == pareto["front"] == api(base, f"jobs/{known.id}/pareto")["front"]
    by_name = {t["name"].split(" (")[0]: t for t in points}
    assert by_name["baseline"]["ids"] == [known.baseline_id]
    plot = page.locator("#pareto-plot")
    assert plot.get_attribute("data-reduced") == "true"
    assert plot.get_attribute("data-total") == str(known.scored)
    notes = page.evaluate(
        """() => ['pareto-plot', 'progress-plot'].map((id) =>
            document.getElementById(id).layout.annotations.map((a) => a.text).join(' '))"""
    )
    shown = f"{len(pareto['points']['id'])} of {known.scored}"
    assert "scatter reduced" in notes[0] and shown in notes[0] and "front" in notes[0]
    assert "best so far among them" in notes[1] and shown in notes[1]


def test_hover_shows_the_block_in_words_and_click_opens_it(page, site):
    base, _, jobs = site
    known = jobs["known"]
    open_view(page, base, f"jobs/{known.id}")
    # The baseline's marker, in page pixels, from plotly's own axes.
    x, y = page.evaluate(
        """(id) => {
            const gd = document.getElementById('pareto-plot');
            const trace = gd.data.find((t) => t.customdata && t.customdata[0] === id
                                              && t.meta === 'points');
            const { xaxis, yaxis, _size } = gd._fullLayout;
            const box = gd.getBoundingClientRect();
            return [box.left + _size.l + xaxis.l2p(trace.x[0]),
                    box.top + _size.t + yaxis.l2p(trace.y[0])];
        }""",
        known.baseline_id,
    )
    page.mouse.move(x, y)
    card = page.locator("#hovercard")
    baseline = api(base, f"candidates/{known.baseline_id}")
    page.wait_for_selector("#hovercard .step-words")
    assert page.locator("#hovercard .step-words").inner_text() == (
        f"step time 1.000{TIMES} baseline (same slot) · {baseline['step_time_ms']:.1f} ms"
    )
    spec = ArchSpec.model_validate(api(base, f"candidates/{known.baseline_id}")["spec"])
    words = describe(spec)
    page.wait_for_function(
        "(words) => document.querySelector('#hovercard .block-words').textContent === words",
        arg=words,
    )
    assert f"Candidate #{known.baseline_id}" in card.inner_text()
    page.mouse.click(x, y)
    page.wait_for_url(re.compile(rf"#/candidates/{known.baseline_id}$"))
    page.wait_for_selector("#block-diagram")


def rows(page) -> list[str]:
    return page.locator("#trials-table tbody tr").all_inner_texts()


def test_trials_table_pages_sorts_filters_and_opens_by_keyboard(page, site):
    base, _, jobs = site
    known = jobs["known"]
    open_view(page, base, f"jobs/{known.id}")
    table = page.locator("#trials-table")
    assert len(rows(page)) == 25 and rows(page)[0].startswith("#59")
    # A step-time ratio column next to the raw milliseconds.
    headers = page.locator("#trials-table thead th").all_inner_texts()
    assert headers[2:5] == ["Perplexity", "Step / base", "Step (ms)"]
    shown = api(base, f"jobs/{known.id}/candidates", sort="birth", order="desc", limit=25)
    ratios = [c["step_time_ratio"] for c in shown["items"]]
    cells = page.locator("#trials-table tbody tr td:nth-child(4)").all_inner_texts()
    assert cells == [DASH if r is None else f"{r:.3f}" for r in ratios]
    assert any(r is not None for r in ratios)
    tools = page.locator(".table-tools")
    assert f"1{DASH}25 of 60" in tools.inner_text()
    page.get_by_role("button", name="Next page").click()
    page.wait_for_function(
        "(text) => document.querySelector('.table-tools').innerText.includes(text)",
        arg=f"26{DASH}50 of 60",
    )
    assert rows(page)[0].startswith("#34")
    # Sort by perplexity (ascending on the first click), back on page 1.
    table.locator("button[data-sort='perplexity']").click()
    page.wait_for_function(
        "() => document.querySelector('th[aria-sort=ascending] [data-sort=perplexity]')"
    )
    best = api(base, f"jobs/{known.id}/candidates", sort="perplexity", limit=25)["items"]
    ids = page.locator("#trials-table tbody tr").evaluate_all("rs => rs.map(r => +r.dataset.id)")
    assert ids == [c["id"] for c in best]
    # Filter: failed ones only, each showing its reason.
    page.select_option("#status-filter", "failed")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#trials-table tbody tr')].every("
        "r => r.innerText.includes('failed'))"
    )
    failed = rows(page)
    assert len(failed) == known.statuses.count("failed")
    assert all("out of memory" in r for r in failed)
    # Keyboard: focus the first row, arrow down, Enter opens the second.
    second = page.locator("#trials-table tbody tr").nth(1).get_attribute("data-id")
    page.locator("#trials-table tbody tr").first.focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"#/candidates/{second}$"))
    page.wait_for_selector("#reason")


def test_a_finished_trial_appears_without_reload(page, site):
    base, database, jobs = site
    live = jobs["live"]
    open_view(page, base, f"jobs/{live.id}")
    page.wait_for_selector("#live[data-state='live']")
    # The refresh that follows the stream opening is done: from now on only events update.
    page.wait_for_selector("#view[data-loaded='2']")
    page.evaluate("() => { window.__sameDocument = true; }")
    before = api(base, f"jobs/{live.id}/pareto")
    # Faster and better than everything: it joins the front and becomes the best.
    new_id = add_finished(database, live.id, birth=12, perplexity=2.5, step_ms=20.0)
    page.wait_for_function(
        """([id, n]) => {
            const gd = document.getElementById('pareto-plot');
            const points = gd.data.filter((t) => t.meta === 'points');
            const front = gd.data.find((t) => t.meta === 'front');
            return points.reduce((s, t) => s + t.x.length, 0) === n
                && front.customdata.includes(id);
        }""",
        arg=[new_id, len(before["points"]["id"]) + 1],
        timeout=20_000,
    )
    page.wait_for_function(
        "() => document.querySelector('.table-tools').innerText.includes('of 13')"
    )
    assert page.evaluate("() => window.__sameDocument === true")  # no reload happened
    assert page.locator(f"#trials-table tr[data-id='{new_id}']").count() == 1
    assert page.locator(f".job-head a[href='#/candidates/{new_id}']").inner_text() == "2.500"


def moe_candidate(base: str, job_id: int) -> dict:
    """A completed candidate of the job with at least two MoE layers and a parent."""
    for item in api(base, f"jobs/{job_id}/candidates", status="completed", limit=100)["items"]:
        detail = api(base, f"candidates/{item['id']}")
        kinds = [layer["kind"] for layer in detail["spec"]["block"]["layers"]]
        if kinds.count("moe") >= 2 and detail["lineage"]:
            return detail
    raise AssertionError("the seeded job has no such candidate")


def test_candidate_page_draws_the_block_and_exports(page, site):
    base, _, jobs = site
    detail = moe_candidate(base, jobs["known"].id)
    layers = detail["spec"]["block"]["layers"]
    open_view(page, base, f"candidates/{detail['id']}")
    boxes = page.locator("#block-diagram .layer")
    assert boxes.evaluate_all("bs => bs.map(b => b.dataset.kind)") == [
        layer["kind"] for layer in layers
    ]
    for i, layer in enumerate(layers):
        box = boxes.nth(i)
        if layer["kind"] == "moe":
            assert box.locator(".expert").count() == layer["num_experts"]
            text = box.inner_text()
            assert f"capacity {layer['capacity_factor']:g}" in text
            gating = "expert choice" if layer["gating"] == "expert_choice" else layer["gating"]
            assert gating in text
        elif layer["kind"] == "attention":
            assert f"{layer['heads']} heads {TIMES} {layer['head_dim']}" in box.inner_text()
    words = describe(ArchSpec.model_validate(detail["spec"]))
    assert page.locator("#block-words").inner_text() == words
    assert page.locator("#lineage li").count() == len(detail["lineage"]) + 1
    assert detail["mutation"] in page.locator("#lineage li.current").inner_text()
    (curve,) = plot_traces(page, "curve-plot")
    assert curve["n"] == len(detail["curve"]) == 100
    assert len(plot_traces(page, "moe-plot")) == len(detail["moe"])
    metrics = page.locator(".metrics").inner_text()
    assert f"{detail['perplexity']:.3f}" in metrics
    assert f"{detail['step_time_ratio']:.3f}{TIMES}" in metrics
    assert f"{detail['reference_step_time_ms']:.1f} ms" in metrics
    assert detail["device_kind"] in metrics
    at = page.locator("#val-loss-at")
    fractions = at.locator("th[data-fraction]").evaluate_all(
        "ths => ths.map(t => t.dataset.fraction)"
    )
    assert fractions == sorted(detail["val_loss_at"], key=float)
    assert f"{detail['val_loss_at']['0.25']:.4f}" in at.inner_text()

    page.select_option("#export-target", "100M")
    with page.expect_download() as download:
        page.locator("[data-export='config']").click()
    scaled = json.loads(Path(download.value.path()).read_text())
    assert scaled["scale"]["target"] == "100M" and scaled["spec"]["block"]["layers"]
    with page.expect_download() as download:
        page.locator("[data-export='json']").click()
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported["candidate"]["id"] == detail["id"] and exported["lineage"]
    with page.expect_download() as download:
        page.locator("[data-export='flax']").click()
    assert download.value.suggested_filename == f"candidate-{detail['id']}-100M.py"
    # A bad custom target is refused with the server's message, naming the field.
    page.select_option("#export-target", "custom")
    page.fill("#export-custom", "lots")
    page.allowed.append("HTTP 422")
    page.allowed.append("422 (Unprocessable")
    page.locator("[data-export='config']").click()
    banner = page.locator("#banner")
    banner.wait_for()
    assert "target" in banner.inner_text()


def test_candidate_page_shows_inference_routing_loss_when_there_is_one(page, site):
    base, _, jobs = site
    items = api(base, f"jobs/{jobs['known'].id}/candidates", status="completed", limit=100)
    with_ec = [c for c in items["items"] if c["val_loss_inference"] is not None]
    without = [c for c in items["items"] if c["val_loss_inference"] is None]
    assert with_ec and without
    open_view(page, base, f"candidates/{with_ec[0]['id']}")
    labels = page.locator(".metrics dt").all_inner_texts()
    at = labels.index("Val loss (inference routing)")
    assert labels[at - 1] == "Validation loss"  # next to it
    value = page.locator(".metrics dd").nth(at).inner_text()
    assert value == f"{with_ec[0]['val_loss_inference']:.4f}"
    open_view(page, base, f"candidates/{without[0]['id']}")
    assert "Val loss (inference routing)" not in page.locator(".metrics").inner_text()


def test_failed_candidate_shows_reason_and_traceback(page, site):
    base, _, jobs = site
    known = jobs["known"]
    failed = known.candidate_ids[known.statuses.index("failed")]
    open_view(page, base, f"candidates/{failed}")
    reason = page.locator("#reason")
    assert "out of memory" in reason.inner_text()
    assert not page.locator("#reason pre").is_visible()
    page.locator("#reason summary").click()
    assert "RESOURCE_EXHAUSTED" in page.locator("#reason pre").inner_text()


# --- the fidelity ladder: rung switcher, fidelity panel, runs, confirmation -----------------


@pytest.fixture(scope="module")
def ladder_site(tmp_path_factory, shakespeare):
    """A server with a completed job with a ladder and a finished confirmation (`ladder`), a
    completed job without either (`plain`) and a running job whose ladder has no results above
    rung 0 yet (the third)."""
    database, process, base = serve(tmp_path_factory.mktemp("ladder"))
    ladder = seed_ladder_job(database, shakespeare, 30, "laddered", seed=4)
    plain = seed_job(database, shakespeare, 8, "plain-done", seed=5, status="completed")
    # A running job with a ladder and a confirmation to come, nothing above rung 0 yet.
    seed_job(database, shakespeare, 6, "ladder-starting", seed=6, **LADDER)
    yield base, database, ladder, plain
    stop_server(process)
    database.dispose()


def se(values: list[float]) -> float:
    return float(np.std(values, ddof=1) / np.sqrt(len(values)))


def fmt(value: float, digits: int) -> str:
    """As the page's `num`."""
    return f"{value:,.{digits}f}"


def test_rung_switcher_shows_the_top_rung_with_error_bars(page, ladder_site):
    base, _, ladder, _ = ladder_site
    job_id = ladder.job.id
    rungs = api(base, f"jobs/{job_id}/rungs")
    assert rungs["top_rung"] == 1
    (rung1,) = [r for r in rungs["rungs"] if r["rung"] == 1]
    open_view(page, base, f"jobs/{job_id}")
    # The top rung by default: its points are means over seeds, ± one standard error.
    page.wait_for_selector("#rung-tabs button[data-rung='1'][aria-pressed='true']")
    assert page.locator("#rung-tabs button").count() == 2
    assert "3 seeds" in page.locator("#rung-tabs button[data-rung='1']").inner_text()
    assert page.locator("#pareto-plot").get_attribute("data-rung") == "1"
    assert "rung 1" in page.locator("#pareto-caption").inner_text()
    traces = page.evaluate(
        """() => document.getElementById('pareto-plot').data.map((t) => ({
            meta: t.meta, name: t.name, ids: Array.from(t.customdata || []),
            x: Array.from(t.x), y: Array.from(t.y),
            ex: t.error_x ? Array.from(t.error_x.array) : null,
            ey: t.error_y ? Array.from(t.error_y.array) : null }))"""
    )
    points = [t for t in traces if t["meta"] == "points"]
    drawn = {i for t in points for i in t["ids"]}
    assert drawn == set(ladder.rung1)  # the promoted ones and the baseline
    by_id = {p["candidate_id"]: p for p in rung1["points"]}
    for trace in points:
        for i, cid in enumerate(trace["ids"]):
            values = [v for v in ladder.rung1[cid] if v is not None]
            ppl = [float(np.exp(v)) for v in values]
            assert trace["y"][i] == pytest.approx(np.mean(ppl))
            assert trace["ey"][i] == pytest.approx(se(ppl)) == by_id[cid]["perplexity"]["se"]
            assert trace["ex"][i] == by_id[cid]["step_time_ratio"]["se"]
    (infeasible,) = [t for t in points if t["name"].startswith("infeasible")]
    assert len(infeasible["ids"]) == 1  # the random one over the step-time limit
    (front,) = [t for t in traces if t["meta"] == "front"]
    assert front["ids"] == rung1["front"] and front["ids"]
    # Drawn: an error bar on every point, both ways.
    assert page.locator("#pareto-plot g.errorbar path.yerror").count() == len(ladder.rung1)
    assert page.locator("#pareto-plot g.errorbar path.xerror").count() == len(ladder.rung1)
    # The hover card says the figures are means over the rung's seeds (the one too slow
    # stands apart from the others).
    (slow,) = infeasible["ids"]
    x, y = page.evaluate(
        """(id) => {
            const gd = document.getElementById('pareto-plot');
            const trace = gd.data.find((t) => t.meta === 'points' && t.customdata.includes(id));
            const i = trace.customdata.indexOf(id);
            const { xaxis, yaxis, _size } = gd._fullLayout;
            const box = gd.getBoundingClientRect();
            return [box.left + _size.l + xaxis.l2p(trace.x[i]),
                    box.top + _size.t + yaxis.l2p(trace.y[i])];
        }""",
        slow,
    )
    page.mouse.move(x, y)
    page.wait_for_selector("#hovercard:not([hidden]) .step-words")
    card = page.locator("#hovercard").inner_text()
    ppl = by_id[slow]["perplexity"]
    assert f"Candidate #{slow} · infeasible (too slow) · promoted at random" in card
    assert f"perplexity {ppl['mean']:.3f} ± {ppl['se']:.3f} at rung 1 (3 seeds)" in card
    page.mouse.move(5, 5)
    # Rung 0: the search's scatter, as before, without error bars.
    page.locator("#rung-tabs button[data-rung='0']").click()
    page.wait_for_selector("#pareto-plot[data-rung='0']")
    assert page.locator("#rung-tabs button[data-rung='0']").get_attribute("aria-pressed") == "true"
    scatter = [t for t in plot_traces(page, "pareto-plot") if t["meta"] == "points"]
    assert sum(t["n"] for t in scatter) == ladder.job.scored
    assert page.locator("#pareto-plot g.errorbar path.yerror").count() == 0
    (front0,) = [t for t in plot_traces(page, "pareto-plot") if t["meta"] == "front"]
    assert front0["ids"] == api(base, f"jobs/{job_id}/pareto")["front"]
    # Back to rung 1.
    page.locator("#rung-tabs button[data-rung='1']").click()
    page.wait_for_selector("#pareto-plot[data-rung='1']")
    assert page.locator("#pareto-plot g.errorbar path.yerror").count() == len(ladder.rung1)


def test_fidelity_panel_shows_the_rank_correlation_and_the_noise(page, ladder_site):
    base, _, ladder, _ = ladder_site
    job_id = ladder.job.id
    means = ladder.rung1_means
    ids = sorted(ladder.rung1)
    low = [ladder.rung0[c] for c in ids]
    high = [means[c] for c in ids]
    spearman = stats.spearmanr(low, high).statistic
    kendall = stats.kendalltau(low, high).statistic
    fidelity = api(base, f"jobs/{job_id}/fidelity")
    (pair,) = fidelity["pairs"]
    assert pair["n"] == len(ids)
    assert pair["spearman"] == pytest.approx(spearman)
    open_view(page, base, f"jobs/{job_id}")
    panel = page.locator("#fidelity")
    panel.wait_for()
    stats_text = panel.locator(".fidelity-stats").inner_text()
    lo, hi = pair["spearman_interval"]
    assert f"{spearman:.3f} [{lo:.3f}, {hi:.3f}]" in panel.locator(".spearman").inner_text()
    assert panel.locator(".kendall").inner_text().startswith(f"{kendall:.3f} [")
    assert f"Candidates at both\n{len(ids)}" in stats_text
    found = round(pair["top_k_recall"] * pair["top_k"])
    assert f"{found} of the top {pair['top_k']}" in stats_text
    # The scatter: rung 0's loss against rung 1's mean, coloured by why each was promoted.
    traces = page.evaluate(
        """() => document.getElementById('fidelity-plot-0-1').data.map((t) => ({
            meta: t.meta, ids: Array.from(t.customdata), x: Array.from(t.x),
            y: Array.from(t.y), color: t.marker.color }))"""
    )
    by_origin = {t["meta"]: t for t in traces}
    expected = {o: sorted(c for c in ids if ladder.origins[c] == o) for o in by_origin}
    assert {o: sorted(t["ids"]) for o, t in by_origin.items()} == expected
    assert set(by_origin) == {"rank", "random", "baseline"}
    assert len({t["color"] for t in traces}) == 3
    for trace in traces:
        for cid, x, y in zip(trace["ids"], trace["x"], trace["y"], strict=True):
            assert x == pytest.approx(ladder.rung0[cid]) and y == pytest.approx(means[cid])
    # Noise: rung 0's floor is the baseline's seeds alone; rung 1's pools every candidate's.
    noise_rows = page.locator("#noise-table tbody tr")
    assert noise_rows.count() == 2
    rung0_floor = float(np.std(ladder.noise, ddof=1))
    row0 = page.locator("#noise-table tr[data-rung='0']")
    assert row0.locator(".noise-floor").inner_text() == fmt(rung0_floor, 4)
    assert "1 candidate, 3 runs" in row0.inner_text()
    values = [[v for v in seeds if v is not None] for seeds in ladder.rung1.values()]
    pooled = sum(((np.asarray(v) - np.mean(v)) ** 2).sum() for v in values)
    rung1_floor = float(np.sqrt(pooled / sum(len(v) - 1 for v in values)))
    row1 = page.locator("#noise-table tr[data-rung='1']")
    assert row1.locator(".noise-floor").inner_text() == fmt(rung1_floor, 4)
    spread = float(np.std(high, ddof=1))
    assert row1.locator(".spread").inner_text() == fmt(spread, 4)
    assert row1.locator(".snr").inner_text() == fmt(spread / rung1_floor, 2)


def test_candidate_page_lists_its_runs_with_seeds(page, ladder_site):
    base, _, ladder, _ = ladder_site
    winner = ladder.winner
    detail = api(base, f"candidates/{winner}")
    assert detail["rung"] == 1
    open_view(page, base, f"candidates/{winner}")
    assert page.locator("#rung-tag").inner_text() == "rung 1"
    rows = page.locator("#runs-table tbody tr")
    assert rows.count() == 1 + 3 + 3  # its own trial, 3 seeds at rung 1, 3 in confirmation
    seeds = rows.evaluate_all(
        "rs => rs.map((r) => [r.dataset.stage, +r.dataset.rung, +r.dataset.seed])"
    )
    confirm_seeds = [ladder.seed + 1_000_003 + i for i in range(3)]
    assert seeds == [
        ["rung", 0, ladder.seed],
        *[["rung", 1, ladder.seed + i] for i in range(3)],
        *[["confirm", 1, s] for s in confirm_seeds],
    ]
    headers = page.locator("#runs-table thead th").all_inner_texts()
    seed_col = headers.index("Seed")
    cells = page.locator(f"#runs-table tbody td:nth-child({seed_col + 1})").all_inner_texts()
    assert cells == [str(s) for _, _, s in seeds]
    own = page.locator("#runs-table tr[data-run='own']")
    assert "own trial" in own.inner_text()
    assert fmt(ladder.rung0[winner], 4) in own.inner_text()
    # Per rung: mean ± standard error over the seeds.
    rung1 = [v for v in ladder.rung1[winner] if v is not None]
    assert len(rung1) == 3
    summary = page.locator("#rung-summary tr[data-stage='rung'][data-rung='1']").inner_text()
    assert f"{fmt(np.mean(rung1), 4)} ± {fmt(se(rung1), 4)} (n=3)" in summary
    confirm = ladder.confirm[winner]
    summary = page.locator("#rung-summary tr[data-stage='confirm']").inner_text()
    assert f"{fmt(np.mean(confirm), 4)} ± {fmt(se(confirm), 4)} (n=3)" in summary
    # A candidate whose third seed failed: the failure listed, the mean over the other two.
    failed = next(c for c, v in ladder.rung1.items() if None in v)
    open_view(page, base, f"candidates/{failed}")
    assert page.locator("#runs-table tbody tr").count() == 1 + 3
    assert "failed" in page.locator("#runs-table tbody tr").nth(3).inner_text()
    kept = [v for v in ladder.rung1[failed] if v is not None]
    summary = page.locator("#rung-summary tr[data-rung='1']").inner_text()
    assert f"{fmt(np.mean(kept), 4)} ± {fmt(se(kept), 4)} (n=2)" in summary
    # The baseline: its noise seeds are rung-0 runs.
    open_view(page, base, f"candidates/{ladder.job.baseline_id}")
    noise = page.locator("#runs-table tbody tr[data-rung='0']")
    assert noise.count() == 3
    assert noise.evaluate_all("rs => rs.map((r) => +r.dataset.seed)") == [
        ladder.seed + i for i in range(3)
    ]
    summary = page.locator("#rung-summary tr[data-stage='rung'][data-rung='0']").inner_text()
    assert f"{fmt(np.mean(ladder.noise), 4)} ± {fmt(se(ladder.noise), 4)} (n=3)" in summary


def p_text(p: float) -> str:
    """As the page's `pValue`."""
    if p >= 0.001:
        return f"{p:.3f}"
    mantissa, exponent = f"{p:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"  # as JavaScript's toExponential: 4.2e-4


def test_confirmation_view_shows_the_verdict_and_the_winner(page, ladder_site):
    base, _, ladder, _ = ladder_site
    job_id = ladder.job.id
    report = api(base, f"jobs/{job_id}/confirmation")
    assert report["status"] == "done" and report["winner"] == ladder.winner
    open_view(page, base, f"jobs/{job_id}")
    panel = page.locator("#confirmation")
    panel.wait_for()
    assert panel.get_attribute("data-status") == "done"
    assert page.locator("#confirm-verdict").inner_text() == report["verdict"]
    assert page.locator("#confirm-button").count() == 0
    rows = page.locator("#confirm-table tbody tr")
    assert rows.count() == 3
    winner = page.locator("#confirm-table tr.winner")
    assert winner.count() == 1 and winner.get_attribute("data-id") == str(ladder.winner)
    assert "✓ yes" in winner.locator(".beats").inner_text()
    runner_up = page.locator(f"#confirm-table tr[data-id='{ladder.runner_up}']")
    assert runner_up.locator(".beats").inner_text() == "no"
    baseline = page.locator(f"#confirm-table tr[data-id='{ladder.job.baseline_id}']")
    assert "baseline" in baseline.inner_text() and "reference" in baseline.inner_text()
    # The winner's paired difference and p, as scipy has them.
    ours, theirs = ladder.confirm[ladder.winner], ladder.confirm[ladder.job.baseline_id]
    diff = np.asarray(ours) - np.asarray(theirs)
    assert np.allclose(diff, CONFIRM_WINNER_DIFF)
    p = stats.ttest_rel(ours, theirs, alternative="less").pvalue
    row = next(r for r in report["candidates"] if r["candidate_id"] == ladder.winner)
    assert row["difference"]["p_value"] == pytest.approx(p)
    assert winner.locator(".p-value").inner_text() == p_text(p)
    d = row["difference"]
    assert winner.locator(".difference").inner_text() == (
        f"{fmt(diff.mean(), 4)} [{fmt(d['low'], 4)}, {fmt(d['high'], 4)}]"
    )
    v = row["val_loss"]
    assert winner.locator(".val-loss").inner_text() == (
        f"{fmt(np.mean(ours), 4)} [{fmt(v['low'], 4)}, {fmt(v['high'], 4)}]"
    )
    assert f"#{ladder.winner}" in page.locator("#confirm-winner").inner_text()
    assert page.locator("#confirmed-winner").inner_text() == f"#{ladder.winner}"
    rc = report["rank_correlation"]
    assert f"(n = {rc['n']})" in page.locator("#confirm-correlation").inner_text()


def test_confirm_button_on_a_completed_job_without_a_ladder(page, ladder_site):
    base, _, _, plain = ladder_site
    assert api(base, f"jobs/{plain.id}/confirmation")["status"] == "not_requested"
    open_view(page, base, f"jobs/{plain.id}")
    panel = page.locator("#confirmation")
    panel.wait_for()
    assert panel.get_attribute("data-status") == "not_requested"
    # No ladder: no switcher, no fidelity panel.
    assert page.locator("#rung-tabs").is_hidden()
    assert page.locator("#fidelity").is_hidden()
    with page.expect_response(lambda r: r.url.endswith(f"/jobs/{plain.id}/confirm")) as answer:
        page.locator("#confirm-button").click()
    assert answer.value.status == 202 and answer.value.request.method == "POST"
    page.wait_for_selector("#confirmation[data-status='requested']")
    assert page.locator("#confirm-button").count() == 0
    assert api(base, f"jobs/{plain.id}")["status"] not in ("completed", "failed", "cancelled")
    assert api(base, f"jobs/{plain.id}/confirmation")["status"] == "requested"


def test_a_ladder_without_results_above_the_search_says_so(page, ladder_site):
    base = ladder_site[0]
    (starting,) = [j for j in api(base, "jobs")["items"] if j["name"] == "ladder-starting"]
    assert all(p["n"] == 0 for p in api(base, f"jobs/{starting['id']}/fidelity")["pairs"])
    open_view(page, base, f"jobs/{starting['id']}")
    page.locator("#fidelity").wait_for()
    assert (
        "No rung above the search has results yet" in page.locator("#fidelity-empty").inner_text()
    )
    assert page.locator("#rung-tabs").is_hidden()
    assert page.locator("#pareto-plot").get_attribute("data-rung") == "0"
    # Its confirmation is configured: it runs once the search ends.
    assert page.locator("#confirmation").get_attribute("data-status") == "requested"
    assert "once the search ends" in page.locator("#confirm-verdict").inner_text()
    assert page.locator("#confirm-button").count() == 0


@pytest.fixture(scope="module")
def closed_site(tmp_path_factory, shakespeare):
    """A server whose reads need a token too."""
    env = {"NAS_API_TOKENS": f"alice:{TOKEN}", "NAS_AUTH_READS": "true"}
    database, process, base = serve(tmp_path_factory.mktemp("closed"), env)
    job = seed_job(database, shakespeare, 8, "private", seed=3)
    yield base, database, job
    stop_server(process)
    database.dispose()


def test_closed_reads_ask_for_a_token_then_stream_with_it(page, closed_site):
    base, database, job = closed_site
    page.allowed.extend(["HTTP 401", "401 (Unauthorized)"])
    page.goto(f"{base}/#/jobs/{job.id}")
    banner = page.locator("#banner")
    banner.wait_for()
    assert "API token" in banner.inner_text()
    page.once("dialog", lambda dialog: dialog.accept(TOKEN))
    page.locator("#token-button").click()
    page.wait_for_selector("#view[data-loaded]")
    page.wait_for_selector("#live[data-state='live']")  # EventSource with a stream token
    page.wait_for_selector("#view[data-loaded='2']")
    new_id = add_finished(database, job.id, birth=8, perplexity=3.0, step_ms=30.0)
    page.wait_for_selector(f"#trials-table tr[data-id='{new_id}']", timeout=20_000)


def test_dashboard_assets_are_served_offline():
    """The page references only this server's files: no CDN anywhere."""
    static = Path(__file__).parents[1] / "api" / "dashboard" / "static"
    for path in static.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://(?!www\.w3\.org)", text), path.name
