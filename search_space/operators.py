"""Seeded sampling and mutation of specs within a search space.

`mutate` picks uniformly among the mutation kinds that can apply to the parent, and each
kind always changes something, so a child is never equal to its parent; children are built
through the validating constructors from allowed values, so they always lie in the space.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from search_space.space import SearchSpace
from search_space.specs import (
    ArchSpec,
    AttentionSpec,
    BlockSpec,
    FFNSpec,
    MoESpec,
    describe_layer,
)

Layer = AttentionSpec | FFNSpec | MoESpec

# Per-layer fields that mutations may resample, with the space item holding their values.
LAYER_FIELDS: dict[str, dict[str, str]] = {
    "attention": {"heads": "attention_heads", "head_dim": "head_dim"},
    "ffn": {"hidden": "ffn_hidden", "activation": "activation"},
    "moe": {
        "hidden": "moe_hidden",
        "num_experts": "num_experts",
        "gating": "gating",
        "capacity_factor": "capacity_factor",
        "activation": "activation",
    },
}
LAYER_TYPES: dict[str, type[Layer]] = {"attention": AttentionSpec, "ffn": FFNSpec, "moe": MoESpec}
ARCH_FIELDS = ("norm", "repeats", "tied_embeddings", "positions")


def _pick(rng: np.random.Generator, options: list[Any] | tuple[Any, ...]) -> Any:
    """A uniform choice that keeps Python types (numpy's choice returns numpy scalars)."""
    return options[int(rng.integers(len(options)))]


def _other(rng: np.random.Generator, options: list[Any], current: Any) -> Any:
    return _pick(rng, [value for value in options if value != current])


def random_layer(space: SearchSpace, rng: np.random.Generator, kind: str | None = None) -> Layer:
    kind = kind or _pick(rng, space.layer_kinds)
    fields = {name: _pick(rng, getattr(space, item)) for name, item in LAYER_FIELDS[kind].items()}
    return LAYER_TYPES[kind](**fields)


def sample(space: SearchSpace, rng: np.random.Generator) -> ArchSpec:
    """A uniformly random architecture of the space."""
    n_layers = int(rng.integers(space.min_layers, space.max_layers + 1))
    block = BlockSpec(
        d_model=_pick(rng, space.d_model),
        norm=_pick(rng, space.norm),
        layers=tuple(random_layer(space, rng) for _ in range(n_layers)),
    )
    return ArchSpec(
        block=block,
        repeats=_pick(rng, space.repeats),
        vocab_size=space.vocab_size,
        seq_len=space.seq_len,
        tied_embeddings=_pick(rng, space.tied_embeddings),
        positions=_pick(rng, space.positions),
    )


def _with_layers(spec: ArchSpec, layers: list[Layer]) -> ArchSpec:
    block = BlockSpec(d_model=spec.block.d_model, norm=spec.block.norm, layers=tuple(layers))
    return ArchSpec(**{**_arch_fields(spec), "block": block})


def _arch_fields(spec: ArchSpec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in ArchSpec.model_fields}


Mutation = Callable[[], tuple[ArchSpec, str]]


def _mutations(spec: ArchSpec, space: SearchSpace, rng: np.random.Generator) -> list[Mutation]:
    """The mutations that apply to `spec`; each closure returns (child, description)."""
    layers = list(spec.block.layers)
    n = len(layers)
    moe_at = [i for i, layer in enumerate(layers) if isinstance(layer, MoESpec)]
    found: list[Mutation] = []

    def change_kind() -> tuple[ArchSpec, str]:
        i = int(rng.integers(n))
        new = random_layer(space, rng, _other(rng, space.layer_kinds, layers[i].kind))
        old, layers[i] = layers[i], new
        return _with_layers(
            spec, layers
        ), f"layer {i}: {describe_layer(old)} -> {describe_layer(new)}"

    def insert() -> tuple[ArchSpec, str]:
        i = int(rng.integers(n + 1))
        new = random_layer(space, rng)
        layers.insert(i, new)
        return _with_layers(spec, layers), f"insert at {i}: {describe_layer(new)}"

    def delete() -> tuple[ArchSpec, str]:
        i = int(rng.integers(n))
        old = layers.pop(i)
        return _with_layers(spec, layers), f"delete {i}: {describe_layer(old)}"

    distinct_pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if layers[i] != layers[j]]

    def swap() -> tuple[ArchSpec, str]:
        i, j = _pick(rng, distinct_pairs)
        layers[i], layers[j] = layers[j], layers[i]
        return _with_layers(spec, layers), f"swap {i} and {j}"

    def resample(field_filter: Callable[[str], bool]) -> list[tuple[int, str, str]]:
        return [
            (i, name, item)
            for i, layer in enumerate(layers)
            for name, item in LAYER_FIELDS[layer.kind].items()
            if field_filter(name) and len(getattr(space, item)) > 1
        ]

    def set_field(choices: list[tuple[int, str, str]]) -> Mutation:
        def run() -> tuple[ArchSpec, str]:
            i, name, item = _pick(rng, choices)
            old = getattr(layers[i], name)
            new = _other(rng, getattr(space, item), old)
            layers[i] = type(layers[i])(**{**layers[i].model_dump(), name: new})
            return _with_layers(spec, layers), f"layer {i} {name}: {old} -> {new}"

        return run

    def set_d_model() -> tuple[ArchSpec, str]:
        new = _other(rng, space.d_model, spec.block.d_model)
        block = BlockSpec(d_model=new, norm=spec.block.norm, layers=spec.block.layers)
        child = ArchSpec(**{**_arch_fields(spec), "block": block})
        return child, f"d_model: {spec.block.d_model} -> {new}"

    arch_choices = [name for name in ARCH_FIELDS if len(getattr(space, name)) > 1]

    def set_arch_field() -> tuple[ArchSpec, str]:
        name = _pick(rng, arch_choices)
        if name == "norm":
            old = spec.block.norm
            new = _other(rng, space.norm, old)
            block = BlockSpec(d_model=spec.block.d_model, norm=new, layers=spec.block.layers)
            child = ArchSpec(**{**_arch_fields(spec), "block": block})
        else:
            old = getattr(spec, name)
            new = _other(rng, getattr(space, name), old)
            child = ArchSpec(**{**_arch_fields(spec), name: new})
        return child, f"{name}: {old} -> {new}"

    if len(space.layer_kinds) > 1:
        found.append(change_kind)
    if n < space.max_layers:
        found.append(insert)
    if n > space.min_layers:
        found.append(delete)
    if distinct_pairs:
        found.append(swap)
    general = resample(lambda name: name not in ("gating", "capacity_factor"))
    if general:
        found.append(set_field(general))
    if moe_at and len(space.gating) > 1:
        found.append(set_field(resample(lambda name: name == "gating")))
    if moe_at and len(space.capacity_factor) > 1:
        found.append(set_field(resample(lambda name: name == "capacity_factor")))
    if len(space.d_model) > 1:
        found.append(set_d_model)
    if arch_choices:
        found.append(set_arch_field)
    return found


def mutate(spec: ArchSpec, space: SearchSpace, rng: np.random.Generator) -> tuple[ArchSpec, str]:
    """A child of `spec` that differs from it, and a short description of the change.

    The parent must lie in the space (`SpaceViolation` otherwise): a child then does too.
    """
    space.check(spec)
    mutations = _mutations(spec, space, rng)
    if not mutations:
        raise ValueError(f"search space {space.name!r} allows no mutation of this spec")
    return _pick(rng, mutations)()
