"""The `nas` command line. Sub-commands import what they need lazily to start fast."""

from __future__ import annotations

import typer

from api.cli.space import demo, space_app

app = typer.Typer(
    name="nas",
    help="Brainformer-style neural architecture search: search spaces, proxy training, jobs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(space_app, name="space")
app.command("demo")(demo)


def main() -> None:
    app()
