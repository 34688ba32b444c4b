// One job: status and progress, its note, the Pareto frontier (of the search, or of a higher
// rung of the fidelity ladder), hypervolume, search progress, the confirmation, the fidelity
// panel, what matters in a block, blocks added by hand and the trials table, all refreshed
// from the server when the job's event stream says something changed.
import { get, openEvents } from "./api.js";
import { confirmationPanel } from "./confirm.js";
import { enqueuePanel } from "./enqueue.js";
import { fidelityPanel } from "./fidelity.js";
import {
  add,
  axis,
  BASELINE,
  fill,
  FINAL,
  FRONT_COLOR,
  STATUS,
  badge,
  baseLayout,
  budgetWords,
  count,
  describe,
  duration,
  crumbs,
  el,
  meanSe,
  num,
  ORIGIN,
  plotlyConfig,
  plural,
  seedCount,
  setLive,
  showBanner,
} from "./format.js";
import { whatMattersPanel } from "./importance.js";
import { actions, progressBar } from "./jobs.js";
import { notePanel } from "./notes.js";
import { trialsTable } from "./table.js";

// The frontier's x axis: step time as a ratio to the baseline block timed on the same worker
// slot under the same load (raw milliseconds depend on the device and its load).
export const RATIO_AXIS = "step time / baseline on the same slot (1.0 = baseline)";
// Above this many points plots use WebGL (when the browser has it); SVG is crisp below.
const WEBGL_ABOVE = 2000;

// Probed once: every probe creates a WebGL context, and browsers cap live contexts.
const HAS_WEBGL = (() => {
  try {
    return !!document.createElement("canvas").getContext("webgl2");
  } catch {
    return false;
  }
})();

// How many scored points the page asks for (`max_points`): a job with more gets its front and
// baselines exactly plus a binned scatter (one point per grid cell per status). WebGL draws
// 10,000 points smoothly (a 15,000-candidate job is drawn whole), SVG up to WEBGL_ABOVE.
// `window.NAS_MAX_POINTS` overrides it (tests).
function maxPoints() {
  return window.NAS_MAX_POINTS || (HAS_WEBGL ? 10000 : WEBGL_ABOVE);
}

// Says on a plot that its scatter is reduced (empty when it is not).
function reducedNote(pareto, text) {
  if (!pareto.reduced) return [];
  const [shown, total] = [pareto.points.id.length, pareto.total].map((n) =>
    n.toLocaleString("en-US"),
  );
  return [
    {
      text: text(`${shown} of ${total}`),
      showarrow: false,
      xref: "paper",
      yref: "paper",
      x: 0,
      y: 1,
      xanchor: "left",
      yanchor: "top",
      align: "left",
      font: { size: 11, color: "#555" },
      bgcolor: "rgba(255,255,255,0.8)",
    },
  ];
}

// Each scored point in exactly one group: baselines, then completed (feasible or not), pruned.
function groups(points, baselines) {
  const isBaseline = new Set(baselines);
  const out = { completed: [], infeasible: [], pruned: [], baseline: [] };
  for (let i = 0; i < points.id.length; i++) {
    if (isBaseline.has(points.id[i])) out.baseline.push(i);
    else if (points.status[i] === "pruned") out.pruned.push(i);
    else if (points.feasible[i] === false) out.infeasible.push(i);
    else out.completed.push(i);
  }
  return out;
}

const GROUP_STYLE = {
  completed: { name: "completed", ...STATUS.completed, size: 7 },
  infeasible: { name: "infeasible (too slow)", ...STATUS.infeasible, size: 8 },
  pruned: { name: "pruned (early stop)", ...STATUS.pruned, size: 7 },
  baseline: { name: "baseline", ...BASELINE, size: 14 },
};

