// Formatting, status styles and small DOM helpers shared by the views.

// Colour plus a glyph (and the marker symbol in plots): status never rests on colour alone.
export const STATUS = {
  completed: { glyph: "●", color: "#1f6fb4", symbol: "circle" },
  infeasible: { glyph: "✕", color: "#d9480f", symbol: "x-thin-open" },
  pruned: { glyph: "▽", color: "#868e96", symbol: "triangle-down-open" },
  failed: { glyph: "■", color: "#c92a2a", symbol: "square" },
  diverged: { glyph: "◆", color: "#7048e8", symbol: "diamond" },
  running: { glyph: "▶", color: "#2b8a3e", symbol: "circle" },
  queued: { glyph: "○", color: "#868e96", symbol: "circle-open" },
  paused: { glyph: "❚❚", color: "#e67700", symbol: "circle" },
  cancelled: { glyph: "⊘", color: "#868e96", symbol: "circle-open" },
};
// A job in one of these states runs no more trials.
export const FINAL = new Set(["completed", "failed", "cancelled"]);
export const BASELINE = { glyph: "★", color: "#212529", symbol: "star" };
export const FRONT_COLOR = "#e03131";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// The breadcrumb trail from the jobs list: each step a [text, href] link, the last plain text.
export function crumbs(...steps) {
  const parts = [el("a", { href: "#/" }, "Jobs")];
  for (const step of steps) {
    parts.push(" › ", Array.isArray(step) ? el("a", { href: step[1] }, step[0]) : step);
  }
  return el("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, ...parts);
}

const present = (children) =>
  children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false);

// replaceChildren and append, skipping null/false children as `el` does (the DOM would
// print "null").
export function fill(node, ...children) {
  node.replaceChildren(...present(children));
  return node;
}

export function add(node, ...children) {
  node.append(...present(children));
  return node;
}

export function badge(status, feasible) {
  const key = status === "completed" && feasible === false ? "infeasible" : status;
  const style = STATUS[key] || STATUS.queued;
  return el(
    "span",
    { class: "badge", style: `--c:${style.color}`, title: key },
    el("span", { "aria-hidden": "true" }, style.glyph),
    ` ${key}`,
  );
}

export function num(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

export function count(value) {
  if (value === null || value === undefined) return "–";
  const units = [
    [1e12, "T"],
    [1e9, "B"],
    [1e6, "M"],
    [1e3, "k"],
  ];
  for (const [size, unit] of units) {
    if (Math.abs(value) >= size) return `${(value / size).toPrecision(3)}${unit}`;
  }
  return String(value);
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(s / 3600);
  return `${h}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

// The block in words, as search_space.specs.describe_layer / describe.
export function describeLayer(layer) {
  if (layer.kind === "attention") return `attn ${layer.heads}x${layer.head_dim}`;
  if (layer.kind === "ffn") return `ffn ${layer.hidden} ${layer.activation}`;
  return (
    `moe ${layer.num_experts}x${layer.hidden} ${layer.gating} ` +
    `c=${layer.capacity_factor} ${layer.activation}`
  );
}

export function describe(spec) {
  if (!spec || !spec.block) return "(no block)";
  const layers = spec.block.layers.map(describeLayer).join(" | ");
  return `d=${spec.block.d_model} ${spec.block.norm} x${spec.repeats}: ${layers}`;
}

export function plotlyConfig() {
  return { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
}

// One plot axis as every chart here draws it: titled, light grid, no zero line.
export function axis(title, extra = {}) {
  return { title: { text: title }, gridcolor: "#eee", zeroline: false, ...extra };
}

export function baseLayout(extra = {}) {
  return {
    margin: { l: 56, r: 16, t: 36, b: 44 },
    font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12 },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#fff",
    hovermode: "closest",
    ...extra,
  };
}

export function showBanner(message) {
  const banner = document.getElementById("banner");
  banner.textContent = message;
  banner.hidden = false;
}

export function hideBanner() {
  document.getElementById("banner").hidden = true;
}

export function setLive(state) {
  const live = document.getElementById("live");
  live.hidden = !state;
  live.dataset.state = state || "";
  live.textContent = { live: "● live", reconnecting: "○ reconnecting…", done: "finished" }[state];
}

// Save a fetched file under its server-given name.
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// Why a run of the fidelity ladder ran (and how plots mark it): promoted by rank, at random
// (whatever its rank: keeps the fidelity estimate unbiased), the baseline (every rung's
// reference), the baseline's noise seeds, confirmation.
export const ORIGIN = {
  rank: { label: "promoted by rank", color: "#1f6fb4", symbol: "circle" },
  random: { label: "promoted at random", color: "#e8590c", symbol: "diamond" },
  baseline: { label: "baseline", ...BASELINE },
  noise: { label: "noise seed", color: "#868e96", symbol: "circle-open" },
  confirm: { label: "confirmation", color: "#2b8a3e", symbol: "square" },
};

const given = (v) => v !== null && v !== undefined && !Number.isNaN(v);

// A summary over seeds ({mean, se, low, high, n}) as "mean ± se" (no ± with one seed).
export function meanSe(summary, digits = 3) {
  if (!summary || !given(summary.mean)) return "–";
  const se = given(summary.se) ? ` ± ${num(summary.se, digits)}` : "";
  return `${num(summary.mean, digits)}${se}`;
}

// A summary or a difference ({mean, low, high}) as "mean [low, high]" (no interval: the mean).
export function interval(summary, digits = 3) {
  if (!summary || !given(summary.mean)) return "–";
  const range =
    given(summary.low) && given(summary.high)
      ? ` [${num(summary.low, digits)}, ${num(summary.high, digits)}]`
      : "";
  return `${num(summary.mean, digits)}${range}`;
}

// A budget as workers take it ({seconds}, {steps} or {flops}) in words.
export function budgetWords(budget) {
  if (!budget) return "–";
  if (given(budget.steps)) return `${count(budget.steps)} steps`;
  if (given(budget.flops)) return `${count(budget.flops)} FLOPs`;
  if (given(budget.seconds)) return duration(budget.seconds);
  return "–";
}

export function pValue(p) {
  if (!given(p)) return "–";
  return p < 0.001 ? p.toExponential(1) : p.toFixed(3);
}

// A seed count, given as a number or as the list of seeds.
export function seedCount(seeds) {
  if (Array.isArray(seeds)) return seeds.length;
  return given(seeds) ? seeds : null;
}

export const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
