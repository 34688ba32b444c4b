"""Service settings, from `NAS_*` environment variables (pydantic-settings)."""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Everything is optional: the embedded default is SQLite in `home` and a local Ray."""

    model_config = SettingsConfigDict(env_prefix="NAS_", extra="ignore")

    home: Path = Field(default=Path("~/.nas-service"), description="State directory.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<home>/nas.db."
    )
    ray_address: str | None = Field(
        default=None, description="Ray cluster address; unset starts a local Ray."
    )
    jax_cache_dir: str | None = Field(
        default=None, description="Persistent JAX compilation cache for workers."
    )
    runner_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="Identifies a runner in job leases.",
    )
    lease_s: float = Field(default=30.0, gt=0, description="A job lease lasts this long.")
    heartbeat_s: float = Field(default=5.0, gt=0, description="How often a runner renews.")
    poll_s: float = Field(default=0.2, gt=0, description="Runner loop sleep when idle.")
    data_roots: Annotated[list[Path] | None, NoDecode] = Field(
        default=None,
        description="Comma-separated directories datasets must lie in (symlinks resolved); "
        "unset: any path the server can read.",
    )
    max_text_bytes: int = Field(
        default=2 * 2**30,
        ge=1,
        description="Cap on a text: folder, which is read into memory (sum of its file sizes).",
    )
    program_cache_size: int = Field(
        default=32, ge=1, description="Compiled programs each worker actor keeps (LRU)."
    )

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value or None

    db_retry_s: float = Field(
        default=300.0,
        gt=0,
        description="How long the runner retries a step through transient database errors.",
    )
    probe_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="A worker that does not answer for this long is replaced by a new one.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="Log every finished trial to this MLflow tracking URI (a server's "
        "http(s)://, sqlite:///, file:); unset: no tracking. Needs nas-service[mlflow].",
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        home = self.home.expanduser()
        home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{home / 'nas.db'}"


@cache
def get_settings() -> Settings:
    return Settings()
