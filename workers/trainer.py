"""Train a proxy LM for a fixed wall-clock budget and report honest metrics.

The budget counts training steps only. Steps are dispatched `steps_ahead` ahead of the one
whose loss the host reads, so the device never waits for Python; a step's time runs from
the later of its dispatch and the previous step's completion to its own completion (seen
when its loss is read): with steps queued, the gaps between completions. The loop stops
dispatching when the steps in flight plus the next would overshoot the budget by more than
half a step. Compilation (ahead of time), data loading and evaluation are timed separately.
Faster blocks therefore get more steps, which is the point of the paper's fixed wall-clock
trials.
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from search_space.cost import cost, expert_choice_min_batch
from search_space.specs import ArchSpec, spec_hash
from workers.data import Dataset, load_dataset
from workers.device import (
    default_precision,
    enable_compilation_cache,
    fingerprint,
    matmul_peak_flops,
)
from workers.model import build_model

STATUSES = ("ok", "diverged", "pruned", "failed", "cancelled")
CURVE_POINTS = 100
PRECISIONS = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclass(frozen=True)
class Budget:
    """How long a trial trains: exactly one of wall-clock seconds of steps (the paper's fixed
    budget: faster blocks get more steps), a number of steps, or training FLOPs (turned into
    steps with the cost model). Steps and FLOPs budgets reproduce exactly with the same seed
    on the same device; a seconds budget depends on the machine's speed."""

    seconds: float | None = None
    steps: int | None = None
    flops: float | None = None

    def __post_init__(self) -> None:
        given = {name: value for name, value in self.__dict__.items() if value is not None}
        if len(given) != 1:
            raise ValueError("budget: give exactly one of seconds, steps or flops")
        ((name, value),) = given.items()
        if not value > 0:
            raise ValueError(f"budget: {name} must be positive, got {value}")

    def step_limit(self, train_flops_per_token: int, tokens_per_step: int) -> int | None:
        """The number of steps of a steps or FLOPs budget; None for a seconds budget."""
        if self.steps is not None:
            return int(self.steps)
        if self.flops is not None:
            return max(1, int(self.flops // (train_flops_per_token * tokens_per_step)))
        return None


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer and loop settings; the defaults train every proxy-cpu baseline stably."""

    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    beta2: float = 0.95
    eval_tokens: int = 32_768
    timing_warmup_steps: int = 3
    loss_smoothing: float = 0.9
    # (fraction of the budget, loss threshold): stop as `pruned` when the smoothed training
    # loss exceeds the threshold once that fraction of the budget is spent...
    hurdles: tuple[tuple[float, float], ...] = ()
    # ...and, when set, only if the step-time ratio is at least this (pareto mode: a block
    # faster than the reference may still join the front's fast end, so it is kept).
    loss_hurdle_min_ratio: float | None = None
    # (fraction, max ratio): stop as `pruned` when the step-time ratio exceeds the maximum
    # at that fraction (the constrained mode's early stop on step time).
    step_hurdle: tuple[float, float] | None = None
    # Fractions of the budget at which the smoothed training loss is reported (the
    # controller sets a candidate's hurdle from the baseline's loss at the same fraction).
    report_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    # Fractions of the budget at which the validation loss is measured (outside the budget):
    # the budget-free schedule makes a long trial's prefix the short trial, so one run gives
    # its own fidelity curve. Each fraction costs one evaluation (eval_tokens forward), so
    # only the end by default: with 1/4 and 1/2 too, evaluation took 18% of the demo's slots.
    eval_at: tuple[float, ...] = (1.0,)
    # Steps of the reference block timed on the same slot, in `reference_windows` windows
    # spread evenly over training (2: half before training, half after; more interleave
    # the two blocks A-B-A-B, as confirmation runs do).
    reference_steps: int = 8
    reference_windows: int = 2
    # Matmul precision: float32, or bfloat16 compute with float32 parameters, optimizer
    # state, router, softmax, norms and loss (None: bfloat16 on GPU/TPU, float32 on CPU).
    precision: str | None = None
    # Steps dispatched beyond the one whose loss the host is reading.
    steps_ahead: int = 2


# The TrainConfig fields that change the compiled program (the rest steer the loop).
_PROGRAM_FIELDS = (
    "batch_size",
    "learning_rate",
    "warmup_steps",
    "weight_decay",
    "grad_clip",
    "beta2",
    "precision",
)


@dataclass(frozen=True)
class TrialResult:
    """One trial; `to_json` is what the controller stores (no NaN or inf anywhere)."""

    status: str
    reason: str | None = None
    traceback: str | None = None
    val_loss: float | None = None
    val_loss_inference: float | None = None  # expert-choice blocks: batch-1 routing
    perplexity: float | None = None
    bits_per_byte: float | None = None
    steps: int = 0
    tokens: int = 0
    train_s: float = 0.0
    compile_s: float = 0.0
    data_s: float = 0.0
    eval_s: float = 0.0
    reference_s: float = 0.0  # compiling and timing the reference block, outside the budget
    step_time_ms: float | None = None
    step_time_p90_ms: float | None = None
    reference_step_time_ms: float | None = None  # the reference block on the same slot
    step_time_ratio: float | None = None  # step_time_ms / reference_step_time_ms
    precision: str | None = None
    tokens_per_s: float | None = None
    params_total: int = 0
    params_activated: int = 0
    flops_per_token: int = 0
    mfu: float | None = None
    moe: list[dict[str, Any]] = field(default_factory=list)
    device: dict[str, Any] = field(default_factory=dict)
    curve: list[tuple[float, float]] = field(default_factory=list)
    smoothed_loss_at: dict[str, float] = field(default_factory=dict)
    val_loss_at: dict[str, float] = field(default_factory=dict)  # budget fraction -> loss

    def to_json(self) -> dict[str, Any]:
        return _finite({name: getattr(self, name) for name in self.__dataclass_fields__})


def _finite(value: Any) -> Any:
    """Replace non-finite floats by None, recursively (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


@dataclass
class Program:
    """Compiled train and eval steps for one (spec, optimizer, data shape); reusable.
    `eval_inference` scores expert-choice blocks with the routing an exported model runs."""

    graphdef: Any
    optimizer: optax.GradientTransformation
    train_step: Any
    eval_step: Any
    eval_inference: Any | None
    compile_s: float


def _schedule(config: TrainConfig) -> optax.Schedule:
    """Linear warm-up, then inverse square root: needs no total step count."""
    warmup = max(config.warmup_steps, 1)

    def schedule(step: jax.Array) -> jax.Array:
        step = jnp.maximum(step, 1).astype(jnp.float32)
        return config.learning_rate * jnp.minimum(step / warmup, jnp.sqrt(warmup / step))

    return schedule


def _optimizer(config: TrainConfig) -> optax.GradientTransformation:
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adamw(
            _schedule(config),
            b2=config.beta2,
            weight_decay=config.weight_decay,
            mask=decay_mask,
        ),
    )


def _cross_entropy(
    graphdef: Any, params: Any, batch: jax.Array, inference: bool = False
) -> tuple[jax.Array, Any]:
    model = nnx.merge(graphdef, params)
    logits, aux = model(batch[:, :-1], inference=inference)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()
    return ce, aux


def has_expert_choice(spec: ArchSpec) -> bool:
    return any(getattr(layer, "gating", None) == "expert_choice" for layer in spec.block.layers)


def check_batch_size(spec: ArchSpec, batch_size: int) -> None:
    """Expert choice needs batch_size x capacity >= experts to train as specified; below
    that the layer would route like an exported model at batch size 1 (a different layer),
    so such a trial is refused rather than trained."""
    for index, layer in enumerate(spec.block.layers):
        if getattr(layer, "gating", None) != "expert_choice":
            continue
        needed = expert_choice_min_batch(layer.num_experts, layer.capacity_factor)
        if batch_size < needed:
            raise ValueError(
                f"batch_size: {batch_size} is too small for the expert-choice layer "
                f"{index} ({layer.num_experts} experts at capacity {layer.capacity_factor:g} "
                f"need batch_size x capacity >= experts): use at least {needed}"
            )


def compile_program(
    graphdef: Any,
    config: TrainConfig,
    params: Any,
    batch_shape: tuple[int, int],
    inference_eval: bool = False,
) -> Program:
    """Compile (ahead of time, timed) the pure train and eval step functions."""
    optimizer = _optimizer(config)

    def train_step(params: Any, opt_state: Any, batch: jax.Array) -> tuple[Any, Any, jax.Array]:
        def loss_fn(p: Any) -> tuple[jax.Array, jax.Array]:
            ce, aux = _cross_entropy(graphdef, p, batch)
            return ce + aux["aux_loss"], ce

        (_, ce), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, ce

    def eval_step(params: Any, batch: jax.Array) -> tuple[jax.Array, list[dict[str, Any]]]:
        ce, aux = _cross_entropy(graphdef, params, batch)
        return ce, aux["moe"]

    def eval_inference(params: Any, batch: jax.Array) -> jax.Array:
        return _cross_entropy(graphdef, params, batch, inference=True)[0]

    start = time.perf_counter()
    batch = jax.ShapeDtypeStruct(batch_shape, jnp.int32)
    opt_state = jax.eval_shape(optimizer.init, params)
    train = jax.jit(train_step, donate_argnums=(0, 1)).lower(params, opt_state, batch).compile()
    evaluate = jax.jit(eval_step).lower(params, batch).compile()
    inference = jax.jit(eval_inference).lower(params, batch).compile() if inference_eval else None
    return Program(graphdef, optimizer, train, evaluate, inference, time.perf_counter() - start)


def program_key(spec: ArchSpec, config: TrainConfig, batch_shape: tuple[int, int]) -> tuple:
    """Programs differ by spec, optimizer settings and data shape, not by loop settings."""
    return (spec_hash(spec), tuple(getattr(config, f) for f in _PROGRAM_FIELDS), batch_shape)


def _program(
    spec: ArchSpec,
    config: TrainConfig,
    batch_shape: tuple[int, int],
    graphdef: Any,
    params: Any,
    programs: dict[tuple, Program] | None,
) -> tuple[Program, float]:
    """The compiled program for `spec` (from the cache when there) and its compile seconds."""
    key = program_key(spec, config, batch_shape)
    program = programs.get(key) if programs is not None else None
    if program is not None:
        return program, 0.0
    program = compile_program(graphdef, config, params, batch_shape, has_expert_choice(spec))
    if programs is not None:
        programs[key] = program
    return program, program.compile_s


def train_proxy(
    spec: ArchSpec,
    budget: float | Budget,
    data: Dataset | str,
    seed: int = 0,
    config: TrainConfig | None = None,
    *,
    reference: ArchSpec | None = None,
    should_stop: Callable[[], bool] | None = None,
    programs: dict[tuple, Program] | None = None,
    cache_dir: str | None = None,
) -> TrialResult:
    """Train `spec` for `budget` (seconds of steps, or a `Budget`) on `data` and evaluate it.

    With a `reference` block (the job's baseline), a few of its steps are timed on this
    process, right before and right after training, so `step_time_ratio` compares the
    candidate with the reference under the same load on the same device.

    Data problems and a batch too small for an expert-choice layer raise before anything
    trains. Anything going wrong while training (out of memory, a bug in a layer) returns a
    `failed` result with the reason and traceback, and leaves the process usable for the
    next trial. `programs` is a cache of compiled steps (the Ray actor keeps one).
    """
    config = config or TrainConfig()
    precision = config.precision or default_precision()
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    config = dataclasses.replace(config, precision=precision)
    budget = budget if isinstance(budget, Budget) else Budget(seconds=float(budget))
    dataset = load_dataset(data) if isinstance(data, str) else data
    dataset.check_fits(spec.seq_len)
    windows = dataset.validation_batches(config.batch_size, spec.seq_len, config.eval_tokens)
    if dataset.vocab_size > spec.vocab_size:
        raise ValueError(
            f"vocab_size: the spec's {spec.vocab_size} is smaller than the dataset's "
            f"{dataset.vocab_size}"
        )
    check_batch_size(spec, config.batch_size)
    if reference is not None:
        check_batch_size(reference, config.batch_size)
    report = cost(spec)
    base = {
        "params_total": report.params_total,
        "params_activated": report.params_activated,
        "flops_per_token": report.flops_per_token,
        "device": fingerprint(),
        "precision": precision,
    }
    try:
        enable_compilation_cache(cache_dir)
        trial = _Trial(spec, budget, dataset, windows, seed, config, programs, reference)
        return trial.run(should_stop, base, report.train_flops_per_token)
    except Exception as exc:
        message = str(exc)
        oom = isinstance(exc, MemoryError) or (
            "RESOURCE_EXHAUSTED" in message or "out of memory" in message.lower()
        )
        reason = (
            f"out of device memory: {message[:500]}"
            if oom
            else f"{type(exc).__name__}: {message[:500]}"
        )
        if oom:
            jax.clear_caches()
        return TrialResult(status="failed", reason=reason, traceback=traceback.format_exc(), **base)


def _reference_windows(steps: int, windows: int) -> list[tuple[float, int]]:
    """(fraction of the budget, reference steps) for each timing window, evenly spread from
    before training (0) to after it (1); at least one step per window."""
    windows = max(2, min(windows, steps))
    sizes = [len(part) for part in np.array_split(np.arange(steps), windows)]
    return [(i / (windows - 1), size) for i, size in enumerate(sizes)]


class _Prefetch:
    """Batches made on the host and put on the device `depth` ahead of use (double
    buffering with depth 2): the transfer of the next batch overlaps the running step."""

    def __init__(self, batches: Iterator[np.ndarray], depth: int):
        self.batches, self.depth = batches, depth
        self.ready: deque[jax.Array] = deque()
        self.seconds = 0.0  # host time spent making and sending batches

    def next(self) -> jax.Array:
        start = time.perf_counter()
        while len(self.ready) < self.depth:
            self.ready.append(jax.device_put(next(self.batches)))
        self.seconds += time.perf_counter() - start
        return self.ready.popleft()


class Steps:
    """Train steps of one program kept `ahead` in flight: the host reads step i's loss while
    steps i+1..i+ahead run, so the device never waits for Python between steps. A step's
    time runs from the later of its dispatch and the previous step's completion to its own
    completion, as seen when its loss is read."""

    def __init__(self, program: Program, params: Any, batches: Iterator[np.ndarray], ahead: int):
        self.program, self.params, self.ahead = program, params, ahead
        self.opt_state = program.optimizer.init(params)
        self.data = _Prefetch(batches, ahead + 1)
        self.pending: deque[tuple[jax.Array, float]] = deque()
        self.done_at = -math.inf  # when the last read step was seen complete

    def dispatch(self) -> None:
        batch = self.data.next()
        dispatched = time.perf_counter()
        self.params, self.opt_state, loss = self.program.train_step(
            self.params, self.opt_state, batch
        )
        self.pending.append((loss, dispatched))

    def read(self) -> tuple[float, float]:
        """(loss, seconds) of the oldest step in flight; blocks until it is done."""
        loss, dispatched = self.pending.popleft()
        value = float(loss)
        now = time.perf_counter()
        seconds = now - max(dispatched, self.done_at)
        self.done_at = now
        return value, seconds

    def run(self, steps: int) -> list[tuple[float, float]]:
        """`steps` steps, pipelined, and their (loss, seconds)."""
        out: list[tuple[float, float]] = []
        sent = 0
        while len(out) < steps:
            while sent < steps and len(self.pending) <= self.ahead:
                self.dispatch()
                sent += 1
            out.append(self.read())
        return out

    def settle(self) -> None:
        """Wait for the steps in flight without reading them (a trial that stops early)."""
        while self.pending:
            self.pending.popleft()[0].block_until_ready()


class _Reference:
    """The reference block's compiled step and state, timed in short windows on this slot,
    with the same pipelined steps as the trial's own."""

    def __init__(
        self,
        spec: ArchSpec,
        config: TrainConfig,
        dataset: Dataset,
        seed: int,
        programs: dict[tuple, Program] | None,
    ):
        start = time.perf_counter()
        graphdef, params = nnx.split(build_model(spec, seed, PRECISIONS[config.precision]))
        shape = (config.batch_size, spec.seq_len + 1)
        program, _ = _program(spec, config, shape, graphdef, params, programs)
        batches = dataset.train_batches(config.batch_size, spec.seq_len, seed)
        self.steps = Steps(program, params, batches, config.steps_ahead)
        self.times: list[float] = []
        self.seconds = time.perf_counter() - start

    def time(self, steps: int) -> None:
        """One untimed step (the caches hold the other program), then `steps` timed ones."""
        start = time.perf_counter()
        self.steps.run(1)
        self.times.extend(seconds for _, seconds in self.steps.run(steps))
        self.seconds += time.perf_counter() - start

    @property
    def step_s(self) -> float | None:
        return float(np.median(self.times)) if self.times else None


class _Trial:
    """One training run: the loop, its checkpoints (hurdles, validation at fractions) and
    the result. Steps run pipelined (`Steps`); at a checkpoint the steps in flight finish
    first, so checkpoints see the state a few steps past their fraction."""

    def __init__(
        self,
        spec: ArchSpec,
        budget: Budget,
        dataset: Dataset,
        windows: list[np.ndarray],
        seed: int,
        config: TrainConfig,
        programs: dict[tuple, Program] | None,
        reference: ArchSpec | None,
    ):
        self.spec, self.budget, self.dataset, self.windows = spec, budget, dataset, windows
        self.config = config
        batch_shape = (config.batch_size, spec.seq_len + 1)
        graphdef, params = nnx.split(build_model(spec, seed, PRECISIONS[config.precision]))
        self.program, self.compile_s = _program(
            spec, config, batch_shape, graphdef, params, programs
        )
        batches = dataset.train_batches(config.batch_size, spec.seq_len, seed)
        self.steps = Steps(self.program, params, batches, config.steps_ahead)
        self.reference = (
            _Reference(reference, config, dataset, seed, programs) if reference else None
        )
        self.step_times: list[float] = []
        self.eval_s = 0.0

    @property
    def params(self) -> Any:
        return self.steps.params

    def ratio(self) -> float | None:
        """The candidate's steady step time so far over the reference's."""
        steady = self.step_times[self.config.timing_warmup_steps :] or self.step_times
        reference = self.reference.step_s if self.reference else None
        if not steady or not reference:
            return None
        return float(np.median(steady)) / reference

    def validation_loss(self) -> float:
        start = time.perf_counter()
        losses = [
            float(self.program.eval_step(self.params, jnp.asarray(w))[0]) for w in self.windows
        ]
        self.eval_s += time.perf_counter() - start
        return float(np.mean(losses))

    def _may_dispatch(
        self, step_limit: int | None, sent: int, train_s: float, checkpoint: float | None
    ) -> bool:
        """Whether one more step fits: a steps budget counts them and stops at the next
        checkpoint's step exactly (a checkpoint sees the same state on every run); a seconds
        budget predicts when the steps in flight and this one end (from the last 5 step
        times) and allows an overshoot of at most half a step."""
        steps = self.steps
        if len(steps.pending) > steps.ahead:
            return False
        if step_limit is not None:
            limit = step_limit
            if checkpoint is not None:
                limit = min(limit, math.ceil(checkpoint * step_limit - 1e-9))
            return sent < limit
        if not self.step_times:
            return not steps.pending  # the first step, alone: nothing to predict from yet
        estimate = float(np.median(self.step_times[-5:]))
        return train_s + (len(steps.pending) + 0.5) * estimate < self.budget.seconds

    def run(
        self,
        should_stop: Callable[[], bool] | None,
        base: dict[str, Any],
        train_flops_per_token: int,
    ) -> TrialResult:
        config, budget = self.config, self.budget
        tokens_per_step = config.batch_size * self.spec.seq_len
        step_limit = budget.step_limit(train_flops_per_token, tokens_per_step)
        windows = _reference_windows(config.reference_steps, config.reference_windows)
        first = windows.pop(0)[1]
        if self.reference is not None and not (should_stop is not None and should_stop()):
            self.reference.time(first)

        def spent() -> float:  # the fraction of the budget used so far
            if step_limit is not None:
                return len(self.step_times) / step_limit
            return train_s / budget.seconds

        curve: list[tuple[float, float]] = []
        smoothed, smoothed_at, val_at = None, {}, {}
        checkpoints = sorted(
            {
                *config.report_fractions,
                *(f for f in config.eval_at if f < 1),
                *(fraction for fraction, _ in config.hurdles),
                *((config.step_hurdle[0],) if config.step_hurdle else ()),
                *(fraction for fraction, _ in windows[:-1]),
            }
        )
        interleaved = dict(windows[:-1]) if self.reference is not None else {}
        hurdles = dict(config.hurdles)
        steps = self.steps
        train_s, sent, draining = 0.0, 0, False
        status, reason = "ok", None
        while True:
            while (
                status == "ok"
                and not draining
                and self._may_dispatch(
                    step_limit, sent, train_s, checkpoints[0] if checkpoints else None
                )
            ):
                if should_stop is not None and should_stop():
                    status, reason = "cancelled", f"cancelled after {len(self.step_times)} steps"
                    break
                steps.dispatch()
                sent += 1
            if not steps.pending:
                if draining and status == "ok":  # the steps in flight are done: check now
                    draining = False
                    while checkpoints and spent() >= checkpoints[0]:
                        fraction = checkpoints.pop(0)
                        if fraction in config.report_fractions:
                            smoothed_at[f"{fraction:g}"] = smoothed
                        if fraction in config.eval_at and fraction < 1:
                            val_at[f"{fraction:g}"] = self.validation_loss()
                        if fraction in interleaved:
                            self.reference.time(interleaved.pop(fraction))
                        reason = reason or self._hurdle(fraction, smoothed, hurdles)
                    if reason is None:
                        continue
                    status = "pruned"
                break
            loss, seconds = steps.read()
            self.step_times.append(seconds)
            train_s += seconds
            curve.append((train_s, loss))
            if not math.isfinite(loss):
                status = "diverged"
                reason = f"training loss became {loss} at step {len(self.step_times)}"
                break
            beta = config.loss_smoothing
            smoothed = loss if smoothed is None else beta * smoothed + (1 - beta) * loss
            draining = draining or bool(checkpoints and spent() >= checkpoints[0])
        steps.settle()
        if smoothed is not None and status == "ok":
            smoothed_at.update(
                {f"{f:g}": smoothed for f in checkpoints if f in config.report_fractions}
            )
        if self.reference is not None and status != "cancelled":
            self.reference.time(windows[-1][1] + sum(interleaved.values()))

        steady = self.step_times[config.timing_warmup_steps :] or self.step_times
        step_s = float(np.median(steady)) if steady else None
        metrics: dict[str, Any] = {
            **base,
            "status": status,
            "reason": reason,
            "steps": len(self.step_times),
            "tokens": len(self.step_times) * tokens_per_step,
            "train_s": train_s,
            "compile_s": self.compile_s,
            "data_s": steps.data.seconds,
            "curve": _downsample(curve),
            "smoothed_loss_at": smoothed_at,
        }
        if self.reference is not None:
            metrics["reference_s"] = self.reference.seconds
            if self.reference.step_s:
                metrics["reference_step_time_ms"] = 1e3 * self.reference.step_s
        if step_s:
            tokens_per_s = tokens_per_step / step_s
            metrics.update(
                step_time_ms=1e3 * step_s,
                step_time_p90_ms=1e3 * float(np.percentile(steady, 90)),
                tokens_per_s=tokens_per_s,
                mfu=train_flops_per_token
                * tokens_per_s
                / matmul_peak_flops(dtype=config.precision),
                step_time_ratio=self.ratio(),
            )
        if status in ("ok", "pruned"):
            metrics.update(self._evaluate())
            if metrics["val_loss"] is None:
                metrics.update(status="diverged", reason="validation loss is not finite")
            elif status == "ok" and 1.0 in config.eval_at:
                val_at["1"] = metrics["val_loss"]
        metrics["val_loss_at"] = val_at
        metrics["eval_s"] = self.eval_s
        return TrialResult(**metrics)

    def _hurdle(self, fraction: float, smoothed: float, hurdles: dict[float, float]) -> str | None:
        """Why the trial stops at this checkpoint, or None to go on."""
        config, ratio = self.config, self.ratio()
        if config.step_hurdle and fraction == config.step_hurdle[0] and ratio is not None:
            limit = config.step_hurdle[1]
            if ratio > limit:
                return (
                    f"step time {ratio:.3f}x the reference's on this slot, above the limit "
                    f"{limit:g}x at {fraction:.0%} of the budget"
                )
        if fraction in hurdles and smoothed > hurdles[fraction]:
            floor = config.loss_hurdle_min_ratio
            if floor is not None and ratio is not None and ratio < floor:
                return None  # slower to learn but faster: it may still join the front
            return (
                f"smoothed training loss {smoothed:.4f} above the hurdle "
                f"{hurdles[fraction]:.4f} at {fraction:.0%} of the budget"
                + (f" and not faster than the reference ({ratio:.3f}x)" if floor else "")
            )
        return None

    def _evaluate(self) -> dict[str, Any]:
        """Mean cross-entropy on the job's fixed validation windows, plus MoE statistics;
        expert-choice blocks are also scored with the inference routing."""
        start = time.perf_counter()
        losses, stats, inference = [], [], []
        for window in self.windows:
            batch = jnp.asarray(window)
            loss, moe = self.program.eval_step(self.params, batch)
            losses.append(float(loss))
            stats.append(jax.device_get(moe))
            if self.program.eval_inference is not None:
                inference.append(float(self.program.eval_inference(self.params, batch)))
        self.eval_s += time.perf_counter() - start
        val_loss = float(np.mean(losses))
        spec, dataset = self.spec, self.dataset
        layers = spec.block.layers * spec.repeats
        moe_layers = [i for i, layer in enumerate(layers) if layer.kind == "moe"]
        moe_summary = [
            {
                "layer": layer,
                "expert_load": np.mean([s[index]["expert_load"] for s in stats], axis=0).tolist(),
                "drop_fraction": float(np.mean([s[index]["drop_fraction"] for s in stats])),
                "router_entropy": float(np.mean([s[index]["router_entropy"] for s in stats])),
            }
            for index, layer in enumerate(moe_layers)
        ]
        finite = math.isfinite(val_loss)
        bpb = (
            val_loss / math.log(2) / dataset.bytes_per_token
            if finite and dataset.bytes_per_token
            else None
        )
        inference_loss = float(np.mean(inference)) if inference else None
        return {
            "val_loss": val_loss if finite else None,
            "val_loss_inference": inference_loss,
            "perplexity": math.exp(val_loss) if finite and val_loss < 700 else None,
            "bits_per_byte": bpb,
            "moe": moe_summary,
        }


def _downsample(curve: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(curve) <= CURVE_POINTS:
        return curve
    picks = np.linspace(0, len(curve) - 1, CURVE_POINTS).round().astype(int)
    return [curve[i] for i in picks]
