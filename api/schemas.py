"""Request and response schemas (Create / Public families)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    computed_field,
    model_validator,
)

from api.markdown import render
from nas_service.job_config import ConfirmConfig, JobConfig
from nas_service.jobs import MAX_NOTE
from nas_service.models import Candidate
from search_space.features import spec_features

JobCreate = JobConfig  # the job file's shape is the request body
ConfirmCreate = ConfirmConfig  # the job file's `confirm` section is the request body


class Progress(BaseModel):
    done: int
    running: int
    queued: int
    total: int
    best_perplexity: float | None = Field(
        description="Perplexity of the best candidate (best_candidate_id), chosen by best_rule."
    )
    best_candidate_id: int | None = Field(
        description=(
            "The job's best candidate under its objective: constrained mode, the lowest "
            "validation loss among feasible candidates; pareto mode, the lowest perplexity on "
            "the Pareto front. Only candidates of the baseline's device kind compete (when "
            "the baseline's is known)."
        )
    )
    best_rule: str = Field(description="How the best candidate is chosen, in words.")
    front_size: int = Field(description="Candidates on the Pareto front (as /pareto).")
    front: list[int] = Field(
        description="Ids on the Pareto front of (perplexity, step_time_ratio), by ratio."
    )
    rung: int = Field(
        description="The rung of the fidelity ladder the best candidate and the front come "
        "from: the highest with results (0 without a ladder)."
    )
    elapsed_s: float | None
    eta_s: float | None = Field(
        description="Seconds until the job ends: its trials not yet finished and its queued "
        "runs, each at the median wall time of its finished trials (compile and evaluation "
        "included; a run's training part scaled by its budget), over its slots. Null until a "
        "trial has finished, and when the job is not running."
    )


NO_NUL = r"^[^\x00]*$"  # PostgreSQL text holds no NUL


class Noted(BaseModel):
    """A person's Markdown note, and its HTML (raw HTML in the note shown as text)."""

    note: str | None = Field(default=None, description="Markdown, set with PUT .../note.")

    @computed_field(description="The note rendered (CommonMark, raw HTML escaped).")
    @property
    def note_html(self) -> str | None:
        return render(self.note)


class NoteUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(
        max_length=MAX_NOTE,
        pattern=NO_NUL,
        description="Markdown; empty clears the note.",
    )


