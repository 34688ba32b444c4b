"""Cost model: parameters, activated parameters, FLOPs and activation memory of a spec.

Parameter counts are exact for the conventions fixed in `specs` (the Flax model is tested
against them). FLOPs are forward matmul FLOPs per token (2 per multiply-add; training is 3x
forward); attention scores count the full sequence, as a dense causal kernel computes them.

MoE accounting, per token on average:
- activated parameters: token choice top-k touches k experts; expert choice touches c
  experts (c = capacity factor: each expert takes tokens x c / experts tokens);
- FLOPs count what the experts compute, capacity slots included: token choice fills
  k x c experts' worth of slots per token (empty slots are computed too), expert choice c.
Both are capped at the number of experts.
- inference FLOPs (`inference_flops_per_token`): what the model computes with its inference
  routing (an exported model decoding at batch size 1, or `ProxyLM(..., inference=True)`):
  expert choice sends each token to its top round(c) experts (at least 1, at most E) and
  computes only those; token choice computes as in training.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from search_space.specs import (
    GATED_ACTIVATIONS,
    ArchSpec,
    AttentionSpec,
    FFNSpec,
    MoESpec,
)


def token_choice_capacity(tokens: int, num_experts: int, top_k: int, capacity: float) -> int:
    """Slots per expert for token-choice top-k routing over a group of `tokens`."""
    return min(tokens, math.ceil(top_k * tokens * capacity / num_experts))


def expert_choice_capacity(tokens: int, num_experts: int, capacity: float) -> int:
    """Tokens each expert picks under expert-choice routing over a group of `tokens`."""
    return min(tokens, math.ceil(tokens * capacity / num_experts))


def expert_choice_min_batch(num_experts: int, capacity: float) -> int:
    """The smallest batch at which experts can choose among the tokens at one position
    (batch x capacity >= experts): below it a layer cannot route by expert choice."""
    return math.ceil(num_experts / capacity)


def norm_params(norm: str, d_model: int) -> int:
    return 2 * d_model if norm == "layernorm" else d_model


def ffn_matrices(activation: str) -> int:
    """Gated activations (ReGLU, GEGLU, SwiGLU) use three matrices, the others two."""
    return 3 if activation in GATED_ACTIVATIONS else 2


def moe_experts_used(layer: MoESpec) -> float:
    """Experts' worth of parameters a token touches on average."""
    used = layer.top_k if layer.gating != "expert_choice" else layer.capacity_factor
    return min(float(used), float(layer.num_experts))


def moe_experts_computed(layer: MoESpec) -> float:
    """Experts' worth of FLOPs computed per token on average, capacity slots included."""
    if layer.gating == "expert_choice":
        return min(layer.capacity_factor, float(layer.num_experts))
    return min(layer.top_k * layer.capacity_factor, float(layer.num_experts))


def moe_experts_computed_inference(layer: MoESpec) -> float:
    """Experts' worth of FLOPs computed per token with the model's inference routing:
    expert choice computes each token's top round(c) experts (at least 1, at most E);
    token choice the same as in training (`moe_experts_computed`)."""
    if layer.gating == "expert_choice":
        return float(min(max(1, round(layer.capacity_factor)), layer.num_experts))
    return moe_experts_computed(layer)


