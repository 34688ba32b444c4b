// The fidelity panel of a job with a ladder: does the search's short single-seed trial rank
// candidates as a longer, multi-seed rung does, and how large is seed noise next to the spread
// between candidates? From GET jobs/<id>/fidelity.
import { axis, baseLayout, el, fill, num, ORIGIN, plotlyConfig, plural } from "./format.js";

// A correlation and its bootstrap interval: "0.812 [0.413, 0.967]".
function correlation(value, range) {
  if (value === null || value === undefined) return "–";
  const r =
    Array.isArray(range) && range.length === 2 ? ` [${num(range[0], 3)}, ${num(range[1], 3)}]` : "";
  return `${num(value, 3)}${r}`;
}

function recall(pair) {
  if (pair.top_k_recall === null || pair.top_k_recall === undefined) return "–";
  const found = Math.round(pair.top_k_recall * pair.top_k);
  return `${found} of the top ${pair.top_k} (${Math.round(100 * pair.top_k_recall)}%)`;
}

const rungName = (rung) => (rung === 0 ? "rung 0 (1 seed)" : `rung ${rung} (seed mean)`);

function pairPlot(node, pair, metric) {
  const byOrigin = new Map();
  for (const point of pair.points) {
    if (point.low === null || point.high === null) continue;
    const key = ORIGIN[point.origin] ? point.origin : "other";
    if (!byOrigin.has(key)) byOrigin.set(key, []);
    byOrigin.get(key).push(point);
  }
  const order = ["rank", "random", "baseline", "noise", "confirm", "other"];
  const traces = order
    .filter((key) => byOrigin.has(key))
    .map((key) => {
      const points = byOrigin.get(key);
      const style = ORIGIN[key] || { label: key, color: "#495057", symbol: "circle" };
      return {
        type: "scatter",
        mode: "markers",
        name: `${style.label} (${points.length})`,
        meta: key,
        x: points.map((p) => p.low),
        y: points.map((p) => p.high),
        customdata: points.map((p) => p.candidate_id),
        hovertemplate: `#%{customdata} · ${style.label}<br>rung ${pair.low}: %{x:.4f}<br>rung ${pair.high}: %{y:.4f}<extra></extra>`,
        marker: {
          symbol: style.symbol,
          color: style.color,
          size: key === "baseline" ? 13 : 8,
          line: { width: 0.5, color: style.color },
        },
      };
    });
  const label = metric === "val_loss" ? "val loss" : metric;
  const layout = baseLayout({
    xaxis: axis(`${label}, ${rungName(pair.low)}`),
    yaxis: axis(`${label}, ${rungName(pair.high)}`),
    legend: { orientation: "h", y: -0.25, x: 0 },
    margin: { l: 60, r: 12, t: 8, b: 80 },
    uirevision: "keep",
    annotations: traces.length
      ? []
      : [
          {
            text: "No candidate has results at both rungs yet",
            showarrow: false,
            xref: "paper",
            yref: "paper",
          },
        ],
  });
  Plotly.react(node, traces, layout, plotlyConfig());
}

function pairStats(pair) {
  const row = (label, value, title) => [el("dt", { title }, label), el("dd", {}, value)];
  return el(
    "dl",
    { class: "metrics fidelity-stats", "data-low": pair.low, "data-high": pair.high },
    row("Candidates at both", String(pair.n ?? 0)),
    row(
      "Spearman ρ",
      el("span", { class: "spearman" }, correlation(pair.spearman, pair.spearman_interval)),
      "Rank correlation of the two rungs' losses; [95% bootstrap interval over candidates]",
    ),
    row(
      "Kendall τ",
      el("span", { class: "kendall" }, correlation(pair.kendall, pair.kendall_interval)),
      "Kendall tau-b; [95% bootstrap interval over candidates]",
    ),
    row(
      "Top-k recall",
      recall(pair),
      `Of the ${pair.top_k ?? "k"} best at rung ${pair.high}, how many rung ${pair.low} also put in its ${pair.top_k ?? "k"} best`,
    ),
  );
}

