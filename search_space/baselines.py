"""Reference blocks built from a search space's values: dense, GLaM, Switch, GLaM-EC.

Each baseline tiles its pattern to fill the space's block length, so it is as deep as the
longest candidate (the paper's GLaM 100M: 12 layers = (attn, ffn, attn, moe) x 2 per block,
stacked 3 times). Widths are the space's values nearest to a standard Transformer
(heads x head_dim = d_model, hidden = 4 d_model). Use `scaling.scale` for other sizes.
"""

from __future__ import annotations

from search_space.space import PROXY_CPU, SearchSpace
from search_space.specs import ArchSpec, AttentionSpec, BlockSpec, FFNSpec, Gating, MoESpec

BASELINES = ("dense", "glam", "switch", "glam-ec")

_MOE: dict[str, tuple[Gating, float]] = {
    # GLaM: top-2 with capacity 2; Switch: top-1 with capacity 1; expert choice: capacity 2.
    "glam": ("top2", 2.0),
    "switch": ("top1", 1.0),
    "glam-ec": ("expert_choice", 2.0),
}


def _nearest(options: list, target: float):
    return min(options, key=lambda value: (abs(value - target), value))


def _preferred(options: list[str], *preference: str) -> str:
    return next((name for name in preference if name in options), options[0])


def baseline(name: str, space: SearchSpace = PROXY_CPU) -> ArchSpec:
    """The named baseline at the space's size."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r} (known: {', '.join(BASELINES)})")
    d = sorted(space.d_model)[(len(space.d_model) - 1) // 2]
    head_dim = _nearest(space.head_dim, 64)
    heads = _nearest(space.attention_heads, d / head_dim)
    activation = _preferred(space.activation, "geglu", "gelu")
    attention = AttentionSpec(heads=heads, head_dim=head_dim)
    ffn = FFNSpec(hidden=_nearest(space.ffn_hidden, 4 * d), activation=activation)
    if name == "dense":
        pattern: tuple = (attention, ffn)
    else:
        gating, capacity = _MOE[name]
        moe = MoESpec(
            hidden=_nearest(space.moe_hidden, 4 * d),
            num_experts=space.num_experts[0],
            gating=gating,
            capacity_factor=_nearest(space.capacity_factor, capacity),
            activation=activation,
        )
        pattern = (attention, ffn, attention, moe)
    tiles = max(1, space.max_layers // len(pattern))
    return ArchSpec(
        block=BlockSpec(d_model=d, norm=space.norm[0], layers=pattern * tiles),
        repeats=space.repeats[0],
        vocab_size=space.vocab_size,
        seq_len=space.seq_len,
        tied_embeddings=space.tied_embeddings[0],
        positions=space.positions[0],
    )
