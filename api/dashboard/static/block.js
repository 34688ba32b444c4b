// A drawing of a block: each sub-layer a coloured box with its kind and dims, in order.
// MoE boxes show their experts (shaded by measured load when the trial reported it).
import { el } from "./format.js";

const KIND = {
  attention: { title: "Attention", color: "#1c7ed6" },
  ffn: { title: "Dense FFN", color: "#2f9e44" },
  moe: { title: "MoE", color: "#e8590c" },
};
const MAX_EXPERT_CELLS = 64;

function dims(layer, d) {
  if (layer.kind === "attention") {
    return [`${layer.heads} heads × ${layer.head_dim}`, `inner ${layer.heads * layer.head_dim}`];
  }
  if (layer.kind === "ffn") return [`${d} → ${layer.hidden} → ${d}`, layer.activation];
  const gating =
    layer.gating === "expert_choice" ? "expert choice" : `token choice ${layer.gating}`;
  return [
    `${layer.num_experts} experts × ${layer.hidden}`,
    gating,
    `capacity ${layer.capacity_factor}`,
    layer.activation,
  ];
}

function experts(layer, load) {
  const shown = Math.min(layer.num_experts, MAX_EXPERT_CELLS);
  const uniform = 1 / layer.num_experts;
  const cells = [];
  for (let e = 0; e < shown; e++) {
    const share = load ? load[e] : null;
    // Opacity by load relative to uniform: an idle expert is pale, a hot one saturated.
    const alpha = share === null ? 0.55 : Math.max(0.12, Math.min(1, (0.5 * share) / uniform));
    cells.push(
      el("span", {
        class: "expert",
        style: `opacity:${alpha.toFixed(2)}`,
        title:
          share === null ? `expert ${e}` : `expert ${e}: ${(100 * share).toFixed(1)}% of tokens`,
      }),
    );
  }
  const more = layer.num_experts - shown;
  return el(
    "div",
    { class: "experts", "aria-label": `${layer.num_experts} experts` },
    cells,
    more > 0 ? el("span", { class: "muted" }, `+${more}`) : null,
  );
}

// `moe` is the trial's per-MoE-layer statistics (in stacked order); the first repeat's are shown.
export function blockDiagram(spec, moe) {
  const block = spec.block;
  const moeIndex = new Map();
  let m = 0;
  block.layers.forEach((layer, i) => {
    if (layer.kind === "moe") moeIndex.set(i, m++);
  });
  const boxes = block.layers.map((layer, i) => {
    const kind = KIND[layer.kind];
    const stats = moe && moeIndex.has(i) ? moe[moeIndex.get(i)] : null;
    return el(
      "div",
      {
        class: `layer layer-${layer.kind}`,
        style: `--k:${kind.color}`,
        "data-kind": layer.kind,
        role: "listitem",
      },
      el("div", { class: "layer-title" }, el("span", { class: "layer-index" }, i + 1), kind.title),
      dims(layer, block.d_model).map((line) => el("div", { class: "layer-dim" }, line)),
      layer.kind === "moe" ? experts(layer, stats?.expert_load) : null,
    );
  });
  const arrow = () => el("span", { class: "arrow", "aria-hidden": "true" }, "→");
  const flow = [];
  boxes.forEach((box, i) => {
    if (i) flow.push(arrow());
    flow.push(box);
  });
  return el(
    "div",
    { class: "block-diagram", id: "block-diagram" },
    el(
      "div",
      { class: "io" },
      el("strong", {}, "Embedding"),
      el("div", {}, `vocab ${spec.vocab_size} · d ${block.d_model}`),
      el("div", {}, `seq ${spec.seq_len} · ${spec.positions}`),
    ),
    arrow(),
    el(
      "div",
      { class: "stack" },
      el(
        "div",
        { class: "stack-label" },
        `Block × ${spec.repeats}`,
        el("span", { class: "muted" }, ` · d_model ${block.d_model} · pre-${block.norm} residual`),
      ),
      el("div", { class: "layers", role: "list" }, flow),
    ),
    arrow(),
    el(
      "div",
      { class: "io" },
      el("strong", {}, "LM head"),
      el("div", {}, spec.tied_embeddings ? "tied to embedding" : "separate weights"),
    ),
  );
}
