"""Scale a searched block to a target size (activated parameters, embeddings included).

Two recipes:
- `fit` (default): keep every width's ratio to the model dim (the paper scales model and
  hidden dims together), stack the block as the paper does (3 / 6 / 8 times for 100M / 1B /
  8B; interpolated in log-size for a number), and choose the model dim (a multiple of 32)
  whose activated parameters come closest to the target. If that misses by more than 10%,
  neighbouring repeat counts are tried.
- `paper`: the paper's own recipe, reported where it lands: the block at the paper's
  100M dims (its model dim if it is one of 512/768/1024, else 768), dims x1 / x2 / x4 and
  3 / 6 / 8 blocks for 100M / 1B / 8B.
Experts are set as in the paper: 32 at 100M, 64 at 1B and 8B (numbers: 32 below ~316M).
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from search_space.cost import CostReport, cost
from search_space.specs import (
    MAX_D_MODEL,
    MAX_REPEATS,
    ArchSpec,
    AttentionSpec,
    BlockSpec,
    FFNSpec,
    MoESpec,
)

NAMED_TARGETS = {"100M": 100_000_000, "1B": 1_000_000_000, "8B": 8_000_000_000}
PAPER_RECIPE = {"100M": (1, 3, 32), "1B": (2, 6, 64), "8B": (4, 8, 64)}  # dims x, repeats, E
PAPER_BASE_D_MODELS = (512, 768, 1024)
PAPER_BASE_D_MODEL = 768
DIM_STEP = 32  # model dims: multiples of 32; hidden dims: multiples of 64
HIDDEN_STEP = 64
TOLERANCE = 0.10
MIN_TARGET, MAX_TARGET = 1_000_000, 10_000_000_000_000
_SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}

Recipe = Literal["fit", "paper"]


class ScaleResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    spec: ArchSpec
    cost: CostReport
    target: str
    target_params: int
    recipe: Recipe
    relative_error: float
    within_tolerance: bool


def parse_target(target: str | int | float) -> tuple[str, int]:
    """`100M`, `1B`, `8B`, or a number of parameters (`350M`, `2.5e9`, 123456789)."""
    if isinstance(target, str):
        text = target.strip().upper()
        if text in NAMED_TARGETS:
            return text, NAMED_TARGETS[text]
        match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:E[0-9]+)?)\s*([KMBT]?)", text)
        if not match:
            raise ValueError(f"target: {target!r} is not 100M, 1B, 8B or a number of parameters")
        value = float(match.group(1)) * _SUFFIX[match.group(2)]
    else:
        value = float(target)
    if not (math.isfinite(value) and MIN_TARGET <= value <= MAX_TARGET):
        raise ValueError(f"target: {target!r} must lie between {MIN_TARGET:,} and {MAX_TARGET:,}")
    return str(target), int(value)


def _experts_for(params: int) -> int:
    return 32 if params < math.sqrt(1e8 * 1e9) else 64


def _repeats_for(params: int) -> float:
    """The paper's stacking, interpolated in log-size between its three points."""
    points = [(math.log(1e8), 3.0), (math.log(1e9), 6.0), (math.log(8e9), 8.0)]
    x = math.log(params)
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def _round_hidden(value: float) -> int:
    return max(HIDDEN_STEP, round(value / HIDDEN_STEP) * HIDDEN_STEP)


def resize(
    spec: ArchSpec, d_model: int, repeats: int, num_experts: int, vocab_size: int, seq_len: int
) -> ArchSpec:
    """`spec` at another model dim, every width keeping its ratio to the model dim."""
    d0 = spec.block.d_model
    layers = []
    for layer in spec.block.layers:
        if isinstance(layer, AttentionSpec):
            head_dim = max(layer.head_dim, 64)
            heads = max(1, round(layer.inner / d0 * d_model / head_dim))
            layers.append(AttentionSpec(heads=heads, head_dim=head_dim))
        elif isinstance(layer, FFNSpec):
            layers.append(
                layer.model_copy(update={"hidden": _round_hidden(layer.hidden / d0 * d_model)})
            )
        else:
            update = {
                "hidden": _round_hidden(layer.hidden / d0 * d_model),
                "num_experts": num_experts,
            }
            layers.append(MoESpec(**{**layer.model_dump(), **update}))
    block = BlockSpec(d_model=d_model, norm=spec.block.norm, layers=tuple(layers))
    return ArchSpec(
        block=block,
        repeats=repeats,
        vocab_size=vocab_size,
        seq_len=seq_len,
        tied_embeddings=spec.tied_embeddings,
        positions=spec.positions,
    )


def _closest_dim(
    spec: ArchSpec, target: int, repeats: int, experts: int, vocab: int, seq_len: int
) -> ArchSpec:
    """Binary search over model dims (activated parameters grow with the dim)."""
    lo, hi = 1, MAX_D_MODEL // DIM_STEP

    def at(step: int) -> ArchSpec:
        return resize(spec, step * DIM_STEP, repeats, experts, vocab, seq_len)

    while lo < hi:
        mid = (lo + hi) // 2
        if cost(at(mid)).params_activated < target:
            lo = mid + 1
        else:
            hi = mid
    options = [at(step) for step in {max(1, lo - 1), lo}]
    return min(options, key=lambda s: abs(cost(s).params_activated - target))


def _result(spec: ArchSpec, target: str, params: int, recipe: Recipe) -> ScaleResult:
    report = cost(spec)
    error = report.params_activated / params - 1.0
    return ScaleResult(
        spec=spec,
        cost=report,
        target=target,
        target_params=params,
        recipe=recipe,
        relative_error=error,
        within_tolerance=abs(error) <= TOLERANCE,
    )


def scale(
    spec: ArchSpec,
    target: str | int | float,
    recipe: Recipe = "fit",
    vocab_size: int = 32_000,
    seq_len: int = 1_024,
) -> ScaleResult:
    """Scale `spec` to `target` activated parameters; see the module docstring."""
    name, params = parse_target(target)
    if recipe == "paper":
        if name not in PAPER_RECIPE:
            raise ValueError(f"target: the paper recipe knows only {', '.join(PAPER_RECIPE)}")
        mult, repeats, experts = PAPER_RECIPE[name]
        d = spec.block.d_model
        base = d if d in PAPER_BASE_D_MODELS else PAPER_BASE_D_MODEL
        scaled = resize(spec, base * mult, repeats, experts, vocab_size, seq_len)
        return _result(scaled, name, params, recipe)
    if recipe != "fit":
        raise ValueError(f"recipe: {recipe!r} is not 'fit' or 'paper'")
    experts = _experts_for(params)
    preferred = round(_repeats_for(params))
    order = sorted(range(1, MAX_REPEATS + 1), key=lambda r: (abs(r - preferred), r))[:16]
    best: ScaleResult | None = None
    for repeats in order:
        found = _result(
            _closest_dim(spec, params, repeats, experts, vocab_size, seq_len), name, params, recipe
        )
        if found.within_tolerance:
            return found
        if best is None or abs(found.relative_error) < abs(best.relative_error):
            best = found
    assert best is not None
    return best
