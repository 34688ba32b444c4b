"""Train a proxy LM for a fixed wall-clock budget and report honest metrics.

The budget counts training steps only: each step is timed from dispatch to
`block_until_ready`, and the loop stops when the next step would overshoot the budget by
more than half a step. Compilation (ahead of time), data loading and evaluation are timed
separately. Faster blocks therefore get more steps, which is the point of the paper's
fixed wall-clock trials.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from search_space.cost import cost
from search_space.specs import ArchSpec, spec_hash
from workers.data import Dataset, load_dataset
from workers.device import enable_compilation_cache, fingerprint, matmul_peak_flops
from workers.model import build_model

STATUSES = ("ok", "diverged", "pruned", "failed", "cancelled")
CURVE_POINTS = 100


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
    # loss exceeds the threshold once that fraction of the budget is spent.
    hurdles: tuple[tuple[float, float], ...] = ()
    # Fractions of the budget at which the smoothed training loss is reported (the
    # controller sets a candidate's hurdle from the baseline's loss at the same fraction).
    report_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)


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
    step_time_ms: float | None = None
    step_time_p90_ms: float | None = None
    reference_step_time_ms: float | None = None  # the reference block on the same slot
    step_time_ratio: float | None = None  # step_time_ms / reference_step_time_ms
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
    """Compiled train and eval steps for one (spec, config, data shape); reusable."""

    graphdef: Any
    optimizer: optax.GradientTransformation
    train_step: Any
    eval_step: Any
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


def _cross_entropy(graphdef: Any, params: Any, batch: jax.Array) -> tuple[jax.Array, Any]:
    model = nnx.merge(graphdef, params)
    logits, aux = model(batch[:, :-1])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()
    return ce, aux


def compile_program(
    graphdef: Any, config: TrainConfig, params: Any, batch_shape: tuple[int, int]
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

    start = time.perf_counter()
    batch = jax.ShapeDtypeStruct(batch_shape, jnp.int32)
    opt_state = jax.eval_shape(optimizer.init, params)
    train = jax.jit(train_step, donate_argnums=(0, 1)).lower(params, opt_state, batch).compile()
    evaluate = jax.jit(eval_step).lower(params, batch).compile()
    return Program(graphdef, optimizer, train, evaluate, time.perf_counter() - start)


def program_key(spec: ArchSpec, config: TrainConfig, batch_shape: tuple[int, int]) -> tuple:
    return (spec_hash(spec), config, batch_shape)


def train_proxy(
    spec: ArchSpec,
    budget_s: float,
    data: Dataset | str,
    seed: int = 0,
    config: TrainConfig | None = None,
    *,
    should_stop: Callable[[], bool] | None = None,
    programs: dict[tuple, Program] | None = None,
    cache_dir: str | None = None,
) -> TrialResult:
    """Train `spec` for `budget_s` seconds of steps on `data` and evaluate it.

    Data problems raise `DatasetError` before anything trains. Anything going wrong while
    training (out of memory, a bug in a layer) returns a `failed` result with the reason
    and traceback, and leaves the process usable for the next trial. `programs` is a cache
    of compiled steps (the Ray actor keeps one across trials).
    """
    config = config or TrainConfig()
    dataset = load_dataset(data) if isinstance(data, str) else data
    dataset.check_fits(spec.seq_len)
    windows = dataset.validation_batches(config.batch_size, spec.seq_len, config.eval_tokens)
    if dataset.vocab_size > spec.vocab_size:
        raise ValueError(
            f"vocab_size: the spec's {spec.vocab_size} is smaller than the dataset's "
            f"{dataset.vocab_size}"
        )
    report = cost(spec)
    base = {
        "params_total": report.params_total,
        "params_activated": report.params_activated,
        "flops_per_token": report.flops_per_token,
        "device": fingerprint(),
    }
    try:
        return _train(
            spec,
            budget_s,
            dataset,
            windows,
            seed,
            config,
            should_stop,
            programs,
            cache_dir,
            base,
            report.train_flops_per_token,
        )
    except Exception as exc:
        message = str(exc)
        oom = "RESOURCE_EXHAUSTED" in message or "out of memory" in message.lower()
        reason = (
            f"out of device memory: {message[:500]}"
            if oom
            else f"{type(exc).__name__}: {message[:500]}"
        )
        if oom:
            jax.clear_caches()
        return TrialResult(status="failed", reason=reason, traceback=traceback.format_exc(), **base)


def _train(
    spec: ArchSpec,
    budget_s: float,
    dataset: Dataset,
    windows: list[np.ndarray],
    seed: int,
    config: TrainConfig,
    should_stop: Callable[[], bool] | None,
    programs: dict[tuple, Program] | None,
    cache_dir: str | None,
    base: dict[str, Any],
    train_flops_per_token: int,
) -> TrialResult:
    enable_compilation_cache(cache_dir)
    batch_shape = (config.batch_size, spec.seq_len + 1)
    graphdef, params = nnx.split(build_model(spec, seed))
    key = program_key(spec, config, batch_shape)
    program = programs.get(key) if programs is not None else None
    compile_s = 0.0
    if program is None:
        program = compile_program(graphdef, config, params, batch_shape)
        compile_s = program.compile_s
        if programs is not None:
            programs[key] = program
    opt_state = program.optimizer.init(params)
    batches = dataset.train_batches(config.batch_size, spec.seq_len, seed)

    step_times: list[float] = []
    curve: list[tuple[float, float]] = []
    smoothed, smoothed_at = None, {}
    checkpoints = sorted({*config.report_fractions, *(fraction for fraction, _ in config.hurdles)})
    hurdles = dict(config.hurdles)
    train_s = data_s = 0.0
    status, reason = "ok", None
    while True:
        estimate = float(np.median(step_times[-5:])) if step_times else 0.0
        if step_times and train_s + 0.5 * estimate >= budget_s:
            break
        if should_stop is not None and should_stop():
            status, reason = "cancelled", f"cancelled after {len(step_times)} steps"
            break
        start = time.perf_counter()
        batch = jnp.asarray(next(batches))
        data_s += time.perf_counter() - start
        start = time.perf_counter()
        params, opt_state, loss = program.train_step(params, opt_state, batch)
        loss = float(loss.block_until_ready())
        elapsed = time.perf_counter() - start
        step_times.append(elapsed)
        train_s += elapsed
        curve.append((train_s, loss))
        if not math.isfinite(loss):
            status, reason = "diverged", f"training loss became {loss} at step {len(step_times)}"
            break
        beta = config.loss_smoothing
        smoothed = loss if smoothed is None else beta * smoothed + (1 - beta) * loss
        while checkpoints and train_s >= checkpoints[0] * budget_s:
            fraction = checkpoints.pop(0)
            smoothed_at[f"{fraction:g}"] = smoothed
            if fraction in hurdles and smoothed > hurdles[fraction]:
                status = "pruned"
                reason = (
                    f"smoothed training loss {smoothed:.4f} above the hurdle "
                    f"{hurdles[fraction]:.4f} at {fraction:.0%} of the budget"
                )
        if status == "pruned":
            break
    if smoothed is not None and checkpoints and status == "ok":
        smoothed_at.update({f"{fraction:g}": smoothed for fraction in checkpoints})

    steady = step_times[config.timing_warmup_steps :] or step_times
    step_s = float(np.median(steady)) if steady else None
    tokens_per_step = config.batch_size * spec.seq_len
    metrics: dict[str, Any] = {
        **base,
        "status": status,
        "reason": reason,
        "steps": len(step_times),
        "tokens": len(step_times) * tokens_per_step,
        "train_s": train_s,
        "compile_s": compile_s,
        "data_s": data_s,
        "curve": _downsample(curve),
        "smoothed_loss_at": smoothed_at,
    }
    if step_s:
        tokens_per_s = tokens_per_step / step_s
        metrics.update(
            step_time_ms=1e3 * step_s,
            step_time_p90_ms=1e3 * float(np.percentile(steady, 90)),
            tokens_per_s=tokens_per_s,
            mfu=train_flops_per_token * tokens_per_s / matmul_peak_flops(),
        )
    if status in ("ok", "pruned"):
        metrics.update(_evaluate(program, params, windows, dataset, spec))
        if metrics["val_loss"] is None:
            metrics.update(status="diverged", reason="validation loss is not finite")
    return TrialResult(**metrics)


def _evaluate(
    program: Program, params: Any, windows: list[np.ndarray], dataset: Dataset, spec: ArchSpec
) -> dict[str, Any]:
    """Mean cross-entropy on the job's fixed validation windows, plus MoE statistics."""
    start = time.perf_counter()
    losses, stats = [], []
    for window in windows:
        loss, moe = program.eval_step(params, jnp.asarray(window))
        losses.append(float(loss))
        stats.append(jax.device_get(moe))
    val_loss = float(np.mean(losses))
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
    return {
        "val_loss": val_loss if finite else None,
        "perplexity": math.exp(val_loss) if finite and val_loss < 700 else None,
        "bits_per_byte": bpb,
        "moe": moe_summary,
        "eval_s": time.perf_counter() - start,
    }


def _downsample(curve: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(curve) <= CURVE_POINTS:
        return curve
    picks = np.linspace(0, len(curve) - 1, CURVE_POINTS).round().astype(int)
    return [curve[i] for i in picks]