function pointTraces(points, parts, x, y, type, scale = 1) {
  return Object.entries(parts).map(([key, indices]) => {
    const style = GROUP_STYLE[key];
    const keep = indices.filter((i) => x(i) !== null && y(i) !== null);
    return {
      type,
      mode: "markers",
      name: `${style.name} (${keep.length})`,
      meta: "points",
      x: keep.map(x),
      y: keep.map(y),
      customdata: keep.map((i) => points.id[i]),
      hoverinfo: "none",
      marker: {
        symbol: style.symbol,
        color: style.color,
        size: style.size * scale,
        opacity: key === "baseline" ? 1 : 0.8,
        line: { width: key === "pruned" || key === "infeasible" ? 1.5 : 0.5, color: style.color },
      },
    };
  });
}

// The fidelity ladder of a job's config: rungs above the search, and the baseline's noise seeds.
function ladderOf(config) {
  const fidelity = config?.fidelity || {};
  return { rungs: (fidelity.rungs || []).length, noise: (fidelity.noise_seeds || 0) >= 2 };
}

// A rung's scored points in groups as the search's: baseline, feasible, infeasible.
function rungGroups(points) {
  const out = { completed: [], infeasible: [], baseline: [] };
  points.forEach((point, i) => {
    if (point.perplexity?.mean === null || point.step_time_ratio?.mean === null) return;
    if (point.is_baseline) out.baseline.push(i);
    else if (point.feasible === false) out.infeasible.push(i);
    else out.completed.push(i);
  });
  return out;
}

// Error bars of ± one standard error (none where a point has a single seed: plotly reads a
// null as 0 and would draw a flat whisker, NaN draws nothing).
function errorBars(values, color) {
  return {
    type: "data",
    array: values.map((v) => (v === null || v === undefined ? NaN : v)),
    visible: true,
    thickness: 1,
    width: 3,
    color,
  };
}

function rungLabel(entry) {
  if (entry.rung === 0) return "Rung 0 · search";
  const seeds = seedCount(entry.seeds);
  return `Rung ${entry.rung} · ${budgetWords(entry.budget)}${seeds ? ` × ${plural(seeds, "seed")}` : ""}`;
}

// A trial's budget: seconds, steps or FLOPs (whichever the job gives).
function budget(trial) {
  if (trial.budget_steps) return `${count(trial.budget_steps)} steps per trial`;
  if (trial.budget_flops) return `${count(trial.budget_flops)} FLOPs per trial`;
  return `${trial.budget_s}s per trial`;
}

