"""`nas train-proxy`: train one block locally, exactly as a worker would, and print the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from api.cli.space import PresetOption, fail, load_spec, preset_or_fail
from nas_service.job_config import DEFAULT_BUDGET_S, PRECISIONS
from search_space import BASELINES, baseline


def train_proxy_cmd(
    spec_file: Annotated[
        Path | None, typer.Argument(help="Spec JSON file (or use --baseline).")
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option(min=0.1, help=f"Training seconds (steps only; default {DEFAULT_BUDGET_S:g})."),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(min=1, help="Train this many steps instead (reproducible).")
    ] = None,
    flops: Annotated[
        float | None,
        typer.Option(min=1.0, help="Train this many FLOPs instead (cost model; reproducible)."),
    ] = None,
    data: Annotated[
        str, typer.Option(help="text:PATH, tokens:PATH or builtin:stdlib.")
    ] = "builtin:stdlib",
    baseline_name: Annotated[
        str | None, typer.Option("--baseline", help=f"One of: {', '.join(BASELINES)}.")
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            help="A baseline timed on the same process before and after training: the "
            "result's step_time_ratio is the step time over this one's."
        ),
    ] = None,
    preset: PresetOption = "proxy-cpu",
    seed: Annotated[int, typer.Option(min=0)] = 0,
    batch_size: Annotated[int, typer.Option(min=1, max=4096)] = 16,
    learning_rate: Annotated[float, typer.Option(min=0.0, max=10.0)] = 3e-3,
    precision: Annotated[
        str | None,
        typer.Option(
            help="float32 or bfloat16 (float32 parameters); default: bfloat16 on GPU/TPU, "
            "float32 on CPU."
        ),
    ] = None,
) -> None:
    """Train a proxy LM for a fixed budget (seconds, steps or FLOPs); print the result as JSON."""
    if (spec_file is None) == (baseline_name is None):
        fail("give either SPEC_FILE or --baseline")
    for option, name in ((baseline_name, "--baseline"), (reference, "--reference")):
        if option is not None and option not in BASELINES:
            fail(f"{name}: unknown baseline {option!r} (known: {', '.join(BASELINES)})")
    given = [
        name
        for name, value in (("--budget", budget), ("--steps", steps), ("--flops", flops))
        if value is not None
    ]
    if len(given) > 1:
        fail(f"{' and '.join(given)}: give only one of --budget, --steps and --flops")
    if precision is not None and precision not in PRECISIONS:
        fail(f"--precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    space = preset_or_fail(preset)
    spec = load_spec(spec_file) if spec_file is not None else baseline(baseline_name, space)
    from workers.data import DatasetError, load_dataset, resolve_source
    from workers.trainer import Budget, TrainConfig, train_proxy

    try:
        dataset = load_dataset(resolve_source(data))
        result = train_proxy(
            spec,
            Budget(seconds=budget, steps=steps, flops=flops)
            if given
            else Budget(seconds=DEFAULT_BUDGET_S),
            dataset,
            seed=seed,
            config=TrainConfig(
                batch_size=batch_size, learning_rate=learning_rate, precision=precision
            ),
            reference=baseline(reference, space) if reference else None,
        )
    except DatasetError as exc:
        fail(f"--data: {exc.message}")
    except ValueError as exc:
        message = str(exc)
        batch = message.startswith("batch_size")
        fail(message.replace("batch_size", "--batch-size", 1) if batch else message)
    typer.echo(json.dumps(result.to_json(), indent=2))
