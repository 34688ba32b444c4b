"""The Ray Tune integration: the searcher on its own, then a real Tune experiment."""

import math
from dataclasses import fields

import pytest
from spaces import SMALL_SPACE

from nas_service.designer import EvolutionConfig
from nas_service.tune import (
    OPTIONAL_METRICS,
    EvolutionSearcher,
    run_tune_search,
    tune_metrics,
)
from search_space import PRESETS, ArchSpec, SpaceViolation, baseline, spec_hash
from workers.trainer import TrialResult

SMALL = PRESETS["proxy-cpu"].override(SMALL_SPACE)
# Exactly two specs: one FFN layer with either activation.
TWO_SPECS = PRESETS["proxy-cpu"].override(
    {
        "d_model": [96],
        "layer_kinds": ["ffn"],
        "min_layers": 1,
        "max_layers": 1,
        "ffn_hidden": [192],
        "activation": ["relu", "gelu"],
    }
)
EVOLUTION = EvolutionConfig(population_size=2, tournament_size=1, seed=0)


def ok(perplexity: float, step_time_ms: float) -> dict:
    result = TrialResult(
        status="ok",
        val_loss=math.log(perplexity),
        perplexity=perplexity,
        step_time_ms=step_time_ms,
        steps=10,
        curve=[(0.5, 3.0)],
    )
    return tune_metrics(result.to_json())


def test_tune_metrics_are_flat_scalars_with_nan_for_what_is_missing():
    optional = {f.name for f in fields(TrialResult) if f.default is None}
    strings = {"reason", "traceback", "precision"}
    assert set(OPTIONAL_METRICS) == optional - strings  # the optional floats
    metrics = ok(4.0, 12.5)
    assert metrics["status"] == "ok" and metrics["perplexity"] == 4.0 and metrics["steps"] == 10
    assert math.isnan(metrics["mfu"]) and "curve" not in metrics and "reason" not in metrics
    assert all(isinstance(value, str | int | float) for value in metrics.values())
    failed = tune_metrics(TrialResult(status="failed", reason="boom").to_json())
    assert failed["reason"] == "boom" and math.isnan(failed["perplexity"])
    assert math.isnan(failed["step_time_ms"]) and "traceback" not in failed
    precise = tune_metrics(TrialResult(status="ok", precision="bfloat16").to_json())
    assert precise["precision"] == "bfloat16"  # a string passes through as it is


def test_objectives_are_fixed_by_the_evolution_mode():
    assert EvolutionSearcher(SMALL, EVOLUTION).metric == "perplexity"
    constrained = EvolutionConfig(population_size=2, tournament_size=1, mode="constrained")
    searcher = EvolutionSearcher(SMALL, constrained, metric="val_loss", mode="min")
    assert (searcher.metric, searcher.mode) == ("val_loss", "min")
    assert searcher.objectives(ok(math.e, 3.0)) == pytest.approx((1.0, 3.0))
    with pytest.raises(ValueError, match="objectives are fixed"):
        EvolutionSearcher(SMALL, EVOLUTION, metric="val_loss")
    with pytest.raises(ValueError, match="objectives are fixed"):
        EvolutionSearcher(SMALL, EVOLUTION, mode="max")
    with pytest.raises(SpaceViolation):
        EvolutionSearcher(SMALL, EVOLUTION, initial=[baseline("glam")])  # proxy-cpu's widths


def test_searcher_suggests_initial_then_children_and_tells_the_designer(tmp_path):
    dense = baseline("dense", SMALL)
    searcher = EvolutionSearcher(SMALL, EVOLUTION, initial=[dense])
    first, second = searcher.suggest("t0"), searcher.suggest("t1")
    assert ArchSpec.model_validate(first["spec"]) == dense and first["mutation"] == "initial"
    assert first["key"] == spec_hash(dense) and first["birth"] == 0 and first["parent"] is None
    assert second["mutation"] == "random sample" and second["birth"] == 1
    searcher.on_trial_complete("t0", ok(5.0, 10.0))
    searcher.on_trial_complete("t1", tune_metrics(TrialResult(status="diverged").to_json()))
    child = searcher.suggest("t2")  # population full, one member finished: a mutation of t0
    assert child["parent"] == first["key"] and child["birth"] == 2
    assert child["mutation"] not in {"initial", "random sample"}
    assert spec_hash(ArchSpec.model_validate(child["spec"])) == child["key"]
    searcher.on_trial_complete("t2", None, error=True)
    searcher.suggest("t3")  # pending: must survive the round trip
    trials = searcher.designer.trials
    assert [t.objectives for t in trials] == [(5.0, 10.0), None, None, None]
    assert searcher.trial_keys == {f"t{i}": t.key for i, t in enumerate(trials)}

    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))
    restored = EvolutionSearcher(TWO_SPECS, EvolutionConfig(population_size=1, tournament_size=1))
    restored.restore(str(path))
    assert restored.designer.trials == trials and restored.trial_keys == searcher.trial_keys
    restored.on_trial_complete("t3", ok(4.0, 20.0))
    searcher.on_trial_complete("t3", ok(4.0, 20.0))
    assert restored.suggest("t4") == searcher.suggest("t4")  # the same designer, replayed


def test_searcher_finishes_when_the_space_is_used_up():
    searcher = EvolutionSearcher(TWO_SPECS, EVOLUTION)
    keys = {searcher.suggest(trial_id)["key"] for trial_id in ("a", "b")}
    assert len(keys) == 2
    searcher.on_trial_complete("a", ok(5.0, 1.0))
    searcher.on_trial_complete("b", ok(6.0, 1.0))
    assert searcher.suggest("c") == EvolutionSearcher.FINISHED


@pytest.mark.slow
def test_a_tune_experiment_runs_the_search(ray_local, shakespeare, tmp_path):
    grid = run_tune_search(
        SMALL,
        EVOLUTION,
        data=shakespeare,
        budget_s=1.0,
        num_samples=4,
        max_concurrent=2,
        storage_path=tmp_path / "tune",
    )
    assert len(grid) == 4 and not grid.errors
    for result in grid:
        assert result.metrics["status"] == "ok" and result.metrics["steps"] > 0
        assert result.metrics["perplexity"] > 1 and result.metrics["step_time_ms"] > 0
        assert result.config["data"] == shakespeare and result.config["budget_s"] == 1.0
    best = grid.get_best_result()  # by the searcher's metric, which run_tune_search passes on
    assert best.metrics["perplexity"] == min(result.metrics["perplexity"] for result in grid)

    searcher = EvolutionSearcher(SMALL, EVOLUTION)
    searcher.restore_from_dir(grid.experiment_path)  # Tune saved it at the end of the run
    trials = searcher.designer.trials
    by_key = {result.config["key"]: result.metrics for result in grid}
    assert sorted(t.key for t in trials) == sorted(by_key)
    for trial in trials:
        metrics = by_key[trial.key]
        assert trial.objectives == (metrics["perplexity"], metrics["step_time_ms"])
    children = [t for t in trials if t.parent is not None]
    assert children and all(t.birth >= EVOLUTION.population_size for t in children)
