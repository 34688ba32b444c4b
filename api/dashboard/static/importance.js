// What matters in a block: the share of the variance of perplexity and of step time each
// feature explains over the job's completed candidates (GET jobs/<id>/importance), as bars,
// and the most important features against the objectives as parallel coordinates, the
// Pareto front highlighted. Loaded once the panel scrolls into view, then again as trials
// finish (at most every RELOAD_MS while the job runs: the server fits a model each time).
import { get } from "./api.js";
import {
  baseLayout,
  el,
  fill,
  FINAL,
  FRONT_COLOR,
  num,
  plotlyConfig,
  plural,
  STATUS,
} from "./format.js";

const AXES = 5; // features drawn in the parallel coordinates: the most important ones
const PAGE = 1000; // the candidates endpoint's largest page
const MAX_LINES = 5000; // a job with more completed: the best by each objective
const RELOAD_MS = 30000;
const COLORS = { perplexity: STATUS.completed.color, step_time: "#e8590c" };
const OTHER_LINE = "#c5cbd3";

const share = (value) => (value === null || value === undefined ? "–" : `${num(100 * value, 1)}%`);

// `count` completed candidates of the job in `sort` order (paged), after those in `items`.
async function completedCandidates(jobId, sort, count, items = []) {
  const out = [...items];
  while (out.length < count) {
    const page = await get(`jobs/${jobId}/candidates`, {
      status: "completed",
      sort,
      limit: Math.min(PAGE, count - out.length),
      offset: out.length,
    });
    out.push(...page.items);
    if (!page.items.length || out.length >= page.total) break;
  }
  return out;
}

// The lines to draw: every completed candidate, or (over MAX_LINES) the best half by each
// objective, which keeps the region where the front lies.
async function lines(jobId) {
  const first = await get(`jobs/${jobId}/candidates`, {
    status: "completed",
    sort: "birth",
    limit: PAGE,
  });
  if (first.total <= MAX_LINES) {
    const items = await completedCandidates(jobId, "birth", first.total, first.items);
    return { items, total: first.total, reduced: false };
  }
  const half = MAX_LINES / 2;
  const [byQuality, bySpeed] = await Promise.all([
    completedCandidates(jobId, "perplexity", half),
    completedCandidates(jobId, "step_time_ratio", half),
  ]);
  const unique = new Map([...byQuality, ...bySpeed].map((c) => [c.id, c]));
  return { items: [...unique.values()], total: first.total, reduced: true };
}

function barCell(value, kind, top) {
  const width = top > 0 ? (100 * Math.max(0, value ?? 0)) / top : 0;
  return el(
    "td",
    { class: `share ${kind}` },
    el(
      "span",
      { class: "share-bar", "aria-hidden": "true" },
      el("span", { style: `width:${width.toFixed(1)}%;background:${COLORS[kind]}` }),
    ),
    el("span", { class: "share-value" }, share(value)),
  );
}

function barsTable(features) {
  const top = Math.max(0, ...features.flatMap((f) => [f.perplexity ?? 0, f.step_time ?? 0]));
  const swatch = (kind) =>
    el("span", { class: "swatch", style: `background:${COLORS[kind]}`, "aria-hidden": "true" });
  return el(
    "table",
    { class: "data compact importance", id: "importance-table" },
    el(
      "caption",
      { class: "muted small" },
      "Share of the variance each feature explains, most important first",
    ),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", { scope: "col" }, "Feature"),
        el("th", { scope: "col" }, swatch("perplexity"), " Perplexity"),
        el("th", { scope: "col" }, swatch("step_time"), " Step time"),
      ),
    ),
    el(
      "tbody",
      {},
      features.map((f) =>
        el(
          "tr",
          { "data-feature": f.name },
          el("th", { scope: "row" }, el("code", {}, f.name)),
          barCell(f.perplexity, "perplexity", top),
          barCell(f.step_time, "step_time", top),
        ),
      ),
    ),
  );
}

// R² on held-out candidates; at or below 0 the features predict nothing and the shares are 0.
function fit(value, objective) {
  const unpredicted = value !== null && value !== undefined && value <= 0;
  return `${num(value, 2)} (${objective}${unpredicted ? ": not predicted, shares 0" : ""})`;
}

function summaryText(report) {
  const r2 = report.r2 || {};
  return (
    `Over ${plural(report.candidates, "completed candidate")}; model fit R² ` +
    `${fit(r2.perplexity, "perplexity")}, ${fit(r2.step_time, "step time")}` +
    (report.message ? `. ${report.message}` : "")
  );
}

// How the shares were measured, and the features left out as equal to another.
function methodNotes(report) {
  const left = Object.entries(report.equivalent || {}).map(([name, as]) => `${name} (as ${as})`);
  return [
    el("p", {}, report.method),
    left.length
      ? el("p", {}, `Left out, as they order the candidates as another does: ${left.join(", ")}.`)
      : null,
  ];
}

