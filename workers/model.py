"""The proxy language model: a Flax NNX decoder built from an `ArchSpec`.

Embedding, the block's pre-norm residual sub-layers stacked `repeats` times (weights not
shared), a final norm and a tied or untied head. Parameter counts follow the conventions
fixed in `search_space.specs` and equal `search_space.cost` exactly.

Mixture-of-experts routing (router in float32), all causal in a decoder:
- Token choice (top-1 / top-2) routes within each sequence. Capacity slots are assigned in
  position order, both choices of token t before any choice of token t+1, so whether a token
  is dropped depends only on earlier tokens. GShard's "all first choices, then all second
  choices" would let later tokens evict earlier ones: a leak. Load-balancing loss
  (E * sum_e f_e * P_e, weight 0.01) and router z-loss (weight 0.001) join the training loss.
- Expert choice: at each position, every expert picks its top ceil(B * c / E) tokens among
  the B tokens at that position across the batch, so outputs at position t depend only on
  tokens at position t (of all sequences) and earlier. It needs B * c >= E; below that
  (batch size 1 in particular, as when an exported model decodes), and at any batch size
  with `inference=True`, the layer uses the inference routing: each token goes to its
  top-k experts, k = round(c) (at least 1), gates the router's probabilities (renormalised
  when k > 1), no capacity limit, nothing dropped; per token, hence causal. It computes
  only the chosen experts (k experts' FLOPs per token, `search_space.cost`'s
  `inference_flops_per_token`), never all E.

Dispatch is gather-based: tokens are gathered into one [experts, slots, d] buffer that the
experts process as a single batched matmul, and outputs are gathered (token choice) or
segment-summed (expert choice) back. No one-hot dispatch tensors of tokens x slots. The
inference routing instead sorts the (token, expert) choices by expert into tiles of G rows
of one expert each and gathers each tile's expert weights: [tiles, G, d] x [tiles, d, width].
G = 1 (a per-token gather of the chosen experts' weights, no padding) while tokens x k <=
4 E, as in decoding; above, G = ceil(tokens x k / 4E), which bounds the gathered weights to
5 E experts' worth and the padding rows to E x (G - 1) <= a quarter of tokens x k.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from search_space.cost import expert_choice_capacity, token_choice_capacity
from search_space.specs import GATED_ACTIVATIONS, ArchSpec, AttentionSpec, FFNSpec, MoESpec

LOAD_BALANCE_WEIGHT = 0.01
Z_LOSS_WEIGHT = 1e-3
EMBED_STD = 0.02
ROPE_BASE = 10_000.0
# Inference routing: tiles of one expert's rows; at most this many tiles per expert (plus
# one each for the partial tiles) before tiles grow beyond one row.
INFERENCE_TILES_PER_EXPERT = 4

Aux = dict[str, Any]
# The standard deviation of a standard normal truncated to [-2, 2] (as JAX's lecun_normal).
TRUNCATED_STD = 0.87962566103423978


def _host_rng(key: jax.Array) -> np.random.Generator:
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def lecun_normal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """LeCun normal (variance 1 / fan_in, fan_in = shape[-2]; truncated at 2 sd) drawn with
    NumPy on the host. JAX's initializers compile one program per parameter shape (0.3 s
    each on a CPU core: 5-8 s for a new block on a 1-core slot); NumPy compiles nothing.
    Under a trace (`nnx.eval_shape`, a jitted init) JAX's own initializer draws instead."""
    if isinstance(key, jax.core.Tracer):
        batch = tuple(range(len(shape) - 2))
        return nnx.initializers.lecun_normal(batch_axis=batch)(key, shape, dtype)
    rng = _host_rng(key)
    draw = rng.standard_normal(shape, dtype=np.float32)
    outside = np.abs(draw) > 2
    while outside.any():  # resample what lies beyond 2 sd: a truncated normal
        draw[outside] = rng.standard_normal(int(outside.sum()), dtype=np.float32)
        outside = np.abs(draw) > 2
    return jnp.asarray(draw * ((1.0 / shape[-2]) ** 0.5 / TRUNCATED_STD), dtype)


