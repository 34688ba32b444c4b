"""The service-wide snapshot behind `/metrics`: trials by status, training seconds, queues."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from nas_service.db import Database
from nas_service.models import CANDIDATE_FINISHED, Candidate, Job


@dataclass(frozen=True)
class Snapshot:
    trials: dict[str, int]
    trial_seconds: float
    queued_candidates: int
    queued_jobs: int


def snapshot(db: Database) -> Snapshot:
    """Candidates by status, training seconds of finished ones, and queued work."""
    with db.sessions() as session:
        counts = session.execute(
            select(Candidate.status, func.count()).group_by(Candidate.status)
        ).all()
        seconds = session.scalar(
            select(func.coalesce(func.sum(Candidate.train_s), 0.0)).where(
                Candidate.status.in_(CANDIDATE_FINISHED)
            )
        )
        queued_jobs = session.scalar(
            select(func.count()).select_from(Job).where(Job.status == "queued")
        )
    trials = {status: count for status, count in counts}
    return Snapshot(
        trials=trials,
        trial_seconds=float(seconds or 0.0),
        queued_candidates=trials.get("queued", 0),
        queued_jobs=queued_jobs or 0,
    )
