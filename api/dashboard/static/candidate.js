// One candidate: its note, its block drawn, metrics, its runs on the fidelity ladder and in the
// confirmation, learning curve, MoE expert load, lineage, exports.
import { download, get } from "./api.js";
import { blockDiagram } from "./block.js";
import {
  add,
  axis,
  STATUS,
  badge,
  baseLayout,
  budgetWords,
  count,
  describe,
  crumbs,
  el,
  meanSe,
  num,
  ORIGIN,
  plotlyConfig,
  saveBlob,
  showBanner,
} from "./format.js";
import { notePanel } from "./notes.js";

const seconds = (v) => (v === null || v === undefined ? "–" : `${num(v, 1)} s`);
const ms = (v) => (v === null || v === undefined ? "–" : `${num(v, 1)} ms`);
const present = (v) => v !== null && v !== undefined;
// [label, value, shown when (default: always), explanation on hover]
const METRICS = [
  ["Perplexity", (c) => num(c.perplexity, 3)],
  ["Validation loss", (c) => num(c.val_loss, 4)],
  [
    "Val loss (inference routing)",
    (c) => num(c.val_loss_inference, 4),
    (c) => present(c.val_loss_inference),
    "Expert choice with the batch-1 routing an exported model uses at inference",
  ],
  ["Bits per byte", (c) => num(c.bits_per_byte, 3)],
  [
    "Step time / baseline",
    (c) => (present(c.step_time_ratio) ? `${num(c.step_time_ratio, 3)}×` : "–"),
    null,
    "Step time over the baseline block's, timed on the same worker slot under the same load " +
      "(1.0 = the baseline); the Pareto front and the step-time limit use it",
  ],
  ["Step time (median)", (c) => ms(c.step_time_ms)],
  ["Step time (p90)", (c) => ms(c.step_time_p90_ms)],
  [
    "Baseline step time (same slot)",
    (c) => ms(c.reference_step_time_ms),
    null,
    "The job's baseline block timed on this trial's slot, alongside it",
  ],
  ["Device", (c) => c.device_kind || "–"],
  ["Tokens / s", (c) => count(c.tokens_per_s === null ? null : Math.round(c.tokens_per_s))],
  ["Steps", (c) => count(c.steps)],
  ["Tokens seen", (c) => count(c.tokens)],
  ["Parameters", (c) => count(c.params_total)],
  ["Activated / token", (c) => count(c.params_activated)],
  ["FLOPs / token", (c) => count(c.flops_per_token)],
  ["MFU", (c) => (c.mfu === null ? "–" : `${(100 * c.mfu).toFixed(1)}%`)],
  ["Training", (c) => seconds(c.train_s)],
  ["Compile", (c) => seconds(c.compile_s)],
  ["Evaluation", (c) => seconds(c.eval_s)],
  ["Reference timing", (c) => seconds(c.reference_s)],
  ["Feasible", (c) => (c.feasible === null ? "–" : c.feasible ? "yes" : "no (too slow)")],
  ["Attempt", (c) => String(c.attempt)],
  ["Ray node", (c) => (c.node_id ? c.node_id.slice(0, 12) : "–")],
];

function metricsList(c) {
  return el(
    "dl",
    { class: "metrics" },
    METRICS.filter(([, , when]) => !when || when(c)).map(([label, value, , title]) => [
      el("dt", { title }, label),
      el("dd", {}, value(c)),
    ]),
  );
}

// Validation loss at fractions of the training budget, as a two-row table.
function checkpoints(c) {
  const at = Object.entries(c.val_loss_at || {}).sort(([a], [b]) => Number(a) - Number(b));
  if (!at.length) return null;
  const pct = (fraction) => `${Math.round(100 * Number(fraction))}%`;
  return el(
    "div",
    { class: "checkpoints" },
    el("p", { class: "muted small" }, "Validation loss at fractions of the training budget:"),
    el(
      "table",
      { id: "val-loss-at" },
      el(
        "tr",
        {},
        el("th", { scope: "row" }, "budget"),
        at.map(([fraction]) =>
          el("th", { scope: "col", "data-fraction": fraction }, pct(fraction)),
        ),
      ),
      el(
        "tr",
        {},
        el("th", { scope: "row" }, "val loss"),
        at.map(([, loss]) => el("td", {}, num(loss, 4))),
      ),
    ),
  );
}