function noiseTable(noise) {
  const header = [
    ["Rung", ""],
    ["Seed noise", "Pooled standard deviation over seeds of a candidate's val loss"],
    ["Measured on", "Candidates with two or more seeds, and their runs"],
    ["Spread", "Standard deviation of the candidates' mean val loss"],
    ["Over", "Candidates with a result"],
    ["Spread / noise", "Near 1 or below: a single-seed ranking is mostly noise"],
  ];
  return el(
    "table",
    { class: "data", id: "noise-table" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        header.map(([label, title], i) =>
          el("th", { scope: "col", title: title || null, class: i ? "num" : "" }, label),
        ),
      ),
    ),
    el(
      "tbody",
      {},
      noise.map((row) =>
        el(
          "tr",
          { "data-rung": row.rung },
          el("td", {}, `rung ${row.rung}`),
          el("td", { class: "num noise-floor" }, num(row.noise_floor, 4)),
          el(
            "td",
            { class: "num" },
            row.noise_candidates
              ? `${plural(row.noise_candidates, "candidate")}, ${plural(row.noise_runs, "run")}`
              : "–",
          ),
          el("td", { class: "num spread" }, num(row.spread, 4)),
          el("td", { class: "num" }, plural(row.spread_candidates ?? 0, "candidate")),
          el("td", { class: "num snr" }, num(row.signal_to_noise, 2)),
        ),
      ),
    ),
  );
}

// `open(id)`: what clicking a point does (opens the candidate).
export function fidelityPanel(open) {
  const body = el("div", { class: "fidelity-body" });
  const node = el(
    "section",
    { class: "card fidelity", id: "fidelity", "aria-labelledby": "fidelity-title", hidden: true },
    el(
      "h2",
      { id: "fidelity-title" },
      "Fidelity: does the short trial rank like the longer rungs?",
    ),
    body,
  );
  let plots = [];

  function purge() {
    for (const plot of plots) Plotly.purge(plot);
    plots = [];
  }

  // `fidelity`: the endpoint's answer, or null when the job has no ladder nor noise seeds;
  // `rungs`: how many rungs the job's ladder has above the search.
  function render(fidelity, rungs) {
    if (!fidelity) {
      node.hidden = true;
      purge();
      return;
    }
    node.hidden = false;
    // A pair of rungs with no candidate in both (nothing promoted has finished) is not drawn.
    const pairs = (fidelity.pairs || []).filter((pair) => (pair.points || []).length > 0);
    const noise = (fidelity.noise || []).filter(
      (row) => row.noise_floor !== null || row.spread !== null,
    );
    const kept = new Set(pairs.map((pair) => `fidelity-plot-${pair.low}-${pair.high}`));
    for (const plot of plots.filter((p) => !kept.has(p.id))) Plotly.purge(plot);
    const existing = new Map(plots.map((p) => [p.id, p]));
    plots = pairs.map(
      (pair) =>
        existing.get(`fidelity-plot-${pair.low}-${pair.high}`) ||
        el("div", { id: `fidelity-plot-${pair.low}-${pair.high}`, class: "plot fidelity-plot" }),
    );
    fill(
      body,
      pairs.length
        ? null
        : el(
            "p",
            { class: "muted", id: "fidelity-empty" },
            rungs
              ? "No rung above the search has results yet: every candidate so far was trained " +
                  "once, at the trial budget, so there is nothing to compare its rank with."
              : "This job has no fidelity ladder (fidelity.rungs): every candidate is trained " +
                  "once, at the trial budget. Only the baseline's seed noise is measured.",
          ),
      pairs.map((pair, i) =>
        el(
          "div",
          { class: "fidelity-pair", "data-low": pair.low, "data-high": pair.high },
          el(
            "h3",
            {},
            `Rung ${pair.low} vs rung ${pair.high}: ${fidelity.metric === "val_loss" ? "validation loss" : fidelity.metric}`,
          ),
          el("div", { class: "fidelity-row" }, plots[i], pairStats(pair)),
        ),
      ),
      noise.length
        ? el(
            "div",
            { class: "noise" },
            el("h3", {}, "Seed noise vs spread between candidates"),
            el("div", { class: "scroll" }, noiseTable(noise)),
          )
        : null,
      fidelity.margin === null || fidelity.margin === undefined
        ? null
        : el(
            "p",
            { class: "muted small", id: "hurdle-margin" },
            `Hurdle margin: ${num(100 * fidelity.margin, 1)}% (a trial is pruned when its ` +
              "smoothed loss exceeds the baseline's by more than this)",
          ),
    );
    pairs.forEach((pair, i) => {
      const plot = plots[i];
      pairPlot(plot, pair, fidelity.metric || "val_loss");
      if (!plot.dataset.clicks) {
        plot.dataset.clicks = "1";
        plot.on("plotly_click", (event) => {
          const id = event.points[0]?.customdata;
          if (id) open(id);
        });
      }
    });
  }

  return { node, render, destroy: purge };
}
