"""The time-budgeted trainer on real data: budgets, divergence, hurdles, failures."""

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from search_space import ArchSpec, baseline
from search_space.cost import cost
from workers.data import DatasetError
from workers.trainer import Budget, TrainConfig, train_proxy

FIELDS = {
    "status",
    "reason",
    "val_loss",
    "perplexity",
    "bits_per_byte",
    "steps",
    "tokens",
    "train_s",
    "compile_s",
    "eval_s",
    "step_time_ms",
    "step_time_p90_ms",
    "tokens_per_s",
    "params_total",
    "params_activated",
    "flops_per_token",
    "mfu",
    "moe",
    "device",
    "curve",
}


def no_nan(value) -> bool:
    text = json.dumps(value, allow_nan=False)  # raises on NaN or inf
    return bool(text)


# A short warm-up so that the loss falls within a few steps even on a loaded machine.
QUICK = TrainConfig(warmup_steps=5)


@pytest.fixture(scope="module")
def glam_run(shakespeare_data):
    programs: dict = {}
    result = train_proxy(baseline("glam"), 4.0, shakespeare_data, config=QUICK, programs=programs)
    return result, programs


def test_loss_falls_within_a_short_budget(glam_run):
    result, _ = glam_run
    out = result.to_json()
    assert out["status"] == "ok", out["reason"]
    assert set(out) >= FIELDS and no_nan(out)
    first, last = out["curve"][0][1], out["curve"][-1][1]
    assert first > 5.0  # ~ln(256) at initialisation
    assert last < first - 1.5
    assert out["val_loss"] < 4.0
    assert out["perplexity"] == pytest.approx(math.exp(out["val_loss"]))
    assert out["bits_per_byte"] == pytest.approx(out["val_loss"] / math.log(2))
    assert len(out["curve"]) >= 10
    assert out["tokens"] == out["steps"] * 16 * 64
    assert out["moe"] and 0 <= out["moe"][0]["drop_fraction"] <= 1
    assert sum(out["moe"][0]["expert_load"]) == pytest.approx(1.0, abs=1e-4)
    assert out["device"]["platform"] and out["device"]["jax"]
    assert 0 < out["mfu"] < 1


def test_budget_counts_steps_only(glam_run):
    result, _ = glam_run
    assert result.train_s == pytest.approx(4.0, rel=0.10)
    assert result.compile_s > 0.5  # compiled ahead of time, outside the budget
    steady_ms = result.step_time_ms
    assert steady_ms <= result.step_time_p90_ms
    assert result.steps >= 4.0 / (result.step_time_p90_ms / 1e3) * 0.5


def test_a_repeated_spec_reuses_its_compiled_program(glam_run, shakespeare_data):
    _, programs = glam_run
    again = train_proxy(baseline("glam"), 1.0, shakespeare_data, config=QUICK, programs=programs)
    assert again.status == "ok" and again.compile_s == 0.0
    assert again.train_s == pytest.approx(1.0, rel=0.2)


def test_huge_learning_rate_diverges(shakespeare_data):
    result = train_proxy(
        baseline("dense"), 5.0, shakespeare_data, config=TrainConfig(learning_rate=1e3)
    )
    out = result.to_json()
    assert out["status"] == "diverged" and "nan" in out["reason"].lower()
    assert out["val_loss"] is None and out["perplexity"] is None
    assert result.train_s < 5.0  # stopped at once
    assert no_nan(out)


def test_hurdle_prunes_at_its_fraction(shakespeare_data):
    config = TrainConfig(hurdles=((0.25, 0.5),))  # a loss of 0.5 is out of reach
    result = train_proxy(baseline("dense"), 3.0, shakespeare_data, config=config)
    assert result.status == "pruned" and "25%" in result.reason
    assert 0.75 <= result.train_s <= 1.5
    assert result.val_loss is not None  # pruned candidates are still scored
    assert "0.25" in result.smoothed_loss_at


def test_cancel_flag_stops_between_steps(shakespeare_data):
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    result = train_proxy(baseline("dense"), 30.0, shakespeare_data, should_stop=should_stop)
    assert result.status == "cancelled" and result.steps == 3
    assert result.val_loss is None


