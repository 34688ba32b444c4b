"""/jobs: submit, list, inspect, pause, resume, cancel and delete search jobs.

Anyone who may write submits; only a job's owner or an admin changes it (`JobWriter`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response, status

from api.auth import ReadOwner, WriteOwner
from api.deps import DbDep, JobId, JobWriter
from api.schemas import (
    BAD_JSON,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    EnqueuedCreate,
    EnqueuedList,
    EnqueuedPublic,
    JobCreate,
    JobPublic,
    JobsPublic,
    NoteUpdate,
    Progress,
)
from nas_service import enqueue, jobs, queries
from nas_service.db import Database
from nas_service.models import Enqueued, Job

router = APIRouter(prefix="/jobs", tags=["jobs"], responses={**NOT_FOUND, **CONFLICT})


def public(db: Database, job: Job) -> JobPublic:
    """The job with its progress: trials done / running / queued, the best candidate under the
    job's objective (and the rule that chose it), the Pareto front, elapsed, ETA (from the
    measured wall time per trial)."""
    result = JobPublic.model_validate(job)
    counts = queries.progress(db, job)
    started, finished = job.started_at, job.finished_at
    elapsed = ((finished or datetime.now(UTC)) - started).total_seconds() if started else None
    eta = queries.eta_s(db, job)
    result.progress = Progress(**counts.__dict__, elapsed_s=elapsed, eta_s=eta)
    return result


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobPublic,
    responses=BAD_JSON,
)
def submit_job(body: JobCreate, db: DbDep, owner: WriteOwner) -> JobPublic:
    return public(db, jobs.submit(db, body, owner=owner))


@router.get("", response_model=JobsPublic)
def list_jobs(db: DbDep, _: ReadOwner) -> JobsPublic:
    found = jobs.list_jobs(db)
    return JobsPublic(items=[public(db, job) for job in found], total=len(found))


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: JobId, db: DbDep, _: ReadOwner) -> JobPublic:
    return public(db, jobs.get(db, job_id))


@router.post("/{job_id}/pause", response_model=JobPublic, responses=FORBIDDEN)
def pause_job(job_id: JobId, db: DbDep, _: JobWriter) -> JobPublic:
    return public(db, jobs.transition(db, job_id, "pause"))


@router.post("/{job_id}/resume", response_model=JobPublic, responses=FORBIDDEN)
def resume_job(job_id: JobId, db: DbDep, _: JobWriter) -> JobPublic:
    return public(db, jobs.transition(db, job_id, "resume"))


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=FORBIDDEN)
def cancel_job(job_id: JobId, db: DbDep, _: JobWriter) -> JobPublic:
    return public(db, jobs.transition(db, job_id, "cancel"))


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, responses=FORBIDDEN)
def delete_job(job_id: JobId, db: DbDep, _: JobWriter) -> Response:
    queries.delete_job(db, job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/{job_id}/note", response_model=JobPublic, responses={**FORBIDDEN, **BAD_JSON})
def set_note(job_id: JobId, body: NoteUpdate, db: DbDep, _: JobWriter) -> JobPublic:
    """Set the job's Markdown note (an empty one clears it)."""
    return public(db, jobs.set_job_note(db, job_id, body.note))


def _enqueued(row: Enqueued, job_status: str) -> EnqueuedPublic:
    return EnqueuedPublic(
        id=row.id,
        job_id=row.job_id,
        spec_hash=row.spec_hash,
        note=row.note,
        status=enqueue.status(row, job_status),
        candidate_id=row.candidate_id,
        created_at=row.created_at,
    )


@router.post(
    "/{job_id}/candidates",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EnqueuedPublic,
    responses={**FORBIDDEN, **BAD_JSON},
)
def add_candidate(job_id: JobId, body: EnqueuedCreate, db: DbDep, _: JobWriter) -> EnqueuedPublic:
    """Add a block by hand: checked against the job's search space (422 naming the field),
    trained next by the job's runner (409 when the job has ended or has the block already).
    Its candidate's lineage says `added by hand`."""
    row = enqueue.enqueue(db, job_id, body.spec, body.note)
    return _enqueued(row, "queued")


@router.get("/{job_id}/enqueued", response_model=EnqueuedList)
def list_enqueued(job_id: JobId, db: DbDep, _: ReadOwner) -> EnqueuedList:
    """The blocks added to the job by hand, oldest first, and what became of them."""
    job, rows = enqueue.listed(db, job_id)
    return EnqueuedList(items=[_enqueued(row, job.status) for row in rows])