class LayerCost(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int
    kind: str
    params: int
    params_activated: int
    flops_per_token: int
    inference_flops_per_token: int
    activation_values_per_token: int


class CostReport(BaseModel):
    """Totals for the whole model; `layers` is one block (multiply by `repeats`)."""

    model_config = ConfigDict(frozen=True)

    params_total: int
    params_activated: int
    params_embedding: int
    params_per_block: int
    flops_per_token: int
    train_flops_per_token: int
    inference_flops_per_token: int  # forward, inference routing (see the module docstring)
    activation_bytes_per_sequence: int
    repeats: int
    layers: list[LayerCost]


def layer_cost(
    layer: AttentionSpec | FFNSpec | MoESpec, index: int, d: int, norm: str, seq_len: int
) -> LayerCost:
    pre_norm = norm_params(norm, d)
    if isinstance(layer, AttentionSpec):
        inner = layer.inner
        proj = 4 * d * inner
        params = pre_norm + proj
        flops = 2 * proj + 4 * seq_len * inner
        # normed input, q, k, v, context, per-head scores over the sequence
        values = d + 4 * inner + layer.heads * seq_len
        return LayerCost(
            index=index,
            kind=layer.kind,
            params=params,
            params_activated=params,
            flops_per_token=flops,
            inference_flops_per_token=flops,
            activation_values_per_token=values,
        )
    mats = ffn_matrices(layer.activation)
    expert = mats * d * layer.hidden
    hidden_values = mats * layer.hidden  # pre-activations (gate and up) and their product
    if isinstance(layer, FFNSpec):
        params = pre_norm + expert
        return LayerCost(
            index=index,
            kind=layer.kind,
            params=params,
            params_activated=params,
            flops_per_token=2 * expert,
            inference_flops_per_token=2 * expert,
            activation_values_per_token=d + hidden_values,
        )
    router = d * layer.num_experts
    params = pre_norm + router + layer.num_experts * expert
    activated = pre_norm + router + round(moe_experts_used(layer) * expert)
    computed = moe_experts_computed(layer)
    flops = 2 * router + round(2 * computed * expert)
    inference_flops = 2 * router + round(2 * moe_experts_computed_inference(layer) * expert)
    values = d + layer.num_experts + round(computed * (d + hidden_values))
    return LayerCost(
        index=index,
        kind=layer.kind,
        params=params,
        params_activated=activated,
        flops_per_token=flops,
        inference_flops_per_token=inference_flops,
        activation_values_per_token=values,
    )


def cost(spec: ArchSpec, bytes_per_value: int = 4) -> CostReport:
    """Exact parameter counts and estimated FLOPs / activation memory of `spec`."""
    block = spec.block
    d = block.d_model
    layers = [
        layer_cost(layer, i, d, block.norm, spec.seq_len) for i, layer in enumerate(block.layers)
    ]
    per_block = sum(c.params for c in layers)
    embedding = spec.vocab_size * d + (spec.seq_len * d if spec.positions == "learned" else 0)
    head = 0 if spec.tied_embeddings else d * spec.vocab_size
    final_norm = norm_params(block.norm, d)
    outside = embedding + head + final_norm
    head_flops = 2 * d * spec.vocab_size
    flops = spec.repeats * sum(c.flops_per_token for c in layers) + head_flops
    inference = spec.repeats * sum(c.inference_flops_per_token for c in layers) + head_flops
    values = spec.repeats * sum(c.activation_values_per_token for c in layers)
    values += d + spec.vocab_size  # final norm input, logits
    return CostReport(
        params_total=outside + spec.repeats * per_block,
        params_activated=outside + spec.repeats * sum(c.params_activated for c in layers),
        params_embedding=embedding + head,
        params_per_block=per_block,
        flops_per_token=flops,
        train_flops_per_token=3 * flops,
        inference_flops_per_token=inference,
        activation_bytes_per_sequence=values * spec.seq_len * bytes_per_value,
        repeats=spec.repeats,
        layers=layers,
    )


def flop_matched_dense(spec: ArchSpec) -> ArchSpec:
    """`spec` with every MoE layer replaced by a dense FFN of the same activated FLOPs
    (hidden x the experts computed per token, capacity slots included; no router): the
    dense block an MoE block's step time is compared with."""
    layers = [
        FFNSpec(
            hidden=max(1, round(layer.hidden * moe_experts_computed(layer))),
            activation=layer.activation,
        ).model_dump()
        if isinstance(layer, MoESpec)
        else layer.model_dump()
        for layer in spec.block.layers
    ]
    data = spec.model_dump()
    return ArchSpec.model_validate({**data, "block": {**data["block"], "layers": layers}})
