"""Architecture specs: what a candidate *is*, independent of any search space.

Specs are frozen pydantic models, so they are hashable, validate on construction (errors
carry the field path) and round-trip through JSON. Bounds here are sanity limits ("absurd
sizes"); what a particular search allows is checked by `SearchSpace.check`.

Model conventions fixed by the spec (the cost model and the Flax model both follow them):
pre-norm residual sub-layers, rotary or learned positions, no biases in linear layers,
norms with a scale (layernorm also a bias), a bias-free router of d_model x experts,
gated activations with three matrices, a tied output head counted once.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Kind = Literal["attention", "ffn", "moe"]
Activation = Literal["relu", "gelu", "reglu", "geglu", "swiglu", "squared_relu"]
Gating = Literal["top1", "top2", "expert_choice"]
Norm = Literal["layernorm", "rmsnorm"]
Positions = Literal["rotary", "learned"]

KINDS: tuple[Kind, ...] = ("attention", "ffn", "moe")
ACTIVATIONS: tuple[Activation, ...] = ("relu", "gelu", "reglu", "geglu", "swiglu", "squared_relu")
GATED_ACTIVATIONS: frozenset[str] = frozenset({"reglu", "geglu", "swiglu"})
GATINGS: tuple[Gating, ...] = ("top1", "top2", "expert_choice")
NORMS: tuple[Norm, ...] = ("layernorm", "rmsnorm")

# Sanity limits: anything beyond these is a typo, not an architecture.
MAX_D_MODEL = 65_536
MAX_HEADS = 1_024
MAX_HEAD_DIM = 1_024
MAX_HIDDEN = 1_048_576
MAX_EXPERTS = 4_096
MAX_CAPACITY = 64.0
MAX_LAYERS = 64
MAX_REPEATS = 1_024
MAX_VOCAB = 2_097_152
MAX_SEQ_LEN = 1_048_576

DModel = Annotated[int, Field(ge=8, le=MAX_D_MODEL, strict=True)]
Hidden = Annotated[int, Field(ge=1, le=MAX_HIDDEN, strict=True)]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AttentionSpec(_Spec):
    """Causal multi-head self-attention; inner width heads x head_dim, projected back."""

    kind: Literal["attention"] = "attention"
    heads: Annotated[int, Field(ge=1, le=MAX_HEADS, strict=True)]
    head_dim: Annotated[int, Field(ge=1, le=MAX_HEAD_DIM, strict=True)]

    @property
    def inner(self) -> int:
        return self.heads * self.head_dim


class FFNSpec(_Spec):
    """Dense feed-forward layer."""

    kind: Literal["ffn"] = "ffn"
    hidden: Hidden
    activation: Activation


class MoESpec(_Spec):
    """Sparsely gated mixture-of-experts FFN; every expert is an FFN of `hidden` units."""

    kind: Literal["moe"] = "moe"
    hidden: Hidden
    num_experts: Annotated[int, Field(ge=1, le=MAX_EXPERTS, strict=True)]
    gating: Gating
    capacity_factor: Annotated[
        float, Field(gt=0.0, le=MAX_CAPACITY, allow_inf_nan=False, strict=True)
    ]
    activation: Activation

    @property
    def top_k(self) -> int:
        """Experts per token for token-choice gating (0 for expert choice)."""
        return {"top1": 1, "top2": 2, "expert_choice": 0}[self.gating]


LayerSpec = Annotated[AttentionSpec | FFNSpec | MoESpec, Field(discriminator="kind")]


class BlockSpec(_Spec):
    """The searched unit: an ordered list of pre-norm residual sub-layers."""

    d_model: DModel
    norm: Norm
    layers: Annotated[tuple[LayerSpec, ...], Field(min_length=1, max_length=MAX_LAYERS)]


class ArchSpec(_Spec):
    """A whole proxy or target model: the block stacked `repeats` times."""

    schema_version: Literal[1] = SCHEMA_VERSION
    block: BlockSpec
    repeats: Annotated[int, Field(ge=1, le=MAX_REPEATS, strict=True)]
    vocab_size: Annotated[int, Field(ge=2, le=MAX_VOCAB, strict=True)]
    seq_len: Annotated[int, Field(ge=1, le=MAX_SEQ_LEN, strict=True)]
    tied_embeddings: Annotated[bool, Field(strict=True)] = True
    positions: Positions = "rotary"

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> ArchSpec:
        return cls.model_validate_json(text)


def canonical_json(spec: ArchSpec) -> str:
    """Key-sorted, whitespace-free JSON: the form that is hashed."""
    return json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def spec_hash(spec: ArchSpec) -> str:
    """Canonical hash: equal specs hash equally whatever the key order of their JSON."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def describe_layer(layer: AttentionSpec | FFNSpec | MoESpec) -> str:
    """One short phrase per sub-layer, for people (CLI, dashboard hover)."""
    if isinstance(layer, AttentionSpec):
        return f"attn {layer.heads}x{layer.head_dim}"
    if isinstance(layer, FFNSpec):
        return f"ffn {layer.hidden} {layer.activation}"
    return (
        f"moe {layer.num_experts}x{layer.hidden} {layer.gating} "
        f"c={layer.capacity_factor:g} {layer.activation}"
    )


def describe(spec: ArchSpec) -> str:
    layers = " | ".join(describe_layer(layer) for layer in spec.block.layers)
    return f"d={spec.block.d_model} {spec.block.norm} x{spec.repeats}: {layers}"
