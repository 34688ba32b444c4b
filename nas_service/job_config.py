"""The job configuration: one pydantic model for the runner, the API and the CLI's files.

Every number has bounds and every error names its field (e.g. `workers.concurrency`,
`search_space.overrides.d_model.0`). A minimal file is enough; the rest has defaults:

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

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from search_space import BASELINES, PRESETS, SearchSpace, baseline, get_preset

BaselineName = Literal["dense", "glam", "switch", "glam-ec"]
assert set(BaselineName.__args__) == set(BASELINES)  # type: ignore[attr-defined]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Every item of a search space, each optional: per-item errors name the item and index.
SpaceOverrides = create_model(
    "SpaceOverrides",
    __config__=ConfigDict(extra="forbid", frozen=True),
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
        self.space()  # raises with the item named (the caller's error carries `overrides.`)
        return self

    def space(self) -> SearchSpace:
        return get_preset(self.preset).override(self.overrides.model_dump(exclude_none=True))


class ObjectiveConfig(_Section):
    mode: Literal["pareto", "constrained"] = "pareto"
    baseline: BaselineName = "glam"
    max_step_time_ratio: Annotated[float, Field(gt=0, le=100)] = 1.0


DEFAULT_BATCH_SIZE = 16
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
        default_factory=lambda: [0.25, 0.5, 1.0],
        min_length=1,
        max_length=20,
        description="Fractions of the budget at which the validation loss is measured "
        "(outside the budget); returned as val_loss_at.",
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


class EvolutionConfig(_Section):
    population_size: Annotated[int, Field(ge=2, le=100_000)] = 20
    tournament_size: Annotated[int, Field(ge=1, le=100_000)] = 5
    initial: list[BaselineName] = Field(
        default_factory=lambda: list(BASELINES),
        description="Baselines seeded into the initial population (those in the space).",
    )

    @model_validator(mode="after")
    def _tournament_fits(self) -> EvolutionConfig:
        if self.tournament_size > self.population_size:
            raise ValueError(
                f"tournament_size ({self.tournament_size}) exceeds population_size "
                f"({self.population_size})"
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
                raise ValueError(
                    f"rungs.{i}.budget_multiplier: {multipliers[i]:g} must exceed the rung "
                    f"below's ({multipliers[i - 1]:g})"
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


class JobConfig(_Section):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    dataset: Annotated[str, Field(min_length=1, max_length=4096)] = Field(
        description="text:PATH, tokens:PATH or builtin:stdlib; resolved when submitted."
    )
    search_space: SearchSpaceConfig = Field(default_factory=SearchSpaceConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    trial: TrialConfig = Field(default_factory=TrialConfig, validate_default=True)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    evolution: EvolutionConfig = Field(default_factory=EvolutionConfig)
    hurdle: HurdleConfig = Field(default_factory=HurdleConfig)
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig)
    confirm: ConfirmConfig | None = Field(
        default=None, description="Retrain the best with fresh seeds once the search ends."
    )
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0

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
                raise ValueError(
                    f"confirm.baselines.{i}: {name!r} is not a candidate of this job (it must "
                    "be in evolution.initial and in the search space)"
                )
        return self

    @model_validator(mode="after")
    def _auto_margin_needs_noise(self) -> JobConfig:
        if self.hurdle.margin == "auto" and self.fidelity.noise_seeds < 2:
            raise ValueError(
                "hurdle.margin: auto sets the margin from the measured seed noise: set "
                "fidelity.noise_seeds to 2 or more"
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
            raise ValueError(
                f"trial.batch_size: {trial.batch_size} is too small for the expert-choice "
                f"layers this space can produce (batch_size x capacity_factor must reach "
                f"num_experts); the smallest batch size that works is {needed}"
            )
        return trial

    @model_validator(mode="after")
    def _baseline_in_space(self) -> JobConfig:
        """The objective's baseline joins the population, so mutations must apply to it."""
        space = self.search_space.space()
        problems = space.violations(baseline(self.objective.baseline, space))
        if problems:
            where = "; ".join(f"{field}: {message}" for field, message in problems)
            raise ValueError(
                f"objective.baseline {self.objective.baseline!r} is not in the search space "
                f"({where}); choose another baseline or widen search_space.overrides"
            )
        return self

    @field_validator("dataset")
    @classmethod
    def _known_scheme(cls, dataset: str) -> str:
        scheme, sep, rest = dataset.partition(":")
        if not sep or scheme not in ("text", "tokens", "builtin") or not rest:
            raise ValueError("expected text:PATH, tokens:PATH or builtin:stdlib")
        return dataset