export function whatMattersPanel(jobId) {
  const summary = el("p", { class: "muted small", id: "importance-summary" }, "Loading…");
  const method = el("div", { class: "muted small" });
  const methodBox = el(
    "details",
    { class: "method", hidden: true },
    el("summary", { class: "muted small" }, "Method"),
    method,
  );
  const bars = el("div", { class: "importance-bars", id: "importance-bars" });
  const plot = el("div", { id: "parcoords-plot", class: "plot parcoords" });
  const caption = el("p", { class: "muted small", id: "parcoords-caption" });
  const figure = el(
    "figure",
    { class: "parcoords-figure", hidden: true },
    el("figcaption", {}, "The most important features against the objectives"),
    plot,
    caption,
  );
  const node = el(
    "section",
    { class: "card what-matters", id: "what-matters", "aria-labelledby": "what-matters-title" },
    el("h2", { id: "what-matters-title" }, "What matters"),
    summary,
    methodBox,
    el("div", { class: "matters-row" }, bars, figure),
  );
  let seen = false; // scrolled into view once
  let wanted = null; // the job's state the panel should show: finished trials and status
  let shown = null; // the state it shows
  let final = false;
  let front = [];
  let loading = false;
  let loadedAt = 0;
  let timer = null;
  let destroyed = false;

  function renderPlot(report, drawn) {
    const axes = report.features.slice(0, AXES).map((f) => f.name);
    const onFront = new Set(front);
    const usable = drawn.items.filter(
      (c) =>
        c.perplexity !== null &&
        c.step_time_ratio !== null &&
        axes.every((name) => Number.isFinite(c.features?.[name])),
    );
    // The front's lines last: drawn over the others.
    const ordered = [
      ...usable.filter((c) => !onFront.has(c.id)),
      ...usable.filter((c) => onFront.has(c.id)),
    ];
    const dimension = (label, value) => ({ label, values: ordered.map(value), tickformat: ".3~g" });
    const trace = {
      type: "parcoords",
      dimensions: [
        ...axes.map((name) => dimension(name, (c) => c.features[name])),
        dimension("perplexity", (c) => c.perplexity),
        dimension("step time / baseline", (c) => c.step_time_ratio),
      ],
      line: {
        color: ordered.map((c) => (onFront.has(c.id) ? 1 : 0)),
        colorscale: [
          [0, OTHER_LINE],
          [1, FRONT_COLOR],
        ],
        cmin: 0,
        cmax: 1,
        showscale: false,
      },
      labelangle: -20, // the features' names are long
      labelfont: { size: 11 },
      tickfont: { size: 10 },
    };
    const layout = baseLayout({ margin: { l: 60, r: 90, t: 80, b: 24 } });
    Plotly.react(plot, [trace], layout, plotlyConfig());
    const inFront = ordered.filter((c) => onFront.has(c.id)).length;
    plot.dataset.lines = String(ordered.length);
    plot.dataset.front = String(inFront);
    const which = drawn.reduced
      ? `the ${ordered.length.toLocaleString("en-US")} best by perplexity or step time of ` +
        `${drawn.total.toLocaleString("en-US")} completed candidates`
      : `${plural(ordered.length, "completed candidate")}`;
    fill(
      caption,
      `One line per candidate: ${which}; `,
      el("span", { style: `color:${FRONT_COLOR}`, class: "strong" }, "red"),
      `: the Pareto front (${inFront}). Drag along an axis to select a range.`,
    );
  }

  async function load() {
    loading = true;
    const state = wanted;
    try {
      const report = await get(`jobs/${jobId}/importance`);
      const drawn = report.features.length ? await lines(jobId) : null;
      if (destroyed) return;
      if (report.features.length) {
        summary.textContent = summaryText(report);
        fill(method, methodNotes(report));
        methodBox.hidden = false;
        fill(bars, barsTable(report.features));
        figure.hidden = false;
        renderPlot(report, drawn);
      } else {
        summary.textContent = `${plural(report.candidates, "completed candidate")} so far.`;
        methodBox.hidden = true;
        fill(
          bars,
          el(
            "p",
            { class: "muted", id: "importance-message" },
            report.message || "No feature varies across the completed candidates.",
          ),
        );
        figure.hidden = true;
        Plotly.purge(plot);
      }
    } catch (error) {
      if (destroyed) return;
      summary.textContent = `Could not load what matters: ${error.message}`;
    } finally {
      shown = state;
      loadedAt = Date.now();
      loading = false;
      node.dataset.loaded = String(Number(node.dataset.loaded || 0) + 1); // tests wait on it
      maybeLoad();
    }
  }

  // Loads when in view and the job moved on: at once the first time and when the job ends,
  // else at most every RELOAD_MS.
  function maybeLoad() {
    if (!seen || destroyed || loading || wanted === null || wanted === shown) return;
    const wait = loadedAt + RELOAD_MS - Date.now();
    if (shown !== null && !final && wait > 0) {
      clearTimeout(timer);
      timer = setTimeout(maybeLoad, wait);
      return;
    }
    load();
  }

  const observer = new IntersectionObserver(
    (entries) => {
      if (!entries.some((entry) => entry.isIntersecting)) return;
      seen = true;
      observer.disconnect();
      maybeLoad();
    },
    { rootMargin: "200px" },
  );
  observer.observe(node);

  return {
    node,
    // `frontIds`: the job's Pareto front (GET jobs/<id>/pareto `front`).
    update(job, frontIds) {
      front = frontIds;
      final = FINAL.has(job.status);
      wanted = `${job.progress?.done ?? 0}:${job.status}`;
      maybeLoad();
    },
    destroy() {
      destroyed = true;
      observer.disconnect();
      clearTimeout(timer);
      Plotly.purge(plot);
    },
  };
}