def normal(std: float) -> Callable[..., jax.Array]:
    """A normal initializer drawn on the host (see `lecun_normal`)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        if isinstance(key, jax.core.Tracer):
            return nnx.initializers.normal(std)(key, shape, dtype)
        return jnp.asarray(_host_rng(key).standard_normal(shape, dtype=np.float32) * std, dtype)

    return init


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "squared_relu": lambda x: jnp.square(jax.nn.relu(x)),
    "reglu": jax.nn.relu,
    "geglu": jax.nn.gelu,
    "swiglu": jax.nn.silu,
}


def activate(h: jax.Array, activation: str) -> jax.Array:
    """Apply the activation; gated ones split `h` into (gate, up) halves."""
    fn = _ACTIVATIONS[activation]
    if activation in GATED_ACTIVATIONS:
        gate, up = jnp.split(h, 2, axis=-1)
        return fn(gate) * up
    return fn(h)


def linear(d_in: int, d_out: int, dtype: Any, rngs: nnx.Rngs) -> nnx.Linear:
    """A bias-free projection: float32 kernel, computed in `dtype`."""
    return nnx.Linear(d_in, d_out, use_bias=False, dtype=dtype, kernel_init=lecun_normal, rngs=rngs)


def make_norm(norm: str, d: int, rngs: nnx.Rngs) -> nnx.Module:
    if norm == "layernorm":
        return nnx.LayerNorm(d, rngs=rngs)
    return nnx.RMSNorm(d, rngs=rngs)


def rotary(x: jax.Array) -> jax.Array:
    """Rotary position embedding over the last axis of x: [B, T, heads, head_dim]."""
    t, head_dim = x.shape[1], x.shape[-1]
    half = head_dim // 2
    freqs = ROPE_BASE ** (-jnp.arange(half, dtype=jnp.float32) / max(half, 1))
    angles = jnp.arange(t, dtype=jnp.float32)[:, None] * freqs[None, :]
    sin, cos = jnp.sin(angles)[None, :, None, :], jnp.cos(angles)[None, :, None, :]
    x1, x2, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
    rotated = [x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest]
    return jnp.concatenate(rotated, axis=-1).astype(x.dtype)


class Attention(nnx.Module):
    def __init__(
        self,
        d: int,
        spec: AttentionSpec,
        use_rotary: bool,
        rngs: nnx.Rngs,
        dtype: Any = jnp.float32,
    ):
        self.heads, self.head_dim, self.use_rotary = spec.heads, spec.head_dim, use_rotary
        self.qkv = linear(d, 3 * spec.inner, dtype, rngs)
        self.out = linear(spec.inner, d, dtype, rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, Aux]:
        b, t, d = x.shape
        qkv = self.qkv(x.reshape(b * t, d)).reshape(b, t, 3, self.heads, self.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.use_rotary:
            q, k = rotary(q), rotary(k)
        scores = jnp.einsum("bthd,bshd->bhts", q, k) / jnp.sqrt(self.head_dim).astype(q.dtype)
        causal = jnp.tril(jnp.ones((t, t), dtype=bool))
        scores = jnp.where(causal, scores.astype(jnp.float32), jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)  # softmax in float32
        y = jnp.einsum("bhts,bshd->bthd", weights, v)
        return self.out(y.reshape(b * t, self.heads * self.head_dim)).reshape(b, t, d), {}


class FeedForward(nnx.Module):
    def __init__(self, d: int, spec: FFNSpec, rngs: nnx.Rngs, dtype: Any = jnp.float32):
        self.activation = spec.activation
        width = 2 * spec.hidden if spec.activation in GATED_ACTIVATIONS else spec.hidden
        self.up = linear(d, width, dtype, rngs)
        self.down = linear(spec.hidden, d, dtype, rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, Aux]:
        rows = x.reshape(-1, x.shape[-1])
        return self.down(activate(self.up(rows), self.activation)).reshape(x.shape), {}


def inference_tiling(assignments: int, num_experts: int) -> tuple[int, int]:
    """(rows per tile G, tiles) for the inference routing of `assignments` (token, expert)
    pairs: each expert's rows fill ceil(n_e / G) tiles, at most
    (assignments + min(E, assignments) x (G - 1)) / G of them in all."""
    tile = max(1, -(-assignments // (INFERENCE_TILES_PER_EXPERT * num_experts)))
    return tile, (assignments + min(num_experts, assignments) * (tile - 1)) // tile


class MoE(nnx.Module):
    """Mixture of experts; see the module docstring for the routing rules."""

    def __init__(self, d: int, spec: MoESpec, rngs: nnx.Rngs):
        self.spec = spec
        e, h = spec.num_experts, spec.hidden
        width = 2 * h if spec.activation in GATED_ACTIVATIONS else h
        self.router = nnx.Param(lecun_normal(rngs.params(), (d, e)))
        self.w_up = nnx.Param(lecun_normal(rngs.params(), (e, d, width)))  # fan-in: d
        self.w_down = nnx.Param(lecun_normal(rngs.params(), (e, h, d)))

    def experts(self, x: jax.Array) -> jax.Array:
        """x: [experts, slots, d] -> [experts, slots, d], one batched matmul per projection."""
        w_up, w_down = self.w_up[...].astype(x.dtype), self.w_down[...].astype(x.dtype)
        h = jnp.einsum("esd,edh->esh", x, w_up)
        return jnp.einsum("esh,ehd->esd", activate(h, self.spec.activation), w_down)

    def __call__(self, x: jax.Array, inference: bool = False) -> tuple[jax.Array, Aux]:
        """`inference=True`: expert-choice layers use the inference routing at any batch
        size (token-choice layers ignore it). See the module docstring."""
        b, t, d = x.shape
        e = self.spec.num_experts
        rows = x.reshape(b * t, d).astype(jnp.float32)
        logits = (rows @ self.router[...]).reshape(b, t, e)
        probs = jax.nn.softmax(logits, axis=-1)
        entropy = -jnp.sum(probs * jnp.log(probs + 1e-9), axis=-1).mean()
        spec = self.spec
        if spec.gating == "expert_choice":
            if not inference and b * spec.capacity_factor >= e:
                y, stats = self._expert_choice(x, probs)
            else:  # inference, or too few sequences for experts to choose among
                y, stats = self._inference(x, probs, min(e, max(1, round(spec.capacity_factor))))
            stats["aux_loss"] = jnp.zeros((), jnp.float32)  # expert choice needs no aux loss
        else:
            k = min(e, spec.top_k)
            capacity = token_choice_capacity(t, e, k, spec.capacity_factor)
            y, stats = self._token_choice(x, probs, k, capacity)
            z_loss = jnp.mean(jnp.square(jax.nn.logsumexp(logits, axis=-1)))
            stats["aux_loss"] = LOAD_BALANCE_WEIGHT * stats["aux_loss"] + Z_LOSS_WEIGHT * z_loss
        stats["router_entropy"] = entropy
        return y.reshape(b, t, d).astype(x.dtype), stats

    def _token_choice(
        self, x: jax.Array, probs: jax.Array, k: int, capacity: int
    ) -> tuple[jax.Array, Aux]:
        b, t, d = x.shape
        e = probs.shape[-1]
        gates, choice = jax.lax.top_k(probs, k)  # [B, T, k]
        if k > 1:
            gates = gates / jnp.sum(gates, axis=-1, keepdims=True)
        # Slots in position order: flatten (t, choice) so token t's choices precede t+1's.
        flat = choice.reshape(b, t * k)
        onehot = jax.nn.one_hot(flat, e, dtype=jnp.int32)  # [B, T*k, E]
        position = jnp.sum((jnp.cumsum(onehot, axis=1) - 1) * onehot, axis=-1)
        keep = position < capacity
        # Buffer rows ordered (expert, sequence, slot); row e*B*C + b*C + pos, or the
        # trailing drop row.
        n_rows = e * b * capacity
        seq = jnp.arange(b)[:, None]
        row = jnp.where(keep, flat * (b * capacity) + seq * capacity + position, n_rows)
        token = jnp.broadcast_to(seq * t + jnp.arange(t * k)[None, :] // k, (b, t * k))
        source = jnp.full((n_rows + 1,), b * t, dtype=jnp.int32)
        source = source.at[row.reshape(-1)].set(token.reshape(-1).astype(jnp.int32))
        x_rows = jnp.concatenate([x.reshape(b * t, d), jnp.zeros((1, d), x.dtype)])
        expert_in = x_rows[source[:n_rows]].reshape(e, b * capacity, d)
        expert_out = self.experts(expert_in).reshape(n_rows, d)
        out_rows = jnp.concatenate([expert_out, jnp.zeros((1, d), expert_out.dtype)])
        picked = out_rows[row].reshape(b, t, k, d)
        weights = (gates * keep.reshape(b, t, k)).astype(x.dtype)
        y = jnp.einsum("btk,btkd->btd", weights, picked)
        routed = onehot.reshape(b * t * k, e)
        kept = routed * keep.reshape(-1, 1)
        fraction = routed.sum(axis=0) / routed.sum()  # dispatch fraction before capacity
        stats = {
            # load balance E * sum_e f_e * P_e; the caller weights it and adds the z-loss
            "aux_loss": e * jnp.sum(fraction * probs.reshape(-1, e).mean(axis=0)),
            "expert_load": kept.sum(axis=0) / jnp.maximum(kept.sum(), 1),
            "drop_fraction": 1.0 - keep.mean(),
        }
        return y, stats

    def _inference(self, x: jax.Array, probs: jax.Array, k: int) -> tuple[jax.Array, Aux]:
        """Each token to its top-k experts, no capacity; computes only the chosen experts."""
        b, t, d = x.shape
        e = probs.shape[-1]
        n, pairs = b * t, b * t * k
        gates, choice = jax.lax.top_k(probs.reshape(n, e), k)  # [N, k]
        if k > 1:
            gates = gates / jnp.sum(gates, axis=-1, keepdims=True)
        expert = choice.reshape(pairs)  # pair i is token i // k's choice i % k
        tile, tiles = inference_tiling(pairs, e)
        # Sort the pairs by expert; expert e's rows start at its first tile, tile_start[e] * G.
        order = jnp.argsort(expert, stable=True)
        counts = jnp.zeros((e,), jnp.int32).at[expert].add(1)
        first = jnp.cumsum(counts) - counts  # index in sorted order of expert e's first pair
        tile_counts = -(-counts // tile)  # ceil(n_e / G)
        tile_end = jnp.cumsum(tile_counts)
        tile_start = tile_end - tile_counts
        by_expert = expert[order]
        rank = jnp.arange(pairs, dtype=jnp.int32) - first[by_expert]
        slot = jnp.zeros((pairs,), jnp.int32).at[order].set(tile_start[by_expert] * tile + rank)
        token = jnp.arange(pairs, dtype=jnp.int32) // k
        source = jnp.full((tiles * tile,), n, jnp.int32).at[slot].set(token)  # n: a zero row
        x_rows = jnp.concatenate([x.reshape(n, d), jnp.zeros((1, d), x.dtype)])
        expert_in = x_rows[source].reshape(tiles, tile, d)
        # Tile j belongs to the expert whose tiles end after it (unused tiles: the last one).
        tile_expert = jnp.sum(tile_end[None, :] <= jnp.arange(tiles)[:, None], axis=1)
        tile_expert = jnp.minimum(tile_expert, e - 1)
        w_up = self.w_up[...][tile_expert].astype(x.dtype)
        h = jnp.einsum("jgd,jdh->jgh", expert_in, w_up)
        w_down = self.w_down[...][tile_expert].astype(x.dtype)
        out = jnp.einsum("jgh,jhd->jgd", activate(h, self.spec.activation), w_down)
        picked = out.reshape(tiles * tile, d)[slot].reshape(n, k, d)
        y = jnp.sum(gates.astype(x.dtype)[:, :, None] * picked, axis=1)
        stats = {
            "expert_load": counts / pairs,
            "drop_fraction": jnp.zeros((), jnp.float32),
        }
        return y, stats

    def _expert_choice(self, x: jax.Array, probs: jax.Array) -> tuple[jax.Array, Aux]:
        b, t, d = x.shape
        e = probs.shape[-1]
        capacity = expert_choice_capacity(b, e, self.spec.capacity_factor)
        # For each position and expert, the top `capacity` sequences at that position.
        gates, picked = jax.lax.top_k(jnp.transpose(probs, (2, 1, 0)), capacity)  # [E, T, C]
        token = picked * t + jnp.arange(t)[None, :, None]  # row in the flattened [B*T, d]
        expert_in = x.reshape(b * t, d)[token.reshape(-1)].reshape(e, t * capacity, d)
        expert_out = self.experts(expert_in).reshape(e * t * capacity, d)
        weighted = expert_out * gates.reshape(-1, 1).astype(x.dtype)
        y = jax.ops.segment_sum(weighted, token.reshape(-1), num_segments=b * t)
        covered = jax.ops.segment_sum(jnp.ones(token.size), token.reshape(-1), num_segments=b * t)
        stats = {
            "expert_load": jnp.full((e,), 1.0 / e),
            "drop_fraction": jnp.mean(covered == 0),
        }
        return y, stats


class Residual(nnx.Module):
    """Pre-norm residual sub-layer: x + layer(norm(x))."""

    def __init__(
        self,
        layer_spec: Any,
        d: int,
        norm: str,
        use_rotary: bool,
        rngs: nnx.Rngs,
        dtype: Any = jnp.float32,
    ):
        self.norm = make_norm(norm, d, rngs)
        self.dtype = dtype
        if isinstance(layer_spec, AttentionSpec):
            self.layer = Attention(d, layer_spec, use_rotary, rngs, dtype)
        elif isinstance(layer_spec, FFNSpec):
            self.layer = FeedForward(d, layer_spec, rngs, dtype)
        else:
            self.layer = MoE(d, layer_spec, rngs)

    def __call__(self, x: jax.Array, inference: bool = False) -> tuple[jax.Array, Aux]:
        h = self.norm(x).astype(self.dtype)  # the residual stream and norms stay float32
        y, stats = self.layer(h, inference) if isinstance(self.layer, MoE) else self.layer(h)
        return x + y.astype(x.dtype), stats


class ProxyLM(nnx.Module):
    """Decoder-only LM: tokens [B, T] -> (logits [B, T, V] float32, aux).

    `dtype` is the compute precision of the matmuls (bfloat16: mixed precision); parameters,
    the residual stream, norms, the router, softmax and the loss stay float32."""

    def __init__(self, spec: ArchSpec, rngs: nnx.Rngs, dtype: Any = jnp.float32):
        self.spec = spec
        d, block = spec.block.d_model, spec.block
        embed_init = normal(EMBED_STD)
        self.embed = nnx.Embed(
            spec.vocab_size, d, dtype=dtype, embedding_init=embed_init, rngs=rngs
        )
        learned = spec.positions == "learned"
        self.positions = (
            nnx.Embed(spec.seq_len, d, embedding_init=embed_init, rngs=rngs) if learned else None
        )
        self.layers = nnx.List(
            [
                Residual(layer, d, block.norm, not learned, rngs, dtype)
                for _ in range(spec.repeats)
                for layer in block.layers
            ]
        )
        self.final_norm = make_norm(block.norm, d, rngs)
        self.head = None if spec.tied_embeddings else linear(d, spec.vocab_size, dtype, rngs)

    def __call__(self, tokens: jax.Array, inference: bool = False) -> tuple[jax.Array, Aux]:
        """`inference=True`: expert-choice layers route as an exported model decoding at
        batch size 1 does, at any batch size (see the module docstring)."""
        x = self.embed(tokens).astype(jnp.float32)
        if self.positions is not None:
            x = x + self.positions(jnp.arange(tokens.shape[1]))[None]
        aux_loss = jnp.zeros((), jnp.float32)
        moe_stats = []
        for layer in self.layers:
            x, stats = layer(x, inference)
            if stats:
                aux_loss = aux_loss + stats.pop("aux_loss")
                moe_stats.append(stats)
        b, t, d = x.shape
        rows = self.final_norm(x).reshape(b * t, d)
        logits = self.embed.attend(rows) if self.head is None else self.head(rows)
        aux = {"aux_loss": aux_loss, "moe": moe_stats}
        return logits.reshape(b, t, -1).astype(jnp.float32), aux


def build_model(spec: ArchSpec, seed: int = 0, dtype: Any = jnp.float32) -> ProxyLM:
    return ProxyLM(spec, nnx.Rngs(params=seed), dtype)


def count_params(model: nnx.Module) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
