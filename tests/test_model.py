"""The Flax proxy model: causality for every layer kind, MoE routing rules, parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from search_space import PRESETS, ArchSpec, MoESpec, cost, sample
from search_space.specs import FFNSpec
from workers.model import FeedForward, MoE, build_model, count_params

D, T, V = 32, 16, 64


def arch(layer: dict, **fields) -> ArchSpec:
    return ArchSpec.model_validate(
        {
            "block": {"d_model": D, "norm": "rmsnorm", "layers": [layer]},
            "repeats": 2,
            "vocab_size": V,
            "seq_len": T,
            **fields,
        }
    )


def moe(gating: str, capacity: float, experts: int = 4, activation: str = "gelu") -> dict:
    return {
        "kind": "moe",
        "hidden": 32,
        "num_experts": experts,
        "gating": gating,
        "capacity_factor": capacity,
        "activation": activation,
    }


LAYERS = {
    "attention": {"kind": "attention", "heads": 2, "head_dim": 8},
    "ffn": {"kind": "ffn", "hidden": 48, "activation": "swiglu"},
    "top1-tight": moe("top1", 0.5),
    "top2-tight": moe("top2", 0.5),
    "top2-ample": moe("top2", 4.0),
    "expert-choice": moe("expert_choice", 1.0),
    "expert-choice-c2": moe("expert_choice", 2.0),
}


def forward_fn(spec: ArchSpec):
    graphdef, state = nnx.split(build_model(spec, seed=1))
    forward = jax.jit(lambda state, tokens: nnx.merge(graphdef, state)(tokens)[0])
    return lambda tokens: forward(state, tokens)


CASES = [(name, "rotary") for name in LAYERS] + [("attention", "learned")]


@pytest.mark.parametrize("batch", [8, 1])
@pytest.mark.parametrize(("name", "positions"), CASES)
def test_no_layer_sees_the_future(name, positions, batch):
    """Perturb positions > t: outputs at <= t must not move; outputs after t must."""
    forward = forward_fn(arch(LAYERS[name], positions=positions))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, V, (batch, T))
    base = np.asarray(forward(jnp.asarray(tokens)))
    for t in range(T - 1):
        perturbed = tokens.copy()
        perturbed[:, t + 1 :] = (
            tokens[:, t + 1 :] + 1 + rng.integers(0, V - 1, (batch, T - t - 1))
        ) % V
        out = np.asarray(forward(jnp.asarray(perturbed)))
        np.testing.assert_array_equal(out[:, : t + 1], base[:, : t + 1], err_msg=f"leak into t={t}")
        assert not np.allclose(out[:, t + 1 :], base[:, t + 1 :])  # the check can fail


def _moe_and_input(spec: MoESpec, batch: int = 4, seed: int = 0):
    layer = MoE(D, spec, nnx.Rngs(params=seed))
    x = jax.random.normal(jax.random.key(seed + 1), (batch, T, D))
    return layer, x


def _dense_with(layer: MoE, expert: int, activation: str) -> FeedForward:
    ffn = FeedForward(D, FFNSpec(hidden=layer.spec.hidden, activation=activation), nnx.Rngs(0))
    ffn.up.kernel[...] = layer.w_up[...][expert]
    ffn.down.kernel[...] = layer.w_down[...][expert]
    return ffn


@pytest.mark.parametrize("gating", ["top1", "top2", "expert_choice"])
@pytest.mark.parametrize("activation", ["relu", "geglu"])
def test_one_expert_with_ample_capacity_is_a_dense_ffn(gating, activation):
    spec = MoESpec(**{**moe(gating, 1.0, experts=1, activation=activation)})
    layer, x = _moe_and_input(spec)
    y, stats = layer(x)
    expected, _ = _dense_with(layer, 0, activation)(x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), rtol=1e-5, atol=1e-5)
    assert float(stats["drop_fraction"]) == 0.0


def _naive_token_choice(layer: MoE, x: np.ndarray, k: int, capacity: int) -> np.ndarray:
    """Per-token loop: top-k experts, slots first come first served in position order."""
    spec = layer.spec
    experts = [_dense_with(layer, e, spec.activation) for e in range(spec.num_experts)]
    router = np.asarray(layer.router[...])
    out = np.zeros_like(x)
    for b in range(x.shape[0]):
        used = [0] * spec.num_experts
        for t in range(x.shape[1]):
            logits = x[b, t] @ router
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            top = np.argsort(-probs, kind="stable")[:k]
            gates = probs[top] / (probs[top].sum() if k > 1 else 1.0)
            for e, gate in zip(top, gates, strict=True):
                if used[e] < capacity:
                    used[e] += 1
                    out[b, t] += gate * np.asarray(experts[e](jnp.asarray(x[b, t][None]))[0][0])
    return out


@pytest.mark.parametrize(
    ("gating", "capacity_factor", "k"), [("top2", 4.0, 2), ("top1", 0.5, 1), ("top2", 0.5, 2)]
)
def test_token_choice_matches_a_naive_loop(gating, capacity_factor, k):
    spec = MoESpec(**moe(gating, capacity_factor))
    layer, x = _moe_and_input(spec, batch=3)
    from search_space.cost import token_choice_capacity

    capacity = token_choice_capacity(T, spec.num_experts, k, capacity_factor)
    y, stats = layer(x)
    expected = _naive_token_choice(layer, np.asarray(x), k, capacity)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-5)
    dropped = float(stats["drop_fraction"])
    assert (dropped > 0) == (capacity_factor < 1)
    assert float(np.sum(stats["expert_load"])) == pytest.approx(1.0)


def test_expert_choice_gives_each_expert_its_capacity():
    spec = MoESpec(**moe("expert_choice", 2.0))
    layer, x = _moe_and_input(spec, batch=8)
    y, stats = layer(x)
    assert y.shape == x.shape
    np.testing.assert_allclose(np.asarray(stats["expert_load"]), 0.25)
    assert 0.0 <= float(stats["drop_fraction"]) < 0.5


def test_aux_loss_only_for_token_choice():
    tokens = jnp.zeros((8, T), jnp.int32)
    _, aux = build_model(arch(moe("top2", 1.0)))(tokens)
    assert float(aux["aux_loss"]) > 0 and len(aux["moe"]) == 2
    _, aux = build_model(arch(moe("expert_choice", 1.0)))(tokens)
    assert float(aux["aux_loss"]) == 0.0


@pytest.mark.parametrize("preset", ["proxy-cpu", "paper"])
def test_parameter_count_equals_the_cost_model(preset):
    rng = np.random.default_rng(11)
    space = PRESETS[preset]
    for _ in range(25):  # 50 specs over both presets
        spec = sample(space, rng)
        overrides = {
            "tied_embeddings": bool(rng.integers(2)),
            "positions": ["rotary", "learned"][int(rng.integers(2))],
        }
        spec = spec.model_copy(update=overrides)
        abstract = nnx.eval_shape(lambda spec=spec: build_model(spec))
        assert count_params(abstract) == cost(spec).params_total
