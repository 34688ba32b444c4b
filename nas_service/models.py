"""The database schema (SQLAlchemy 2 typed models). Tables come from Alembic migrations only.

Every field of a trial result is a real column with the trainer's name, so the API can filter
and sort on any metric; non-finite numbers are stored as NULL with the status saying why.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from search_space.results import RESULT_NAMES

JOB_STATUSES = ("queued", "running", "paused", "completed", "failed", "cancelled")
JOB_ACTIVE = ("queued", "running", "paused")
CANDIDATE_STATUSES = (
    "queued",
    "running",
    "completed",
    "failed",
    "pruned",
    "diverged",
    "cancelled",
)
CANDIDATE_FINISHED = ("completed", "failed", "pruned", "diverged", "cancelled")
# A run's stage: a rung of the fidelity ladder (rung 0 is the candidate's own row; the
# baseline's noise seeds are rung-0 runs), or the confirmation of the declared winner.
RUN_STAGES = ("rung", "confirm")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every database (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, list[Any]: JSON}


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    owner: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    data_checksum: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)  # Markdown, a person's
    # The specs a warm start took from earlier jobs, resolved at submission:
    # [{"job_id", "candidate_id", "spec"}, ...] in the order they join the population.
    warm_start: Mapped[list[Any] | None]
    runner_id: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    candidates: Mapped[list[Candidate]] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True
    )


class Candidate(Base):
    __tablename__ = "candidates"
    __table_args__ = (
        UniqueConstraint("job_id", "spec_hash", name="uq_candidates_job_spec"),
        UniqueConstraint("job_id", "birth", name="uq_candidates_job_birth"),
        Index("ix_candidates_job_status", "job_id", "status"),
        Index("ix_candidates_job_perplexity", "job_id", "perplexity"),
        Index("ix_candidates_job_step_time", "job_id", "step_time_ms"),
        Index("ix_candidates_job_step_time_ratio", "job_id", "step_time_ratio"),
        Index("ix_candidates_job_finished", "job_id", "finished_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    spec: Mapped[dict[str, Any]]
    spec_hash: Mapped[str] = mapped_column(String(64), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id", ondelete="SET NULL"))
    mutation: Mapped[str] = mapped_column(String(500), default="")
    birth: Mapped[int] = mapped_column(Integer)
    is_baseline: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    feasible: Mapped[bool | None] = mapped_column(Boolean)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    node_id: Mapped[str | None] = mapped_column(String(64))
    slot: Mapped[int | None] = mapped_column(Integer)
    # platform and device kind of the trial's device (CPU: the host's processor model);
    # results of different kinds are never ranked against each other.
    device_kind: Mapped[str | None] = mapped_column(String(200))
    # The highest rung of the fidelity ladder it was promoted to (0: the search's own trial).
    rung: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reused_from_id: Mapped[int | None] = mapped_column(
        ForeignKey("candidates.id", ondelete="SET NULL")
    )
    note: Mapped[str | None] = mapped_column(Text)  # Markdown, a person's
    # --- the trainer's result, one column per field -------------------------------------
    reason: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_loss_inference: Mapped[float | None] = mapped_column(Float)
    perplexity: Mapped[float | None] = mapped_column(Float)
    bits_per_byte: Mapped[float | None] = mapped_column(Float)
    steps: Mapped[int | None] = mapped_column(Integer)
    tokens: Mapped[int | None] = mapped_column(BigInteger)
    train_s: Mapped[float | None] = mapped_column(Float)
    compile_s: Mapped[float | None] = mapped_column(Float)
    data_s: Mapped[float | None] = mapped_column(Float)
    eval_s: Mapped[float | None] = mapped_column(Float)
    reference_s: Mapped[float | None] = mapped_column(Float)
    step_time_ms: Mapped[float | None] = mapped_column(Float)
    step_time_p90_ms: Mapped[float | None] = mapped_column(Float)
    reference_step_time_ms: Mapped[float | None] = mapped_column(Float)
    step_time_ratio: Mapped[float | None] = mapped_column(Float)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    params_total: Mapped[int | None] = mapped_column(BigInteger)
    params_activated: Mapped[int | None] = mapped_column(BigInteger)
    flops_per_token: Mapped[int | None] = mapped_column(BigInteger)
    mfu: Mapped[float | None] = mapped_column(Float)
    precision: Mapped[str | None] = mapped_column(String(16))
    moe: Mapped[list[Any] | None]
    device: Mapped[dict[str, Any] | None]
    smoothed_loss_at: Mapped[dict[str, Any] | None]
    val_loss_at: Mapped[dict[str, Any] | None]
    # -------------------------------------------------------------------------------------
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    job: Mapped[Job] = relationship(back_populates="candidates")
    curve: Mapped[list[CurvePoint]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="CurvePoint.index"
    )
    runs: Mapped[list[Run]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="Run.id"
    )


# The trial-result contract's fields, each a candidate column (the curve has its own table).
RESULT_COLUMNS = RESULT_NAMES


class Run(Base):
    """One more evaluation of a candidate: (stage, rung, seed), retried in place as its
    `attempt` grows, like a candidate's own row. The candidate's row is its rung-0 run with
    the job's seed; every other run (a higher rung, another seed, confirmation) is here, with
    the same result columns and its curve as JSON."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("candidate_id", "stage", "rung", "seed", name="uq_runs_key"),
        Index("ix_runs_job_stage_rung", "job_id", "stage", "rung"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    candidate_id: Mapped[int] = mapped_column(
        ForeignKey("candidates.id", ondelete="CASCADE"), index=True
    )
    stage: Mapped[str] = mapped_column(String(16))
    rung: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)  # the seed the trainer was given
    # Why it runs: rank / random (promotion), baseline (the reference at every rung), noise
    # (the baseline's calibration seeds), confirm.
    origin: Mapped[str] = mapped_column(String(16))
    budget: Mapped[dict[str, Any]]  # as workers take it: {"seconds": s} / steps / flops
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    node_id: Mapped[str | None] = mapped_column(String(64))
    slot: Mapped[int | None] = mapped_column(Integer)
    device_kind: Mapped[str | None] = mapped_column(String(200))
    # --- the trainer's result, the same columns as a candidate's -------------------------
    reason: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_loss_inference: Mapped[float | None] = mapped_column(Float)
    perplexity: Mapped[float | None] = mapped_column(Float)
    bits_per_byte: Mapped[float | None] = mapped_column(Float)
    steps: Mapped[int | None] = mapped_column(Integer)
    tokens: Mapped[int | None] = mapped_column(BigInteger)
    train_s: Mapped[float | None] = mapped_column(Float)
    compile_s: Mapped[float | None] = mapped_column(Float)
    data_s: Mapped[float | None] = mapped_column(Float)
    eval_s: Mapped[float | None] = mapped_column(Float)
    reference_s: Mapped[float | None] = mapped_column(Float)
    step_time_ms: Mapped[float | None] = mapped_column(Float)
    step_time_p90_ms: Mapped[float | None] = mapped_column(Float)
    reference_step_time_ms: Mapped[float | None] = mapped_column(Float)
    step_time_ratio: Mapped[float | None] = mapped_column(Float)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    params_total: Mapped[int | None] = mapped_column(BigInteger)
    params_activated: Mapped[int | None] = mapped_column(BigInteger)
    flops_per_token: Mapped[int | None] = mapped_column(BigInteger)
    mfu: Mapped[float | None] = mapped_column(Float)
    precision: Mapped[str | None] = mapped_column(String(16))
    moe: Mapped[list[Any] | None]
    device: Mapped[dict[str, Any] | None]
    smoothed_loss_at: Mapped[dict[str, Any] | None]
    val_loss_at: Mapped[dict[str, Any] | None]
    curve: Mapped[list[Any] | None]  # [[train_s, loss], ...]
    # -------------------------------------------------------------------------------------
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Enqueued(Base):
    """A spec a person added to a job, waiting for its runner to train it next. The runner
    gives it the next birth (the designer's births stay consecutive) and links the candidate
    row it wrote; until then `candidate_id` is NULL."""

    __tablename__ = "enqueued"
    __table_args__ = (
        UniqueConstraint("job_id", "spec_hash", name="uq_enqueued_job_spec"),
        Index("ix_enqueued_job_candidate", "job_id", "candidate_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    spec: Mapped[dict[str, Any]]
    spec_hash: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    candidate_id: Mapped[int | None] = mapped_column(
        ForeignKey("candidates.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CurvePoint(Base):
    __tablename__ = "curve_points"

    candidate_id: Mapped[int] = mapped_column(
        ForeignKey("candidates.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_s: Mapped[float] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any] | None]
