"""Shared test settings and fixtures."""

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
