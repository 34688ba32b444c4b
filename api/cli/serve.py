"""`nas serve`: the API and a runner in one process group (the embedded mode by default)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Annotated, Any

import typer

from api.cli.local_server import stop_server


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
    from api.auth import get_auth_settings, warn_if_exposed
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
    if get_auth_settings().enabled and not settings.data_roots:
        typer.echo(
            "warning: API tokens are set but NAS_DATA_ROOTS is not: any token holder can train "
            "on (and so read) any file this server can read. Set NAS_DATA_ROOTS to the dataset "
            "directories.",
            err=True,
        )
    supervisor: RunnerSupervisor | None = None

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            """The runner got the same Ctrl+C and exits: it must not be restarted meanwhile."""
            if supervisor is not None:
                supervisor.stopping()
            super().handle_exit(sig, frame)

    def shutdown() -> None:
        """Stop the runner with the server. Later signals (a second Ctrl+C; the demo's SIGTERM
        after the group's SIGINT) are ignored: cutting the runner's shutdown short would leave
        its Ray behind."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)
        if supervisor is not None:
            supervisor.stop()

    def stop(*_: object) -> None:
        """uvicorn re-raises the signal that stopped it once it has shut down, so this handler
        (restored by then) also runs on SIGTERM/SIGINT; before uvicorn runs, it stops all."""
        shutdown()
        raise SystemExit(0)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    upgrade(settings.resolved_database_url)
    if runner:  # its own process: Ray's driver and JAX stay out of the API's event loop
        supervisor = RunnerSupervisor([sys.executable, "-m", "api.cli", "runner"])
        supervisor.start()
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    typer.echo(f"database: {settings.resolved_database_url}")
    typer.echo(f"dashboard: {url}/   API: {url}/api/v1   docs: {url}/docs")

    # A bounded graceful shutdown: an open event stream (a dashboard tab) would hold it forever.
    config = uvicorn.Config(
        create_app(), host=host, port=port, log_level="warning", timeout_graceful_shutdown=3
    )
    server = Server(config)
    try:
        server.run()
    except KeyboardInterrupt:  # as uvicorn.run: a signal before its handlers were in place
        pass
    finally:
        shutdown()
    if not server.started:  # as uvicorn.run: it could not start (e.g. the port is taken)
        raise SystemExit(3)


class RunnerSupervisor:
    """Keeps a runner process beside the API: when it dies (killed, out of memory, or out of
    retries after a long database outage), says why and starts a new one, waiting 1, 2, 4 ...
    up to 60 s between restarts (back to 1 s once one has run for a minute). The new runner
    takes the jobs over from the database, as after any restart."""

    def __init__(self, argv: list[str], max_backoff_s: float = 60.0):
        self.argv, self.max_backoff_s = argv, max_backoff_s
        self.process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and a stop never cross
        self._thread = threading.Thread(target=self._watch, name="runner-supervisor", daemon=True)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=os.environ)
        self._thread.start()

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            code = self.process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > 60:
                backoff = 1.0
            why = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            typer.echo(
                f"warning: the runner stopped ({why}); restarting in {backoff:g} s", err=True
            )
            if self._stopping.wait(backoff):
                return
            backoff = min(2 * backoff, self.max_backoff_s)
            with self._lock:
                if self._stopping.is_set():
                    return
                self.process = subprocess.Popen(self.argv, env=os.environ)

    def stopping(self) -> None:
        """No more restarts: the service is shutting down (`stop` ends the runner)."""
        self._stopping.set()

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self.process
        if process is not None and process.poll() is None:
            stop_server(process, timeout=30)  # SIGTERM, then SIGKILL after the timeout
