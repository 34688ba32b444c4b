"""Jobs side by side: each job's Pareto front normalised by its own baseline, so that jobs on
different devices or budgets read on one scale, with the device and budget named."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from nas_service.db import Database
from nas_service.job_config import ObjectiveConfig, TrialConfig
from nas_service.jobs import JobNotFound
from nas_service.models import Candidate, Job
from nas_service.queries.fronts import cached_front
from nas_service.queries.jobs import reference_device_kind

MAX_JOBS = 20


def compare_jobs(db: Database, job_ids: list[int]) -> list[dict[str, Any]]:
    """For each job (in the order given): its device kind, trial budget and baseline, and
    its front (the search's own, rung 0, as `pareto`) by step-time ratio with each point's
    perplexity over the baseline's. The step-time ratio is stored normalised already (step
    time over the baseline's timed on the same slot)."""
    with db.sessions() as session:
        jobs = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(job_ids)))}
        missing = [job_id for job_id in job_ids if job_id not in jobs]
        if missing:
            raise JobNotFound(f"job {missing[0]} not found")
        return [_one(db, session, jobs[job_id]) for job_id in job_ids]


def _one(db: Database, session: Any, job: Job) -> dict[str, Any]:
    completed = session.scalar(
        select(func.count()).where(Candidate.job_id == job.id, Candidate.status == "completed")
    )
    front = cached_front(db, session, job, completed)
    base = session.execute(
        select(Candidate.id, Candidate.perplexity, Candidate.step_time_ms)
        .where(Candidate.job_id == job.id, Candidate.is_baseline.is_(True))
        .order_by(Candidate.birth, Candidate.id)
        .limit(1)
    ).first()
    base_ppl = base.perplexity if base is not None else None
    points = session.execute(
        select(
            Candidate.id, Candidate.perplexity, Candidate.step_time_ms, Candidate.step_time_ratio
        ).where(Candidate.id.in_(front))
    ).all()
    by_id = {point.id: point for point in points}
    message = None
    if base_ppl is None:
        message = "the baseline has no perplexity yet: perplexity ratios are unknown"
    elif not front:
        message = "no completed candidates on the front yet"
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "device_kind": reference_device_kind(session, job.id),
        "budget": TrialConfig.model_validate(job.config.get("trial") or {}).budget(),
        "baseline": ObjectiveConfig.model_validate(job.config.get("objective") or {}).baseline,
        "baseline_candidate_id": base.id if base is not None else None,
        "baseline_perplexity": base_ppl,
        "baseline_step_time_ms": base.step_time_ms if base is not None else None,
        "completed": completed,
        "front": [
            {
                "candidate_id": point.id,
                "perplexity": point.perplexity,
                "step_time_ms": point.step_time_ms,
                "perplexity_ratio": point.perplexity / base_ppl if base_ppl else None,
                "step_time_ratio": point.step_time_ratio,
            }
            for point in map(by_id.__getitem__, front)
        ],
        "message": message,
    }
