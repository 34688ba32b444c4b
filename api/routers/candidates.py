"""Candidates of a job: server-side filtered, sorted and paginated; one candidate in full."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.auth import ReadOwner
from api.deps import MAX_ID, CandidateId, CandidateWriter, DbDep, JobId
from api.schemas import (
    BAD_JSON,
    FORBIDDEN,
    NOT_FOUND,
    CandidateDetail,
    CandidatePublic,
    CandidatesPublic,
    HypervolumePublic,
    LineageStep,
    NoteUpdate,
    ParetoPublic,
    ScoredPoints,
)
from nas_service import jobs, queries
from nas_service.db import Database
from search_space.features import FEATURES

router = APIRouter(tags=["candidates"], responses=NOT_FOUND)
MAX_POINTS = 1_000_000  # a job's largest max_trials: every point of any job


def _csv(rows: list) -> Iterator[str]:
    """CandidatePublic's fields, its features flattened into `feature.<name>` columns (in
    FEATURES order; empty for a spec without features)."""
    columns = [name for name in CandidatePublic.model_fields if name != "features"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*columns, *(f"feature.{name}" for name in FEATURES)])
    for row in rows:
        data = CandidatePublic.model_validate(row).model_dump(mode="json")
        features = data["features"]
        writer.writerow([*(data[name] for name in columns), *map(features.get, FEATURES)])
        if buffer.tell() > 1 << 16:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@router.get(
    "/jobs/{job_id}/candidates",
    response_model=CandidatesPublic,
    responses={200: {"content": {"text/csv": {}}}},
)
def list_candidates(
    job_id: JobId,
    db: DbDep,
    _: ReadOwner,
    status: Annotated[str | None, Query(description="Only candidates with this status.")] = None,
    device_kind: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=r"^[^\x00]*$",  # PostgreSQL text holds no NUL
            description="Only candidates of this device kind (platform:kind).",
        ),
    ] = None,
    sort: Annotated[
        str, Query(description="Any metric column, e.g. perplexity or step_time_ratio.")
    ] = "birth",
    order: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    format: Annotated[
        Literal["json", "csv"],
        Query(description="csv: every match, not one page; features as feature.<name>."),
    ] = "json",
) -> CandidatesPublic | StreamingResponse:
    if format == "csv":
        rows, _ = queries.candidate_page(db, job_id, status, sort, order, None, 0, device_kind)
        headers = {"Content-Disposition": f'attachment; filename="job-{job_id}-candidates.csv"'}
        return StreamingResponse(_csv(rows), media_type="text/csv", headers=headers)
    rows, total = queries.candidate_page(
        db, job_id, status, sort, order, limit, offset, device_kind
    )
    return CandidatesPublic(
        items=[CandidatePublic.model_validate(row) for row in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/candidates/{candidate_id}", response_model=CandidateDetail)
def get_candidate(candidate_id: CandidateId, db: DbDep, _: ReadOwner) -> CandidateDetail:
    return _detail(db, candidate_id)


@router.put(
    "/candidates/{candidate_id}/note",
    response_model=CandidateDetail,
    responses={**FORBIDDEN, **BAD_JSON},
)
def set_candidate_note(
    candidate_id: CandidateId, body: NoteUpdate, db: DbDep, _: CandidateWriter
) -> CandidateDetail:
    """Set the candidate's Markdown note (an empty one clears it)."""
    jobs.set_candidate_note(db, candidate_id, body.note)
    return _detail(db, candidate_id)


def _detail(db: Database, candidate_id: int) -> CandidateDetail:
    row, curve, chain = queries.candidate(db, candidate_id)
    runs, rungs = queries.candidate_runs(db, candidate_id)
    base = CandidatePublic.model_validate(row).model_dump()
    return CandidateDetail(
        runs=runs,
        rungs=rungs,
        **base,
        spec=row.spec,
        traceback=row.traceback,
        moe=row.moe,
        device=row.device,
        smoothed_loss_at=row.smoothed_loss_at,
        val_loss_at=row.val_loss_at,
        curve=curve,
        lineage=[LineageStep(id=c.id, mutation=c.mutation, spec_hash=c.spec_hash) for c in chain],
    )


@router.get("/jobs/{job_id}/pareto", response_model=ParetoPublic)
def pareto(
    job_id: JobId,
    db: DbDep,
    _: ReadOwner,
    max_points: Annotated[
        int,
        Query(
            ge=10,
            le=MAX_POINTS,
            description=(
                "How many points the client can draw: a job with more scored candidates "
                "gets its front and baselines exactly plus a binned scatter of at most this "
                "many others (`reduced`)."
            ),
        ),
    ] = queries.DEFAULT_MAX_POINTS,
) -> ParetoPublic:
    scored = queries.pareto(db, job_id, max_points)
    columns = {name: getattr(scored, name) for name in ScoredPoints.model_fields}
    columns["finished_s"] = [None if s is None else round(s, 3) for s in scored.finished_s]
    return ParetoPublic(
        points=ScoredPoints.model_construct(**columns),  # built from typed columns above
        front=scored.front,
        baselines=[i for i, base in zip(scored.id, scored.is_baseline, strict=True) if base],
        total=scored.total,
        reduced=scored.reduced,
    )


@router.get("/jobs/{job_id}/hypervolume", response_model=HypervolumePublic)
def hypervolume(job_id: JobId, db: DbDep, _: ReadOwner) -> HypervolumePublic:
    return HypervolumePublic(**queries.hypervolume_history(db, job_id))
