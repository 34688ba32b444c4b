"""Bearer-token authentication for the REST API.

Auth is off unless `NAS_API_TOKENS` is set (the embedded default). When it is set, writes need
`Authorization: Bearer <token>`; reads need it too when `NAS_AUTH_READS=true`. A token marked
`owner:token:admin` is an admin's: only a job's owner or an admin may change an existing job
(`authorize_job_write`; a job submitted with auth off has no owner, so only an admin). A browser
`EventSource` cannot send headers, so a live stream may instead carry `?stream_token=...`, a
short-lived token for one job signed by `sign_stream_token`.

The stream-token key is derived from the configured owner:token pairs, so every API process
with the same `NAS_API_TOKENS` accepts the others' stream tokens, and changing the tokens
revokes all outstanding stream tokens. Tokens are never logged or echoed in responses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import time
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, NamedTuple

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

ENV_TOKENS = "NAS_API_TOKENS"
ADMIN = "admin"
_STREAM_KEY_LABEL = b"nas-service stream token v1"
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


class TokenEntry(NamedTuple):
    """One configured token: `owner:token`, or `owner:token:admin` for an admin."""

    owner: str
    token: str
    admin: bool = False


@dataclass(frozen=True)
class Caller:
    """Who made an authenticated request."""

    owner: str
    admin: bool = False


class AuthSettings(BaseSettings):
    """`NAS_API_TOKENS` (owner:token[:admin] entries or a token file) and `NAS_AUTH_READS`."""

    model_config = SettingsConfigDict(env_prefix="NAS_", extra="ignore", env_ignore_empty=True)

    api_tokens: str | None = Field(
        default=None,
        repr=False,
        description=(
            "`owner:token,owner2:token2:admin`, or the path of a file with one entry a line; "
            "a third field `admin` marks an admin's token."
        ),
    )
    auth_reads: bool = Field(default=False, description="Require a token for reads too.")

    @cached_property
    def tokens(self) -> tuple[TokenEntry, ...]:
        """The configured tokens; empty when auth is off."""
        return parse_tokens(self.api_tokens) if self.api_tokens else ()

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)

    @cached_property
    def stream_key(self) -> bytes:
        """HMAC key for stream tokens, derived from (and so shared by) the configured tokens."""
        material = "\n".join(
            sorted(
                f"{entry.owner}:{entry.token}" + (f":{ADMIN}" if entry.admin else "")
                for entry in self.tokens
            )
        )
        return hmac.new(_STREAM_KEY_LABEL, material.encode(), hashlib.sha256).digest()


def _entries(value: str) -> tuple[list[str], str]:
    """The raw entries of `NAS_API_TOKENS` and how to name one in an error."""
    path = Path(value).expanduser()
    if not path.is_file():
        return value.split(","), "entry"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"{ENV_TOKENS}: cannot read {path}: {exc.strerror}") from exc
    return ["" if line.lstrip().startswith("#") else line for line in lines], f"{path} line"


def parse_tokens(value: str) -> tuple[TokenEntry, ...]:
    """Parse `NAS_API_TOKENS`; errors name the variable and never contain a token."""
    entries, where = _entries(value)
    pairs: list[TokenEntry] = []
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        if not entry.strip():
            continue
        owner, colon, rest = (part.strip() for part in entry.partition(":"))
        if not colon:
            raise ValueError(
                f"{ENV_TOKENS}: {where} {number} has no ':' (expected owner:token pairs "
                "separated by commas, or the path of an existing token file)"
            )
        token, extra, role = (part.strip() for part in rest.partition(":"))
        if not owner or not token:
            raise ValueError(f"{ENV_TOKENS}: {where} {number} has an empty owner or token")
        if extra and role != ADMIN:
            # The third field is never echoed: a token that holds a ':' would leak its tail.
            raise ValueError(
                f"{ENV_TOKENS}: {where} {number} has a third field that is not '{ADMIN}' "
                "(expected owner:token or owner:token:admin; a token may not contain ':')"
            )
        if token in seen:
            raise ValueError(f"{ENV_TOKENS}: {where} {number} repeats the token of {seen[token]}")
        seen[token] = number
        pairs.append(TokenEntry(owner, token, admin=bool(extra)))
    if not pairs:
        raise ValueError(f"{ENV_TOKENS} is set but holds no owner:token pairs")
    return tuple(pairs)


@cache
def get_auth_settings() -> AuthSettings:
    """The auth settings, parsed once; a bad `NAS_API_TOKENS` raises ValueError here."""
    settings = AuthSettings()
    _ = settings.tokens
    return settings


AuthSettingsDep = Annotated[AuthSettings, Depends(get_auth_settings)]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]
StreamTokenDep = Annotated[str | None, Query(include_in_schema=False)]


def _caller_of(token: str, settings: AuthSettings) -> Caller | None:
    """Who holds `token`, comparing against every configured token in constant time."""
    presented = token.encode()
    caller = None
    for entry in settings.tokens:
        match = hmac.compare_digest(presented, entry.token.encode())
        caller = Caller(entry.owner, entry.admin) if match else caller
    return caller


def _unauthenticated() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="Not authenticated: send 'Authorization: Bearer <token>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _forbidden(request: Request, what: str) -> HTTPException:
    client = request.client.host if request.client else "?"
    logger.warning("rejected %s for %s %s from %s", what, request.method, request.url.path, client)
    return HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=f"Invalid {what}")


def _bearer_caller(
    request: Request, settings: AuthSettings, credentials: HTTPAuthorizationCredentials | None
) -> Caller:
    if credentials is None:
        raise _unauthenticated()
    caller = _caller_of(credentials.credentials, settings)
    if caller is None:
        raise _forbidden(request, "token")
    return caller


def _bearer_owner(
    request: Request, settings: AuthSettings, credentials: HTTPAuthorizationCredentials | None
) -> str:
    return _bearer_caller(request, settings, credentials).owner


def require_write_caller(
    request: Request, settings: AuthSettingsDep, credentials: BearerDep
) -> Caller | None:
    """Who makes a write (owner name and whether an admin); None when auth is off."""
    if not settings.enabled:
        return None
    return _bearer_caller(request, settings, credentials)


WriteCaller = Annotated[Caller | None, Depends(require_write_caller)]


def require_write(caller: WriteCaller) -> str | None:
    """The caller's owner name for a write; None when auth is off."""
    return caller.owner if caller else None


