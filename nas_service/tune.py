"""Ray Tune integration: the evolution designer as a Tune `Searcher`, the proxy trainer as a
Tune function trainable.

The service itself dispatches with long-lived Ray actors (about 1 ms per trial); this module
is for Tune users who want the same search inside a Tune experiment, with Tune's loggers,
stoppers and result grid::

    searcher = EvolutionSearcher(space, EvolutionConfig(), initial=[baseline("glam", space)])
    tuner = tune.Tuner(
        tune.with_resources(proxy_trainable, {"cpu": 1}),  # or {"gpu": 1}
        param_space={"data": "builtin:stdlib", "budget_s": 30.0},
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=1), num_samples=50
        ),
    )
    results = tuner.fit()

`run_tune_search` builds exactly this. The trial budget, dataset and seed travel as constants
of `param_space` (Tune merges them into every suggested config, so they show up in each
trial's config and results) rather than through `tune.with_parameters`, which is meant for
large objects: the dataset is loaded once per trial process from its source string.

Step times are the cost objective, so they must be honest: the service pins each CPU slot's
actor to its own cores, Tune does not. On CPUs, run one trial at a time
(`max_concurrent=1`) or give each trial the whole machine.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ray import tune
from ray.tune.search import ConcurrencyLimiter, Searcher

from nas_service.designer import (
    ArchSearchSpace,
    EvolutionConfig,
    Objectives,
    RegularizedEvolution,
    SearchExhausted,
)
from search_space import ArchSpec, SearchSpace

if TYPE_CHECKING:
    from workers.data import Dataset

# The designer's objectives, both minimised: quality by evolution mode, then cost.
QUALITY_METRIC = {"pareto": "perplexity", "constrained": "val_loss"}
COST_METRIC = "step_time_ms"
# Trainer metrics that are None when a trial produced none; reported as NaN (Tune's "missing",
# skipped by `ResultGrid.get_best_result`) so every result carries the searcher's metrics.
OPTIONAL_METRICS = (
    "val_loss",
    "val_loss_inference",
    "perplexity",
    "bits_per_byte",
    "step_time_ms",
    "step_time_p90_ms",
    "reference_step_time_ms",
    "step_time_ratio",
    "tokens_per_s",
    "mfu",
)


class EvolutionSearcher(Searcher):
    """Regularized evolution over a `SearchSpace`, driven by Tune's suggest/complete calls.

    The objectives are fixed by `config.mode`: perplexity (pareto) or validation loss
    (constrained) against median step time, all minimised, exactly as the service's runner
    tells its designer. `metric`/`mode` exist for Tune's API and may only restate them; the
    searcher's `metric` is the quality metric, which Tune then requires in every result.
    Every trial is feasible here: the service's step-time constraint (a ratio to a baseline
    trained first) has no Tune counterpart.
    """

    def __init__(
        self,
        space: SearchSpace,
        config: EvolutionConfig,
        initial: Sequence[ArchSpec] = (),
        metric: str | None = None,
        mode: str | None = None,
    ) -> None:
        quality = QUALITY_METRIC[config.mode]
        if metric not in (None, quality) or mode not in (None, "min"):
            raise ValueError(
                f"the objectives are fixed ({quality!r} and {COST_METRIC!r}, minimised) for "
                f"evolution mode {config.mode!r}; got metric={metric!r}, mode={mode!r}"
            )
        super().__init__(metric=quality, mode="min")
        # A tournament winner must lie in the space to be mutated: reject strays up front.
        initial = tuple(space.check(spec) for spec in initial)
        self._designer = RegularizedEvolution(ArchSearchSpace(space), config, initial)
        self._space = space
        self._initial = initial
        self._keys: dict[str, str] = {}

    @property
    def designer(self) -> RegularizedEvolution:
        """The designer (read its `trials` and `population()`; do not ask or tell it)."""
        return self._designer

    @property
    def trial_keys(self) -> dict[str, str]:
        """Tune trial id -> designer key (the spec hash) of every suggested trial."""
        return dict(self._keys)

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        """The next proposal as a trial config, or `FINISHED` once the space is used up."""
        try:
            proposal = self._designer.ask()
        except SearchExhausted:
            return Searcher.FINISHED
        self._keys[trial_id] = proposal.key
        return {
            "spec": proposal.spec.model_dump(mode="json"),
            "key": proposal.key,
            "birth": proposal.birth,
            "parent": proposal.parent,
            "mutation": proposal.mutation,
        }

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Tell the designer the trial's objectives, or None when it yielded none."""
        usable = None if error or result is None else self.objectives(result)
        self._designer.tell(self._keys[trial_id], usable)

    def objectives(self, result: Mapping[str, Any]) -> Objectives | None:
        """(quality, step time) of a finished trial's last result; None unless the trainer's
        status is ok and both are finite numbers."""
        values = (result.get(self.metric), result.get(COST_METRIC))
        if result.get("status") != "ok" or not all(_finite(value) for value in values):
            return None
        return (float(values[0]), float(values[1]))

    def save(self, checkpoint_path: str) -> None:
        """Pickle the designer's inputs and trials (it rebuilds from them) and the trial ids."""
        state = {
            "space": self._space,
            "config": self._designer.config,
            "initial": self._initial,
            "trials": self._designer.trials,
            "keys": self._keys,
        }
        with open(checkpoint_path, "wb") as file:
            pickle.dump(state, file)

    def restore(self, checkpoint_path: str) -> None:
        """Become the searcher that `save` wrote, whatever this one was built with."""
        with open(checkpoint_path, "rb") as file:
            state = pickle.load(file)
        config: EvolutionConfig = state["config"]
        self._designer = RegularizedEvolution.from_trials(
            ArchSearchSpace(state["space"]), config, state["trials"], state["initial"]
        )
        self._space = state["space"]
        self._initial = state["initial"]
        self._keys = state["keys"]
        self._metric = QUALITY_METRIC[config.mode]


