"""The time-budgeted trainer on real data: budgets, divergence, hurdles, failures."""

import json
import math
from pathlib import Path

import pytest

from search_space import ArchSpec, baseline
from workers.data import DatasetError
from workers.trainer import TrainConfig, train_proxy

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
