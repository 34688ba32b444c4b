"""`nas serve`: the API and a runner in one process group (the embedded mode by default)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Annotated

import typer


def serve_cmd(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL (default: NAS_DATABASE_URL or SQLite).")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster (default: NAS_RAY_ADDRESS or a local Ray).")
    ] = None,
    runner: Annotated[bool, typer.Option(help="Start a runner beside the API.")] = True,
) -> None:
    """Serve the REST API and dashboard, with a runner process beside it."""
    import uvicorn

    from api.app import create_app
    from api.auth import warn_if_exposed
    from nas_service.db import upgrade
    from nas_service.settings import get_settings

    if database_url:
        os.environ["NAS_DATABASE_URL"] = database_url
    if ray_address:
        os.environ["NAS_RAY_ADDRESS"] = ray_address
    get_settings.cache_clear()
    settings = get_settings()
    warning = warn_if_exposed(host)  # also fails early on a malformed NAS_API_TOKENS
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    upgrade(settings.resolved_database_url)
    process = None
    if runner:  # its own process: Ray's driver and JAX stay out of the API's event loop
        process = subprocess.Popen([sys.executable, "-m", "api.cli", "runner"], env=os.environ)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    typer.echo(f"database: {settings.resolved_database_url}")
    typer.echo(f"dashboard: {url}/   API: {url}/api/v1   docs: {url}/docs")

    def stop(*_: object) -> None:
        """Stop the runner with the server. uvicorn re-raises the signal that stopped it once
        it has shut down, so this handler (restored by then) also runs on SIGTERM/SIGINT."""
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        raise SystemExit(0)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    try:
        uvicorn.run(create_app(), host=host, port=port, log_level="warning")
    finally:
        stop()
