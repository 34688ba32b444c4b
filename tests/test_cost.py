"""The cost model against counts worked out by hand for the baselines."""

import pytest

from search_space import PRESETS, ArchSpec, baseline, cost
from search_space.cost import expert_choice_capacity, token_choice_capacity

PROXY = PRESETS["proxy-cpu"]
# proxy-cpu baselines: d=128, rmsnorm, attention 4 heads x 32, FFN/MoE hidden 512 GEGLU,
# 8 experts, byte vocabulary, sequence 64, one block, tied embeddings.
D, V, T, H, E, R = 128, 256, 64, 512, 8, 1
NORM = D
ATTN = NORM + 4 * D * (4 * 32)
FFN = NORM + 3 * D * H
EXPERT = 3 * D * H
MOE = NORM + D * E + E * EXPERT
OUTSIDE = V * D + NORM  # tied embedding, final norm


def test_dense_baseline_by_hand():
    report = cost(baseline("dense", PROXY))
    assert report.params_per_block == 4 * (ATTN + FFN)
    assert report.params_total == OUTSIDE + R * 4 * (ATTN + FFN) == 1_082_496
    assert report.params_activated == report.params_total
    attn_flops = 2 * 4 * D * 128 + 4 * T * 128
    ffn_flops = 2 * 3 * D * H
    assert report.flops_per_token == R * 4 * (attn_flops + ffn_flops) + 2 * D * V
    assert report.train_flops_per_token == 3 * report.flops_per_token


@pytest.mark.parametrize(
    ("name", "experts_used", "experts_computed"),
    [("glam", 2, 2), ("switch", 1, 1), ("glam-ec", 2, 2)],  # top-2 c=1, top-1 c=1, EC c=2
)
def test_moe_baselines_by_hand(name, experts_used, experts_computed):
    report = cost(baseline(name, PROXY))
    block = 2 * (2 * ATTN + FFN + MOE)
    assert report.params_total == OUTSIDE + R * block
    activated_moe = NORM + D * E + experts_used * EXPERT
    assert report.params_activated == OUTSIDE + R * 2 * (2 * ATTN + FFN + activated_moe)
    moe = report.layers[3]
    assert moe.kind == "moe"
    assert moe.flops_per_token == 2 * D * E + experts_computed * 2 * EXPERT


@pytest.mark.parametrize("preset", ["paper", "proxy-cpu"])
def test_baseline_capacities_follow_the_sources(preset):
    """GShard/GLaM top-2: 2N/E slots per expert for N tokens (c = 1 in our convention, which
    multiplies by k); Switch top-1 at 1.25, the nearest preset value being 1; expert choice
    c = 2, whose N x 2 / E tokens per expert are the same compute as GLaM's slots."""
    space = PRESETS[preset]
    layers = {name: baseline(name, space).block.layers[3] for name in ("glam", "switch", "glam-ec")}
    assert [(m.gating, m.capacity_factor) for m in layers.values()] == [
        ("top2", 1.0),
        ("top1", 1.0),
        ("expert_choice", 2.0),
    ]
    n, e = space.seq_len, space.num_experts[0]
    glam = layers["glam"]
    assert token_choice_capacity(n, e, glam.top_k, glam.capacity_factor) == 2 * n // e
    assert expert_choice_capacity(n, e, layers["glam-ec"].capacity_factor) == 2 * n // e
    assert cost(baseline("glam", space)).flops_per_token == (
        cost(baseline("glam-ec", space)).flops_per_token
    )
    # Where the space allows them, the sources' values themselves.
    finer = space.override({"capacity_factor": [1.0, 1.25, 2.0]})
    assert [baseline(name, finer).block.layers[3].capacity_factor for name in layers] == [
        1.0,
        1.25,
        2.0,
    ]


def test_untied_head_learned_positions_layernorm_and_plain_activation():
    spec = ArchSpec.model_validate(
        {
            "block": {
                "d_model": 64,
                "norm": "layernorm",
                "layers": [
                    {"kind": "attention", "heads": 3, "head_dim": 16},
                    {"kind": "ffn", "hidden": 100, "activation": "relu"},
                    {
                        "kind": "moe",
                        "hidden": 50,
                        "num_experts": 4,
                        "gating": "expert_choice",
                        "capacity_factor": 1.5,
                        "activation": "squared_relu",
                    },
                ],
            },
            "repeats": 3,
            "vocab_size": 1000,
            "seq_len": 32,
            "tied_embeddings": False,
            "positions": "learned",
        }
    )
    d = 64
    ln = 2 * d
    attn = ln + 4 * d * 48
    ffn = ln + 2 * d * 100
    moe = ln + d * 4 + 4 * 2 * d * 50
    outside = 1000 * d + 32 * d + d * 1000 + ln
    report = cost(spec)
    assert report.params_total == outside + 3 * (attn + ffn + moe)
    assert report.params_embedding == 1000 * d + 32 * d + d * 1000
    moe_activated = ln + d * 4 + round(1.5 * 2 * d * 50)
    assert report.params_activated == outside + 3 * (attn + ffn + moe_activated)