const stageName = (stage, rung) =>
  stage === "confirm" ? `confirm (from rung ${rung})` : `rung ${rung}`;

// Per (stage, rung): the mean ± standard error over its seeds.
function rungSummary(c) {
  const rungs = c.rungs || [];
  if (!rungs.length) return null;
  const cell = (summary, digits) =>
    el(
      "td",
      { class: "num" },
      meanSe(summary, digits),
      summary?.n ? el("span", { class: "muted" }, ` (n=${summary.n})`) : null,
    );
  return el(
    "table",
    { class: "data compact", id: "rung-summary" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", { scope: "col" }, "Stage"),
        el("th", { scope: "col", class: "num" }, "Runs"),
        el(
          "th",
          { scope: "col", class: "num", title: "Mean ± standard error over seeds" },
          "Val loss",
        ),
        el("th", { scope: "col", class: "num" }, "Perplexity"),
        el("th", { scope: "col", class: "num" }, "Step time / baseline"),
      ),
    ),
    el(
      "tbody",
      {},
      rungs.map((r) =>
        el(
          "tr",
          { "data-stage": r.stage, "data-rung": r.rung },
          el("td", {}, stageName(r.stage, r.rung)),
          el("td", { class: "num" }, String(r.runs ?? "–")),
          cell(r.val_loss, 4),
          cell(r.perplexity, 3),
          cell(r.step_time_ratio, 3),
        ),
      ),
    ),
  );
}

const RUN_COLUMNS = [
  ["Stage", (r) => (r.stage === "confirm" ? "confirm" : "rung")],
  ["Rung", (r) => String(r.rung)],
  ["Seed", (r) => String(r.seed ?? "–"), "num"],
  [
    "Origin",
    (r) =>
      r.id === null
        ? el("span", { title: "The candidate's own trial in the search" }, "own trial")
        : el("span", { title: ORIGIN[r.origin]?.label || null }, r.origin || "–"),
  ],
  ["Status", (r) => badge(r.status)],
  ["Budget", (r) => budgetWords(r.budget), "num"],
  ["Val loss", (r) => num(r.val_loss, 4), "num"],
  ["Perplexity", (r) => num(r.perplexity, 3), "num"],
  ["Step / base", (r) => num(r.step_time_ratio, 3), "num"],
  ["Steps", (r) => count(r.steps), "num"],
  [
    "Reason",
    (r) => (r.reason ? el("span", { class: "clip reason", title: r.reason }, r.reason) : ""),
  ],
];

// The own trial first, then by stage (the ladder, then confirmation), rung and seed.
function runOrder(a, b) {
  const key = (r) => [r.stage === "confirm" ? 1 : 0, r.rung, r.id === null ? 0 : 1, r.seed ?? 0];
  const [x, y] = [key(a), key(b)];
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return 0;
}

function runsTable(c) {
  return el(
    "table",
    { class: "data compact", id: "runs-table" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        RUN_COLUMNS.map(([label, , kind]) => el("th", { scope: "col", class: kind || "" }, label)),
      ),
    ),
    el(
      "tbody",
      {},
      [...c.runs].sort(runOrder).map((run) =>
        el(
          "tr",
          {
            "data-run": run.id === null ? "own" : run.id,
            "data-seed": run.seed,
            "data-stage": run.stage,
            "data-rung": run.rung,
            class: run.id === null ? "own-trial" : "",
          },
          RUN_COLUMNS.map(([, cell, kind]) => el("td", { class: kind || "" }, cell(run))),
        ),
      ),
    ),
  );
}

// Its runs: the own trial, higher rungs, noise seeds, confirmation. Shown when it has more
// than its own trial.
function runsCard(c) {
  const runs = c.runs || [];
  if (runs.length < 2 && !(c.rung > 0)) return null;
  return el(
    "section",
    { class: "card runs", id: "runs" },
    el("h2", {}, "Runs on the fidelity ladder"),
    el(
      "p",
      { class: "muted small" },
      "Rung 0 is the search's own trial; higher rungs train longer, with several seeds; " +
        "confirmation retrains with fresh seeds. Mean ± standard error over seeds:",
    ),
    rungSummary(c),
    el("div", { class: "scroll" }, runsTable(c)),
  );
}

