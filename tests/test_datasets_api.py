"""Bad dataset inputs through the API: always a 422 naming `dataset`, and nothing stored."""

import errno
import os
import shutil
from pathlib import Path

import pytest
from test_api import API, count_jobs, job_body

from nas_service.settings import get_settings


@pytest.fixture
def nas_env(monkeypatch):
    """Set `NAS_*` variables for the service settings, which are read once and cached."""

    def set_env(**env: str) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    monkeypatch.delenv("NAS_DATA_ROOTS", raising=False)
    monkeypatch.delenv("NAS_MAX_TEXT_BYTES", raising=False)
    get_settings.cache_clear()
    yield set_env
    get_settings.cache_clear()


@pytest.fixture
def corpus(shakespeare, tmp_path) -> Path:
    """A copy of the test corpus under tmp_path/data (the data root of these tests)."""
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(shakespeare.removeprefix("text:"), root / "corpus.txt")
    return root / "corpus.txt"


def assert_refused(client, database, source: str, *fragments: str) -> None:
    response = client.post(f"{API}/jobs", json=job_body(source))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body", "dataset"], detail
    for fragment in fragments:
        assert fragment in detail[0]["msg"], detail
    assert count_jobs(database) == 0


def test_the_file_system_root_is_refused_without_walking_it(client, database, nas_env, monkeypatch):
    def walk(root, *args, **kwargs):
        raise AssertionError(f"walked {root}")

    monkeypatch.setattr("workers.data.os.walk", walk)
    assert_refused(client, database, "text:/", "file system root")


def test_fifos_and_devices_are_refused(client, database, nas_env, tmp_path):
    os.mkfifo(tmp_path / "fifo")
    assert_refused(client, database, f"text:{tmp_path / 'fifo'}", "not a regular file")
    assert_refused(client, database, "tokens:/dev/zero", "not a regular file")


def test_permission_denied_is_422(client, database, nas_env, corpus, monkeypatch):
    """Root reads files of mode 000, so the OS's PermissionError is raised where it would be."""

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr("workers.data.np.memmap", denied)
    assert_refused(client, database, f"text:{corpus}", "Permission denied", str(corpus))
    monkeypatch.setattr("workers.data.open", denied, raising=False)
    assert_refused(client, database, f"text:{corpus.parent}", "Permission denied")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files of mode 000")
def test_an_unreadable_file_is_422_for_real(client, database, nas_env, corpus):
    corpus.chmod(0)
    assert_refused(client, database, f"text:{corpus}", "ermission denied")


def test_data_roots_accept_inside_and_refuse_outside(
    client, database, nas_env, corpus, tmp_path, shakespeare
):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(corpus, outside / "corpus.txt")
    (corpus.parent / "escape.txt").symlink_to(outside / "corpus.txt")
    nas_env(NAS_DATA_ROOTS=f"{corpus.parent}, /nowhere")
    assert_refused(client, database, f"text:{outside / 'corpus.txt'}", "outside the allowed")
    assert_refused(client, database, f"text:{corpus.parent / 'escape.txt'}", "outside the allowed")
    assert_refused(client, database, shakespeare, "NAS_DATA_ROOTS")
    created = client.post(f"{API}/jobs", json=job_body(f"text:{corpus}"))
    assert created.status_code == 201, created.text
    assert count_jobs(database) == 1


def test_the_text_size_cap_is_422_naming_how_to_raise_it(
    client, database, nas_env, corpus, monkeypatch
):
    nas_env(NAS_MAX_TEXT_BYTES="1000")
    assert_refused(client, database, f"text:{corpus.parent}", "cap of 1000 bytes", "NAS_MAX_")
