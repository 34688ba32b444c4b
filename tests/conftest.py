"""Shared test settings and fixtures, and the check that CI skips only what it may.

Skips: every test skipped is counted by reason in the summary. With `NAS_CI_STRICT_SKIPS=1`
(`.ci/run` sets it) a skip whose reason is not in `ALLOWED_SKIPS` (or in `NAS_ALLOWED_SKIPS`,
reasons' substrings separated by `;`, for another machine) fails the session, so a test that
should run on CI cannot go quietly missing (a corpus not found, a server not answering).
"""

import functools
import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("default")

# The project's own test corpus (300 KB of tinyshakespeare; tests/data/README.md): a fresh
# clone runs every test that needs text, with nothing from outside the project.
SHAKESPEARE = Path(__file__).resolve().parent / "data" / "tinyshakespeare_head.txt"


@pytest.fixture(scope="session")
def shakespeare() -> str:
    """The test corpus as a dataset source."""
    return f"text:{SHAKESPEARE}"


@pytest.fixture(scope="session")
def shakespeare_data(shakespeare):
    from workers.data import load_dataset

    return load_dataset(shakespeare)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session (starting one costs seconds). It declares one
    GPU, which this machine may not have: Ray only hands out the resource (and its share's
    environment), JAX in an actor holding it still finds the CPU."""
    import ray

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# The conventional local server (trust auth, database `test`), tried when
# NAS_TEST_POSTGRES_URL is unset, so a developer's machine with one runs these tests too.
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_CONNECT_TIMEOUT_S = 3


@functools.cache
def _postgres_answer() -> tuple[str, str | None]:
    """(URL, None) when the test PostgreSQL answers, else (URL, why not): asked once a session,
    so a missing server costs one short timeout, not one per test."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = os.environ.get("NAS_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    given = bool(os.environ.get("NAS_TEST_POSTGRES_URL"))
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    plain = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        psycopg.connect(plain, connect_timeout=POSTGRES_CONNECT_TIMEOUT_S).close()
    except psycopg.Error as exc:
        where = f"NAS_TEST_POSTGRES_URL={shown}" if given else f"the default {shown}"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return url, f"no PostgreSQL answers at {where} ({reason})"
    return url, None


def _postgres_url() -> str:
    url, problem = _postgres_answer()
    if problem:
        pytest.skip(problem)
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


# --- skips: counted by reason; under NAS_CI_STRICT_SKIPS=1 only these may skip ----------

STRICT_SKIPS_ENV = "NAS_CI_STRICT_SKIPS"
EXTRA_SKIPS_ENV = "NAS_ALLOWED_SKIPS"
SKIP_REPORT_ENV = "NAS_SKIP_REPORT"
# A substring of each reason allowed on CI (2 CPU cores, root, no container engine), and why.
ALLOWED_SKIPS: dict[str, str] = {
    "no docker compose / docker-compose here": "test_deploy: the CI machine has no container "
    "engine or compose plugin; the compose file is still checked against the schema by hand",
    "root reads files of mode 000": "test_data, test_datasets_api: CI runs as root, which reads "
    "any file, so an unreadable file cannot be made",
    "needs 3 cores": "test_cores: the CI machine has 2 CPU cores",
    "shared/schemas not beside the project": "test_deploy: compares the project's copy of the "
    "KubeRay CRD schema with its source in ../shared, an optional extra outside the project",
}

_skips: Counter[str] = Counter()


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _allowed(reason: str) -> bool:
    extra = [s.strip() for s in os.environ.get(EXTRA_SKIPS_ENV, "").split(";") if s.strip()]
    return any(allowed in reason for allowed in [*ALLOWED_SKIPS, *extra])


def _strict() -> bool:
    return os.environ.get(STRICT_SKIPS_ENV, "") not in ("", "0")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skips[_skip_reason(report)] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under strict skips, a skip not on the allow-list fails a session that passed."""
    unexpected = sum(n for reason, n in _skips.items() if not _allowed(reason))
    if path := os.environ.get(SKIP_REPORT_ENV):
        report = {"skipped": sum(_skips.values()), "unexpected": unexpected, "by_reason": _skips}
        Path(path).write_text(json.dumps(report, indent=2) + "\n")
    if _strict() and unexpected and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _skips:
        return
    strict = _strict()
    terminalreporter.section(f"skips by reason ({sum(_skips.values())})")
    for reason, n in _skips.most_common():
        mark = "" if _allowed(reason) else " [NOT ALLOWED]" if strict else " [not on CI's list]"
        terminalreporter.write_line(f"{n:4d} x {reason}{mark}")
    unexpected = sum(n for reason, n in _skips.items() if not _allowed(reason))
    if strict and unexpected:
        terminalreporter.write_line(
            f"{unexpected} test(s) skipped for a reason not allowed here ({STRICT_SKIPS_ENV}=1): "
            f"make them run, or add the reason to ALLOWED_SKIPS in tests/conftest.py with why",
            red=True,
            bold=True,
        )
