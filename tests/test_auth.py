"""Bearer-token auth, stream tokens and the exposure warning, on a tiny app of their own; job
ownership (only the owner or an admin changes a job) on the real app over SQLite."""

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api import auth
from api.auth import (
    AuthSettings,
    ReadOwner,
    WriteOwner,
    get_auth_settings,
    sign_stream_token,
    warn_if_exposed,
)

ALICE, BOB, ROOT = "alice-s3cret-token", "bob-0ther-token", "root-adm1n-token"
TOKENS = f"alice:{ALICE}, bob:{BOB}"
WITH_ADMIN = f"{TOKENS}, root:{ROOT}:admin"
API = "/api/v1"
WRONG = "wrong-but-plausible-token"

Configure = Callable[..., TestClient]


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/jobs")
    def list_jobs(owner: ReadOwner) -> dict[str, str | None]:
        return {"owner": owner}

    @app.get("/jobs/{job_id}/stream")
    def stream(job_id: int, owner: ReadOwner) -> dict[str, str | None]:
        return {"owner": owner}

    @app.post("/jobs")
    def submit(owner: WriteOwner) -> dict[str, str | None]:
        return {"owner": owner}

    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def configure(monkeypatch) -> Iterator[Configure]:
    """Set NAS_* auth variables (none by default) and return a client of a fresh app."""
    monkeypatch.delenv("NAS_API_TOKENS", raising=False)
    monkeypatch.delenv("NAS_AUTH_READS", raising=False)

    def apply(**env: str) -> TestClient:
        for name, value in env.items():
            monkeypatch.setenv(f"NAS_{name.upper()}", value)
        get_auth_settings.cache_clear()
        return TestClient(make_app())

    yield apply
    get_auth_settings.cache_clear()


def test_auth_off_leaves_everything_open(configure):
    client = configure()
    assert client.get("/jobs").json() == {"owner": None}
    assert client.post("/jobs").json() == {"owner": None}
    assert client.post("/jobs", headers=bearer(WRONG)).json() == {"owner": None}


def test_write_needs_a_bearer_token(configure):
    client = configure(api_tokens=TOKENS)
    for headers in ({}, {"Authorization": ALICE}, {"Authorization": f"Basic {ALICE}"}):
        response = client.post("/jobs", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert client.post("/jobs", headers=bearer(WRONG)).status_code == 403
    assert client.post("/jobs", headers=bearer(ALICE)).json() == {"owner": "alice"}
    assert client.post("/jobs", headers=bearer(BOB)).json() == {"owner": "bob"}


def test_reads_are_open_by_default_and_closed_on_request(configure):
    assert configure(api_tokens=TOKENS).get("/jobs").json() == {"owner": None}
    client = configure(auth_reads="true")
    assert client.get("/jobs").status_code == 401
    assert client.get("/jobs", headers=bearer(WRONG)).status_code == 403
    assert client.get("/jobs", headers=bearer(BOB)).json() == {"owner": "bob"}


def test_token_file(configure, tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"# who may write\n\nalice:{ALICE}\n  # rotated\nbob : {BOB}\n")
    client = configure(api_tokens=str(path))
    assert client.post("/jobs", headers=bearer(BOB)).json() == {"owner": "bob"}
    assert client.post("/jobs", headers=bearer("# rotated")).status_code == 403


@pytest.mark.parametrize(
    "value",
    [
        ALICE,
        "alice:",
        f":{ALICE}",
        f"alice:{ALICE},bob:{ALICE}",
        ",",
        f"alice:{ALICE},{BOB}",
        f"alice:{ALICE}:root",
        f"alice:{ALICE}:",
        f"alice:{ALICE}:Admin",
        f"alice:{ALICE},bob:{BOB}:admin:yes",
    ],
)
def test_bad_tokens_raise_naming_the_variable(configure, value):
    configure(api_tokens=value)
    with pytest.raises(ValueError, match="NAS_API_TOKENS") as error:
        get_auth_settings()
    assert ALICE not in str(error.value) and BOB not in str(error.value)


def test_bad_token_file_names_the_line(configure, tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"alice:{ALICE}\n{BOB}\n")
    configure(api_tokens=str(path))
    with pytest.raises(ValueError, match=r"NAS_API_TOKENS: .* line 2 has no ':'") as error:
        get_auth_settings()
    assert BOB not in str(error.value)


def test_tokens_are_never_echoed_or_logged(configure, caplog):
    caplog.set_level(logging.DEBUG)
    client = configure(api_tokens=TOKENS, auth_reads="true")
    stream_token = sign_stream_token("alice", 1)
    responses = [
        client.post("/jobs", headers=bearer(WRONG)),
        client.post("/jobs", headers={"Authorization": WRONG}),
        client.get("/jobs", headers=bearer(WRONG)),
        client.post("/jobs", headers=bearer(ALICE)),
        client.get(f"/jobs/2/stream?stream_token={stream_token}"),
    ]
    assert any(record.levelno == logging.WARNING for record in caplog.records)
    # httpx, the test's client, logs the URL it requests (stream token included); the server
    # side must not log it, and nothing may carry an API token.
    server_logs = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]
    replies = [f"{response.headers} {response.text}" for response in responses]
    for text in [*server_logs, *replies]:
        assert stream_token not in text
    for text in [caplog.text, *replies]:
        assert all(secret not in text for secret in (ALICE, BOB, WRONG))
    assert "alice" not in repr(get_auth_settings())