def authorize_job_write(
    request: Request, caller: Caller | None, job_id: int, job_owner: str | None
) -> None:
    """Raise 403 unless `caller` may change job `job_id`, owned by `job_owner`.

    Everyone may when auth is off (`caller` is None); otherwise the job's owner or an admin.
    A job with no owner (submitted while auth was off) may be changed by an admin only.
    """
    if caller is None or caller.admin or (job_owner is not None and caller.owner == job_owner):
        return
    if job_owner is None:
        why = f"job {job_id} has no owner; only an admin may change it"
    else:
        why = f"job {job_id} belongs to {job_owner}; only its owner or an admin may change it"
    client = request.client.host if request.client else "?"
    logger.warning(
        "refused %s %s by %s from %s: %s",
        request.method,
        request.url.path,
        caller.owner,
        client,
        why,
    )
    raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=why)


def require_read(
    request: Request,
    settings: AuthSettingsDep,
    credentials: BearerDep,
    stream_token: StreamTokenDep = None,
) -> str | None:
    """The caller's owner name for a read; None when reads are open.

    With reads closed, a request without a header may carry `?stream_token=` signed for the
    route's `job_id` path parameter.
    """
    if not (settings.enabled and settings.auth_reads):
        return None
    if credentials is None and stream_token is not None:
        owner = _verify_stream_token(stream_token, request.path_params.get("job_id"), settings)
        if owner is None:
            raise _forbidden(request, "stream token")
        return owner
    return _bearer_owner(request, settings, credentials)


WriteOwner = Annotated[str | None, Depends(require_write)]
ReadOwner = Annotated[str | None, Depends(require_read)]


def _now() -> int:
    return int(time.time())


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(payload: bytes, settings: AuthSettings) -> bytes:
    return hmac.new(settings.stream_key, payload, hashlib.sha256).digest()


def sign_stream_token(
    owner: str, job_id: int, ttl_s: int = 300, *, settings: AuthSettings | None = None
) -> str:
    """A URL-safe token that opens reads of `job_id` for `owner` during the next `ttl_s` s.

    It is checked when a stream opens; an open stream outlives the token's expiry.
    """
    settings = settings or get_auth_settings()
    payload = f"{int(job_id)}:{_now() + ttl_s}:{owner}".encode()
    return f"{_b64encode(payload)}.{_b64encode(_signature(payload, settings))}"


def _verify_stream_token(token: str, job_id: object, settings: AuthSettings) -> str | None:
    """The owner a stream token was signed for, or None if forged, expired or for another job."""
    try:
        encoded, _, signature = token.partition(".")
        payload = _b64decode(encoded)
        if not hmac.compare_digest(_b64decode(signature), _signature(payload, settings)):
            return None
        signed_job, expires, owner = payload.decode().split(":", 2)
        expired = int(expires) < _now()
    except (ValueError, binascii.Error):
        return None
    if expired or job_id is None or signed_job != str(job_id):
        return None
    return owner


def warn_if_exposed(host: str) -> str | None:
    """A warning when auth is off and `host` is not a loopback address, else None."""
    if get_auth_settings().enabled or _is_loopback(host):
        return None
    return (
        f"warning: the API listens on {host} without authentication; anyone who can reach it "
        f"can submit, cancel and delete jobs. Set {ENV_TOKENS} or bind to 127.0.0.1."
    )


def _is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
