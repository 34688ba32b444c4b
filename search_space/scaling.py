"""Scale a searched block to a target size (activated parameters, embeddings included).

Two recipes:
- `fit` (default): keep every width's ratio to the model dim (the paper scales model and
  hidden dims together), stack the block as the paper does (3 / 6 / 8 times for 100M / 1B /
  8B; interpolated in log-size for a number), and choose the model dim whose activated
  parameters come closest to the target. Widths are rounded to what accelerators tile well:
  model, FFN and expert widths of 512 or more to multiples of 128 (smaller ones, as in
  ~10M models, to multiples of 32 for the model dim and 64 for hidden dims: 128 would move
  them too far from their ratio), and from a model dim of 512 attention keeps a head dim of
  64 or 128 with a multiple of 8 heads. If the nearest roundings miss the target by more
  than 10%, the hidden widths are moved together by whole multiples (the smallest move that
  lands), then neighbouring repeat counts are tried. `ScaleResult.rounding` says what was
  rounded from what.
- `paper`: the paper's own recipe, reported where it lands: the block at the paper's
  100M dims (its model dim if it is one of 512/768/1024, else 768), dims x1 / x2 / x4 and
  3 / 6 / 8 blocks for 100M / 1B / 8B.
Experts are set as in the paper: 32 at 100M, 64 at 1B and 8B (numbers: 32 below ~316M).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from search_space.cost import CostReport, cost
from search_space.specs import (
    MAX_D_MODEL,
    MAX_HEADS,
    MAX_REPEATS,
    ArchSpec,
    AttentionSpec,
    BlockSpec,
    MoESpec,
)

NAMED_TARGETS = {"100M": 100_000_000, "1B": 1_000_000_000, "8B": 8_000_000_000}
PAPER_RECIPE = {"100M": (1, 3, 32), "1B": (2, 6, 64), "8B": (4, 8, 64)}  # dims x, repeats, E
PAPER_BASE_D_MODELS = (512, 768, 1024)
PAPER_BASE_D_MODEL = 768
DIM_STEP = 32  # below HARDWARE_FROM: model dims multiples of 32, hidden dims of 64
HIDDEN_STEP = 64
HARDWARE_FROM = 512  # from here on: multiples of HARDWARE_STEP, heads a multiple of 8
HARDWARE_STEP = 128  # GPU tensor cores and TPU MXUs tile 128-wide
HEADS_MULTIPLE = 8
HEAD_DIMS = (64, 128)
SHIFTS = (0, 1, -1, 2, -2)  # multiples the hidden widths may move to land within 10%
TOLERANCE = 0.10
MIN_TARGET, MAX_TARGET = 1_000_000, 10_000_000_000_000
_SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}

Recipe = Literal["fit", "paper"]


class Rounding(BaseModel):
    """One width rounded for the hardware: `exact` is what the recipe asked for (a width: its
    ratio to the model dim times the model dim; the model dim: the one that would land on the
    target, interpolated between the grid's dims around it)."""

    model_config = ConfigDict(frozen=True)

    field: str  # e.g. "block.d_model", "block.layers.3.hidden", "block.layers.0.heads"
    exact: float
    rounded: int
    multiple: int


class ScaleResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    spec: ArchSpec
    cost: CostReport
    target: str
    target_params: int
    recipe: Recipe
    relative_error: float
    within_tolerance: bool
    rounding: tuple[Rounding, ...] = ()


def describe_rounding(rounding: Sequence[Rounding]) -> str:
    """One line: `d_model 534.6 -> 512 (x128), layers.1.hidden 2048 -> 2304 (x128), ...`."""
    parts = [
        f"{r.field.removeprefix('block.')} {r.exact:.4g} -> {r.rounded} (x{r.multiple})"
        for r in rounding
    ]
    return ", ".join(parts) or "nothing rounded"


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


def _round_hidden(value: float, hardware: bool = False, shift: int = 0) -> tuple[int, int]:
    """(width, multiple): the nearest multiple of 64, or of 128 from 512 on with `hardware`,
    moved by `shift` multiples (at least one multiple)."""
    step = HARDWARE_STEP if hardware and value >= HARDWARE_FROM else HIDDEN_STEP
    return max(1, round(value / step) + shift) * step, step


def _attention(
    layer: AttentionSpec, factor: float, d_model: int, hardware: bool
) -> tuple[AttentionSpec, float, int]:
    """The layer with its inner width times `factor`: (layer, exact heads, multiple)."""
    if hardware and d_model >= HARDWARE_FROM:  # head dim 64 or 128, heads a multiple of 8
        head_dim = HEAD_DIMS[0] if layer.head_dim <= HEAD_DIMS[0] else HEAD_DIMS[1]
        exact = layer.inner * factor / head_dim
        heads = min(max(1, round(exact / HEADS_MULTIPLE)) * HEADS_MULTIPLE, MAX_HEADS)
        return AttentionSpec(heads=heads, head_dim=head_dim), exact, HEADS_MULTIPLE
    head_dim = max(layer.head_dim, 64)
    exact = layer.inner * factor / head_dim
    return AttentionSpec(heads=min(max(1, round(exact)), MAX_HEADS), head_dim=head_dim), exact, 1


def _resize(
    spec: ArchSpec,
    d_model: int,
    repeats: int,
    num_experts: int,
    vocab_size: int,
    seq_len: int,
    hardware: bool = False,
    shift: int = 0,
) -> tuple[ArchSpec, list[Rounding]]:
    """`resize`, with the widths it rounded (`shift`: hidden widths moved by that many
    multiples, to land on a target the nearest roundings miss)."""
    d0 = spec.block.d_model
    layers = []
    rounding: list[Rounding] = []
    for i, layer in enumerate(spec.block.layers):
        if isinstance(layer, AttentionSpec):
            scaled, exact, multiple = _attention(layer, d_model / d0, d_model, hardware)
            layers.append(scaled)
            rounded, name = scaled.heads, "heads"
        else:
            exact = layer.hidden / d0 * d_model
            rounded, multiple = _round_hidden(exact, hardware, shift)
            if isinstance(layer, MoESpec):
                update = {"hidden": rounded, "num_experts": num_experts}
                layers.append(MoESpec(**{**layer.model_dump(), **update}))
            else:
                layers.append(layer.model_copy(update={"hidden": rounded}))
            name = "hidden"
        if rounded != exact:
            field = f"block.layers.{i}.{name}"
            rounding.append(Rounding(field=field, exact=exact, rounded=rounded, multiple=multiple))
    block = BlockSpec(d_model=d_model, norm=spec.block.norm, layers=tuple(layers))
    scaled = ArchSpec(
        block=block,
        repeats=repeats,
        vocab_size=vocab_size,
        seq_len=seq_len,
        tied_embeddings=spec.tied_embeddings,
        positions=spec.positions,
    )
    return scaled, rounding


def resize(
    spec: ArchSpec,
    d_model: int,
    repeats: int,
    num_experts: int,
    vocab_size: int,
    seq_len: int,
    hardware: bool = False,
) -> ArchSpec:
    """`spec` at another model dim, every width keeping its ratio to the model dim (rounded
    for accelerators with `hardware`: see the module docstring)."""
    return _resize(spec, d_model, repeats, num_experts, vocab_size, seq_len, hardware)[0]


def _model_dims() -> list[int]:
    """The model dims `fit` chooses from: multiples of 32 below 512, of 128 from there."""
    small = range(DIM_STEP, HARDWARE_FROM, DIM_STEP)
    return [*small, *range(HARDWARE_FROM, MAX_D_MODEL + 1, HARDWARE_STEP)]


MODEL_DIMS = _model_dims()


def _closest_dim(
    spec: ArchSpec,
    target: int,
    repeats: int,
    experts: int,
    vocab: int,
    seq_len: int,
    shift: int = 0,
) -> tuple[ArchSpec, list[Rounding]]:
    """Binary search over model dims (activated parameters grow with the dim); the rounding
    notes lead with the model dim the target asks for, interpolated between grid dims."""

    def at(index: int) -> tuple[ArchSpec, list[Rounding]]:
        return _resize(spec, MODEL_DIMS[index], repeats, experts, vocab, seq_len, True, shift)

    def params(index: int) -> int:
        return cost(at(index)[0]).params_activated

    lo, hi = 0, len(MODEL_DIMS) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if params(mid) < target:
            lo = mid + 1
        else:
            hi = mid
    below = max(0, lo - 1)
    chosen = min({below, lo}, key=lambda i: abs(params(i) - target))
    scaled, rounding = at(chosen)
    p_lo, p_hi = params(below), params(lo)
    d_lo, d_hi = MODEL_DIMS[below], MODEL_DIMS[lo]
    exact = d_lo if p_hi == p_lo else d_lo + (target - p_lo) / (p_hi - p_lo) * (d_hi - d_lo)
    d_model = scaled.block.d_model
    step = HARDWARE_STEP if d_model >= HARDWARE_FROM else DIM_STEP
    note = Rounding(field="block.d_model", exact=exact, rounded=d_model, multiple=step)
    return scaled, [note, *rounding]


def _result(
    spec: ArchSpec,
    target: str,
    params: int,
    recipe: Recipe,
    rounding: Sequence[Rounding] = (),
) -> ScaleResult:
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
        rounding=tuple(rounding),
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
        for shift in SHIFTS:  # hidden widths moved together, the smallest move first
            scaled, rounding = _closest_dim(
                spec, params, repeats, experts, vocab_size, seq_len, shift
            )
            found = _result(scaled, name, params, recipe, rounding)
            if found.within_tolerance:
                return found
            if best is None or abs(found.relative_error) < abs(best.relative_error):
                best = found
    assert best is not None
    return best
