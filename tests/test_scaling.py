"""Scaling a block to 100M / 1B / 8B activated parameters."""

import numpy as np
import pytest

from search_space import BASELINES, PRESETS, baseline, sample, scale
from search_space.specs import AttentionSpec, FFNSpec

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
    # widths keep their ratio to the model dim (up to rounding to multiples of 64)
    for old, new in zip(spec.block.layers, scaled.block.layers, strict=True):
        if isinstance(old, FFNSpec):
            assert new.hidden / scaled.block.d_model == pytest.approx(
                old.hidden / spec.block.d_model, abs=33 / scaled.block.d_model
            )  # hidden: nearest multiple of 64


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
