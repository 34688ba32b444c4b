"""Engine, the one session/transaction helper, and schema upgrades through Alembic.

SQLite (the embedded default) runs in WAL mode with foreign keys on and a busy timeout, so
the API can read while the runner writes; PostgreSQL (psycopg 3) is the production database.
Neither has its tables made by `create_all`: `upgrade()` runs the Alembic migrations.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain postgresql:// URLs."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def make_engine(url: str, durable: bool = True, busy_timeout_s: float = 30.0) -> Engine:
    """`durable=False` lets PostgreSQL acknowledge a commit before its WAL reaches disk
    (`synchronous_commit=off`): a server crash may lose the last fraction of a second of
    commits, never consistency. The runner uses it: every write it makes is replayed after
    a restart (rows are rebuilt from what is stored, lost results are trained again), and a
    commit costs ~0.3 ms instead of a disk flush."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": busy_timeout_s})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    engine = create_engine(url, pool_pre_ping=True)
    if not durable:

        @event.listens_for(engine, "connect")
        def _asynchronous_commit(connection, _record) -> None:
            with connection.cursor() as cursor:
                cursor.execute("SET synchronous_commit = off")
            connection.commit()

    return engine


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at `url` to `revision` (idempotent)."""
    command.upgrade(alembic_config(url), revision)


class Database:
    """An engine and its session factory; `transaction()` is the only way to write."""

    def __init__(self, url: str, durable: bool = True, busy_timeout_s: float = 30.0):
        """`busy_timeout_s`: how long SQLite waits for another writer's lock."""
        self.url = normalize_url(url)
        self.engine = make_engine(self.url, durable, busy_timeout_s)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any exception."""
        with self.sessions.begin() as session:
            yield session

    def upgrade(self) -> None:
        upgrade(self.url)

    def dispose(self) -> None:
        self.engine.dispose()
