"""The job configuration: one pydantic model for the runner, the API and the CLI's files.

Every number has bounds and every error names its field once, by its location (e.g.
`workers.concurrency`, `search_space.overrides.d_model.0`, `trial.batch_size`), in words
without pydantic's `Value error, ` prefix; an unknown key names the closest known field
(`trail: unknown field; did you mean 'trial'?`). A minimal file is enough; the rest has
defaults:

    name: quick
    dataset: builtin:stdlib
    search_space: {preset: proxy-cpu}
    objective: {mode: pareto}
    trial: {budget_s: 5}
    limits: {max_trials: 6}
    workers: {concurrency: 2}
    seed: 0
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

from search_space import BASELINES, PRESETS, SearchSpace, baseline, get_preset

BaselineName = Literal["dense", "glam", "switch", "glam-ec"]
assert set(BaselineName.__args__) == set(BASELINES)  # type: ignore[attr-defined]


Loc = tuple[str | int, ...]
# Pydantic's own kinds of error, rebuilt from their context; a validator's (value_error)
# keeps its words instead.
_PYDANTIC_KINDS = frozenset(get_args(ErrorType)) - {"value_error", "assertion_error"}
_PYDANTIC_EXTRA = "Extra inputs are not permitted"


def invalid(loc: str | Loc, message: str, value: Any) -> ValidationError:
    """An error at `loc` (dotted or a tuple, relative to what the validator checks) that says
    only `message`. A check across fields raises it so the error names the exact field once,
    by its location, instead of the section that ran the check plus the field in its words."""
    if isinstance(loc, str):
        loc = tuple(int(part) if part.isdigit() else part for part in loc.split("."))
    return ValidationError.from_exception_data(
        "JobConfig", [_custom("value_error", loc, message, value)]
    )


def relocated(error: ValidationError, prefix: Loc, title: str) -> ValidationError:
    """`error` with every location under `prefix`: a nested check's errors where they are."""
    return ValidationError.from_exception_data(
        title, [_line(e, (*prefix, *e["loc"])) for e in error.errors()]
    )


def unknown_field(name: Any, known: list[str]) -> str:
    """What to say about an unknown key: the closest known field, or the fields there are."""
    close = get_close_matches(str(name), known, n=1)
    if close:
        return f"unknown field; did you mean {close[0]!r}?"
    return f"unknown field; known fields: {', '.join(known)}"


def _custom(kind: str, loc: Loc, message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)


def _line(error: Any, loc: Loc | None = None) -> InitErrorDetails:
    """`error` (an item of `ValidationError.errors()`) rebuilt at `loc`: pydantic's kinds with
    their context, others with their words less pydantic's `Value error, ` prefix."""
    loc = error["loc"] if loc is None else loc
    if error["type"] in _PYDANTIC_KINDS:
        line = InitErrorDetails(type=error["type"], loc=loc, input=error["input"])
        if "ctx" in error:
            line["ctx"] = error["ctx"]
        try:  # the same words again (not a kind a section reworded, e.g. an unknown key)
            again = ValidationError.from_exception_data("check", [line]).errors()[0]["msg"]
            if again == error["msg"]:
                return line
        except (KeyError, TypeError, ValueError):  # a context this version cannot rebuild
            pass
    message = error["msg"].removeprefix("Value error, ")
    return _custom(error["type"], loc, message, error["input"])


def _needs_rewording(error: Any) -> bool:
    if error["type"] == "extra_forbidden":
        return error["msg"] == _PYDANTIC_EXTRA and len(error["loc"]) == 1
    return error["msg"].startswith("Value error, ")


