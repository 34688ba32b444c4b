"""`nas space ...`: sample, cost and scale specs offline (no server needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from search_space import (
    BASELINES,
    PRESETS,
    ArchSpec,
    CostReport,
    baseline,
    cost,
    describe,
    get_preset,
    sample,
    scale,
)
from search_space.scaling import describe_rounding
from search_space.specs import describe_layer

space_app = typer.Typer(help="Sample, inspect, cost and scale block specs.", no_args_is_help=True)
console = Console()

PresetOption = Annotated[str, typer.Option(help=f"Search space preset: {', '.join(PRESETS)}.")]


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def field_errors(error: ValidationError) -> str:
    """One line per problem, each naming its field path (e.g. block.layers.2.heads)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '(root)'}: {item['msg']}"
        for item in error.errors()
    )


def load_spec(path: Path) -> ArchSpec:
    try:
        text = path.read_text()
    except OSError as exc:
        fail(f"cannot read spec file {path}: {exc.strerror}")
    try:
        return ArchSpec.model_validate_json(text)
    except ValidationError as exc:
        fail(f"invalid spec in {path}: {field_errors(exc)}")
    raise AssertionError("unreachable")


def preset_or_fail(name: str):
    try:
        return get_preset(name)
    except ValueError as exc:
        fail(f"--preset: {exc}")


def print_cost(spec: ArchSpec, report: CostReport) -> None:
    console.print(describe(spec))
    table = Table("#", "layer", "params", "activated", "fwd FLOPs/token")
    for layer_spec, layer in zip(spec.block.layers, report.layers, strict=True):
        table.add_row(
            str(layer.index),
            describe_layer(layer_spec),
            f"{layer.params:,}",
            f"{layer.params_activated:,}",
            f"{layer.flops_per_token:,}",
        )
    console.print(table)
    console.print(
        f"block x{report.repeats}: params {report.params_total:,} total, "
        f"{report.params_activated:,} activated ({report.params_embedding:,} embedding); "
        f"{report.flops_per_token:,} fwd FLOPs/token, {report.train_flops_per_token:,} train; "
        f"activations ~{report.activation_bytes_per_sequence / 2**20:.1f} MiB per sequence"
    )


@space_app.command("sample")
def sample_cmd(
    preset: PresetOption = "proxy-cpu",
    n: Annotated[int, typer.Option(min=1, max=100_000, help="How many specs.")] = 5,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
) -> None:
    """Print N random specs of a preset, one JSON object per line."""
    space = preset_or_fail(preset)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        typer.echo(sample(space, rng).to_json())


@space_app.command("baseline")
def baseline_cmd(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(BASELINES)}.")],
    preset: PresetOption = "proxy-cpu",
) -> None:
    """Print a baseline block (dense, GLaM, Switch, GLaM with expert choice) as JSON."""
    if name not in BASELINES:
        fail(f"name: unknown baseline {name!r} (known: {', '.join(BASELINES)})")
    typer.echo(baseline(name, preset_or_fail(preset)).to_json())


@space_app.command("cost")
def cost_cmd(
    spec_file: Annotated[Path, typer.Argument(help="Spec JSON file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Parameters, activated parameters, FLOPs and activation memory of a spec."""
    spec = load_spec(spec_file)
    report = cost(spec)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        print_cost(spec, report)


@space_app.command("scale")
def scale_cmd(
    spec_file: Annotated[Path, typer.Argument(help="Spec JSON file.")],
    target: Annotated[str, typer.Option(help="100M, 1B, 8B or a parameter count.")] = "100M",
    recipe: Annotated[str, typer.Option(help="fit (hit the target) or paper.")] = "fit",
    vocab_size: Annotated[int, typer.Option(min=2)] = 32_000,
    seq_len: Annotated[int, typer.Option(min=1)] = 1_024,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Scale a spec to a target size; print the scaled spec and its cost."""
    spec = load_spec(spec_file)
    try:
        result = scale(spec, target, recipe=recipe, vocab_size=vocab_size, seq_len=seq_len)
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    typer.echo(result.spec.to_json())
    print_cost(result.spec, result.cost)
    console.print(
        f"target {result.target} ({result.target_params:,} activated, recipe {result.recipe}): "
        f"{result.relative_error:+.1%} {'within' if result.within_tolerance else 'outside'} ±10%"
    )
    if result.rounding:
        console.print(f"rounded for accelerators: {describe_rounding(result.rounding)}")
