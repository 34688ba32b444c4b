"""Search space presets and overrides."""

import pytest
from pydantic import ValidationError

from search_space import PRESETS, get_preset


def test_paper_preset_is_table_1():
    paper = PRESETS["paper"]
    assert set(paper.layer_kinds) == {"attention", "moe", "ffn"}
    assert paper.d_model == [512, 768, 1024]
    assert paper.moe_hidden == paper.ffn_hidden == [1536, 2048, 3072, 4096]
    assert paper.attention_heads == [12, 16, 20]
    assert set(paper.gating) == {"top2", "expert_choice"}
    assert paper.capacity_factor == [1.0, 2.0, 3.0, 4.0]
    assert set(paper.activation) == {"reglu", "geglu", "relu", "gelu"}
    assert paper.num_experts == [32]
    assert paper.min_layers == paper.max_layers == 8
    assert paper.repeats == [3]


def test_proxy_preset_keeps_the_structure_smaller():
    proxy, paper = PRESETS["proxy-cpu"], PRESETS["paper"]
    assert max(proxy.d_model) <= 192 and min(proxy.d_model) >= 96
    assert 4 <= proxy.num_experts[0] <= 8
    assert proxy.layer_kinds == paper.layer_kinds and proxy.gating == paper.gating
    assert proxy.vocab_size == 256


def test_override_replaces_items_and_keeps_the_rest():
    base = PRESETS["proxy-cpu"]
    small = base.override({"d_model": [64], "gating": ["top1"]})
    assert small.d_model == [64] and small.gating == ["top1"]
    assert small.ffn_hidden == base.ffn_hidden
    assert base.d_model == [96, 128, 160, 192]  # the preset itself is untouched


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"d_model": []}, "d_model"),
        ({"d_model": [0]}, "d_model.0"),
        ({"d_model": ["big"]}, "d_model.0"),
        ({"gating": ["top3"]}, "gating.0"),
        ({"capacity_factor": [0.0]}, "capacity_factor.0"),
        ({"activation": ["relu", "relu"]}, "activation"),
        ({"min_layers": 0}, "min_layers"),
        ({"width": [1]}, "width"),
        ({"repeats": 1}, "repeats"),
    ],
)
def test_bad_override_names_the_field(overrides, field):
    with pytest.raises(ValidationError) as info:
        PRESETS["proxy-cpu"].override(overrides)
    assert field in [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]


def test_inconsistent_layer_bounds_are_refused():
    with pytest.raises(ValidationError, match="min_layers"):
        PRESETS["proxy-cpu"].override({"min_layers": 6, "max_layers": 3})


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'tiny'"):
        get_preset("tiny")


def test_proxy_gpu_preset_is_the_paper_structure_at_a_gpu_size():
    """The GPU proxy keeps the paper's kinds, routing, widths and experts, and costs what
    the README's "Running on GPUs and TPUs" says: its GLaM baseline has 77.1M activated and
    501.8M parameters, and a training step at batch 32 is 7.9 TFLOPs, so a minute of an
    H100-class GPU (989 TFLOP/s bf16) at 45% MFU trains it for thousands of steps."""
    from search_space import baseline
    from search_space.cost import cost

    gpu, paper = PRESETS["proxy-gpu"], PRESETS["paper"]
    for item in ("layer_kinds", "gating", "capacity_factor", "activation", "num_experts",
                 "ffn_hidden", "moe_hidden", "d_model", "head_dim"):  # fmt: skip
        assert getattr(gpu, item) == getattr(paper, item), item
    assert gpu.vocab_size >= 32_000 and gpu.seq_len == 512 and gpu.repeats == [1]
    report = cost(baseline("glam", gpu))
    assert report.params_activated == pytest.approx(77.1e6, rel=0.005)
    assert report.params_total == pytest.approx(501.8e6, rel=0.005)
    step_flops = report.train_flops_per_token * 32 * gpu.seq_len
    assert step_flops == pytest.approx(7.89e12, rel=0.005)
    steps_per_minute = 60 * 0.45 * 989e12 / step_flops
    assert 1_000 < steps_per_minute < 10_000