def test_out_of_memory_is_a_failed_trial_and_the_process_lives_on(shakespeare_data):
    overcommit = Path("/proc/sys/vm/overcommit_memory")
    if not overcommit.exists() or overcommit.read_text().strip() == "1":
        pytest.skip("needs a kernel that refuses impossible allocations (overcommit 0 or 2)")
    huge = ArchSpec.model_validate(
        {
            "block": {
                "d_model": 65536,
                "norm": "rmsnorm",
                "layers": [{"kind": "ffn", "hidden": 1048576, "activation": "relu"}],
            },
            "repeats": 1,
            "vocab_size": 256,
            "seq_len": 64,
        }
    )
    failed = train_proxy(huge, 1.0, shakespeare_data)
    assert failed.status == "failed"
    assert failed.reason.startswith("out of device memory") and failed.traceback
    after = train_proxy(baseline("dense"), 0.5, shakespeare_data)
    assert after.status == "ok"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("text:/nonexistent/corpus.txt", "does not exist"),
        ("csv:/tmp/x", "unknown source"),
    ],
)
def test_bad_data_is_an_error_before_training(source, message):
    with pytest.raises(DatasetError, match=message):
        train_proxy(baseline("dense"), 1.0, source)


def test_too_short_data_and_vocabulary_mismatch(tmp_path, shakespeare_data):
    short = tmp_path / "short.txt"
    short.write_text("too short")
    with pytest.raises(DatasetError, match=r"too short|needs"):
        train_proxy(baseline("dense"), 1.0, f"text:{short}")
    small_vocab = baseline("dense").model_copy(update={"vocab_size": 100})
    with pytest.raises(ValueError, match="vocab_size"):
        train_proxy(small_vocab, 1.0, shakespeare_data)


# --- budgets that reproduce, validation at fractions, the reference on the same slot -------


def wide_dense() -> ArchSpec:
    """A dense block several times slower than the proxy-cpu dense baseline."""
    return baseline("dense").model_copy(
        update={"block": baseline("dense").block.model_copy(update={"d_model": 384})}
    )


def test_a_steps_budget_reproduces_bitwise(shakespeare_data):
    budget = Budget(steps=12)
    first = train_proxy(baseline("glam"), budget, shakespeare_data, seed=3, config=QUICK)
    again = train_proxy(baseline("glam"), budget, shakespeare_data, seed=3, config=QUICK)
    assert first.status == again.status == "ok"
    assert first.steps == again.steps == 12
    assert first.val_loss == again.val_loss  # bitwise, not approximately
    assert first.val_loss_at == again.val_loss_at
    assert first.step_time_ms > 0  # still measured


def test_a_flops_budget_is_turned_into_steps_and_reproduces(shakespeare_data):
    spec = baseline("dense")
    per_step = cost(spec).train_flops_per_token * QUICK.batch_size * spec.seq_len
    budget = Budget(flops=10.5 * per_step)
    first = train_proxy(spec, budget, shakespeare_data, config=QUICK)
    again = train_proxy(spec, budget, shakespeare_data, config=QUICK)
    assert first.steps == again.steps == 10
    assert first.val_loss == again.val_loss
    other_seed = train_proxy(spec, budget, shakespeare_data, seed=1, config=QUICK)
    assert other_seed.val_loss != first.val_loss


def test_budget_takes_exactly_one_positive_kind():
    with pytest.raises(ValueError, match="exactly one"):
        Budget(seconds=1.0, steps=3)
    with pytest.raises(ValueError, match="exactly one"):
        Budget()
    with pytest.raises(ValueError, match="steps must be positive"):
        Budget(steps=0)


def test_validation_loss_is_measured_at_fractions_of_the_budget(shakespeare_data):
    config = replace(QUICK, eval_at=(0.25, 0.5, 1.0))
    result = train_proxy(baseline("dense"), Budget(steps=40), shakespeare_data, config=config)
    assert set(result.val_loss_at) == {"0.25", "0.5", "1"}
    assert result.val_loss_at["1"] == result.val_loss
    assert result.val_loss_at["0.25"] > result.val_loss  # it learns between the two
    assert result.eval_s > 0


def test_the_reference_is_timed_on_the_same_process(shakespeare_data):
    reference = baseline("dense")
    itself = train_proxy(reference, 2.0, shakespeare_data, config=QUICK, reference=reference)
    assert itself.reference_step_time_ms > 0 and itself.reference_s > 0
    assert itself.step_time_ratio == pytest.approx(
        itself.step_time_ms / itself.reference_step_time_ms
    )
    assert 0.7 < itself.step_time_ratio < 1.4  # the same program, timed two ways
    slower = train_proxy(wide_dense(), 2.0, shakespeare_data, config=QUICK, reference=reference)
    assert slower.step_time_ratio > 1.5
    assert train_proxy(reference, 0.5, shakespeare_data).step_time_ratio is None


