"""Shared test settings and fixtures."""

import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("default")

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


@pytest.fixture(scope="session")
def shakespeare() -> str:
    """The test corpus as a dataset source (tests may read ../shared; the product does not)."""
    if not SHAKESPEARE.is_file():
        pytest.skip(f"test corpus not found at {SHAKESPEARE}")
    return f"text:{SHAKESPEARE}"


@pytest.fixture(scope="session")
def shakespeare_data(shakespeare):
    from workers.data import load_dataset

    return load_dataset(shakespeare)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session (starting one costs seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _postgres_url() -> str:
    url = os.environ.get("NAS_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("NAS_TEST_POSTGRES_URL is not set (CI sets it; e.g. postgresql://...)")
    return url


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A throwaway schema on the test PostgreSQL; yields a URL whose search_path is it."""
    from sqlalchemy import create_engine, text

    from nas_service.db import normalize_url

    base = normalize_url(_postgres_url())
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def sqlite_db(tmp_path):
    """A migrated, empty SQLite database (the runner's end-to-end tests use one kind)."""
    from nas_service.db import Database

    db = Database(f"sqlite:///{tmp_path / 'nas.db'}")
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """A migrated, empty database of each kind: SQLite always, PostgreSQL when configured."""
    from nas_service.db import Database

    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'nas.db'}"
        else:
            url = stack.enter_context(postgres_schema())
        db = Database(url)
        db.upgrade()
        stack.callback(db.dispose)
        yield db


@pytest.fixture
def client(database):
    """The app over TestClient, on each kind of database."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.deps import get_db

    app = create_app()
    app.dependency_overrides[get_db] = lambda: database
    with TestClient(app) as test_client:
        yield test_client