export function jobView(root, jobId) {
  let destroyed = false;
  let source = null;
  let listening = false; // the event stream is open or opening
  let timer = null;
  let running = false;
  let again = false;
  let lastCost = 0;
  let job = null;
  let scored = null; // the latest scored points and their index by id, for the hover card
  const blocks = new Map(); // candidate id -> its block in words, for the hover card
  let ladder = null; // GET jobs/<id>/rungs, when the job has a ladder
  let chosenRung = null; // the rung picked in the switcher (null: the top rung with results)
  let shownRung = 0;
  let rungPoints = new Map(); // candidate id -> its point at the shown rung (above 0)
  let confirmation = null;

  const head = el("section", { class: "job-head" });
  const paretoPlot = el("div", { id: "pareto-plot", class: "plot tall" });
  const paretoCaption = el(
    "figcaption",
    { id: "pareto-caption" },
    "Pareto frontier: perplexity vs step time / baseline (lower left is better)",
  );
  const rungTabs = el("div", {
    class: "rung-tabs",
    id: "rung-tabs",
    role: "group",
    "aria-label": "Fidelity rung",
    hidden: true,
  });
  const confirmPanel = confirmationPanel(jobId, async () => {
    await refresh();
    if (job && !FINAL.has(job.status)) listen();
  });
  const fidelity = fidelityPanel((id) => {
    location.hash = `#/candidates/${id}`;
  });
  const hvPlot = el("div", { id: "hv-plot", class: "plot" });
  const progressPlot = el("div", { id: "progress-plot", class: "plot" });
  const table = trialsTable(jobId);
  const note = notePanel("job-note", `jobs/${jobId}/note`);
  const matters = whatMattersPanel(jobId);
  const enqueue = enqueuePanel(jobId);
  add(
    root,
    head,
    note.node,
    el(
      "div",
      { class: "plots" },
      el(
        "figure",
        { class: "card" },
        el("div", { class: "fig-head" }, paretoCaption, rungTabs),
        paretoPlot,
      ),
      el(
        "div",
        { class: "side" },
        el("figure", { class: "card" }, el("figcaption", {}, "Hypervolume over trials"), hvPlot),
        el(
          "figure",
          { class: "card" },
          el("figcaption", {}, "Search progress: perplexity of each trial"),
          progressPlot,
        ),
      ),
    ),
    confirmPanel.node,
    fidelity.node,
    matters.node,
    enqueue.node,
    table.node,
  );

  function renderHead() {
    const p = job.progress;
    const best = p?.best_candidate_id
      ? el(
          "a",
          { href: `#/candidates/${p.best_candidate_id}`, title: `best: ${p.best_rule}` },
          num(p.best_perplexity, 3),
        )
      : el("span", { title: p?.best_rule ? `best: ${p.best_rule}` : null }, "–");
    const objective = job.config.objective;
    const stat = (label, value) =>
      el("div", { class: "stat" }, el("span", { class: "label" }, label), el("span", {}, value));
    fill(
      head,
      crumbs(job.name),
      el(
        "div",
        { class: "title-row" },
        el("h1", {}, job.name, el("span", { class: "muted" }, ` #${job.id}`)),
        badge(job.status),
        el("span", { class: "spacer" }),
        el(
          "a",
          {
            class: "button",
            href: `#/jobs/${job.id}/clone`,
            "data-action": "clone",
            title: "A new job from this one's configuration",
          },
          "Clone",
        ),
        actions(job, refresh),
      ),
      job.error ? el("p", { class: "alert" }, job.error) : null,
      el(
        "div",
        { class: "stats" },
        stat("Trials", progressBar(p)),
        stat("Queued", String(p?.queued ?? 0)),
        stat("Elapsed", duration(p?.elapsed_s)),
        stat("ETA", duration(p?.eta_s)),
        stat("Best perplexity", best),
        p?.best_rule
          ? stat("Best rule", el("span", { id: "best-rule", class: "rule" }, p.best_rule))
          : null,
        stat("Front size", count(p?.front_size)),
        ladder && ladder.top_rung > 0 ? stat("Top rung", String(ladder.top_rung)) : null,
        confirmation?.status === "done"
          ? stat(
              "Confirmed winner",
              confirmation.winner === null || confirmation.winner === undefined
                ? el("span", { id: "confirmed-winner" }, "none")
                : el(
                    "a",
                    { href: `#/candidates/${confirmation.winner}`, id: "confirmed-winner" },
                    `#${confirmation.winner}`,
                  ),
            )
          : null,
        stat(
          "Objective",
          objective.mode === "constrained"
            ? `constrained: step time ≤ ${objective.max_step_time_ratio}× ${objective.baseline}'s`
            : `pareto (baseline ${objective.baseline})`,
        ),
        stat("Budget", budget(job.config.trial)),
      ),
    );
  }

  // `parts`: each point's group (from `groups`); `type`: the scatter trace type for this size.
  function renderPareto(pareto, parts, type) {
    const { points, front } = pareto;
    const n = points.id.length;
    const frontIdx = front.map((id) => scored.index.get(id));
    const traces = pointTraces(
      points,
      parts,
      (i) => points.step_time_ratio[i],
      (i) => points.perplexity[i],
      type,
    );
    traces.push(
      frontTrace(
        type,
        front,
        frontIdx.map((i) => points.step_time_ratio[i]),
        frontIdx.map((i) => points.perplexity[i]),
      ),
    );
    const layout = frontLayout(n, "keep", [
      ...reducedNote(
        pareto,
        (shown) =>
          `scatter reduced: ${shown} points drawn, one per grid cell per status;<br>` +
          "the front and the baseline exact",
      ),
    ]);
    Plotly.react(paretoPlot, traces, layout, plotlyConfig());
    paretoPlot.dataset.points = String(n);
    paretoPlot.dataset.total = String(pareto.total ?? n);
    paretoPlot.dataset.reduced = String(!!pareto.reduced);
    paretoPlot.dataset.rung = "0";
  }

  function frontTrace(type, ids, x, y) {
    return {
      type,
      mode: "lines+markers",
      name: `Pareto front (${ids.length})`,
      meta: "front",
      x,
      y,
      customdata: ids,
      hoverinfo: "none",
      line: { shape: "hv", color: FRONT_COLOR, width: 2 },
      marker: { symbol: "circle-open", size: 13, color: FRONT_COLOR, line: { width: 2 } },
    };
  }

  // The frontier plot's layout: axes, the step-time limit, notes. `n`: points drawn.
  function frontLayout(n, uirevision, notes) {
    // Constrained mode: the step-time limit is the allowed ratio to the baseline's step time.
    const objective = job.config.objective;
    const limit = objective.mode === "constrained" ? objective.max_step_time_ratio : null;
    const layout = baseLayout({
      shapes: limit
        ? [
            {
              type: "line",
              yref: "paper",
              y0: 0,
              y1: 1,
              x0: limit,
              x1: limit,
              line: { dash: "dash", color: STATUS.infeasible.color, width: 1.5 },
            },
          ]
        : [],
      xaxis: axis(RATIO_AXIS),
      yaxis: axis("validation perplexity"),
      legend: { orientation: "h", y: -0.18, x: 0 },
      margin: { l: 60, r: 16, t: 12, b: 90 },
      uirevision, // zoom and hidden legend entries survive live refreshes
      annotations: [
        n ? null : { text: "No scored trials yet", showarrow: false, xref: "paper", yref: "paper" },
        limit
          ? {
              x: limit,
              y: 1,
              yref: "paper",
              text: `step-time limit (${limit}× baseline)`,
              showarrow: false,
              xanchor: "right",
              yanchor: "top",
              font: { color: STATUS.infeasible.color, size: 11 },
            }
          : null,
        ...notes,
      ].filter(Boolean),
    });
    return layout;
  }

  // A rung above the search: each promoted candidate at its mean over seeds, ± one standard
  // error both ways, and the rung's front.
  function renderRung(entry) {
    const points = entry.points;
    const parts = rungGroups(points);
    const ratio = (i) => points[i].step_time_ratio.mean;
    const ppl = (i) => points[i].perplexity.mean;
    const traces = Object.entries(parts).map(([key, indices]) => {
      const style = GROUP_STYLE[key];
      return {
        type: "scatter",
        mode: "markers",
        name: `${style.name} (${indices.length})`,
        meta: "points",
        x: indices.map(ratio),
        y: indices.map(ppl),
        customdata: indices.map((i) => points[i].candidate_id),
        hoverinfo: "none",
        error_x: errorBars(
          indices.map((i) => points[i].step_time_ratio.se),
          style.color,
        ),
        error_y: errorBars(
          indices.map((i) => points[i].perplexity.se),
          style.color,
        ),
        marker: {
          symbol: style.symbol,
          color: style.color,
          size: style.size,
          opacity: key === "baseline" ? 1 : 0.85,
          line: { width: key === "infeasible" ? 1.5 : 0.5, color: style.color },
        },
      };
    });
    rungPoints = new Map(points.map((point) => [point.candidate_id, point]));
    const front = (entry.front || [])
      .map((id) => rungPoints.get(id))
      .filter((p) => p && p.step_time_ratio.mean !== null && p.perplexity.mean !== null)
      .sort((a, b) => a.step_time_ratio.mean - b.step_time_ratio.mean);
    traces.push(
      frontTrace(
        "scatter",
        front.map((p) => p.candidate_id),
        front.map((p) => p.step_time_ratio.mean),
        front.map((p) => p.perplexity.mean),
      ),
    );
    const n = Object.values(parts).reduce((sum, indices) => sum + indices.length, 0);
    const layout = frontLayout(n, `rung-${entry.rung}`, [
      {
        text: `rung ${entry.rung}: means over seeds, bars ± 1 standard error`,
        showarrow: false,
        xref: "paper",
        yref: "paper",
        x: 0,
        y: 1,
        xanchor: "left",
        yanchor: "top",
        font: { size: 11, color: "#555" },
        bgcolor: "rgba(255,255,255,0.8)",
      },
    ]);
    Plotly.react(paretoPlot, traces, layout, plotlyConfig());
    paretoPlot.dataset.points = String(n);
    paretoPlot.dataset.total = String(n);
    paretoPlot.dataset.reduced = "false";
    paretoPlot.dataset.rung = String(entry.rung);
  }

  // The rung shown: the one picked, else the top rung with results (the job's front is that
  // rung's).
  function rungToShow() {
    if (!ladder) return 0;
    const known = new Set(ladder.rungs.map((entry) => entry.rung));
    if (chosenRung !== null && known.has(chosenRung)) return chosenRung;
    return known.has(ladder.top_rung) ? ladder.top_rung : 0;
  }

  function renderTabs() {
    const entries = ladder?.rungs || [];
    rungTabs.hidden = entries.length < 2;
    fill(
      rungTabs,
      entries.map((entry) => {
        const empty =
          entry.rung > 0 && !(entry.points || []).some((p) => p.perplexity?.mean != null);
        return el(
          "button",
          {
            type: "button",
            "data-rung": entry.rung,
            "aria-pressed": String(entry.rung === shownRung),
            disabled: empty,
            title: empty
              ? "No results at this rung yet"
              : `${plural(entry.candidates ?? (entry.points || []).length, "candidate")}` +
                (entry.rung === ladder.top_rung ? " · the top rung with results" : ""),
            onclick: () => {
              chosenRung = entry.rung;
              renderFront();
            },
          },
          rungLabel(entry),
        );
      }),
    );
  }

  // The frontier plot at the rung to show, its caption and the switcher.
  function renderFront() {
    if (!scored) return;
    shownRung = rungToShow();
    const entry = ladder?.rungs.find((r) => r.rung === shownRung);
    if (shownRung > 0 && entry) {
      paretoCaption.textContent =
        `Pareto frontier at rung ${shownRung}: perplexity vs step time / baseline, ` +
        "means ± 1 standard error over seeds";
      renderRung(entry);
    } else {
      paretoCaption.textContent =
        "Pareto frontier: perplexity vs step time / baseline (lower left is better)";
      renderPareto(scored.pareto, scored.parts, scored.type);
    }
    renderTabs();
  }

  function renderProgress(pareto, parts, type) {
    const { points } = pareto;
    const minutes = (i) => (points.finished_s[i] === null ? null : points.finished_s[i] / 60);
    const traces = pointTraces(points, parts, minutes, (i) => points.perplexity[i], type, 0.7).map(
      (trace) => ({ ...trace, showlegend: false }),
    );
    // The best feasible perplexity so far, in finishing order.
    const order = [...points.id.keys()]
      .filter((i) => points.finished_s[i] !== null)
      .filter((i) => points.status[i] === "completed" && points.feasible[i] !== false)
      .sort((a, b) => points.finished_s[a] - points.finished_s[b]);
    const bestX = [];
    const bestY = [];
    let best = Infinity;
    for (const i of order) {
      if (points.perplexity[i] < best) {
        best = points.perplexity[i];
        bestX.push(minutes(i));
        bestY.push(best);
      }
    }
    if (order.length) {
      bestX.push(minutes(order[order.length - 1]));
      bestY.push(best);
    }
    traces.push({
      type: "scatter",
      mode: "lines",
      name: "best so far",
      x: bestX,
      y: bestY,
      hoverinfo: "skip",
      line: { shape: "hv", color: FRONT_COLOR, width: 2 },
    });
    const layout = baseLayout({
      xaxis: axis("minutes since submission"),
      yaxis: axis("perplexity"),
      showlegend: false,
      margin: { l: 56, r: 12, t: 8, b: 40 },
      uirevision: "keep",
      annotations: points.finished_s.some((s) => s !== null)
        ? reducedNote(pareto, (shown) => `${shown} trials drawn; best so far among them`)
        : [{ text: "No finished trials yet", showarrow: false, xref: "paper", yref: "paper" }],
    });
    Plotly.react(progressPlot, traces, layout, plotlyConfig());
  }

  function renderHypervolume(hv) {
    const layout = baseLayout({
      xaxis: axis("completed trials"),
      yaxis: axis("hypervolume"),
      showlegend: false,
      margin: { l: 56, r: 12, t: 8, b: 40 },
      uirevision: "keep",
      annotations: hv.trials.length
        ? []
        : [{ text: "No completed trials yet", showarrow: false, xref: "paper", yref: "paper" }],
    });
    const trace = {
      type: "scatter",
      mode: "lines",
      x: hv.trials,
      y: hv.hypervolume,
      line: { color: STATUS.completed.color, width: 2, shape: "hv" },
      hovertemplate: "after %{x} trials: %{y:.4g}<extra></extra>",
    };
    Plotly.react(hvPlot, [trace], layout, plotlyConfig());
  }

  async function refresh() {
    if (running) {
      again = true;
      return;
    }
    running = true;
    const started = performance.now();
    try {
      const [fresh, pareto, hv, confirmed] = await Promise.all([
        get(`jobs/${jobId}`),
        get(`jobs/${jobId}/pareto`, { max_points: maxPoints() }),
        get(`jobs/${jobId}/hypervolume`),
        get(`jobs/${jobId}/confirmation`),
        table.reload(),
      ]);
      // The ladder's rungs and fidelity, for a job that has them (its config says).
      const has = ladderOf(fresh.config);
      const [rungs, fidelityReport] = await Promise.all([
        has.rungs ? get(`jobs/${jobId}/rungs`) : null,
        has.rungs || has.noise ? get(`jobs/${jobId}/fidelity`) : null,
      ]);
      if (destroyed) return;
      job = fresh;
      ladder = rungs;
      confirmation = confirmed;
      renderHead();
      const parts = groups(pareto.points, pareto.baselines);
      const index = new Map(pareto.points.id.map((id, i) => [id, i]));
      const type = pareto.points.id.length > WEBGL_ABOVE && HAS_WEBGL ? "scattergl" : "scatter";
      scored = { points: pareto.points, index, pareto, parts, type };
      renderFront();
      renderProgress(pareto, parts, type);
      renderHypervolume(hv);
      confirmPanel.render(job, confirmation);
      fidelity.render(fidelityReport, has.rungs);
      note.render(job.note, job.note_html);
      matters.update(job, pareto.front);
      enqueue.update(job);
      root.dataset.loaded = String(Number(root.dataset.loaded || 0) + 1); // refreshes so far
      if (FINAL.has(job.status) && source) stopListening();
    } catch (error) {
      if (!destroyed) showBanner(`Could not load job ${jobId}: ${error.message}`);
    } finally {
      running = false;
      lastCost = performance.now() - started;
      root.dataset.refreshMs = String(Math.round(lastCost)); // read by bench/dashboard_load.py
      if (again && !destroyed) {
        again = false;
        schedule();
      }
    }
  }

  // Coalesce bursts of events; a job whose refresh is slow (many points) refreshes less often,
  // spending at most about half of the time refreshing.
  function schedule() {
    if (timer || destroyed) return;
    timer = setTimeout(
      () => {
        timer = null;
        refresh();
      },
      Math.max(300, lastCost),
    );
  }

  // The hover card: metrics at once, the block in words once fetched (then cached).
  const card = document.getElementById("hovercard");
  async function hover(event, unit) {
    const point = event.points[0];
    const id = point.customdata;
    const mouse = event.event;
    const trace = point.data;
    const key = Object.keys(GROUP_STYLE).find((k) => trace.name.startsWith(GROUP_STYLE[k].name));
    const i = scored?.index.get(id);
    const ratio = i === undefined ? null : scored.points.step_time_ratio[i];
    const ms = i === undefined ? null : scored.points.step_time_ms[i];
    let step =
      i === undefined ? "" : `step time ${num(ratio, 3)}× baseline (same slot) · ${num(ms, 1)} ms`;
    let quality = `perplexity ${num(point.y, 3)}`;
    // A rung above the search: means ± se over the candidate's seeds there.
    const atRung = unit === "ratio" && shownRung > 0 ? rungPoints.get(id) : null;
    if (atRung) {
      const seeds = seedCount(atRung.seeds);
      quality =
        `perplexity ${meanSe(atRung.perplexity, 3)} at rung ${shownRung}` +
        (seeds ? ` (${plural(seeds, "seed")})` : "");
      step = `step time ${meanSe(atRung.step_time_ratio, 3)}× baseline (same slot)`;
    }
    const origin =
      atRung && atRung.origin !== "baseline" && ORIGIN[atRung.origin]
        ? ` · ${ORIGIN[atRung.origin].label}`
        : "";
    fill(
      card,
      el(
        "div",
        { class: "strong" },
        `Candidate #${id}`,
        key ? ` · ${GROUP_STYLE[key].name}` : "",
        origin,
      ),
      el("div", {}, quality, unit === "min" ? ` · finished at ${num(point.x, 1)} min` : ""),
      step ? el("div", { class: "step-words" }, step) : null,
      el("div", { class: "block-words" }, blocks.get(id) || "…"),
      el("div", { class: "muted" }, "click to open"),
    );
    card.hidden = false;
    const x = Math.min(mouse.clientX + 14, window.innerWidth - card.offsetWidth - 8);
    const y = Math.min(mouse.clientY + 14, window.innerHeight - card.offsetHeight - 8);
    card.style.left = `${x}px`;
    card.style.top = `${y}px`;
    if (!blocks.has(id)) {
      try {
        const candidate = await get(`candidates/${id}`);
        blocks.set(id, describe(candidate.spec));
      } catch {
        blocks.set(id, "(block unavailable)");
      }
      const words = card.querySelector(".block-words");
      if (!card.hidden && words && card.firstChild.textContent.startsWith(`Candidate #${id}`))
        words.textContent = blocks.get(id);
    }
  }
  function unhover() {
    card.hidden = true;
  }
  function click(event) {
    const id = event.points[0]?.customdata;
    if (id) location.hash = `#/candidates/${id}`;
  }

  async function start() {
    await refresh();
    if (destroyed || !job) return;
    for (const [plot, unit] of [
      [paretoPlot, "ratio"],
      [progressPlot, "min"],
    ]) {
      plot.on("plotly_hover", (event) => hover(event, unit));
      plot.on("plotly_unhover", unhover);
      plot.on("plotly_click", click);
    }
    if (!FINAL.has(job.status)) await listen();
  }

  // Follow the job's event stream (once): from the start, or once a confirmation asked of a
  // finished job makes it run again.
  async function listen() {
    if (listening || destroyed) return;
    listening = true;
    source = await openEvents(jobId, {
      onOpen: () => {
        setLive("live");
        schedule(); // anything between the first load and the stream opening
      },
      onEvent: (kind, data) => {
        if (kind === "job" && FINAL.has(data.status)) stopListening();
        schedule();
      },
      onError: () => {
        if (source) setLive("reconnecting");
      },
    });
    if (destroyed) source.close();
  }

  function stopListening() {
    source?.close();
    source = null;
    listening = false;
    setLive("done");
  }

  start();
  return {
    destroy() {
      destroyed = true;
      clearTimeout(timer);
      source?.close();
      setLive(null);
      card.hidden = true;
      for (const plot of [paretoPlot, hvPlot, progressPlot]) Plotly.purge(plot);
      fidelity.destroy();
      matters.destroy();
    },
  };
}
