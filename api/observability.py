"""Prometheus metrics at GET /metrics: request latency, and trial and queue figures.

Trial and queue figures are read from the database at scrape time (the runner is another
process, so the database is the truth). Each app gets its own registry, so several apps can
live in one process (tests); latency is per process, like any prometheus_client metric.
"""

import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nas_service import queries
from nas_service.db import Database
from nas_service.models import CANDIDATE_STATUSES

UNMATCHED_ROUTE = "<unmatched>"


def route_template(scope: Scope) -> str:
    """The matched route's template with its router prefix, e.g. `/api/v1/jobs/{job_id}`.

    The router leaves the matched route in the scope. Recent FastAPI versions keep an included
    router's prefix out of that route's own path, so the prefix is recovered as the shortest
    head of the request path after which the route's pattern matches the rest.
    """
    route = scope.get("route")
    pattern = getattr(route, "path_regex", None)
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if pattern is None or template is None:
        return UNMATCHED_ROUTE
    path: str = scope["path"]
    for index, char in enumerate(path):
        if char == "/" and pattern.match(path[index:]):
            return path[:index] + template
    return template


class RequestLatency:
    """ASGI middleware: observe each HTTP request's duration, until its last byte is sent,
    by method, route template (never the raw path, which would explode the label set) and
    status code."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status_code = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.histogram.labels(scope["method"], route_template(scope), str(status_code)).observe(
                time.perf_counter() - start
            )


def install_observability(app: FastAPI, get_db: Callable[..., Database]) -> None:
    """Add the latency middleware and `GET /metrics` (at the root, outside the API prefix).

    `get_db` is the dependency that yields the database (api.deps.get_db), so that
    `app.dependency_overrides` applies to the scrape too. The registry is `app.state.metrics`.
    """
    registry = CollectorRegistry()
    latency = Histogram(
        "nas_http_request_duration_seconds",
        "HTTP request duration, until the last byte of the response.",
        ("method", "route", "status"),
        registry=registry,
    )
    trials = Gauge("nas_trials", "Candidates by status.", ("status",), registry=registry)
    trial_seconds = Gauge(
        "nas_trial_train_seconds",
        "Training seconds of finished candidates (the compute the searches have spent).",
        registry=registry,
    )
    queue_depth = Gauge(
        "nas_queue_depth", "Queued work: candidates and jobs.", ("queue",), registry=registry
    )
    app.add_middleware(RequestLatency, histogram=latency)
    app.state.metrics = registry

    # No `from __future__ import annotations` in this module: FastAPI must see the real
    # `Depends(get_db)` of this closure, which a string annotation could not name.
    def metrics(db: Annotated[Database, Depends(get_db)]) -> Response:
        figures = queries.snapshot(db)
        for status in CANDIDATE_STATUSES:
            trials.labels(status).set(figures.trials.get(status, 0))
        trial_seconds.set(figures.trial_seconds)
        queue_depth.labels("candidates").set(figures.queued_candidates)
        queue_depth.labels("jobs").set(figures.queued_jobs)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