def test_paper_dense_baseline_by_hand():
    # d=768, 12 heads x 64, FFN 3072 GEGLU, (attn, ffn) x 4 per block, 3 blocks, vocab 32k.
    d = 768
    block = 4 * ((d + 4 * d * 768) + (d + 3 * d * 3072))
    assert cost(baseline("dense", PRESETS["paper"])).params_total == 32_000 * d + d + 3 * block


def test_capacity_formulas():
    assert token_choice_capacity(tokens=128, num_experts=8, top_k=2, capacity=1.0) == 32
    assert token_choice_capacity(tokens=100, num_experts=8, top_k=2, capacity=1.0) == 25
    assert token_choice_capacity(tokens=10, num_experts=3, top_k=1, capacity=1.0) == 4
    assert token_choice_capacity(tokens=8, num_experts=2, top_k=2, capacity=4.0) == 8  # capped
    assert expert_choice_capacity(tokens=16, num_experts=8, capacity=2.0) == 4
    assert expert_choice_capacity(tokens=5, num_experts=8, capacity=1.0) == 1


def test_activation_memory_grows_with_width():
    small = cost(baseline("dense", PROXY)).activation_bytes_per_sequence
    wide = cost(baseline("dense", PROXY.override({"d_model": [192]}))).activation_bytes_per_sequence
    assert 0 < small < wide


def _moe_spec(gating: str, capacity: float, experts: int = E) -> ArchSpec:
    block = baseline("dense", PROXY).block
    layer = {
        "kind": "moe",
        "hidden": H,
        "num_experts": experts,
        "gating": gating,
        "capacity_factor": capacity,
        "activation": "geglu",
    }
    layers = [block.layers[0].model_dump(), layer]
    return ArchSpec.model_validate(
        {
            "block": {"d_model": D, "norm": "rmsnorm", "layers": layers},
            "vocab_size": V,
            "seq_len": T,
            "repeats": 3,
        }
    )


@pytest.mark.parametrize(
    ("gating", "capacity", "experts", "computed", "inference_computed"),
    [
        ("expert_choice", 1.0, 32, 1.0, 1),
        ("expert_choice", 2.0, E, 2.0, 2),
        ("expert_choice", 1.5, E, 1.5, 2),  # round(1.5) = 2 experts per token
        ("expert_choice", 0.5, E, 0.5, 1),  # at least one
        ("expert_choice", 4.0, 2, 2.0, 2),  # at most E
        ("top2", 2.0, E, 4.0, 4),  # token choice: as in training, capacity slots included
        ("top1", 0.5, E, 0.5, 0.5),
    ],
)
def test_inference_flops_per_token(gating, capacity, experts, computed, inference_computed):
    from search_space.cost import moe_experts_computed, moe_experts_computed_inference

    spec = _moe_spec(gating, capacity, experts)
    layer = spec.block.layers[1]
    assert moe_experts_computed(layer) == computed
    assert moe_experts_computed_inference(layer) == inference_computed
    report = cost(spec)
    attn, moe = report.layers
    assert attn.inference_flops_per_token == attn.flops_per_token
    assert moe.inference_flops_per_token == 2 * D * experts + round(inference_computed * 2 * EXPERT)
    assert moe.flops_per_token == 2 * D * experts + round(computed * 2 * EXPERT)
    head = 2 * D * V
    assert (
        report.inference_flops_per_token
        == 3 * (attn.flops_per_token + moe.inference_flops_per_token) + head
    )
    assert report.flops_per_token == 3 * (attn.flops_per_token + moe.flops_per_token) + head


@pytest.mark.parametrize("name", ["dense", "glam", "switch"])
def test_inference_flops_equal_training_forward_without_expert_choice(name):
    report = cost(baseline(name, PROXY))
    assert report.inference_flops_per_token == report.flops_per_token
    assert all(c.inference_flops_per_token == c.flops_per_token for c in report.layers)
