"""`nas runner`: the controller process on its own (the API issue adds `nas serve`)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Annotated

import typer


def runner_cmd(
    until_idle: Annotated[
        bool, typer.Option(help="Exit when no job is left to run (for scripts and tests).")
    ] = False,
) -> None:
    """Claim queued jobs and run their searches on Ray (NAS_DATABASE_URL, NAS_RAY_ADDRESS)."""
    from nas_service.runner import Runner

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        Runner().run(stop, until_idle=until_idle)
    finally:
        stop_ray()


def stop_ray() -> None:
    """Disconnect from Ray, ending the local Ray this process started (not a cluster it
    joined), and whatever of it outlives that: the raylet's dashboard and runtime-env agents
    otherwise survive a Ctrl+C for a while, or for good when the raylet was killed."""
    import ray

    from api.cli.local_server import descendants, end_processes

    family = descendants(os.getpid())
    if ray.is_initialized():
        ray.shutdown()
    end_processes(family)
