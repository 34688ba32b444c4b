"""A job's events, page by page, for the server-sent event stream."""

from __future__ import annotations

from sqlalchemy import func, select

from nas_service.db import Database
from nas_service.models import Job, JobEvent, utcnow

JOB_FINAL = ("completed", "failed", "cancelled")


def events_after(
    db: Database, job_id: int, after: int, page: int = 500
) -> tuple[str | None, bool, list[JobEvent]]:
    """The job's status (None once deleted), whether it is still finishing, then up to page
    of its events with id > `after`.

    Finishing: the status is final (e.g. the API wrote `cancelled`) but a runner holds a
    live lease on the job and has not yet written the job's final event (a `job` event
    whose message is a final status; it stops the job's trials first, with their events).
    The status is read first and the final event looked for before the page is read, so the
    page includes every event committed with (or before) a final status, and the final
    event whenever it was found.
    """
    with db.sessions() as session:
        row = session.execute(
            select(Job.status, Job.runner_id, Job.lease_expires_at).where(Job.id == job_id)
        ).first()
        status = row.status if row else None
        finishing = (
            row is not None
            and row.status in JOB_FINAL
            and row.runner_id is not None
            and row.lease_expires_at is not None
            and row.lease_expires_at >= utcnow()
            and session.scalar(
                select(JobEvent.id)
                .where(
                    JobEvent.job_id == job_id,
                    JobEvent.kind == "job",
                    JobEvent.message.in_(JOB_FINAL),
                )
                .limit(1)
            )
            is None
        )
        query = (
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.id > after)
            .order_by(JobEvent.id)
            .limit(page)
        )
        return status, finishing, list(session.scalars(query))


def last_event_id(db: Database, job_id: int) -> int:
    """The id of the job's latest event, 0 when it has none."""
    with db.sessions() as session:
        latest = session.scalar(select(func.max(JobEvent.id)).where(JobEvent.job_id == job_id))
    return latest or 0
