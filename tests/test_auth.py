"""Bearer-token auth, stream tokens and the exposure warning, on a tiny app of their own."""

import logging
from collections.abc import Callable, Iterator

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

ALICE, BOB = "alice-s3cret-token", "bob-0ther-token"
TOKENS = f"alice:{ALICE}, bob:{BOB}"
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
    [ALICE, "alice:", f":{ALICE}", f"alice:{ALICE},bob:{ALICE}", ",", f"alice:{ALICE},{BOB}"],
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
