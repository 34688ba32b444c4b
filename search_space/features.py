"""Derived features of a spec: numbers that describe a block for analysis (which properties
explain a candidate's perplexity or step time), not for building it.

Every feature is a float, defined for every spec (the order of `FEATURES`):

- `attention_fraction`, `ffn_fraction`, `moe_fraction`: the shares of the block's
  sub-layers of each kind (they sum to 1): the paper's "ratio of layer types". `layers`:
  sub-layers in the block; `attention_layers`, `ffn_layers`, `moe_layers`: how many of each.
- `first_moe_position`: index of the first MoE sub-layer over the number of sub-layers
  (0 = the block starts with one); 1.0 when the block has none (one past the last position).
- `gating_top1`, `gating_top2`, `gating_expert_choice`: shares of the MoE sub-layers by
  gating (0 without MoE); `capacity_factor`, `experts`: means over the MoE sub-layers (0
  without MoE).
- `attention_width`, `ffn_width`, `moe_width`: mean width of the sub-layers of that kind
  over d_model (attention: heads x head_dim; FFN and MoE: hidden units per expert); 0 when the
  block has none of that kind.
- `d_model`, `repeats`: the model width and how many times the block is stacked.
- `activation_<name>`, one per activation: share of the FFN and MoE sub-layers using it (0
  when the block has neither).
- `rmsnorm`: 1 for RMSNorm, 0 for LayerNorm.
- `params_total`, `params_activated`, `flops_per_token`: of the whole model, from
  `cost.cost` (activated: what a token touches; FLOPs: forward, per token).
"""

from __future__ import annotations

from statistics import fmean
from typing import Any

from pydantic import ValidationError

from search_space.cost import cost
from search_space.specs import (
    ACTIVATIONS,
    GATINGS,
    KINDS,
    ArchSpec,
    AttentionSpec,
    FFNSpec,
    MoESpec,
)

FEATURES: tuple[str, ...] = (
    *(f"{kind}_fraction" for kind in KINDS),
    "layers",
    *(f"{kind}_layers" for kind in KINDS),
    "first_moe_position",
    *(f"gating_{gating}" for gating in GATINGS),
    "capacity_factor",
    "experts",
    "attention_width",
    "ffn_width",
    "moe_width",
    "d_model",
    "repeats",
    *(f"activation_{activation}" for activation in ACTIVATIONS),
    "rmsnorm",
    "params_total",
    "params_activated",
    "flops_per_token",
)


def _mean(values: list[float]) -> float:
    return fmean(values) if values else 0.0


def _share(values: list[str], value: str) -> float:
    return values.count(value) / len(values) if values else 0.0


def block_features(spec: ArchSpec) -> dict[str, float]:
    """The features of `spec`, keyed and ordered as `FEATURES` (see the module docstring)."""
    block = spec.block
    d = block.d_model
    layers = block.layers
    n = len(layers)
    attention = [layer for layer in layers if isinstance(layer, AttentionSpec)]
    ffn = [layer for layer in layers if isinstance(layer, FFNSpec)]
    moe = [layer for layer in layers if isinstance(layer, MoESpec)]
    counts = {"attention": len(attention), "ffn": len(ffn), "moe": len(moe)}
    first_moe = next((i for i, layer in enumerate(layers) if isinstance(layer, MoESpec)), n)
    gatings = [layer.gating for layer in moe]
    activations = [layer.activation for layer in (*ffn, *moe)]
    report = cost(spec)
    features = {
        **{f"{kind}_fraction": count / n for kind, count in counts.items()},
        "layers": n,
        **{f"{kind}_layers": count for kind, count in counts.items()},
        "first_moe_position": first_moe / n,
        **{f"gating_{gating}": _share(gatings, gating) for gating in GATINGS},
        "capacity_factor": _mean([layer.capacity_factor for layer in moe]),
        "experts": _mean([layer.num_experts for layer in moe]),
        "attention_width": _mean([layer.inner / d for layer in attention]),
        "ffn_width": _mean([layer.hidden / d for layer in ffn]),
        "moe_width": _mean([layer.hidden / d for layer in moe]),
        "d_model": d,
        "repeats": spec.repeats,
        **{f"activation_{name}": _share(activations, name) for name in ACTIVATIONS},
        "rmsnorm": 1 if block.norm == "rmsnorm" else 0,
        "params_total": report.params_total,
        "params_activated": report.params_activated,
        "flops_per_token": report.flops_per_token,
    }
    return {name: float(features[name]) for name in FEATURES}


def spec_features(data: Any) -> dict[str, float]:
    """The features of a spec given as JSON data (a stored candidate's), or {} when the data
    is not a valid spec (a row written by hand, not through a search)."""
    try:
        spec = ArchSpec.model_validate(data)
    except ValidationError:
        return {}
    return block_features(spec)
