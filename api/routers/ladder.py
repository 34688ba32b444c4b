"""A job's fidelity ladder and confirmation: each rung's front, how well a rung ranks like
the one above it (with the seed noise), and confirming the best with fresh seeds."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.auth import ReadOwner
from api.deps import DbDep, JobId, JobWriter
from api.routers.jobs import public
from api.schemas import (
    BAD_JSON,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    ConfirmationPublic,
    ConfirmCreate,
    FidelityPublic,
    JobPublic,
    RungsPublic,
)
from nas_service import jobs, queries

router = APIRouter(prefix="/jobs", tags=["ladder"], responses={**NOT_FOUND, **CONFLICT})


@router.get("/{job_id}/rungs", response_model=RungsPublic)
def rungs(job_id: JobId, db: DbDep, _: ReadOwner) -> RungsPublic:
    """Each rung's candidates (means over seeds with standard errors) and its own front; the
    job's front and best are those of `top_rung`."""
    return RungsPublic.model_validate(queries.rungs(db, job_id))


@router.get("/{job_id}/fidelity", response_model=FidelityPublic)
def fidelity(job_id: JobId, db: DbDep, _: ReadOwner) -> FidelityPublic:
    """For each pair of adjacent rungs: rank correlations of the candidates in both (with
    bootstrap intervals) and top-k recall; per rung: the seed noise next to the spread
    between candidates."""
    return FidelityPublic.model_validate(queries.fidelity(db, job_id))


@router.get("/{job_id}/confirmation", response_model=ConfirmationPublic)
def confirmation(job_id: JobId, db: DbDep, _: ReadOwner) -> ConfirmationPublic:
    """The confirmation report and the declared winner (null unless one was shown to beat
    the baseline)."""
    return ConfirmationPublic.model_validate(queries.confirmation(db, job_id))


@router.post(
    "/{job_id}/confirm",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses={**FORBIDDEN, **BAD_JSON},
)
def confirm(job_id: JobId, body: ConfirmCreate, db: DbDep, _: JobWriter) -> JobPublic:
    """Confirm a completed job: retrain its best and the baselines with fresh seeds at a
    longer budget (the job is queued again and completes once they have run)."""
    return public(db, jobs.request_confirmation(db, job_id, body))
