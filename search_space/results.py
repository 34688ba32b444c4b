"""The trial-result contract: every field a trial reports, its type, and what it means.

Workers report these fields (`workers.trainer.TrialResult`), the controller stores each as a
candidate column (`nas_service.models`), and the API returns them (`api.schemas`); the tests
hold all three to this list. It lives here because this is the one layer every other one
imports. The learning curve has a table of its own and is not a column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ResultField:
    name: str
    type: type  # float, int, str, dict or list (JSON)
    description: str

    @property
    def scalar(self) -> bool:
        """A number: sortable, filterable, a CSV column."""
        return self.type in (int, float)


RESULT_FIELDS: tuple[ResultField, ...] = (
    ResultField("reason", str, "Why a trial did not complete: failed, diverged, pruned."),
    ResultField("traceback", str, "The error's traceback of a failed trial."),
    ResultField("val_loss", float, "Validation loss (nats per token) after training."),
    ResultField(
        "val_loss_inference",
        float,
        "Expert-choice blocks: validation loss with the batch-1 inference routing.",
    ),
    ResultField("perplexity", float, "exp(val_loss)."),
    ResultField("bits_per_byte", float, "Validation loss in bits per byte of text."),
    ResultField("steps", int, "Training steps taken within the budget."),
    ResultField("tokens", int, "Training tokens seen."),
    ResultField("train_s", float, "Seconds of training steps (what the budget counts)."),
    ResultField("compile_s", float, "Ahead-of-time compile seconds (0: already compiled)."),
    ResultField("data_s", float, "Seconds preparing batches, outside the budget."),
    ResultField("eval_s", float, "Seconds of validation, outside the budget."),
    ResultField("reference_s", float, "Seconds compiling and timing the reference block."),
    ResultField("step_time_ms", float, "Median steady-state step time, raw (for display)."),
    ResultField("step_time_p90_ms", float, "90th percentile of the step times."),
    ResultField(
        "reference_step_time_ms", float, "The job's baseline timed on the same slot, alongside."
    ),
    ResultField(
        "step_time_ratio", float, "step_time_ms / reference_step_time_ms: the comparable cost."
    ),
    ResultField("tokens_per_s", float, "Training tokens per second of steps."),
    ResultField("params_total", int, "Parameters, from the cost model."),
    ResultField("params_activated", int, "Parameters a token touches, from the cost model."),
    ResultField("flops_per_token", int, "Forward FLOPs per token, from the cost model."),
    ResultField("mfu", float, "Model FLOP utilisation against the device's measured peak."),
    ResultField(
        "precision", str, "Matmul precision: float32, or bfloat16 with float32 parameters."
    ),
    ResultField("moe", list, "Per MoE layer: expert load, dropped fraction, router entropy."),
    ResultField("device", dict, "Device fingerprint the trial ran on."),
    ResultField("smoothed_loss_at", dict, "Smoothed training loss at budget fractions."),
    ResultField("val_loss_at", dict, "Validation loss at budget fractions."),
)

RESULT_NAMES: tuple[str, ...] = tuple(f.name for f in RESULT_FIELDS)


def describe(name: str) -> str:
    return next(f.description for f in RESULT_FIELDS if f.name == name)


def result_values(result: dict[str, Any]) -> dict[str, Any]:
    """A worker's result (JSON) as the contract's fields; missing ones are None."""
    return {name: result.get(name) for name in RESULT_NAMES}