def test_stream_token_opens_reads_of_its_job_only(configure, monkeypatch):
    client = configure(api_tokens=TOKENS, auth_reads="true")
    token = sign_stream_token("alice", 7)
    assert client.get(f"/jobs/7/stream?stream_token={token}").json() == {"owner": "alice"}
    assert client.get(f"/jobs/8/stream?stream_token={token}").status_code == 403
    assert client.get(f"/jobs?stream_token={token}").status_code == 403

    payload, signature = token.split(".")
    forged_payload = sign_stream_token("bob", 7).split(".")[0]
    other_key = AuthSettings(api_tokens=f"alice:{ALICE}")
    forgeries = [
        f"{forged_payload}.{signature}",
        f"{payload}.{signature[:-2]}AA",
        sign_stream_token("alice", 7, settings=other_key),
        "garbage",
        "",
    ]
    for forged in forgeries:
        assert client.get(f"/jobs/7/stream?stream_token={forged}").status_code == 403

    with monkeypatch.context() as patch:
        patch.setattr(auth, "_now", lambda: 1_000_000)
        expired = sign_stream_token("alice", 7, ttl_s=60)
    assert client.get(f"/jobs/7/stream?stream_token={expired}").status_code == 403


def test_stream_tokens_agree_across_processes(configure):
    client = configure(api_tokens=TOKENS, auth_reads="true")
    token = sign_stream_token("bob", 3, settings=AuthSettings())
    assert client.get(f"/jobs/3/stream?stream_token={token}").json() == {"owner": "bob"}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.org"])
def test_warn_if_exposed_without_auth(configure, host):
    configure()
    message = warn_if_exposed(host)
    assert message is not None and host in message and "NAS_API_TOKENS" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "LocalHost"])
def test_no_warning_on_loopback(configure, host):
    configure()
    assert warn_if_exposed(host) is None


def test_no_warning_with_auth(configure):
    configure(api_tokens=TOKENS)
    assert warn_if_exposed("0.0.0.0") is None


def test_a_third_field_other_than_admin_is_refused(configure, tmp_path):
    configure(api_tokens=f"alice:{ALICE}, bob:{BOB}:superuser")
    with pytest.raises(ValueError, match=r"NAS_API_TOKENS: entry 2 .*not 'admin'") as error:
        get_auth_settings()
    assert BOB not in str(error.value) and "superuser" not in str(error.value)
    path = tmp_path / "tokens"
    path.write_text(f"root:{ROOT}:admin\nbob:{BOB}:root\n")
    configure(api_tokens=str(path))
    with pytest.raises(ValueError, match=r"NAS_API_TOKENS: .* line 2 .*not 'admin'"):
        get_auth_settings()


def test_admin_entries_parse(configure):
    configure(api_tokens=f"alice:{ALICE}, root : {ROOT} : admin")
    tokens = get_auth_settings().tokens
    assert [(t.owner, t.token, t.admin) for t in tokens] == [
        ("alice", ALICE, False),
        ("root", ROOT, True),
    ]


# Job ownership, on the real app.

Service = Callable[..., TestClient]


@pytest.fixture
def service(configure, monkeypatch, sqlite_db) -> Iterator[Service]:
    """Configure auth from scratch (as `configure` does) and return a client of the real app
    over one SQLite database, which outlives reconfiguration (jobs survive auth going on/off)."""
    from api.app import create_app
    from api.deps import get_db

    with ExitStack() as stack:

        def apply(**env: str) -> TestClient:
            monkeypatch.delenv("NAS_API_TOKENS", raising=False)
            monkeypatch.delenv("NAS_AUTH_READS", raising=False)
            configure(**env)
            app = create_app()
            app.dependency_overrides[get_db] = lambda: sqlite_db
            return stack.enter_context(TestClient(app))

        yield apply


