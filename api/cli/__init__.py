"""The `nas` command line. Sub-commands import what they need lazily to start fast."""

from __future__ import annotations

import typer

from api.cli.client import (
    cancel_cmd,
    export_cmd,
    jobs_cmd,
    pause_cmd,
    resume_cmd,
    status_cmd,
    submit_cmd,
    watch_cmd,
)
from api.cli.confirm import confirm_cmd
from api.cli.demo import demo
from api.cli.results import compare_cmd, enqueue_cmd, importance_cmd, note_cmd
from api.cli.runner import runner_cmd
from api.cli.serve import serve_cmd
from api.cli.space import space_app
from api.cli.train import train_proxy_cmd

app = typer.Typer(
    name="nas",
    help="Brainformer-style neural architecture search: search spaces, proxy training, jobs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(space_app, name="space")
app.command("demo")(demo)
app.command("train-proxy")(train_proxy_cmd)
app.command("runner")(runner_cmd)
app.command("serve")(serve_cmd)
app.command("submit")(submit_cmd)
app.command("jobs")(jobs_cmd)
app.command("status")(status_cmd)
app.command("watch")(watch_cmd)
app.command("pause")(pause_cmd)
app.command("resume")(resume_cmd)
app.command("cancel")(cancel_cmd)
app.command("export")(export_cmd)
app.command("confirm")(confirm_cmd)
app.command("enqueue")(enqueue_cmd)
app.command("note")(note_cmd)
app.command("compare")(compare_cmd)
app.command("importance")(importance_cmd)


def main() -> None:
    app()