function reasonBox(c) {
  if (!c.reason && !c.traceback) return null;
  const style = STATUS[c.status] || STATUS.failed;
  return el(
    "section",
    { class: "alert reason-box", style: `--c:${style.color}`, id: "reason" },
    el("strong", {}, `Why it ${c.status === "pruned" ? "was pruned" : c.status}: `),
    el("span", {}, c.reason || "(no reason recorded)"),
    c.traceback
      ? el("details", {}, el("summary", {}, "Traceback"), el("pre", {}, c.traceback))
      : null,
  );
}

function lineage(c) {
  // Root first: each step is the candidate made by applying its mutation to the one above.
  const chain = [...c.lineage].reverse();
  chain.push({ id: c.id, mutation: c.mutation, spec_hash: c.spec_hash });
  return el(
    "ol",
    { class: "lineage", id: "lineage" },
    chain.map((step, i) =>
      el(
        "li",
        { class: step.id === c.id ? "current" : "" },
        step.id === c.id
          ? el("strong", {}, `#${step.id} (this one)`)
          : el("a", { href: `#/candidates/${step.id}` }, `#${step.id}`),
        el(
          "span",
          { class: "mutation" },
          i === 0 && !c.lineage.length && !step.mutation ? "sampled" : step.mutation || "sampled",
        ),
        el("code", { class: "muted" }, step.spec_hash.slice(0, 10)),
      ),
    ),
  );
}

function exportBox(c) {
  const target = el(
    "select",
    { id: "export-target", "aria-label": "Scale to" },
    el("option", { value: "" }, "proxy size (as trained)"),
    ["100M", "1B", "8B"].map((t) => el("option", { value: t }, t)),
    el("option", { value: "custom" }, "custom…"),
  );
  const custom = el("input", {
    id: "export-custom",
    type: "text",
    placeholder: "e.g. 350M or 2.5e9",
    "aria-label": "Custom target parameters",
    hidden: true,
  });
  target.addEventListener("change", () => {
    custom.hidden = target.value !== "custom";
    if (!custom.hidden) custom.focus();
  });
  const chosen = () => (target.value === "custom" ? custom.value.trim() : target.value);
  const save = (format, useTarget) => async () => {
    try {
      const params = { format, target: useTarget ? chosen() : null };
      const { blob, filename } = await download(`candidates/${c.id}/export`, params);
      const suffix = params.target ? `-${params.target}` : "";
      saveBlob(blob, filename || `candidate-${c.id}${suffix}.${format === "flax" ? "py" : "json"}`);
    } catch (error) {
      showBanner(`Export failed: ${error.message}`);
    }
  };
  return el(
    "div",
    { class: "export" },
    el(
      "div",
      { class: "export-row" },
      el("label", { for: "export-target" }, "Scale to "),
      target,
      custom,
    ),
    el(
      "div",
      { class: "export-row" },
      el(
        "button",
        { type: "button", "data-export": "json", onclick: save("json", false) },
        "JSON + manifest",
      ),
      el(
        "button",
        { type: "button", "data-export": "flax", onclick: save("flax", true) },
        "Flax module",
      ),
      el(
        "button",
        { type: "button", "data-export": "config", onclick: save("config", true) },
        "Scaled config",
      ),
    ),
    el("p", { class: "muted small" }, "The Flax module and the config are scaled to the target."),
  );
}

function curvePlot(node, c) {
  const layout = baseLayout({
    xaxis: axis("training seconds"),
    yaxis: axis("training loss"),
    margin: { l: 56, r: 12, t: 8, b: 40 },
    showlegend: false,
  });
  const trace = {
    type: "scatter",
    mode: "lines",
    x: c.curve.map((p) => p[0]),
    y: c.curve.map((p) => p[1]),
    line: { color: STATUS.completed.color, width: 2 },
    hovertemplate: "%{x:.1f} s: loss %{y:.4f}<extra></extra>",
  };
  Plotly.newPlot(node, [trace], layout, plotlyConfig());
}

