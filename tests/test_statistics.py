"""Fidelity agreement, seed noise and the confirmation verdict (nas_service.statistics)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from nas_service.statistics import (
    Summary,
    _kendall_rows,
    _spearman_rows,
    confirmation_report,
    holm,
    noise_and_spread,
    paired_difference,
    rank_agreement,
    summarize,
)

TIED_LOW = [0.30, 0.10, 0.20, 0.20, 0.50, 0.40, 0.40, 0.90]
TIED_HIGH = [0.25, 0.05, 0.30, 0.10, 0.50, 0.45, 0.60, 0.60]


def assert_clean(value: Any) -> None:
    """JSON-ready and free of NaN and inf at every depth."""
    json.dumps(value, allow_nan=False)
    if isinstance(value, dict):
        for item in value.values():
            assert_clean(item)
    elif isinstance(value, list):
        for item in value:
            assert_clean(item)
    else:
        assert value is None or type(value) in (bool, int, float, str)


# --- summarize -------------------------------------------------------------------------------


def test_summarize_matches_a_t_interval():
    values = [3.1, 3.3, 3.2, 3.6]
    s = summarize(values, confidence=0.9)
    se = np.std(values, ddof=1) / 2
    low, high = stats.t.interval(0.9, 3, loc=np.mean(values), scale=se)
    assert s.n == 4 and s.mean == pytest.approx(np.mean(values)) and s.se == pytest.approx(se)
    assert (s.low, s.high) == (pytest.approx(low), pytest.approx(high))
    assert s.as_dict() == {"mean": s.mean, "se": s.se, "low": s.low, "high": s.high, "n": 4}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], Summary(None, None, None, None, 0)),
        ([2.5], Summary(2.5, None, None, None, 1)),
        ([2.0, 2.0, 2.0], Summary(2.0, 0.0, 2.0, 2.0, 3)),
        ([float("nan"), None, float("inf"), 1.5], Summary(1.5, None, None, None, 1)),
    ],
)
def test_summarize_degenerate_inputs(values, expected):
    assert summarize(values) == expected
    assert_clean(summarize(values).as_dict())


def test_summarize_rejects_a_bad_confidence():
    with pytest.raises(ValueError):
        summarize([1.0, 2.0], confidence=1.0)


# --- rank agreement --------------------------------------------------------------------------


def test_rank_agreement_matches_scipy_with_ties():
    result = rank_agreement(TIED_LOW, TIED_HIGH)
    assert result["n"] == 8
    assert result["spearman"] == stats.spearmanr(TIED_LOW, TIED_HIGH).statistic
    assert result["kendall"] == stats.kendalltau(TIED_LOW, TIED_HIGH).statistic
    assert_clean(result)


def test_vectorised_bootstrap_statistics_match_scipy_row_by_row():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, size=(50, 9)).astype(float)  # many ties, some constant rows
    y = rng.integers(0, 4, size=(50, 9)).astype(float)
    x[0] = 1.0
    spearman, kendall = _spearman_rows(x, y), _kendall_rows(x, y)
    for i in range(50):
        if np.ptp(x[i]) == 0 or np.ptp(y[i]) == 0:
            assert math.isnan(spearman[i]) and math.isnan(kendall[i])
            continue
        assert spearman[i] == pytest.approx(stats.spearmanr(x[i], y[i]).statistic, abs=1e-12)
        assert kendall[i] == pytest.approx(stats.kendalltau(x[i], y[i]).statistic, abs=1e-12)


def test_bootstrap_interval_holds_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    low = rng.normal(size=40)
    high = 0.7 * low + 0.5 * rng.normal(size=40)
    first = rank_agreement(low, high, seed=7)
    for key in ("spearman", "kendall"):
        lo, hi = first[f"{key}_interval"]
        assert lo <= first[key] <= hi and hi - lo < 0.6
    assert rank_agreement(low, high, seed=7) == first
    assert rank_agreement(low, high, seed=8)["spearman_interval"] != first["spearman_interval"]
    assert rank_agreement(low, high, n_boot=0)["spearman_interval"] is None


def test_top_k_recall_on_a_hand_made_example():
    # Lower is better. Best 3 by high: candidates 0, 1, 2; best 3 by low: 0, 2, 5.
    low = [0.1, 0.9, 0.2, 0.8, 0.7, 0.3, 0.6, 0.5]
    high = [1.0, 1.1, 1.2, 2.0, 2.1, 2.2, 2.3, 2.4]
    assert rank_agreement(low, high, top_k=3)["top_k_recall"] == pytest.approx(2 / 3)
    default = rank_agreement(low, high)  # k = 8 // 4 = 2: {0, 1} by high, {0, 2} by low
    assert (default["top_k"], default["top_k_recall"]) == (2, 0.5)
    assert rank_agreement(low, high, top_k=100)["top_k"] == 8


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ([], []),
        ([1.0], [2.0]),
        ([1.0, 2.0], [2.0, 1.0]),
        ([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]),
        ([1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]),
        ([1.0, float("nan"), 3.0, None], [1.0, 2.0, float("inf"), 4.0]),
    ],
)
def test_rank_agreement_degenerate_inputs_give_none(low, high):
    result = rank_agreement(low, high)
    assert result["spearman"] is None and result["kendall"] is None
    assert result["spearman_interval"] is None and result["kendall_interval"] is None
    assert_clean(result)


def test_rank_agreement_rejects_unequal_lengths():
    with pytest.raises(ValueError):
        rank_agreement([1.0, 2.0], [1.0])


# --- noise and spread ------------------------------------------------------------------------


def test_noise_and_spread_on_hand_computed_numbers():
    result = noise_and_spread({"a": [1.0, 3.0], "b": [4.0, 5.0, 6.0], "c": [10.0], "d": []})
    # Squared deviations: a 1 + 1 = 2 (1 dof), b 1 + 0 + 1 = 2 (2 dof): pooled 4 / 3.
    assert result["noise_floor"] == pytest.approx(math.sqrt(4 / 3))
    assert (result["noise_candidates"], result["noise_runs"]) == (2, 5)
    # Means 2, 5, 10: mean 17/3, squared deviations 121/9 + 4/9 + 169/9 = 294/9 over 2 dof.
    assert result["spread"] == pytest.approx(math.sqrt(147 / 9))
    assert result["spread_candidates"] == 3
    assert result["signal_to_noise"] == pytest.approx(math.sqrt(147 / 9) / math.sqrt(4 / 3))


@pytest.mark.parametrize(
    "values",
    [{}, {"a": []}, {"a": [1.0]}, {"a": [1.0, 1.0], "b": [2.0, 2.0]}, {"a": [float("nan")]}],
)
def test_noise_and_spread_degenerate_inputs(values):
    result = noise_and_spread(values)
    assert result["signal_to_noise"] is None
    assert_clean(result)


# --- holm and paired differences -------------------------------------------------------------


def test_holm_textbook_example():
    assert holm([0.01, 0.04, 0.03, 0.005], alpha=0.05) == [True, False, False, True]
    assert holm([0.01, 0.02, 0.03, 0.04], alpha=0.05) == [True, False, False, False]
    assert holm([0.01, 0.011, 0.012], alpha=0.05) == [True, True, True]
    assert holm([], alpha=0.05) == []
    assert holm([float("nan"), 0.001]) == [False, True]


def test_holm_is_monotone():
    rng = np.random.default_rng(1)
    for _ in range(200):
        p = rng.uniform(0, 0.1, size=6).tolist()
        rejected = holm(p)
        for i in range(6):
            for j in range(6):
                if p[i] <= p[j] and rejected[j]:
                    assert rejected[i]
        assert all(a <= b for a, b in zip(rejected, holm(p, alpha=0.1), strict=True))


def test_paired_difference_matches_scipy():
    candidate = {0: 3.00, 1: 3.10, 2: 2.95, 3: 3.05, 7: 9.0}
    baseline = {0: 3.05, 1: 3.12, 2: 3.01, 3: 3.04, 5: 1.0}
    seeds = [0, 1, 2, 3]
    c, b = [candidate[s] for s in seeds], [baseline[s] for s in seeds]
    result = paired_difference(candidate, baseline, confidence=0.9)
    two_sided = stats.ttest_rel(c, b).confidence_interval(0.9)
    assert result["n"] == 4
    assert result["mean"] == pytest.approx(np.mean(np.subtract(c, b)))
    assert result["p_value"] == stats.ttest_rel(c, b, alternative="less").pvalue
    assert (result["low"], result["high"]) == (
        pytest.approx(two_sided.low),
        pytest.approx(two_sided.high),
    )


@pytest.mark.parametrize(
    ("candidate", "baseline", "expected"),
    [
        ({}, {}, {"n": 0, "mean": None, "low": None, "high": None, "p_value": 1.0}),
        ({0: 1.0}, {1: 2.0}, {"n": 0, "mean": None, "low": None, "high": None, "p_value": 1.0}),
        ({0: 1.0}, {0: 2.0}, {"n": 1, "mean": -1.0, "low": None, "high": None, "p_value": 1.0}),
        (
            {0: 1.0, 1: 2.0},
            {0: 1.5, 1: 2.5},
            {"n": 2, "mean": -0.5, "low": -0.5, "high": -0.5, "p_value": 0.0},
        ),
        (
            {0: 2.0, 1: 3.0},
            {0: 1.5, 1: 2.5},
            {"n": 2, "mean": 0.5, "low": None, "high": None, "p_value": 1.0},
        ),
        (
            {0: 1.0, 1: 1.0},
            {0: 1.0, 1: 1.0},
            {"n": 2, "mean": 0.0, "low": None, "high": None, "p_value": 1.0},
        ),
        (
            {0: float("nan"), 1: 1.0, 2: None},
            {0: 1.0, 1: 2.0, 2: 1.0},
            {"n": 1, "mean": -1.0, "low": None, "high": None, "p_value": 1.0},
        ),
    ],
)
def test_paired_difference_edge_cases(candidate, baseline, expected):
    result = paired_difference(candidate, baseline)
    assert result == expected
    assert_clean(result)


# --- confirmation report ---------------------------------------------------------------------


def entry(cid: int, losses: dict[int, float | None], **extra: Any) -> dict[str, Any]:
    ratio = extra.pop("ratio", 0.9)
    runs = [{"seed": s, "val_loss": v, "step_time_ratio": ratio} for s, v in losses.items()]
    return {
        "candidate_id": cid,
        "search_rank": extra.pop("search_rank", None),
        "is_baseline": extra.pop("is_baseline", False),
        "name": extra.pop("name", None),
        "runs": runs,
    }


def test_confirmation_report_declares_a_clear_winner():
    base = {0: 3.00, 1: 3.05, 2: 2.98}
    entries = [
        entry(1, base, is_baseline=True, name="glam", ratio=1.0),
        entry(10, {s: v - 0.10 + 0.002 * s for s, v in base.items()}, search_rank=0, name="x"),
        entry(11, {s: v + 0.01 * (s - 1) + 0.005 for s, v in base.items()}, search_rank=1),
        entry(12, {s: v + 0.05 for s, v in base.items()} | {3: None}, search_rank=2),
        entry(13, {0: 4.0, 1: None}, search_rank=3),
    ]
    report = confirmation_report(entries, baseline_id=1, mode="constrained")
    assert_clean(report)
    assert report["winner"] == 10 and report["compared"] == 4
    assert report["interval_confidence"] == pytest.approx(1 - 2 * 0.05 / 4)
    assert report["verdict"].startswith("candidate 10 (x) beats the baseline: val_loss -0.098 [")
    rows = {row["candidate_id"]: row for row in report["candidates"]}
    assert [row["candidate_id"] for row in report["candidates"]] == [10, 1, 11, 12, 13]
    assert rows[1]["difference"] is None and not rows[1]["beats_baseline"]
    assert rows[12]["failed_runs"] == 1 and rows[12]["seeds"] == 3
    assert rows[13]["seeds"] == 1 and rows[13]["val_loss"]["se"] is None
    assert rows[10]["perplexity"]["mean"] == pytest.approx(np.mean(np.exp([2.9, 2.952, 2.884])))
    assert rows[10]["step_time_ratio"]["mean"] == pytest.approx(0.9)
    assert report["rank_correlation"]["n"] == 4
    assert report["rank_correlation"]["spearman"] == pytest.approx(1.0)


def test_confirmation_report_constrained_mode_needs_a_feasible_winner():
    base = {0: 3.00, 1: 3.05, 2: 2.98, 3: 3.02}
    fast = entry(20, {s: v - 0.10 + 0.001 * s for s, v in base.items()}, ratio=1.3)
    entries = [entry(1, base, is_baseline=True, ratio=1.0), fast]
    constrained = confirmation_report(entries, 1, mode="constrained")
    assert constrained["winner"] is None and constrained["candidates"][0]["significant"]
    assert constrained["candidates"][0]["feasible"] is False
    assert "over the step-time limit" in constrained["verdict"]
    loose = confirmation_report(entries, 1, mode="constrained", max_step_time_ratio=1.5)
    assert loose["winner"] == 20
    assert confirmation_report(entries, 1, mode="pareto")["winner"] == 20
    unknown = [entries[0], entry(20, {s: v - 0.1 for s, v in base.items()}, ratio=None)]
    assert confirmation_report(unknown, 1, mode="constrained")["candidates"][0]["feasible"] is None


def test_other_baselines_are_reported_but_neither_counted_nor_winners():
    base = {0: 3.00, 1: 3.05, 2: 2.98, 3: 3.02}
    better = {s: v - 0.2 + 0.001 * s for s, v in base.items()}
    entries = [entry(1, base, is_baseline=True), entry(2, better, is_baseline=True)]
    report = confirmation_report(entries, 1, mode="pareto")
    assert report["compared"] == 0 and report["winner"] is None
    other = next(row for row in report["candidates"] if row["candidate_id"] == 2)
    assert other["difference"]["mean"] == pytest.approx(-0.1985) and not other["significant"]
    assert report["verdict"].startswith("no block was shown to beat the baseline (0 compared")
    assert_clean(report)


@pytest.mark.parametrize(
    "entries",
    [
        [entry(1, {}, is_baseline=True)],
        [entry(1, {0: None}, is_baseline=True), entry(2, {0: 1.0, 1: 1.0}, search_rank=0)],
        [entry(1, {0: 3.0}, is_baseline=True), entry(2, {0: 2.0}, search_rank=0)],
        [entry(1, {0: 3.0, 1: 3.0}, is_baseline=True), entry(2, {0: 3.0, 1: 3.0})],
        [entry(1, {0: 3.0, 1: 3.0}, is_baseline=True), entry(2, {0: 1e6, 1: 1e6}, ratio=None)],
    ],
)
def test_confirmation_report_degenerate_inputs_stay_clean(entries):
    report = confirmation_report(entries, 1, mode="constrained")
    assert report["winner"] is None
    assert_clean(report)


def test_confirmation_report_rejects_bad_arguments():
    entries = [entry(1, {0: 3.0}, is_baseline=True)]
    with pytest.raises(ValueError):
        confirmation_report(entries, 1, mode="fastest")
    with pytest.raises(ValueError):
        confirmation_report(entries, 99, mode="pareto")


# --- a fake trainer: does the verdict find true effects and only those? ----------------------


def simulate(rng: np.random.Generator, differences: list[float], seeds: int) -> dict[str, Any]:
    """Confirm blocks whose true loss is the baseline's plus `differences`, under seed noise.

    Each seed adds an effect shared by every block trained with it (data order) and each run
    independent noise; both have standard deviation 0.02, the measured noise of the design.
    """
    true_losses = [3.0] + [3.0 + d for d in differences]
    shared = rng.normal(0.0, 0.02, size=seeds)
    entries = []
    for cid, loss in enumerate(true_losses):
        observed = loss + shared + rng.normal(0.0, 0.02, size=seeds)
        entries.append(
            {
                "candidate_id": cid,
                "search_rank": None if cid == 0 else cid - 1,
                "is_baseline": cid == 0,
                "name": None,
                "runs": [
                    {"seed": s, "val_loss": float(v), "step_time_ratio": 0.95}
                    for s, v in enumerate(observed)
                ],
            }
        )
    return confirmation_report(entries, 0, mode="constrained")


def test_fake_trainer_finds_the_best_block():
    rng = np.random.default_rng(20240611)
    winners = [simulate(rng, [-0.10, -0.05, 0.0, 0.02], seeds=5)["winner"] for _ in range(100)]
    assert winners.count(1) >= 95


def test_fake_trainer_rarely_declares_a_false_winner():
    rng = np.random.default_rng(20240612)
    false_wins = sum(
        simulate(rng, [0.0, 0.0, 0.0, 0.0], seeds=5)["winner"] is not None for _ in range(400)
    )
    assert false_wins <= 0.08 * 400