class JobPublic(Noted):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    status: str
    owner: str | None
    error: str | None
    config: dict[str, Any]
    data_checksum: str | None
    warm_start: list[dict[str, Any]] | None = Field(
        default=None,
        description="The blocks its warm start took, resolved at submission: job_id, "
        "candidate_id and spec of each, in the order they joined the population.",
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress | None = None


class JobsPublic(BaseModel):
    items: list[JobPublic]
    total: int


class CandidatePublic(Noted):
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
    device_kind: str | None = Field(
        description=(
            "`platform:kind` of the device the trial ran on (CPUs: the host's processor "
            "model), e.g. `gpu:NVIDIA H200`. Results of different kinds are not ranked "
            "against each other."
        )
    )
    reused_from_id: int | None
    rung: int = Field(
        description="The highest rung of the fidelity ladder it was promoted to (0: the "
        "search's own trial; the candidate's own columns are that trial's result)."
    )
    reason: str | None
    val_loss: float | None = Field(
        description="Validation loss (nats per token) at the end of the training budget."
    )
    val_loss_inference: float | None = Field(
        description=(
            "Expert-choice blocks only: validation loss with the batch-1 inference routing "
            "an exported model uses (val_loss uses the training-time batch routing). "
            "Null for other blocks."
        )
    )
    perplexity: float | None = Field(description="exp(val_loss).")
    bits_per_byte: float | None
    steps: int | None
    tokens: int | None
    train_s: float | None
    compile_s: float | None
    data_s: float | None
    eval_s: float | None
    reference_s: float | None = Field(
        description="Seconds spent compiling and timing the reference block (outside the budget)."
    )
    step_time_ms: float | None = Field(
        description=(
            "Median steady-state training step time in ms, as measured on the trial's "
            "device under its load at the time: for display; compare step_time_ratio."
        )
    )
    step_time_p90_ms: float | None = Field(description="90th percentile of the step times.")
    reference_step_time_ms: float | None = Field(
        description=(
            "Step time in ms of the job's baseline block timed on the same worker slot, "
            "under the same load, alongside this trial."
        )
    )
    step_time_ratio: float | None = Field(
        description=(
            "step_time_ms / reference_step_time_ms: the comparable step-time figure (1.0 = "
            "the baseline). The Pareto front, hypervolume and the constrained mode's "
            "feasibility (ratio <= objective.max_step_time_ratio) use it."
        )
    )
    tokens_per_s: float | None
    params_total: int | None
    params_activated: int | None
    flops_per_token: int | None
    mfu: float | None
    precision: str | None = Field(
        default=None,
        description="Matmul precision the trial trained in: float32, or bfloat16 (float32 "
        "parameters, optimizer state, router, softmax, norms and loss).",
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    features: dict[str, float] = Field(
        default_factory=dict,
        description="Derived features of the block, from its spec (search_space.features: "
        "shares and counts of attention / dense FFN / MoE sub-layers, position of the first "
        "MoE, gating shares, mean capacity factor and experts, widths over d_model, d_model, "
        "repeats, activation shares, rmsnorm 1/0, total and activated parameters, forward "
        "FLOPs per token). Empty when the stored spec is not a valid spec.",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _features_of_row(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """A database row holds its spec, not its features: they are derived from it."""
        model = handler(data)
        if isinstance(data, Candidate):
            model.features = spec_features(data.spec)
        return model


class Summary(BaseModel):
    """A figure over seeds: the mean, its standard error and 95% t interval (null with
    fewer than 2 seeds), and how many seeds."""

    mean: float | None
    se: float | None
    low: float | None
    high: float | None
    n: int


class RunPublic(BaseModel):
    id: int | None = Field(description="Null for the candidate's own trial (rung 0).")
    stage: str = Field(description="`rung` (the fidelity ladder) or `confirm`.")
    rung: int
    seed: int = Field(description="The seed the trainer was given.")
    origin: str = Field(
        description="Why it ran: search (the candidate's own trial), rank or random "
        "(promoted), baseline (every rung's reference), noise (the baseline's calibration "
        "seeds), confirm."
    )
    attempt: int
    status: str
    budget: dict[str, float]
    reason: str | None
    val_loss: float | None
    perplexity: float | None
    step_time_ratio: float | None
    step_time_ms: float | None
    reference_step_time_ms: float | None
    steps: int | None
    train_s: float | None
    device_kind: str | None = None
    started_at: datetime | None
    finished_at: datetime | None


class RungSummary(BaseModel):
    stage: str
    rung: int
    runs: int = Field(description="Completed runs (seeds) behind the figures.")
    val_loss: Summary
    perplexity: Summary
    step_time_ratio: Summary


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
    val_loss_at: dict[str, float | None] | None = Field(
        description=(
            "Validation loss at fractions of the training budget: the fraction as a string "
            '(e.g. "0.25") -> the loss at that point of training.'
        )
    )
    curve: list[tuple[float, float | None]]
    lineage: list[LineageStep]
    runs: list[RunPublic] = Field(description="Its runs: its own trial first, then the others.")
    rungs: list[RungSummary] = Field(
        description="Per (stage, rung): the mean over seeds with its standard error."
    )


class EnqueuedCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] = Field(
        description="The block as an architecture spec (as a candidate's `spec`), checked "
        "against the job's search space."
    )
    note: str | None = Field(
        default=None,
        max_length=MAX_NOTE,
        pattern=NO_NUL,
        description="Markdown: the candidate's note.",
    )


class EnqueuedPublic(BaseModel):
    id: int
    job_id: int
    spec_hash: str
    note: str | None
    status: str = Field(
        description="queued (its runner trains it next), started (candidate_id trains or "
        "trained it) or dropped (the job ended first)."
    )
    candidate_id: int | None
    created_at: datetime


class EnqueuedList(BaseModel):
    items: list[EnqueuedPublic]


class Preset(BaseModel):
    name: str
    space: dict[str, Any]


class Presets(BaseModel):
    presets: list[Preset]
    job_config_schema: dict[str, Any]


class ScoredPoints(BaseModel):
    """The scored candidates, column by column (compact for 100,000 points): every one, or
    when `reduced`, the front, the baselines and one candidate per occupied grid cell."""

    id: list[int]
    perplexity: list[float]
    step_time_ratio: list[float] = Field(
        description=(
            "Step time over the baseline's timed on the same slot (1.0 = the baseline): the "
            "front's step-time axis. Only candidates with a ratio are scored."
        )
    )
    step_time_ms: list[float | None] = Field(
        description="Raw median step time in ms (device- and load-dependent; for display)."
    )
    status: list[str]
    feasible: list[bool | None]
    finished_s: list[float | None] = Field(
        description="When each trial finished, in seconds since the job was submitted."
    )


class ParetoPublic(BaseModel):
    points: ScoredPoints
    front: list[int] = Field(
        description=(
            "Ids on the Pareto front of (perplexity, step_time_ratio) of the feasible "
            "completed candidates, by ratio."
        )
    )
    baselines: list[int]
    total: int = Field(description="Scored candidates of the job in all (sent or not).")
    reduced: bool = Field(
        description=(
            "False: `points` holds every scored candidate. True: the job has more than "
            "`max_points`; `points` holds every front member and baseline exactly, plus at "
            "most `max_points` others: a grid over (step_time_ratio, perplexity) between the "
            "job's extremes, as fine as fits, with one candidate per occupied cell per status "
            "(infeasible ones apart), picked in a fixed pseudo-random order of ids."
        )
    )


class HypervolumePublic(BaseModel):
    reference: tuple[float, float] | None = Field(
        description=(
            "The reference point (perplexity, step_time_ratio): 1.1 x the worst of each among "
            "the completed feasible candidates."
        )
    )
    trials: list[int]
    hypervolume: list[float] = Field(
        description="Area of (perplexity, step_time_ratio) space dominated by the front."
    )


class RungPoint(BaseModel):
    candidate_id: int
    is_baseline: bool
    origin: str
    feasible: bool | None
    seeds: int
    val_loss: Summary
    perplexity: Summary
    step_time_ratio: Summary


class Rung(BaseModel):
    rung: int
    budget: dict[str, float]
    seeds: int
    candidates: int = Field(description="Candidates at this rung (rung 0: the whole search).")
    front: list[int] = Field(description="This rung's Pareto front (feasible), by ratio.")
    points: list[RungPoint] = Field(
        description="Rung 0: its front, the baseline and those promoted from it."
    )


class RungsPublic(BaseModel):
    top_rung: int = Field(
        description="The highest rung with results: the job's front and best are its."
    )
    rungs: list[Rung]


class FidelityPoint(BaseModel):
    candidate_id: int
    origin: str
    low: float
    high: float


class FidelityPair(BaseModel):
    low: int
    high: int
    n: int = Field(description="Candidates with results at both rungs.")
    spearman: float | None
    spearman_interval: list[float] | None = Field(description="Bootstrap 95% interval.")
    kendall: float | None
    kendall_interval: list[float] | None
    top_k: int | None
    top_k_recall: float | None = Field(
        description="Share of the higher rung's top k that the lower rung also ranks top k."
    )
    points: list[FidelityPoint]


class RungNoise(BaseModel):
    rung: int
    noise_floor: float | None = Field(
        description="Pooled standard deviation of val_loss over seeds of the same candidate."
    )
    noise_candidates: int
    noise_runs: int
    spread: float | None = Field(description="Standard deviation of the candidates' means.")
    spread_candidates: int
    signal_to_noise: float | None


class FidelityPublic(BaseModel):
    metric: str
    pairs: list[FidelityPair]
    noise: list[RungNoise]
    margin: float | None = Field(
        description="The hurdle's margin: configured, or measured (hurdle.margin: auto)."
    )


class Difference(BaseModel):
    n: int
    mean: float | None
    low: float | None
    high: float | None
    p_value: float | None


class ConfirmedCandidate(BaseModel):
    candidate_id: int
    name: str | None
    is_baseline: bool
    search_rank: int | None
    seeds: int
    failed_runs: int
    val_loss: Summary
    perplexity: Summary
    step_time_ratio: Summary
    difference: Difference | None = Field(
        description="Paired by seed: val_loss minus the baseline's, with its interval."
    )
    significant: bool
    feasible: bool | None
    beats_baseline: bool


class ConfirmationPublic(BaseModel):
    status: str = Field(
        description="not_requested; requested (it runs once the search ends); running (its "
        "runs are queued or training: figures so far, no winner yet); done."
    )
    rung: int | None = None
    seeds: list[int] | None = None
    budget: dict[str, float] | None = None
    alpha: float | None = None
    correction: str | None = None
    interval_confidence: float | None = None
    compared: int | None = None
    baseline_id: int | None = None
    candidates: list[ConfirmedCandidate] = Field(default_factory=list)
    rank_correlation: dict[str, Any] | None = None
    winner: int | None = Field(
        default=None,
        description="The declared winner: the best block whose Holm-corrected interval "
        "beats the baseline; null while running and when none was shown to.",
    )
    verdict: str | None = None


class FeatureShare(BaseModel):
    name: str = Field(description="A feature of search_space.features.FEATURES.")
    perplexity: float = Field(
        description="Share of the variance of perplexity this feature explains (0..1)."
    )
    step_time: float = Field(
        description="Share of the variance of the step-time ratio this feature explains."
    )


class ObjectiveR2(BaseModel):
    perplexity: float | None
    step_time: float | None


class ImportancePublic(BaseModel):
    """Which block features explain perplexity and step time over a job's completed
    candidates: a random forest per objective, cross-fitted (5 folds), and scikit-learn's
    permutation importance on the held-out rows. A feature's share is the held-out squared
    error that shuffling it adds, over the objective's variance, clipped at 0 and scaled so
    that the shares sum to the forest's out-of-sample R^2: the variance the features explain
    on candidates the forest did not see, split among them. Correlated features share their
    importance."""

    job_id: int
    candidates: int = Field(
        description="Completed candidates the forests were fitted on (a fixed pseudo-random "
        "sample of them above 500)."
    )
    completed: int = Field(
        description="The job's completed candidates with both objectives (of the baseline's "
        "device kind, when known); failed, pruned and diverged ones are left out, reused "
        "results count."
    )
    min_candidates: int = Field(description="Fewer candidates give no ranking.")
    method: str
    r2: ObjectiveR2 = Field(
        description="Out-of-sample R^2 per objective (null with too few candidates): the "
        "shares sum to it (to 0 when it is negative)."
    )
    features: list[FeatureShare] = Field(
        description="Most important first, by perplexity share + step_time share; constant "
        "features and those in `equivalent` left out. Empty with too few candidates."
    )
    equivalent: dict[str, str] = Field(
        description="Features left out because they order the candidates exactly as a "
        "feature listed does (e.g. layer counts when every block has the same depth): "
        "name -> the feature listed."
    )
    message: str | None = Field(
        description="Why there is no ranking (too few candidates), or that a sample was used."
    )


class ComparePoint(BaseModel):
    candidate_id: int
    perplexity: float
    step_time_ms: float | None
    perplexity_ratio: float | None = Field(
        description="perplexity / the job's baseline's perplexity (null until it has one)."
    )
    step_time_ratio: float = Field(
        description="Step time over the job's baseline's timed on the same slot, as stored."
    )


class CompareJob(BaseModel):
    id: int
    name: str
    status: str
    device_kind: str | None = Field(
        description="The device kind of the job's baseline trial (platform:kind)."
    )
    budget: dict[str, int | float] = Field(
        description='Each trial\'s budget: {"seconds": s}, {"steps": n} or {"flops": f}.'
    )
    baseline: str = Field(description="The job's baseline block (objective.baseline).")
    baseline_candidate_id: int | None
    baseline_perplexity: float | None
    baseline_step_time_ms: float | None
    completed: int = Field(description="The job's completed candidates.")
    front: list[ComparePoint] = Field(
        description="The job's Pareto front (its search's own trials), by step-time ratio."
    )
    message: str | None


class ComparePublic(BaseModel):
    jobs: list[CompareJob] = Field(description="In the order asked for.")


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
BAD_JSON = {400: {"model": Message, "description": "The body is not valid JSON."}}
FORBIDDEN = {
    403: {
        "model": Message,
        "description": "An invalid token, or the job is another owner's: only its owner or an "
        "admin may change it.",
    }
}
