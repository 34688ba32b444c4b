"""Scaling a block to 100M / 1B / 8B activated parameters."""

import numpy as np
import pytest

from search_space import BASELINES, PRESETS, baseline, sample, scale
from search_space.scaling import describe_rounding
from search_space.specs import ArchSpec, AttentionSpec, BlockSpec, FFNSpec, MoESpec

rng = np.random.default_rng(3)
SPECS = (
    [baseline(name, PRESETS["proxy-cpu"]) for name in BASELINES]
    + [baseline("glam", PRESETS["paper"])]
    + [sample(PRESETS["proxy-cpu"], rng) for _ in range(4)]
    + [sample(PRESETS["paper"], rng) for _ in range(2)]
)
PAPER_STACKING = {"100M": (3, 32), "1B": (6, 64), "8B": (8, 64)}


@pytest.mark.parametrize("target", ["100M", "1B", "8B"])
@pytest.mark.parametrize("index", range(len(SPECS)))
def test_fit_lands_within_ten_percent(target, index):
    spec = SPECS[index]
    result = scale(spec, target)
    assert result.within_tolerance, result.relative_error
    assert abs(result.cost.params_activated / result.target_params - 1) <= 0.10
    scaled = result.spec
    assert scaled.vocab_size == 32_000 and scaled.seq_len == 1024
    assert scaled.repeats == PAPER_STACKING[target][0]
    assert [layer.kind for layer in scaled.block.layers] == [
        layer.kind for layer in spec.block.layers
    ]
    for layer in scaled.block.layers:
        if layer.kind == "moe":
            assert layer.num_experts == PAPER_STACKING[target][1]
    # widths keep their ratio to the model dim, up to rounding to a multiple (64, or 128 from
    # 512 on) moved by at most two multiples when the nearest ones miss the target
    for old, new in zip(spec.block.layers, scaled.block.layers, strict=True):
        if isinstance(old, FFNSpec):
            assert new.hidden / scaled.block.d_model == pytest.approx(
                old.hidden / spec.block.d_model, abs=(2.5 * 128 + 1) / scaled.block.d_model
            )


def test_numeric_target_and_other_vocabulary():
    result = scale(SPECS[1], "350M", vocab_size=50_000, seq_len=2048)
    assert result.within_tolerance and result.target_params == 350_000_000
    assert result.spec.vocab_size == 50_000
    assert scale(SPECS[1], 2.5e9).within_tolerance


def test_paper_recipe_reproduces_the_papers_stacking():
    spec = baseline("glam", PRESETS["paper"])  # d_model 768, the paper's baseline dim
    for target, mult in (("100M", 1), ("1B", 2), ("8B", 4)):
        result = scale(spec, target, recipe="paper")
        repeats, experts = PAPER_STACKING[target]
        assert result.spec.repeats == repeats
        assert result.spec.block.d_model == 768 * mult
        assert result.spec.block.layers[3].num_experts == experts
        assert result.recipe == "paper"
        assert result.relative_error == pytest.approx(
            result.cost.params_activated / result.target_params - 1
        )
    # a proxy block is first brought to the paper's 768 before the x1/x2/x4
    proxy = scale(baseline("glam"), "1B", recipe="paper").spec
    attn = proxy.block.layers[0]
    assert proxy.block.d_model == 1536 and isinstance(attn, AttentionSpec)


@pytest.mark.parametrize("target", ["huge", "0", "-5M", "1e20", "", "12Q"])
def test_bad_target_names_the_field(target):
    with pytest.raises(ValueError, match=r"^target"):
        scale(SPECS[0], target)


def test_paper_recipe_refuses_numbers_and_unknown_recipes():
    with pytest.raises(ValueError, match=r"^target"):
        scale(SPECS[0], "350M", recipe="paper")
    with pytest.raises(ValueError, match=r"^recipe"):
        scale(SPECS[0], "1B", recipe="magic")


