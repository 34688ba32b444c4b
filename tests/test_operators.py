"""Sampling and mutation: children stay valid, differ from their parents, are seeded."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search_space import PRESETS, ArchSpec, SpaceViolation, baseline, mutate, sample, spec_hash
from search_space.space import SearchSpace

presets = st.sampled_from(sorted(PRESETS))
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@settings(max_examples=40)
@given(name=presets, seed=seeds)
def test_samples_are_valid_and_round_trip(name, seed):
    space = PRESETS[name]
    rng = np.random.default_rng(seed)
    for _ in range(100):
        spec = sample(space, rng)
        space.check(spec)
        again = ArchSpec.from_json(spec.to_json())
        assert again == spec and spec_hash(again) == spec_hash(spec)


@settings(max_examples=20)
@given(name=presets, seed=seeds)
def test_long_mutation_chains_stay_valid(name, seed):
    space = PRESETS[name]
    rng = np.random.default_rng(seed)
    parent = sample(space, rng)
    for _ in range(300):
        child, change = mutate(parent, space, rng)
        assert child != parent and spec_hash(child) != spec_hash(parent)
        assert change
        space.check(child)
        assert ArchSpec.from_json(child.to_json()) == child
        parent = child


def test_every_mutation_kind_occurs():
    space = PRESETS["proxy-cpu"]
    rng = np.random.default_rng(1)
    parent = sample(space, rng)
    seen = set()
    for _ in range(2000):
        child, change = mutate(parent, space, rng)
        seen.add(change.split(" ")[0] if not change.startswith("layer") else change.split(" ")[2])
        parent = child
    # change kind ("->" after layer i:), insert, delete, swap, per-layer fields, d_model
    assert {"insert", "delete", "swap", "d_model:"} <= seen
    assert {"gating:", "capacity_factor:", "hidden:", "activation:", "heads:"} <= seen
    assert seen & {"attn", "ffn", "moe"}  # "layer i: <old layer> -> <new kind>"


def test_same_seed_same_results():
    space = PRESETS["proxy-cpu"]
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    assert [sample(space, a) for _ in range(5)] == [sample(space, b) for _ in range(5)]
    spec = baseline("glam", space)
    assert mutate(spec, space, a) == mutate(spec, space, b)


def test_mutating_a_spec_outside_the_space_is_refused():
    with pytest.raises(SpaceViolation):
        mutate(baseline("glam", PRESETS["paper"]), PRESETS["proxy-cpu"], np.random.default_rng(0))


def test_a_space_with_a_single_point_has_no_mutation():
    space = SearchSpace(
        d_model=[64],
        norm=["rmsnorm"],
        layer_kinds=["ffn"],
        min_layers=1,
        max_layers=1,
        attention_heads=[2],
        head_dim=[32],
        ffn_hidden=[128],
        moe_hidden=[128],
        num_experts=[4],
        gating=["top2"],
        capacity_factor=[1.0],
        activation=["relu"],
        repeats=[1],
        vocab_size=256,
        seq_len=16,
    )
    spec = sample(space, np.random.default_rng(0))
    with pytest.raises(ValueError, match="no mutation"):
        mutate(spec, space, np.random.default_rng(0))