class _Section(BaseModel):
    """A section of a job file: unknown keys are refused, naming the closest known field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="wrap")
    @classmethod
    def _readable_errors(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        """Errors a person reads once: an unknown key (a typo, mostly) names the closest known
        field instead of "Extra inputs are not permitted", and validators' messages lose
        pydantic's `Value error, ` prefix. Each section words its own keys; the checks of
        the section itself that run after this one raise `invalid(...)` errors."""
        try:
            return handler(data)
        except ValidationError as exc:
            errors = exc.errors()
            if not any(_needs_rewording(e) for e in errors):
                raise
            known = list(cls.model_fields)
            lines = [
                _custom(e["type"], e["loc"], unknown_field(e["loc"][0], known), e["input"])
                if _needs_rewording(e) and e["type"] == "extra_forbidden"
                else _line(e)
                for e in errors
            ]
            raise ValidationError.from_exception_data(exc.title, lines) from None


# Every item of a search space, each optional: per-item errors name the item and index.
SpaceOverrides = create_model(
    "SpaceOverrides",
    __base__=_Section,
    **{
        name: (Annotated[(field.annotation, *field.metadata)] | None, None)
        for name, field in SearchSpace.model_fields.items()
        if name != "name"
    },
)


class SearchSpaceConfig(_Section):
    preset: Annotated[str, Field(description=f"One of: {', '.join(PRESETS)}.")] = "proxy-cpu"
    overrides: SpaceOverrides = Field(  # type: ignore[valid-type]
        default_factory=SpaceOverrides,
        description="Replace any item of the preset's allowed values.",
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str) -> str:
        get_preset(preset)
        return preset

    @model_validator(mode="after")
    def _valid_overrides(self) -> SearchSpaceConfig:
        """The preset with its overrides must be a valid space: errors name the override."""
        try:
            self.space()
        except ValidationError as exc:
            raise relocated(exc, ("overrides",), "SearchSpaceConfig") from None
        return self

    def space(self) -> SearchSpace:
        return get_preset(self.preset).override(self.overrides.model_dump(exclude_none=True))


class ObjectiveConfig(_Section):
    mode: Literal["pareto", "constrained"] = "pareto"
    baseline: BaselineName = "glam"
    max_step_time_ratio: Annotated[float, Field(gt=0, le=100)] = 1.0


DEFAULT_BATCH_SIZE = 16
Precision = Literal["float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
DEFAULT_BUDGET_S = 30.0
BUDGETS = ("budget_s", "budget_steps", "budget_flops")


class TrialConfig(_Section):
    budget_s: Annotated[float, Field(ge=0.1, le=7 * 24 * 3600)] | None = Field(
        default=None,
        description=f"Seconds of training steps (the paper's fixed wall-clock budget: faster "
        f"blocks get more steps). Default {DEFAULT_BUDGET_S:g} when no budget is given.",
    )
    budget_steps: Annotated[int, Field(ge=1, le=10**9)] | None = Field(
        default=None, description="Training steps instead: reproducible with the same seed."
    )
    budget_flops: Annotated[float, Field(gt=0, le=1e24)] | None = Field(
        default=None,
        description="Training FLOPs instead (the cost model's, turned into steps): the same "
        "compute for every block, reproducible with the same seed.",
    )
    batch_size: Annotated[int, Field(ge=1, le=65_536)] | None = Field(
        default=None,
        description=f"Sequences per step. Default {DEFAULT_BATCH_SIZE}, or the smallest that "
        "the space's expert-choice layers need (batch_size x capacity >= experts).",
    )
    learning_rate: Annotated[float, Field(gt=0, le=1e4)] = 3e-3
    warmup_steps: Annotated[int, Field(ge=0, le=1_000_000)] = 20
    weight_decay: Annotated[float, Field(ge=0, le=10)] = 0.1
    grad_clip: Annotated[float, Field(gt=0, le=1e6)] = 1.0
    eval_tokens: Annotated[int, Field(ge=1, le=1_000_000_000)] = 32_768
    eval_at: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [1.0],
        min_length=1,
        max_length=20,
        description="Fractions of the budget at which the validation loss is measured "
        "(outside the budget, each costing one evaluation of eval_tokens); returned as "
        "val_loss_at. Add e.g. 0.25 and 0.5 for each trial's own fidelity curve.",
    )
    precision: Precision | None = Field(
        default=None,
        description="Matmul precision: bfloat16 computes in bfloat16 with float32 parameters, "
        "optimizer state, router, softmax, norms and loss. Default: bfloat16 on GPUs and "
        "TPUs, float32 on CPUs. Stored with each result as `precision`.",
    )
    reference_steps: Annotated[int, Field(ge=2, le=10_000)] = Field(
        default=8,
        description="Steps of the job's baseline timed on the trial's own slot, half before "
        "and half after training: the unit of the trial's step_time_ratio.",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_budget(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [name for name in BUDGETS if data.get(name) is not None]
            if len(given) > 1:
                raise ValueError(
                    f"give exactly one of {', '.join(BUDGETS)} (got {', '.join(given)})"
                )
            if not given:
                data = {**data, "budget_s": DEFAULT_BUDGET_S}
        return data

    @field_validator("eval_at")
    @classmethod
    def _sorted_fractions(cls, fractions: list[float]) -> list[float]:
        return sorted(set(fractions))

    def budget(self) -> dict[str, float]:
        """The budget as workers take it: {"seconds": s}, {"steps": n} or {"flops": f}."""
        if self.budget_steps is not None:
            return {"steps": self.budget_steps}
        if self.budget_flops is not None:
            return {"flops": self.budget_flops}
        return {"seconds": self.budget_s}

    def trainer_config(self) -> dict[str, Any]:
        """The TrainConfig fields sent to workers (the budget travels separately)."""
        return self.model_dump(exclude=set(BUDGETS))


class LimitsConfig(_Section):
    max_trials: Annotated[int, Field(ge=1, le=1_000_000)] = 50
    max_hours: Annotated[float, Field(gt=0, le=24 * 365)] | None = None


MAX_DERIVED_POPULATION = 20  # the former default; Primer used 100 over far longer searches
MIN_DERIVED_POPULATION = 3  # the baselines of a preset (dense, GLaM, GLaM-EC) fit in it


def derived_population(max_trials: int) -> int:
    """The population when a job does not set one: a quarter of its trials, 3 to 20.

    The designer proposes the initial baselines and random samples until `population_size`
    trials exist and only then children of tournaments, so a population near the trial count
    leaves a short search no evolution at all (the former default of 20 made every trial of
    a 20-trial job an initial or random one); a quarter makes most trials children."""
    return min(MAX_DERIVED_POPULATION, max(MIN_DERIVED_POPULATION, max_trials // 4))


def derived_tournament(population_size: int) -> int:
    """The tournament when a job does not set one: a quarter of the population (Real et al.
    2019 used 25 of 100), at least 2 so that selection compares."""
    return max(2, population_size // 4)


class EvolutionConfig(_Section):
    population_size: Annotated[int, Field(ge=2, le=100_000)] | None = Field(
        default=None,
        description="Living members (the last finished trials; the oldest dies). Unset: "
        f"limits.max_trials // 4, between {MIN_DERIVED_POPULATION} and "
        f"{MAX_DERIVED_POPULATION}, so that most trials are children of tournaments (the "
        "first population_size trials are the initial baselines and random samples).",
    )
    tournament_size: Annotated[int, Field(ge=1, le=100_000)] | None = Field(
        default=None,
        description="Members drawn per tournament; the best is the parent. Unset: "
        "population_size // 4, at least 2. At most population_size.",
    )
    initial: list[BaselineName] = Field(
        default_factory=lambda: list(BASELINES),
        description="Baselines seeded into the initial population (those in the space).",
    )

    @model_validator(mode="after")
    def _tournament_fits(self) -> EvolutionConfig:
        if self.population_size is None or self.tournament_size is None:
            return self  # derived by JobConfig, which knows limits.max_trials
        if self.tournament_size > self.population_size:
            raise invalid(
                "tournament_size",
                f"{self.tournament_size} exceeds population_size ({self.population_size})",
                self.tournament_size,
            )
        return self


class HurdleConfig(_Section):
    enabled: bool = True
    at_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.25
    margin: Annotated[float, Field(ge=0, le=10)] | Literal["auto"] = Field(
        default=0.1,
        description="Relative: prune when the smoothed loss exceeds the baseline's x (1 + "
        "margin). `auto`: twice the relative seed noise of the baseline's smoothed loss at "
        "`at_fraction`, measured at job start (needs fidelity.noise_seeds >= 2).",
    )


class RungConfig(_Section):
    budget_multiplier: Annotated[float, Field(gt=1, le=10_000)] = Field(
        description="The rung's budget as a multiple of the trial budget (rung 0's)."
    )
    promote: Annotated[float, Field(gt=0, le=1_000_000)] = Field(
        description="How many of the rung below reach this one: a fraction (< 1) of them, "
        "or a count (>= 1, a whole number)."
    )
    seeds: Annotated[int, Field(ge=1, le=100)] = Field(
        default=1, description="Seeds each promoted candidate is trained with at this rung."
    )

    @field_validator("promote")
    @classmethod
    def _fraction_or_count(cls, promote: float) -> float:
        if promote >= 1 and promote != int(promote):
            raise ValueError(f"a count must be a whole number (got {promote:g})")
        return promote


class FidelityConfig(_Section):
    rungs: list[RungConfig] = Field(
        default_factory=list,
        max_length=10,
        description="Rungs above rung 0 (the trial budget, one seed), promoted to "
        "asynchronously (ASHA): a finished run whose candidate is in the top share of its "
        "rung so far moves up. Empty: no ladder.",
    )
    random_share: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.0,
        description="Share of each rung's candidates promoted at random, whatever their rank, "
        "so that the measured fidelity is not biased by selection (e.g. 0.1).",
    )
    noise_seeds: Annotated[int, Field(ge=0, le=100)] = Field(
        default=0,
        description="Train the baseline with this many seeds at job start (0 or 1: only "
        "its own trial) to measure the seed noise; needed by hurdle.margin: auto.",
    )

    @model_validator(mode="after")
    def _budgets_grow(self) -> FidelityConfig:
        multipliers = [rung.budget_multiplier for rung in self.rungs]
        for i in range(1, len(multipliers)):
            if multipliers[i] <= multipliers[i - 1]:
                raise invalid(
                    ("rungs", i, "budget_multiplier"),
                    f"{multipliers[i]:g} must exceed the rung below's ({multipliers[i - 1]:g})",
                    multipliers[i],
                )
        return self


class ConfirmConfig(_Section):
    top_k: Annotated[int, Field(ge=1, le=100)] = Field(
        default=3,
        description="Candidates retrained: the top_k feasible ones (constrained mode) or the "
        "front's top_k by perplexity (pareto mode), of the highest rung with results.",
    )
    seeds: Annotated[int, Field(ge=2, le=100)] = Field(
        default=3, description="Fresh seeds, the same for every block (paired differences)."
    )
    budget_multiplier: Annotated[float, Field(ge=1, le=10_000)] = Field(
        default=4.0, description="The confirmation budget as a multiple of the trial budget."
    )
    baselines: list[BaselineName] = Field(
        default_factory=list,
        max_length=len(BASELINES),
        description="Baselines retrained beside them: the objective's baseline always (every "
        "candidate is compared with it), plus these when they are candidates of the job.",
    )
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = Field(
        default=0.05,
        description="Significance level; Holm's correction for the number of candidates.",
    )
    reference_windows: Annotated[int, Field(ge=2, le=64)] = Field(
        default=6,
        description="Windows of baseline steps interleaved with each run's training on the "
        "same slot (A-B-A-B), so the step-time ratio is measured under equal load.",
    )


class WorkersConfig(_Section):
    concurrency: Annotated[int, Field(ge=1, le=4096)] = 2
    cpus_per_trial: Annotated[float, Field(ge=0, le=1024)] = 1.0
    gpus_per_trial: Annotated[float, Field(ge=0, le=64)] = 0.0
    resources: dict[
        Annotated[str, Field(min_length=1, max_length=64)],
        Annotated[float, Field(ge=0, le=1_000_000)],
    ] = Field(default_factory=dict, description="Custom Ray resources per trial, e.g. TPU.")
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3


MAX_WARM_JOBS = 20


class WarmStartConfig(_Section):
    jobs: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(
        min_length=1,
        max_length=MAX_WARM_JOBS,
        description="Earlier jobs whose best blocks join this job's initial population.",
    )
    top: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=5,
        description="Blocks taken from each job: its best under its own objective (the front "
        "by perplexity in pareto mode, the feasible ones by perplexity in constrained mode), "
        "those that lie in this job's search space. Their results are reused where the trial "
        "settings, data and device are equal, and retrained otherwise.",
    )

    @field_validator("jobs")
    @classmethod
    def _distinct(cls, jobs: list[int]) -> list[int]:
        if len(set(jobs)) != len(jobs):
            raise ValueError(f"a job is named twice in {jobs}")
        return jobs


class JobConfig(_Section):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    dataset: Annotated[str, Field(min_length=1, max_length=4096)] = Field(
        description="text:PATH, tokens:PATH or builtin:stdlib; resolved when submitted."
    )
    search_space: SearchSpaceConfig = Field(default_factory=SearchSpaceConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    trial: TrialConfig = Field(default_factory=TrialConfig, validate_default=True)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    evolution: EvolutionConfig = Field(default_factory=EvolutionConfig, validate_default=True)
    hurdle: HurdleConfig = Field(default_factory=HurdleConfig)
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig)
    confirm: ConfirmConfig | None = Field(
        default=None, description="Retrain the best with fresh seeds once the search ends."
    )
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    warm_start: WarmStartConfig | None = Field(
        default=None, description="Start from the best blocks of earlier jobs."
    )

    @model_validator(mode="after")
    def _confirmed_baselines_are_candidates(self) -> JobConfig:
        """Confirmation retrains candidates of the job: a baseline must be one."""
        if self.confirm is None:
            return self
        space = self.search_space.space()
        for i, name in enumerate(self.confirm.baselines):
            if name == self.objective.baseline:
                continue
            if name not in self.evolution.initial or not space.contains(baseline(name, space)):
                raise invalid(
                    ("confirm", "baselines", i),
                    f"{name!r} is not a candidate of this job (it must be in "
                    "evolution.initial and in the search space)",
                    name,
                )
        return self

    @field_validator("evolution")
    @classmethod
    def _derive_evolution(cls, evolution: EvolutionConfig, info: ValidationInfo) -> EvolutionConfig:
        """Sizes the job leaves unset follow its trial count (`derived_population`); given
        ones are kept. Runs as the batch size's does: `limits` is validated before it."""
        limits = info.data.get("limits") or LimitsConfig()
        population = evolution.population_size
        if population is None:
            population = derived_population(limits.max_trials)
        tournament = evolution.tournament_size
        if tournament is None:
            tournament = derived_tournament(population)
        if tournament > population:  # given sizes were checked by EvolutionConfig
            raise invalid(
                "tournament_size",
                f"{tournament} exceeds population_size ({population}, derived from "
                f"limits.max_trials {limits.max_trials}: set population_size too)",
                tournament,
            )
        return evolution.model_copy(
            update={"population_size": population, "tournament_size": tournament}
        )

    @model_validator(mode="after")
    def _auto_margin_needs_noise(self) -> JobConfig:
        if self.hurdle.margin == "auto" and self.fidelity.noise_seeds < 2:
            raise invalid(
                "hurdle.margin",
                "auto sets the margin from the measured seed noise: set "
                "fidelity.noise_seeds to 2 or more",
                "auto",
            )
        return self

    @field_validator("trial")
    @classmethod
    def _batch_fits_expert_choice(cls, trial: TrialConfig, info: ValidationInfo) -> TrialConfig:
        """Expert choice needs batch_size x capacity >= experts to train as specified (below
        that a layer would route like an exported model at batch size 1: a different layer).
        The default batch size grows to what the space needs; a given one is checked."""
        space_config = info.data.get("search_space")
        needed = space_config.space().min_expert_choice_batch() if space_config else 1
        if trial.batch_size is None:
            return trial.model_copy(update={"batch_size": max(DEFAULT_BATCH_SIZE, needed)})
        if trial.batch_size < needed:
            raise invalid(
                "batch_size",
                f"{trial.batch_size} is too small for the expert-choice layers this space "
                f"can produce (batch_size x capacity_factor must reach num_experts); the "
                f"smallest batch size that works is {needed}",
                trial.batch_size,
            )
        return trial

    @model_validator(mode="after")
    def _baseline_in_space(self) -> JobConfig:
        """The objective's baseline joins the population, so mutations must apply to it."""
        space = self.search_space.space()
        problems = space.violations(baseline(self.objective.baseline, space))
        if problems:
            where = "; ".join(f"{field}: {message}" for field, message in problems)
            raise invalid(
                "objective.baseline",
                f"{self.objective.baseline!r} is not in the search space ({where}); choose "
                "another baseline or widen search_space.overrides",
                self.objective.baseline,
            )
        return self

    @field_validator("dataset")
    @classmethod
    def _known_scheme(cls, dataset: str) -> str:
        scheme, sep, rest = dataset.partition(":")
        if not sep or scheme not in ("text", "tokens", "builtin") or not rest:
            raise ValueError(f"expected text:PATH, tokens:PATH or builtin:stdlib, not {dataset!r}")
        return dataset
