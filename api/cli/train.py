"""`nas train-proxy`: train one block locally, exactly as a worker would, and print the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from api.cli.space import PresetOption, fail, load_spec, preset_or_fail
from search_space import BASELINES, baseline


def train_proxy_cmd(
    spec_file: Annotated[
        Path | None, typer.Argument(help="Spec JSON file (or use --baseline).")
    ] = None,
    budget: Annotated[float, typer.Option(min=0.1, help="Training seconds (steps only).")] = 30.0,
    data: Annotated[
        str, typer.Option(help="text:PATH, tokens:PATH or builtin:stdlib.")
    ] = "builtin:stdlib",
    baseline_name: Annotated[
        str | None, typer.Option("--baseline", help=f"One of: {', '.join(BASELINES)}.")
    ] = None,
    preset: PresetOption = "proxy-cpu",
    seed: Annotated[int, typer.Option(min=0)] = 0,
    batch_size: Annotated[int, typer.Option(min=1, max=4096)] = 16,
    learning_rate: Annotated[float, typer.Option(min=0.0, max=10.0)] = 3e-3,
) -> None:
    """Train a proxy LM for a fixed wall-clock budget; print the result as JSON."""
    if (spec_file is None) == (baseline_name is None):
        fail("give either SPEC_FILE or --baseline")
    if baseline_name is not None and baseline_name not in BASELINES:
        fail(f"--baseline: unknown baseline {baseline_name!r} (known: {', '.join(BASELINES)})")
    spec = (
        load_spec(spec_file)
        if spec_file is not None
        else baseline(baseline_name, preset_or_fail(preset))
    )
    from workers.data import DatasetError, load_dataset, resolve_source
    from workers.trainer import TrainConfig, train_proxy

    try:
        dataset = load_dataset(resolve_source(data))
        result = train_proxy(
            spec,
            budget,
            dataset,
            seed=seed,
            config=TrainConfig(batch_size=batch_size, learning_rate=learning_rate),
        )
    except DatasetError as exc:
        fail(f"--data: {exc}")
    except ValueError as exc:
        fail(str(exc))
    typer.echo(json.dumps(result.to_json(), indent=2))