def submit(client: TestClient, shakespeare: str, token: str | None = None) -> int:
    headers = bearer(token) if token else {}
    response = client.post(
        f"{API}/jobs", json={"name": "own", "dataset": shakespeare}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def status_of(client: TestClient, job_id: int) -> str | None:
    """The job's status, or None once deleted (reads are open in these tests)."""
    response = client.get(f"{API}/jobs/{job_id}")
    return None if response.status_code == 404 else response.json()["status"]


def change(client: TestClient, job_id: int, verb: str, token: str | None = None):
    headers = bearer(token) if token else {}
    url = f"{API}/jobs/{job_id}"
    if verb == "delete":
        return client.delete(url, headers=headers)
    return client.post(f"{url}/{verb}", headers=headers)


def test_owner_changes_their_own_job(service, shakespeare):
    client = service(api_tokens=TOKENS)
    job = submit(client, shakespeare, ALICE)
    assert client.get(f"{API}/jobs/{job}").json()["owner"] == "alice"
    assert change(client, job, "pause", ALICE).json()["status"] == "paused"
    assert change(client, job, "resume", ALICE).json()["status"] == "running"
    assert change(client, job, "cancel", ALICE).json()["status"] == "cancelled"
    assert change(client, job, "delete", ALICE).status_code == 204
    assert status_of(client, job) is None


def test_another_owner_gets_403_and_the_job_is_unchanged(service, shakespeare, caplog):
    caplog.set_level(logging.DEBUG)
    client = service(api_tokens=TOKENS)
    job = submit(client, shakespeare, ALICE)
    for verb in ("pause", "cancel", "delete"):
        response = change(client, job, verb, BOB)
        assert response.status_code == 403, (verb, response.text)
        assert response.json()["detail"] == (
            f"job {job} belongs to alice; only its owner or an admin may change it"
        )
        assert status_of(client, job) == "queued"
    assert change(client, job, "pause", ALICE).status_code == 200
    assert change(client, job, "resume", BOB).status_code == 403
    assert status_of(client, job) == "paused"
    # Before the owner check: no token is 401, an unknown job 404, an unknown token 403.
    assert change(client, job, "cancel").status_code == 401
    assert change(client, 999, "cancel", BOB).status_code == 404
    assert change(client, job, "cancel", WRONG).json()["detail"] == "Invalid token"
    assert status_of(client, job) == "paused"
    assert f"job {job} belongs to alice" in caplog.text
    assert all(secret not in caplog.text for secret in (ALICE, BOB, WRONG))


def test_reads_of_anothers_job_stay_as_configured(service, shakespeare):
    client = service(api_tokens=TOKENS, auth_reads="true")
    job = submit(client, shakespeare, ALICE)
    assert client.get(f"{API}/jobs/{job}", headers=bearer(BOB)).json()["owner"] == "alice"
    assert client.get(f"{API}/jobs/{job}").status_code == 401


def test_admin_changes_anyones_job(service, shakespeare):
    client = service(api_tokens=WITH_ADMIN)
    job = submit(client, shakespeare, ALICE)
    assert change(client, job, "pause", ROOT).json()["status"] == "paused"
    assert change(client, job, "resume", ROOT).json()["status"] == "running"
    assert change(client, job, "cancel", ROOT).json()["status"] == "cancelled"
    assert change(client, job, "delete", ROOT).status_code == 204
    assert status_of(client, job) is None
    assert change(client, 999, "cancel", ROOT).status_code == 404


def test_admin_token_from_a_file(service, shakespeare, tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"# admins get a third field\nalice:{ALICE}\nroot : {ROOT} : admin\n")
    client = service(api_tokens=str(path))
    job = submit(client, shakespeare, ALICE)
    assert change(client, job, "cancel", ROOT).json()["status"] == "cancelled"
    own = submit(client, shakespeare, ROOT)
    assert client.get(f"{API}/jobs/{own}").json()["owner"] == "root"
    assert change(client, own, "pause", ALICE).status_code == 403


def test_a_job_without_owner_is_an_admins_once_auth_is_on(service, shakespeare):
    job = submit(service(), shakespeare)  # auth off: no owner
    client = service(api_tokens=WITH_ADMIN)
    assert client.get(f"{API}/jobs/{job}").json()["owner"] is None
    response = change(client, job, "pause", ALICE)
    assert response.status_code == 403
    assert response.json()["detail"] == f"job {job} has no owner; only an admin may change it"
    assert status_of(client, job) == "queued"
    assert change(client, job, "cancel", ROOT).json()["status"] == "cancelled"


def test_auth_off_lets_anyone_change_any_job(service, shakespeare):
    owned = submit(service(api_tokens=TOKENS), shakespeare, ALICE)
    client = service()
    anonymous = submit(client, shakespeare)
    for job in (owned, anonymous):
        assert change(client, job, "pause").json()["status"] == "paused"
        assert change(client, job, "resume", WRONG).json()["status"] == "running"
        assert change(client, job, "cancel").json()["status"] == "cancelled"
        assert change(client, job, "delete").status_code == 204
        assert status_of(client, job) is None


def test_job_writes_declare_403(service):
    paths = service().app.openapi()["paths"]
    writes = [
        paths[f"{API}/jobs/{{job_id}}/{verb}"]["post"] for verb in ("pause", "resume", "cancel")
    ]
    for operation in [*writes, paths[f"{API}/jobs/{{job_id}}"]["delete"]]:
        assert "403" in operation["responses"]
