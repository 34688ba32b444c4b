"""Candidates of a job: server-side filtered, sorted and paginated; one candidate in full."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api.deps import DbDep
from api.schemas import CandidateDetail, CandidatePublic, CandidatesPublic, LineageStep
from nas_service import queries

router = APIRouter(tags=["candidates"])


@router.get("/jobs/{job_id}/candidates", response_model=CandidatesPublic)
def list_candidates(
    job_id: int,
    db: DbDep,
    status: Annotated[str | None, Query(description="Only candidates with this status.")] = None,
    sort: Annotated[str, Query(description="Any metric column, e.g. perplexity.")] = "birth",
    order: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> CandidatesPublic:
    rows, total = queries.candidate_page(db, job_id, status, sort, order, limit, offset)
    return CandidatesPublic(
        items=[CandidatePublic.model_validate(row) for row in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/candidates/{candidate_id}", response_model=CandidateDetail)
def get_candidate(candidate_id: int, db: DbDep) -> CandidateDetail:
    row, curve, chain = queries.candidate(db, candidate_id)
    base = CandidatePublic.model_validate(row).model_dump()
    return CandidateDetail(
        **base,
        spec=row.spec,
        traceback=row.traceback,
        moe=row.moe,
        device=row.device,
        smoothed_loss_at=row.smoothed_loss_at,
        curve=curve,
        lineage=[LineageStep(id=c.id, mutation=c.mutation, spec_hash=c.spec_hash) for c in chain],
    )