function moePlot(node, c) {
  const layers = c.moe || [];
  const traces = layers.map((stats, i) => ({
    type: "bar",
    name: `MoE ${i + 1} (drop ${(100 * stats.drop_fraction).toFixed(1)}%, entropy ${num(stats.router_entropy, 2)})`,
    x: stats.expert_load.map((_, e) => e),
    y: stats.expert_load,
    hovertemplate: "expert %{x}: %{y:.1%} of tokens<extra></extra>",
  }));
  const experts = layers.length ? layers[0].expert_load.length : 0;
  const layout = baseLayout({
    barmode: "group",
    xaxis: axis("expert", { dtick: 1, gridcolor: null }),
    yaxis: axis("share of tokens", { tickformat: ".0%" }),
    legend: { orientation: "h", y: -0.3, x: 0 },
    margin: { l: 56, r: 12, t: 8, b: 80 },
    shapes: experts
      ? [
          {
            type: "line",
            xref: "paper",
            x0: 0,
            x1: 1,
            y0: 1 / experts,
            y1: 1 / experts,
            line: { dash: "dot", color: "#868e96" },
          },
        ]
      : [],
  });
  Plotly.newPlot(node, traces, layout, plotlyConfig());
}

export function candidateView(root, candidateId) {
  let destroyed = false;
  const plots = [];
  async function load() {
    let c;
    let job;
    try {
      c = await get(`candidates/${candidateId}`);
      job = await get(`jobs/${c.job_id}`);
    } catch (error) {
      add(
        root,
        el("p", { class: "alert" }, `Could not load candidate ${candidateId}: ${error.message}`),
      );
      return;
    }
    if (destroyed) return;
    const curve = el("div", { id: "curve-plot", class: "plot small" });
    const moe = el("div", { id: "moe-plot", class: "plot small" });
    const hasMoe = (c.moe || []).length > 0;
    const note = notePanel("candidate-note", `candidates/${c.id}/note`);
    note.render(c.note, c.note_html);
    add(
      root,
      crumbs([job.name, `#/jobs/${job.id}`], `trial #${c.birth}`),
      el(
        "div",
        { class: "title-row" },
        el("h1", {}, `Candidate #${c.id}`),
        badge(c.status, c.feasible),
        c.is_baseline ? el("span", { class: "tag" }, "★ baseline") : null,
        c.rung > 0
          ? el(
              "span",
              { class: "tag", id: "rung-tag", title: "The highest rung it was promoted to" },
              `rung ${c.rung}`,
            )
          : null,
        el("span", { class: "spacer" }),
        el(
          "span",
          { class: "muted" },
          c.reused_from_id ? `result reused from #${c.reused_from_id}` : "",
        ),
      ),
      el("p", { class: "block-words", id: "block-words" }, describe(c.spec)),
      reasonBox(c),
      note.node,
      el("section", { class: "card" }, el("h2", {}, "Block"), blockDiagram(c.spec, c.moe)),
      runsCard(c),
      el(
        "div",
        { class: "grid-2" },
        el("section", { class: "card" }, el("h2", {}, "Metrics"), metricsList(c)),
        el(
          "div",
          { class: "col" },
          el(
            "section",
            { class: "card" },
            el("h2", {}, "Learning curve"),
            c.curve.length ? curve : el("p", { class: "muted" }, "No learning curve recorded."),
            checkpoints(c),
          ),
          el(
            "section",
            { class: "card" },
            el("h2", {}, "MoE expert load"),
            hasMoe
              ? moe
              : el(
                  "p",
                  { class: "muted" },
                  "No MoE statistics (no MoE layer, or the trial did not finish).",
                ),
          ),
        ),
      ),
      el(
        "div",
        { class: "grid-2" },
        el(
          "section",
          { class: "card" },
          el("h2", {}, "Lineage"),
          el(
            "p",
            { class: "muted small" },
            "From the first ancestor down; each line is the mutation that made it.",
          ),
          lineage(c),
        ),
        el("section", { class: "card" }, el("h2", {}, "Export"), exportBox(c)),
      ),
    );
    if (c.curve.length) {
      curvePlot(curve, c);
      plots.push(curve);
    }
    if (hasMoe) {
      moePlot(moe, c);
      plots.push(moe);
    }
    root.dataset.loaded = "1";
  }
  load();
  return {
    destroy() {
      destroyed = true;
      for (const plot of plots) Plotly.purge(plot);
    },
  };
}
