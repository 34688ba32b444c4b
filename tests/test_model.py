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


def forward_fn(spec: ArchSpec, inference: bool = False):
    graphdef, state = nnx.split(build_model(spec, seed=1))
    forward = jax.jit(lambda state, tokens: nnx.merge(graphdef, state)(tokens, inference)[0])
    return lambda tokens: forward(state, tokens)


# At batch 1 expert choice takes the inference routing by itself; `inference=True` makes it
# take it at batch 8 too (where c = 2 groups rows into tiles of several tokens).
CASES = (
    [(name, "rotary", False) for name in LAYERS]
    + [("attention", "learned", False)]
    + [("expert-choice", "rotary", True), ("expert-choice-c2", "rotary", True)]
)


@pytest.mark.parametrize("batch", [8, 1])
@pytest.mark.parametrize(("name", "positions", "inference"), CASES)
def test_no_layer_sees_the_future(name, positions, inference, batch):
    """Perturb positions > t: outputs at <= t must not move; outputs after t must."""
    forward = forward_fn(arch(LAYERS[name], positions=positions), inference)
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


@pytest.mark.parametrize(
    ("capacity_factor", "experts", "batch"),
    [(1.0, 4, 3), (2.0, 4, 3), (1.5, 8, 2), (0.5, 4, 5), (2.0, 4, 16), (3.0, 2, 1)],
)
def test_inference_routing_matches_a_naive_loop(capacity_factor, experts, batch):
    """Top-round(c) experts per token (at least 1, at most E), nothing dropped; batch 16
    with k = 2 groups rows into tiles of several tokens of one expert."""
    spec = MoESpec(**moe("expert_choice", capacity_factor, experts=experts))
    layer, x = _moe_and_input(spec, batch=batch)
    k = min(experts, max(1, round(capacity_factor)))
    y, stats = layer(x, inference=True)
    expected = _naive_token_choice(layer, np.asarray(x), k, capacity=T)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-5)
    assert float(stats["drop_fraction"]) == 0.0
    probs = jax.nn.softmax(x.reshape(-1, D) @ layer.router[...], axis=-1)
    chosen = np.asarray(jax.lax.top_k(probs, k)[1]).reshape(-1)
    load = np.bincount(chosen, minlength=experts) / chosen.size
    np.testing.assert_allclose(np.asarray(stats["expert_load"]), load, rtol=1e-6)
    if batch * capacity_factor < experts:  # the flag changes nothing where EC cannot run
        y_default, _ = layer(x)
        np.testing.assert_array_equal(np.asarray(y_default), np.asarray(y))


def test_inference_routing_is_per_sequence_at_any_batch_size():
    """`inference=True` at batch 16 gives each sequence the logits it gets alone at batch 1
    (routing is per token); without the flag, batch 16 routes by expert choice."""
    spec = arch(moe("expert_choice", 2.0), repeats=1)
    graphdef, state = nnx.split(build_model(spec, seed=3))
    forward = jax.jit(
        lambda state, tokens, inference: nnx.merge(graphdef, state)(tokens, inference),
        static_argnums=2,
    )
    tokens = jnp.asarray(np.random.default_rng(5).integers(0, V, (16, T)))
    batched, aux = forward(state, tokens, True)
    assert float(aux["aux_loss"]) == 0.0 and float(aux["moe"][0]["drop_fraction"]) == 0.0
    for row in range(tokens.shape[0]):
        alone, _ = forward(state, tokens[row : row + 1], False)  # batch 1: inference routing
        np.testing.assert_allclose(
            np.asarray(batched[row]), np.asarray(alone[0]), rtol=1e-5, atol=1e-5
        )
    expert_choice, _ = forward(state, tokens, False)
    assert not np.allclose(np.asarray(expert_choice), np.asarray(batched), atol=1e-3)


@pytest.mark.parametrize("capacity_factor", [1.0, 2.0])
def test_batch_one_expert_choice_computes_only_the_chosen_experts(capacity_factor):
    """The compiled batch-1 forward pass costs the cost model's inference FLOPs (k = round(c)
    experts per token), not all 32 experts' worth. XLA's cost analysis also counts the
    non-matmul ops (norms, softmax, activation, top-k), hence up to 20% above the matmuls."""
    experts, hidden = 32, 64
    layer = {**moe("expert_choice", capacity_factor, experts, "geglu"), "hidden": hidden}
    spec = arch(layer)
    graphdef, state = nnx.split(build_model(spec))
    forward = jax.jit(lambda state, tokens: nnx.merge(graphdef, state)(tokens)[0])
    tokens = jnp.zeros((1, T), jnp.int32)
    measured = forward.lower(state, tokens).compile().cost_analysis()["flops"]
    report = cost(spec)
    expected = report.inference_flops_per_token * T
    k = round(capacity_factor)
    all_experts = expected + spec.repeats * T * (experts - k) * 2 * (3 * D * hidden)
    assert all_experts > 10 * expected  # the check below tells k experts from all of them
    assert expected <= measured <= 1.2 * expected, (measured, expected, all_experts)


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