def test_the_step_time_hurdle_prunes_a_slow_block_at_its_fraction(shakespeare_data):
    config = TrainConfig(warmup_steps=5, step_hurdle=(0.25, 1.2))
    slow = train_proxy(
        wide_dense(), Budget(steps=40), shakespeare_data, config=config, reference=baseline("dense")
    )
    assert slow.status == "pruned" and "step time" in slow.reason and "25%" in slow.reason
    assert slow.steps == 10 and slow.val_loss is not None


def test_the_pareto_loss_hurdle_spares_blocks_faster_than_the_reference(shakespeare_data):
    config = TrainConfig(warmup_steps=5, hurdles=((0.25, 0.5),), loss_hurdle_min_ratio=1.0)
    fast = train_proxy(
        baseline("dense"), Budget(steps=20), shakespeare_data, config=config, reference=wide_dense()
    )
    assert fast.status == "ok" and fast.step_time_ratio < 1
    slow = train_proxy(
        wide_dense(), Budget(steps=20), shakespeare_data, config=config, reference=baseline("dense")
    )
    assert slow.status == "pruned" and "not faster than the reference" in slow.reason


def test_expert_choice_never_trains_below_its_batch_size(shakespeare_data):
    spec = baseline("glam-ec")
    layer = next(layer for layer in spec.block.layers if layer.kind == "moe")
    too_small = int(layer.num_experts / layer.capacity_factor) - 1
    with pytest.raises(ValueError, match="batch_size"):
        train_proxy(spec, 1.0, shakespeare_data, config=TrainConfig(batch_size=too_small))


def test_expert_choice_blocks_are_also_scored_with_the_inference_routing(shakespeare_data):
    ec = train_proxy(baseline("glam-ec"), Budget(steps=10), shakespeare_data, config=QUICK)
    assert ec.status == "ok" and ec.val_loss_inference is not None
    assert math.isfinite(ec.val_loss_inference) and ec.val_loss_inference != ec.val_loss
    tc = train_proxy(baseline("glam"), Budget(steps=3), shakespeare_data, config=QUICK)
    assert tc.val_loss_inference is None


def test_reference_windows_interleave_the_baseline_with_training(shakespeare_data, monkeypatch):
    """Confirmation's A-B-A-B timing: the reference's steps in windows spread over training,
    not only before and after it."""
    from workers import trainer

    assert trainer._reference_windows(8, 2) == [(0.0, 4), (1.0, 4)]
    assert trainer._reference_windows(8, 4) == [(0.0, 2), (1 / 3, 2), (2 / 3, 2), (1.0, 2)]
    assert trainer._reference_windows(3, 8) == [(0.0, 1), (0.5, 1), (1.0, 1)]  # >= 1 step each
    seen: list[tuple[int, int]] = []
    timed = trainer._Reference.time
    trials: list[object] = []
    original_run = trainer._Trial.run

    def run(self, *args, **kwargs):
        trials.append(self)
        return original_run(self, *args, **kwargs)

    def time(self, steps):
        seen.append((len(trials[-1].step_times), steps))  # training steps so far, window
        return timed(self, steps)

    monkeypatch.setattr(trainer._Trial, "run", run)
    monkeypatch.setattr(trainer._Reference, "time", time)
    config = replace(QUICK, reference_steps=8, reference_windows=4)
    result = train_proxy(
        wide_dense(), Budget(steps=30), shakespeare_data, config=config, reference=baseline("dense")
    )
    assert result.status == "ok" and result.step_time_ratio is not None
    assert seen == [(0, 2), (10, 2), (20, 2), (30, 2)]