# A block as the search returns them (Brainformer-1-like: attention, MoE and FFN interleaved,
# uneven widths): 20 and 12 heads and a 1.5x FFN gave 13, 77 or 116 heads and d 1056 before.
SEARCHED = ArchSpec(
    block=BlockSpec(
        d_model=768,
        norm="rmsnorm",
        layers=(
            AttentionSpec(heads=20, head_dim=64),
            MoESpec(
                hidden=3072, num_experts=32, gating="top2", capacity_factor=2.0, activation="gelu"
            ),
            FFNSpec(hidden=1536, activation="relu"),
            AttentionSpec(heads=12, head_dim=64),
            MoESpec(
                hidden=1536,
                num_experts=32,
                gating="expert_choice",
                capacity_factor=3.0,
                activation="reglu",
            ),
            FFNSpec(hidden=4096, activation="geglu"),
            AttentionSpec(heads=16, head_dim=64),
            MoESpec(
                hidden=2048, num_experts=32, gating="top2", capacity_factor=1.0, activation="geglu"
            ),
        ),
    ),
    repeats=3,
    vocab_size=32_000,
    seq_len=1024,
)
HARDWARE_SPECS = {
    **{name: baseline(name, PRESETS["paper"]) for name in BASELINES},
    "searched": SEARCHED,
    "proxy-glam": baseline("glam"),
}


@pytest.mark.parametrize("target", ["100M", "1B", "8B"])
@pytest.mark.parametrize("name", HARDWARE_SPECS)
def test_scaled_shapes_are_what_accelerators_tile_well(name, target):
    """Model, FFN and expert widths multiples of 128; heads a multiple of 8 at head dim 64 or
    128; still within 10% of the target, stacked as the paper does."""
    result = scale(HARDWARE_SPECS[name], target)
    assert result.within_tolerance, result.relative_error
    assert result.spec.repeats == PAPER_STACKING[target][0]
    block = result.spec.block
    assert block.d_model % 128 == 0, block.d_model
    for layer in block.layers:
        if isinstance(layer, AttentionSpec):
            assert layer.heads % 8 == 0 and layer.head_dim in (64, 128), layer
        else:
            assert layer.hidden % 128 == 0, layer


def test_the_rounding_says_what_was_rounded_from_what():
    result = scale(SEARCHED, "100M")
    notes = {note.field: note for note in result.rounding}
    d_model = notes["block.d_model"]  # the model dim the target asks for, then the grid's
    assert d_model.rounded == result.spec.block.d_model and d_model.multiple == 128
    assert abs(d_model.exact - d_model.rounded) <= 128
    heads = notes["block.layers.0.heads"]  # 20 heads x 64 at d 768: 1.67 x d / 64
    assert heads.exact == pytest.approx(20 * 64 / 768 * result.spec.block.d_model / 64)
    assert heads.rounded == result.spec.block.layers[0].heads and heads.multiple == 8
    hidden = notes["block.layers.2.hidden"]
    assert hidden.exact == pytest.approx(1536 / 768 * result.spec.block.d_model)
    assert hidden.rounded == result.spec.block.layers[2].hidden and hidden.multiple == 128
    assert "d_model" in describe_rounding(result.rounding) and "-> " in (
        describe_rounding(result.rounding)
    )


@pytest.mark.parametrize("target", [1e6, 10e6])
def test_small_targets_keep_a_finer_grid(target):
    """bench/reproduce.py scales to ~10M with a byte vocabulary: 128-wide steps would move
    such widths far from their ratio, so below 512 the model dim steps by 32, hidden by 64."""
    for spec in (baseline("glam"), baseline("dense"), SEARCHED):
        result = scale(spec, int(target), vocab_size=256, seq_len=64)
        assert result.within_tolerance, result.relative_error
        block = result.spec.block
        assert block.d_model < 512 and block.d_model % 32 == 0
        assert all(layer.hidden % 64 == 0 for layer in block.layers if layer.kind != "attention")
