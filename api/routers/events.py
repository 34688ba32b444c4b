"""/jobs/{job_id}/events: a job's events as server-sent events, live while it runs.

The runner is another process, so the stream polls the job_events table for rows above the
last id it sent. A client resumes with the `Last-Event-ID` header (browsers send it when they
reconnect) or `?since=<event id>`; FastAPI adds a `: ping` comment after 15 s of silence.

A final status alone does not end the stream: when the API marks a job `cancelled` that a
runner holds, the runner cancels its trials and then writes the job's final event; the
stream follows until that event is sent, the runner's lease lapses, or the lease duration
plus FINAL_EVENT_MARGIN_S has passed since the final status was seen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field

from api.auth import ReadOwner, sign_stream_token
from api.deps import MAX_ID, DbDep, JobId, SettingsDep
from api.schemas import NOT_FOUND
from nas_service import jobs, queries
from nas_service.models import CANDIDATE_STATUSES, JobEvent

router = APIRouter(tags=["events"], responses=NOT_FOUND)

POLL_INTERVAL_S = 0.5
FINAL_STATUSES = queries.JOB_FINAL
FINAL_EVENT_MARGIN_S = 10.0  # beyond the lease duration, the longest a final event is awaited


PAGE = 500  # events read per query


class EventPublic(BaseModel):
    """The `data` of one SSE message."""

    id: int
    job_id: int
    kind: str
    message: str
    status: str | None = Field(
        description="The job's status (job events) or the candidate's final status (trial)."
    )
    candidate_id: int | None
    job_status: str | None = Field(description="The job's status when the event was sent.")
    created_at: datetime
    data: dict[str, Any] | None


def public(event: JobEvent, job_status: str | None) -> EventPublic:
    data = event.data or {}
    if event.kind == "trial":
        status = event.message if event.message in CANDIDATE_STATUSES else None
    else:
        status = data.get("status")
    return EventPublic(
        id=event.id,
        job_id=event.job_id,
        kind=event.kind,
        message=event.message,
        status=status,
        candidate_id=data.get("candidate_id"),
        job_status=job_status,
        created_at=event.created_at,
        data=event.data,
    )


def existing_job(job_id: JobId, db: DbDep) -> int:
    """404 before the stream starts, not inside it."""
    return jobs.get(db, job_id).id


def start_after(
    job_id: Annotated[int, Depends(existing_job)],
    db: DbDep,
    since: Annotated[
        int, Query(ge=0, le=MAX_ID, description="Send only events with a larger id.")
    ] = 0,
    tail: Annotated[
        bool,
        Query(
            description="Send only events after the job's latest one when the stream opens: "
            "for a client that loads the job's state once it is connected."
        ),
    ] = False,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_ID)] = None,
) -> int:
    """The event id the stream starts after, fixed before the response starts (so a client
    that sees the stream open knows every later event will reach it)."""
    if last_event_id is not None:
        return last_event_id
    return queries.last_event_id(db, job_id) if tail else since


class StreamToken(BaseModel):
    stream_token: str
    expires_in_s: int


@router.get("/jobs/{job_id}/stream-token", response_model=StreamToken)
def stream_token(
    job_id: Annotated[int, Depends(existing_job)],
    owner: ReadOwner,
) -> StreamToken:
    """A short-lived token for `?stream_token=` on the events stream: a browser EventSource
    cannot send an Authorization header when reads are closed."""
    ttl = 300
    return StreamToken(
        stream_token=sign_stream_token(owner or "anonymous", job_id, ttl), expires_in_s=ttl
    )


@router.get("/jobs/{job_id}/events", response_class=EventSourceResponse)
async def stream_job_events(
    request: Request,
    job_id: Annotated[int, Depends(existing_job)],
    after: Annotated[int, Depends(start_after)],
    db: DbDep,
    settings: SettingsDep,
    _: ReadOwner,
) -> AsyncIterator[ServerSentEvent]:
    """Stream the job's events (`event:` job, trial or front); ends once the job is finished
    (its final `job` event sent, or no runner left to write one).

    `Last-Event-ID` (sent by a reconnecting browser) takes precedence over `tail` and `since`.
    """
    deadline: float | None = None
    while not await request.is_disconnected():
        status, finishing, events = await run_in_threadpool(
            queries.events_after, db, job_id, after, PAGE
        )
        for event in events:
            yield ServerSentEvent(id=str(event.id), event=event.kind, data=public(event, status))
            after = event.id
        if len(events) == PAGE:
            continue
        if status is None:
            return
        if status in FINAL_STATUSES:
            if not finishing:
                return
            if deadline is None:  # a runner is still finishing the job: wait, but not forever
                deadline = anyio.current_time() + settings.lease_s + FINAL_EVENT_MARGIN_S
            elif anyio.current_time() >= deadline:
                return
        await anyio.sleep(POLL_INTERVAL_S)