def test_bfloat16_trains_and_follows_float32(shakespeare_data):
    """Mixed precision: bfloat16 matmuls, float32 parameters, and a loss curve within 2% of
    float32's at every step over 25 steps of the same seed and batches."""

    def run(precision: str):
        config = replace(QUICK, precision=precision)
        return train_proxy(baseline("glam"), Budget(steps=25), shakespeare_data, config=config)

    runs = {precision: run(precision) for precision in ("float32", "bfloat16")}
    f32, bf16 = runs["float32"], runs["bfloat16"]
    assert f32.status == bf16.status == "ok"
    assert (f32.precision, bf16.precision) == ("float32", "bfloat16")
    assert len(f32.curve) == len(bf16.curve) == 25
    gaps = [abs(b - a) / a for (_, a), (_, b) in zip(f32.curve, bf16.curve, strict=True)]
    assert max(gaps) < 0.02
    assert bf16.curve[-1][1] < bf16.curve[0][1] - 1.0  # it learns
    assert bf16.val_loss == pytest.approx(f32.val_loss, rel=0.02)
    assert bf16.val_loss != f32.val_loss  # computed in another precision indeed


def test_the_default_precision_is_float32_on_a_cpu(shakespeare_data):
    result = train_proxy(baseline("dense"), Budget(steps=2), shakespeare_data, config=QUICK)
    assert result.precision == "float32" and result.to_json()["precision"] == "float32"
    with pytest.raises(ValueError, match="precision: 'float16'"):
        train_proxy(
            baseline("dense"), Budget(steps=2), shakespeare_data,
            config=replace(QUICK, precision="float16"),
        )  # fmt: skip


def _program(spec: ArchSpec, config: TrainConfig):
    from flax import nnx

    from workers.model import build_model
    from workers.trainer import compile_program

    graphdef, params = nnx.split(build_model(spec, 0))
    return compile_program(graphdef, config, params, (config.batch_size, spec.seq_len + 1)), params


def test_steps_are_dispatched_ahead_of_the_one_being_read(shakespeare_data):
    """The host reads step i while steps i+1..i+ahead are in flight (the device never waits
    for Python); a steps budget still runs exactly its steps."""
    from workers.trainer import Steps

    spec = baseline("dense")
    program, params = _program(spec, QUICK)
    in_flight: list[int] = []

    class Watched(Steps):
        def read(self):
            in_flight.append(len(self.pending))
            return super().read()

    batches = shakespeare_data.train_batches(QUICK.batch_size, spec.seq_len, 0)
    steps = Watched(program, params, batches, ahead=2)
    out = steps.run(10)
    assert len(out) == 10 and all(seconds > 0 for _, seconds in out)
    assert in_flight[:8] == [3] * 8 and in_flight[8:] == [2, 1]  # 1 read + 2 ahead, then drain
    assert not steps.pending


def test_pipelined_step_times_agree_with_synchronous_timing(shakespeare_data):
    """A step's time from completion gaps is the step's cost: the median of pipelined steps
    matches the median of steps timed one by one with block_until_ready (within 25%)."""
    import time

    import jax.numpy as jnp
    import numpy as np

    from workers.trainer import Steps

    spec = baseline("dense")
    program, params = _program(spec, QUICK)
    batches = shakespeare_data.train_batches(QUICK.batch_size, spec.seq_len, 0)
    steps = Steps(program, params, batches, ahead=2)
    steps.run(3)  # warm
    medians = {"synchronous": [], "pipelined": []}
    for _ in range(2):  # interleaved, so that a change of the machine's load hits both
        one_by_one = []
        for _ in range(8):
            batch = jnp.asarray(next(batches))
            start = time.perf_counter()
            steps.params, steps.opt_state, loss = program.train_step(
                steps.params, steps.opt_state, batch
            )
            loss.block_until_ready()
            one_by_one.append(time.perf_counter() - start)
        medians["synchronous"].append(np.median(one_by_one))
        steps.done_at = time.perf_counter()
        medians["pipelined"].append(np.median([s for _, s in steps.run(8)]))
    ratio = np.mean(medians["pipelined"]) / np.mean(medians["synchronous"])
    assert 0.75 < ratio < 1.25, medians


def test_a_seconds_budget_overshoots_by_less_than_a_window(shakespeare_data):
    """The loop stops dispatching when the steps in flight would overshoot; what it trains
    is within one window (the steps in flight) of the budget, and train_s is the sum of the
    step times."""
    result = train_proxy(baseline("dense"), 2.0, shakespeare_data, config=QUICK)
    assert result.status == "ok"
    window = (QUICK.steps_ahead + 1) * result.step_time_p90_ms / 1e3
    assert 2.0 - window < result.train_s < 2.0 + window
    assert result.curve[-1][0] == pytest.approx(result.train_s)
    assert result.steps * result.step_time_ms / 1e3 == pytest.approx(result.train_s, rel=0.3)