def tune_metrics(result: Mapping[str, Any]) -> dict[str, str | int | float]:
    """A trainer result (`TrialResult.to_json()`) as a flat Tune result: its scalar fields
    (lists, dicts and absent strings dropped), with NaN for every metric it lacks."""
    metrics = {
        name: value
        for name, value in result.items()
        if isinstance(value, str | int | float) and name not in OPTIONAL_METRICS
    }
    for name in OPTIONAL_METRICS:
        value = result.get(name)
        metrics[name] = float(value) if _finite(value) else math.nan
    return metrics


def proxy_trainable(config: dict[str, Any]) -> None:
    """Tune function trainable: train `config["spec"]` for `config["budget_s"]` seconds on
    the dataset `config["data"]` (seed `config.get("seed", 0)`) and report once.

    Every trainer status is a normal result (`status` says which), so a diverged or failed
    candidate does not error the Tune trial; exceptions before training (an unreadable
    dataset, an invalid spec) do, and Tune tells the searcher the trial errored. Needs its
    resources from `tune.with_resources(proxy_trainable, {"cpu": 1})` (or a GPU).
    """
    # Concurrent trials may share a GPU: don't let the first one take 75% of its memory.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    from workers.trainer import train_proxy  # JAX loads in the trial process, not the driver

    spec = ArchSpec.model_validate(config["spec"])
    result = train_proxy(
        spec, float(config["budget_s"]), _dataset(config["data"]), seed=int(config.get("seed", 0))
    )
    tune.report(tune_metrics(result.to_json()))


def run_tune_search(
    space: SearchSpace,
    evolution_config: EvolutionConfig,
    data: str,
    budget_s: float,
    num_samples: int,
    max_concurrent: int = 1,
    storage_path: str | os.PathLike[str] | None = None,
    *,
    initial: Sequence[ArchSpec] = (),
    resources: Mapping[str, float] | None = None,
) -> tune.ResultGrid:
    """Run `num_samples` proxy trials of an evolution search as a Tune experiment.

    Trials take `resources` (default one CPU) and reuse their actors, so the JAX import and
    the dataset load are paid once per process. Results go under `storage_path` (Tune's
    default, ~/ray_results, when None); `EvolutionSearcher(...).restore_from_dir(
    result_grid.experiment_path)` recovers the searcher and its designer afterwards.
    """
    searcher = EvolutionSearcher(space, evolution_config, initial)
    tuner = tune.Tuner(
        tune.with_resources(proxy_trainable, dict(resources or {"cpu": 1})),
        param_space={"data": data, "budget_s": budget_s},
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=max_concurrent),
            num_samples=num_samples,
            metric=searcher.metric,
            mode=searcher.mode,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            storage_path=None if storage_path is None else os.fspath(storage_path)
        ),
    )
    return tuner.fit()


@functools.cache
def _dataset(source: str) -> Dataset:
    """Each trial process loads a dataset once (reused actors run many trials)."""
    from workers.data import load_dataset

    return load_dataset(source)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
