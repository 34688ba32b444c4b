"""Reference blocks built from a search space's values: dense, GLaM, Switch, GLaM-EC.

Each baseline tiles its pattern to fill the space's block length, so it is as deep as the
longest candidate (the paper's GLaM 100M: 12 layers = (attn, ffn, attn, moe) x 2 per block,
stacked 3 times). Widths are the space's values nearest to a standard Transformer
(heads x head_dim = d_model, hidden = 4 d_model). Use `scaling.scale` for other sizes.

Capacity follows the sources, in this project's convention (`cost.token_choice_capacity`:
top-k at capacity c gives each expert ceil(k x tokens x c / experts) slots, shared by all k
choices; `cost.expert_choice_capacity`: each expert takes tokens x c / experts tokens):
GLaM is GShard top-2 with 2N/E slots per expert (N tokens, E experts), i.e. c = 1 here
(lingvo and praxis write the same buffer as capacity_factor 2 because they do not multiply
by k); Switch is top-1 at capacity factor 1.25 (rounds to 1 in both presets); expert choice
is c = 2 (EC-CF2), whose 2N/E tokens per expert are the same compute as GLaM's slots.
The GLaM baseline is the constrained mode's step-time reference, so its capacity sets how
loose `max_step_time_ratio` is.
"""

from __future__ import annotations

from search_space.space import PROXY_CPU, SearchSpace
from search_space.specs import ArchSpec, AttentionSpec, BlockSpec, FFNSpec, Gating, MoESpec

BASELINES = ("dense", "glam", "switch", "glam-ec")

_MOE: dict[str, tuple[Gating, float]] = {
    # GShard (Lepikhin et al. 2020, arXiv 2006.16668, Sec. 2.2) top-2 gating: expert
    # capacity 2N/E for a group of N tokens, i.e. c = 1 here. GLaM (Du et al. 2022, arXiv
    # 2112.06905) routes with GShard's top-2 gating. In Google's code the same buffer is
    # capacity_factor 2: google/praxis praxis/layers/transformers.py
    # `unadjusted_expert_capacity_factor` = 2.0 "for top-2 routing" = (E*G*C)/(G*S), and
    # praxis/gshard_utils.py `top2_gating_on_logits`: C = int(S * capacity_factor / E),
    # shared by both choices (no factor k), as in lingvo/core/gshard_layers.py.
    "glam": ("top2", 1.0),
    # Switch (Fedus et al., arXiv 2101.03961, eq. 3): capacity = tokens / experts x factor;
    # Switch-Base trains at 1.25 (google/flaxformer t5x/configs/moe/models/switch_base.gin
    # TRAIN_EXPERT_CAPACITY_FACTOR; top-1, so the same number here). Presets round to 1.
    "switch": ("top1", 1.25),
    # Expert choice (Zhou et al. 2022, arXiv 2202.09368, Sec. 3.1): k = n x c / e tokens per
    # expert with c = 2 (EC-CF2), the same 2N/E slots as GShard top-2.
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
