// Jobs side by side (GET /compare?jobs=…): each job's Pareto front normalised by its own
// baseline (perplexity ratio, step-time ratio), so jobs on different devices or budgets read
// together; the point (1, 1) is every job's baseline. Polled while any of them runs.
import { get } from "./api.js";
import {
  add,
  axis,
  BASELINE,
  badge,
  baseLayout,
  budgetWords,
  count,
  crumbs,
  el,
  fill,
  FINAL,
  num,
  plotlyConfig,
  showBanner,
} from "./format.js";

const POLL_MS = 5000;

// A job as the legend and the table name it: name, id, device kind and budget.
const label = (job) =>
  `${job.name} #${job.id} · ${job.device_kind || "no device yet"} · ` +
  `${budgetWords(job.budget)} per trial`;

function frontTrace(job) {
  const front = [...job.front].sort((a, b) => a.step_time_ratio - b.step_time_ratio);
  return {
    type: "scatter",
    mode: "lines+markers",
    name: label(job),
    meta: job.id,
    x: front.map((p) => p.step_time_ratio),
    y: front.map((p) => p.perplexity_ratio),
    customdata: front.map((p) => [p.candidate_id, p.perplexity, p.step_time_ms]),
    line: { shape: "hv", width: 2 },
    marker: { size: 9 },
    hovertemplate:
      `${job.name} #${job.id}<br>candidate #%{customdata[0]}<br>` +
      "perplexity %{y:.3f}× baseline (%{customdata[1]:.3f})<br>" +
      "step time %{x:.3f}× baseline (%{customdata[2]:.1f} ms)<extra></extra>",
  };
}

function referenceTrace() {
  return {
    type: "scatter",
    mode: "markers",
    name: "each job's baseline (1, 1)",
    meta: "reference",
    x: [1],
    y: [1],
    marker: { symbol: BASELINE.symbol, color: BASELINE.color, size: 15 },
    hovertemplate: "each job's own baseline: (1, 1)<extra></extra>",
  };
}

// Dotted lines through (1, 1): the baseline's perplexity and step time.
const RATIO_LINES = [
  { type: "line", xref: "x", yref: "paper", x0: 1, x1: 1, y0: 0, y1: 1 },
  { type: "line", xref: "paper", yref: "y", x0: 0, x1: 1, y0: 1, y1: 1 },
].map((shape) => ({ ...shape, line: { dash: "dot", color: "#adb5bd", width: 1 } }));

function jobsTable(jobs) {
  const columns = [
    "Job",
    "Status",
    "Device",
    "Budget",
    "Baseline",
    "Baseline perplexity",
    "Baseline step",
    "Completed",
    "Front",
  ];
  return el(
    "table",
    { class: "data compact", id: "compare-table" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        columns.map((name, i) => el("th", { scope: "col", class: i >= 5 ? "num" : "" }, name)),
      ),
    ),
    el(
      "tbody",
      {},
      jobs.map((job) => [
        el(
          "tr",
          { "data-job": job.id },
          el(
            "td",
            {},
            el("a", { href: `#/jobs/${job.id}`, class: "strong" }, job.name),
            el("span", { class: "muted" }, ` #${job.id}`),
          ),
          el("td", {}, badge(job.status)),
          el("td", {}, job.device_kind || "–"),
          el("td", {}, budgetWords(job.budget)),
          el(
            "td",
            {},
            job.baseline_candidate_id
              ? el("a", { href: `#/candidates/${job.baseline_candidate_id}` }, job.baseline)
              : job.baseline,
          ),
          el("td", { class: "num" }, num(job.baseline_perplexity, 3)),
          el(
            "td",
            { class: "num" },
            job.baseline_step_time_ms === null ? "–" : `${num(job.baseline_step_time_ms, 1)} ms`,
          ),
          el("td", { class: "num" }, count(job.completed)),
          el("td", { class: "num" }, String(job.front.length)),
        ),
        job.message
          ? el(
              "tr",
              { class: "message-row", "data-job-message": job.id },
              el("td", { colspan: columns.length, class: "muted small" }, job.message),
            )
          : null,
      ]),
    ),
  );
}

// `ids`: the job ids as the route gives them ("1,2,3"); the server checks them.
export function compareView(root, ids) {
  let destroyed = false;
  let timer = null;
  const plot = el("div", { id: "compare-plot", class: "plot tall" });
  const table = el("div", { class: "scroll" });
  add(
    root,
    crumbs("compare"),
    el("div", { class: "title-row" }, el("h1", {}, "Compare jobs")),
    el(
      "figure",
      { class: "card" },
      el(
        "figcaption",
        {},
        "Pareto fronts, each relative to its own job's baseline (lower left is better)",
      ),
      plot,
    ),
    el("section", { class: "card table-card compare-jobs" }, table),
  );

  async function load() {
    timer = null;
    let report;
    try {
      report = await get("compare", { jobs: ids });
    } catch (error) {
      if (!destroyed) showBanner(`Could not compare jobs ${ids}: ${error.message}`);
      return;
    }
    if (destroyed) return;
    const layout = baseLayout({
      xaxis: axis("step time / the job's baseline (same slot)"),
      yaxis: axis("perplexity / the job's baseline"),
      legend: { orientation: "h", y: -0.16, x: 0 },
      margin: { l: 60, r: 16, t: 12, b: 110 },
      shapes: RATIO_LINES,
      uirevision: "keep",
    });
    Plotly.react(
      plot,
      [...report.jobs.map(frontTrace), referenceTrace()],
      layout,
      plotlyConfig(),
    );
    fill(table, jobsTable(report.jobs));
    root.dataset.loaded = String(Number(root.dataset.loaded || 0) + 1);
    if (report.jobs.some((job) => !FINAL.has(job.status))) timer = setTimeout(load, POLL_MS);
  }

  load().then(() => {
    if (destroyed || !plot.on) return;
    plot.on("plotly_click", (event) => {
      const id = event.points[0]?.customdata?.[0];
      if (id) location.hash = `#/candidates/${id}`;
    });
  });
  return {
    destroy() {
      destroyed = true;
      clearTimeout(timer);
      Plotly.purge(plot);
    },
  };
}
