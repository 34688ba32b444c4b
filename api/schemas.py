"""Request and response schemas (Create / Public families)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nas_service.job_config import JobConfig

JobCreate = JobConfig  # the job file's shape is the request body


class Progress(BaseModel):
    done: int
    running: int
    queued: int
    total: int
    best_perplexity: float | None
    best_candidate_id: int | None
    front_size: int = Field(description="Candidates on the Pareto front (as /pareto).")
    elapsed_s: float | None
    eta_s: float | None


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    status: str
    owner: str | None
    error: str | None
    config: dict[str, Any]
    data_checksum: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress | None = None


class JobsPublic(BaseModel):
    items: list[JobPublic]
    total: int


class CandidatePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    job_id: int
    birth: int
    spec_hash: str
    parent_id: int | None
    mutation: str
    is_baseline: bool
    status: str
    feasible: bool | None
    attempt: int
    node_id: str | None
    slot: int | None
    reused_from_id: int | None
    reason: str | None
    val_loss: float | None
    perplexity: float | None
    bits_per_byte: float | None
    steps: int | None
    tokens: int | None
    train_s: float | None
    compile_s: float | None
    data_s: float | None
    eval_s: float | None
    step_time_ms: float | None
    step_time_p90_ms: float | None
    tokens_per_s: float | None
    params_total: int | None
    params_activated: int | None
    flops_per_token: int | None
    mfu: float | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class CandidatesPublic(BaseModel):
    items: list[CandidatePublic]
    total: int
    limit: int
    offset: int


class LineageStep(BaseModel):
    id: int
    mutation: str
    spec_hash: str


class CandidateDetail(CandidatePublic):
    spec: dict[str, Any]
    traceback: str | None
    moe: list[Any] | None
    device: dict[str, Any] | None
    smoothed_loss_at: dict[str, Any] | None
    curve: list[tuple[float, float | None]]
    lineage: list[LineageStep]


class Preset(BaseModel):
    name: str
    space: dict[str, Any]


class Presets(BaseModel):
    presets: list[Preset]
    job_config_schema: dict[str, Any]


class ScoredPoints(BaseModel):
    """Every scored candidate, column by column (compact for 100,000 points)."""

    id: list[int]
    perplexity: list[float]
    step_time_ms: list[float]
    status: list[str]
    feasible: list[bool | None]
    finished_s: list[float | None] = Field(
        description="When each trial finished, in seconds since the job was submitted."
    )


class ParetoPublic(BaseModel):
    points: ScoredPoints
    front: list[int]  # ids on the front of the feasible completed ones, by step time
    baselines: list[int]


class HypervolumePublic(BaseModel):
    reference: tuple[float, float] | None
    trials: list[int]
    hypervolume: list[float]


class Message(BaseModel):
    detail: str


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class FieldErrors(BaseModel):
    detail: list[FieldError]


NOT_FOUND = {404: {"model": Message, "description": "No such job or candidate."}}
CONFLICT = {409: {"model": FieldErrors, "description": "Not possible in the job's state."}}
