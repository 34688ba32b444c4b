"""Search spaces: the allowed values of every item, with the paper's and a CPU preset.

A space is a frozen pydantic model; a job overrides any item with `space.override(...)`,
and every error (unknown item, empty list, out-of-range value) names the field.
`check(spec)` tells whether a spec lies in the space, naming the offending field.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from search_space.cost import expert_choice_min_batch
from search_space.specs import (
    MAX_CAPACITY,
    MAX_EXPERTS,
    MAX_HEAD_DIM,
    MAX_HEADS,
    MAX_LAYERS,
    MAX_REPEATS,
    MAX_SEQ_LEN,
    MAX_VOCAB,
    Activation,
    ArchSpec,
    AttentionSpec,
    DModel,
    FFNSpec,
    Gating,
    Hidden,
    Kind,
    MoESpec,
    Norm,
    Positions,
)


class SpaceViolation(ValueError):
    """A spec lies outside a search space; `field` is the path of the first offending item."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        self.field = problems[0][0]
        super().__init__("; ".join(f"{field}: {msg}" for field, msg in problems))


T = TypeVar("T")
Choices = Annotated[list[T], Field(min_length=1)]


class SearchSpace(BaseModel):
    """Allowed values per item. Sampling draws uniformly from each list."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"
    d_model: Choices[DModel]
    norm: Choices[Norm]
    layer_kinds: Choices[Kind]
    min_layers: Annotated[int, Field(ge=1, le=MAX_LAYERS, strict=True)]
    max_layers: Annotated[int, Field(ge=1, le=MAX_LAYERS, strict=True)]
    attention_heads: Choices[Annotated[int, Field(ge=1, le=MAX_HEADS, strict=True)]]
    head_dim: Choices[Annotated[int, Field(ge=1, le=MAX_HEAD_DIM, strict=True)]]
    ffn_hidden: Choices[Hidden]
    moe_hidden: Choices[Hidden]
    num_experts: Choices[Annotated[int, Field(ge=1, le=MAX_EXPERTS, strict=True)]]
    gating: Choices[Gating]
    capacity_factor: Choices[
        Annotated[float, Field(gt=0.0, le=MAX_CAPACITY, allow_inf_nan=False, strict=True)]
    ]
    activation: Choices[Activation]
    repeats: Choices[Annotated[int, Field(ge=1, le=MAX_REPEATS, strict=True)]]
    vocab_size: Annotated[int, Field(ge=2, le=MAX_VOCAB, strict=True)]
    seq_len: Annotated[int, Field(ge=1, le=MAX_SEQ_LEN, strict=True)]
    tied_embeddings: Choices[Annotated[bool, Field(strict=True)]] = [True]
    positions: Choices[Positions] = ["rotary"]

    @field_validator("*")
    @classmethod
    def _no_duplicates(cls, value: Any, info: Any) -> Any:
        if isinstance(value, list) and len(set(value)) != len(value):
            raise ValueError(f"duplicate values in {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SearchSpace:
        if self.min_layers > self.max_layers:
            raise ValueError(
                f"min_layers ({self.min_layers}) exceeds max_layers ({self.max_layers})"
            )
        return self

    def override(self, overrides: dict[str, Any]) -> SearchSpace:
        """A copy with some items replaced, validated as a whole."""
        return SearchSpace.model_validate({**self.model_dump(), **overrides})

    # --- membership -------------------------------------------------------------------

    def violations(self, spec: ArchSpec) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []

        def want(field: str, value: Any, allowed: list[Any]) -> None:
            if value not in allowed:
                problems.append((field, f"{value!r} is not an allowed value (allowed: {allowed})"))

        want("repeats", spec.repeats, self.repeats)
        want("tied_embeddings", spec.tied_embeddings, self.tied_embeddings)
        want("positions", spec.positions, self.positions)
        if spec.vocab_size != self.vocab_size:
            want("vocab_size", spec.vocab_size, [self.vocab_size])
        if spec.seq_len != self.seq_len:
            want("seq_len", spec.seq_len, [self.seq_len])
        block = spec.block
        want("block.d_model", block.d_model, self.d_model)
        want("block.norm", block.norm, self.norm)
        n = len(block.layers)
        if not self.min_layers <= n <= self.max_layers:
            problems.append(
                ("block.layers", f"{n} layers, allowed {self.min_layers}..{self.max_layers}")
            )
        for i, layer in enumerate(block.layers):
            at = f"block.layers.{i}"
            want(f"{at}.kind", layer.kind, self.layer_kinds)
            if isinstance(layer, AttentionSpec):
                want(f"{at}.heads", layer.heads, self.attention_heads)
                want(f"{at}.head_dim", layer.head_dim, self.head_dim)
            elif isinstance(layer, FFNSpec):
                want(f"{at}.hidden", layer.hidden, self.ffn_hidden)
                want(f"{at}.activation", layer.activation, self.activation)
            elif isinstance(layer, MoESpec):
                want(f"{at}.hidden", layer.hidden, self.moe_hidden)
                want(f"{at}.num_experts", layer.num_experts, self.num_experts)
                want(f"{at}.gating", layer.gating, self.gating)
                want(f"{at}.capacity_factor", layer.capacity_factor, self.capacity_factor)
                want(f"{at}.activation", layer.activation, self.activation)
        return problems

    def contains(self, spec: ArchSpec) -> bool:
        return not self.violations(spec)

    def min_expert_choice_batch(self) -> int:
        """The smallest batch size at which every expert-choice layer of the space can train
        as specified (batch x capacity >= experts); 1 when the space has no expert choice."""
        if "expert_choice" not in self.gating or "moe" not in self.layer_kinds:
            return 1
        return expert_choice_min_batch(max(self.num_experts), min(self.capacity_factor))

    def check(self, spec: ArchSpec) -> ArchSpec:
        """Return the spec if it lies in the space, else raise `SpaceViolation`."""
        problems = self.violations(spec)
        if problems:
            raise SpaceViolation(problems)
        return spec


PAPER = SearchSpace(
    # Table 1 of Zhou et al. (2023); 32 experts at the 100M scale, 8 sub-layers per block,
    # the block stacked 3 times in the proxy.
    name="paper",
    d_model=[512, 768, 1024],
    norm=["rmsnorm"],
    layer_kinds=["attention", "moe", "ffn"],
    min_layers=8,
    max_layers=8,
    attention_heads=[12, 16, 20],
    head_dim=[64],
    ffn_hidden=[1536, 2048, 3072, 4096],
    moe_hidden=[1536, 2048, 3072, 4096],
    num_experts=[32],
    gating=["top2", "expert_choice"],
    capacity_factor=[1.0, 2.0, 3.0, 4.0],
    activation=["reglu", "geglu", "relu", "gelu"],
    repeats=[3],
    vocab_size=32_000,
    seq_len=1_024,
)

PROXY_CPU = PAPER.override(
    # The same structure scaled so a trial trains meaningfully in 10-60 s on 2 CPU cores
    # (measured: the dense baseline steps in ~100 ms at batch 16, so a 30 s trial makes ~300
    # steps): byte-level vocabulary, sequences of 64, narrow layers, 8 experts, one block of
    # 2..8 sub-layers (the paper's have 8, stacked 3 times).
    {
        "name": "proxy-cpu",
        "d_model": [96, 128, 160, 192],
        "min_layers": 2,
        "attention_heads": [2, 4, 6],
        "head_dim": [32],
        "ffn_hidden": [192, 256, 384, 512],
        "moe_hidden": [192, 256, 384, 512],
        "num_experts": [8],
        "repeats": [1],
        "vocab_size": 256,
        "seq_len": 64,
    }
)

PROXY_GPU = PAPER.override(
    # The paper's structure at a size that fills one modern GPU in 1-10 minute trials: its
    # widths and 32 experts, a sentencepiece-sized vocabulary (for `tokens:` data), sequences
    # of 512 and one block of 4..8 sub-layers (not 8 x 3): the GLaM baseline has 77M
    # activated (502M total) parameters and a training step at batch 32 is 7.9 TFLOPs (the
    # README's "Running on GPUs and TPUs" has the cost per trial).
    {
        "name": "proxy-gpu",
        "d_model": [512, 768, 1024],
        "min_layers": 4,
        "attention_heads": [8, 12, 16],
        "repeats": [1],
        "vocab_size": 32_768,
        "seq_len": 512,
    }
)

PRESETS: dict[str, SearchSpace] = {space.name: space for space in (PAPER, PROXY_CPU, PROXY_GPU)}


def get_preset(name: str) -> SearchSpace:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r} (known: {sorted(PRESETS)})") from None
