"""Statistics that say how far a search's numbers can be trusted.

Two questions of a search job are answered here. First: does a short (low-fidelity) trial
rank blocks like a longer one, and how large is seed noise next to the spread between blocks
(`rank_agreement`, `noise_and_spread`)? Second: after the top candidates and the baseline are
retrained with fresh seeds ("confirmation"), is any candidate shown to beat the baseline
beyond that noise (`paired_difference`, `holm`, `confirmation_report`)? Losses are lower is
better everywhere.

Every returned figure is a plain Python float, int, bool, list, dict or None, ready for JSON:
a figure that cannot be computed (too few points, zero variance) is None, never NaN or inf.
Non-finite inputs (None, NaN, inf) are treated as missing and left out. Pure numpy and
scipy.stats: no database, no JAX.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

MODES = ("constrained", "pareto")
_BOOT_CHUNK_CELLS = 2_000_000  # resamples x pairs held at once by the Kendall bootstrap


def _finite(value: Any) -> float | None:
    """A plain float, or None for anything missing or non-finite."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _finite_array(values: Sequence[Any]) -> np.ndarray:
    """The finite values as a float array; missing and non-finite ones are dropped."""
    kept = [_finite(v) for v in values]
    return np.asarray([v for v in kept if v is not None], dtype=float)


def _check_level(name: str, level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {level!r}")


def _t_half_width(se: float, n: int, confidence: float) -> float:
    """Half width of a two-sided Student t interval with n - 1 degrees of freedom."""
    return float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * se


@dataclass(frozen=True)
class Summary:
    """Mean of repeated measurements with its standard error and a t interval."""

    mean: float | None
    se: float | None
    low: float | None
    high: float | None
    n: int

    def as_dict(self) -> dict[str, float | int | None]:
        return {"mean": self.mean, "se": self.se, "low": self.low, "high": self.high, "n": self.n}


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, standard error (ddof=1) and two-sided t interval of the finite values.

    One value has a mean but no spread, so se and the interval are None below two values.
    Equal values give se 0.0 and the interval [mean, mean].
    """
    _check_level("confidence", confidence)
    data = _finite_array(values)
    n = int(data.size)
    if n == 0:
        return Summary(None, None, None, None, 0)
    mean = _finite(np.mean(data))
    if n < 2 or mean is None:
        return Summary(mean, None, None, None, n)
    se = _finite(np.std(data, ddof=1) / math.sqrt(n))
    if se is None:
        return Summary(mean, None, None, None, n)
    half = _t_half_width(se, n, confidence)
    return Summary(mean, se, _finite(mean - half), _finite(mean + half), n)


# --- rank agreement between fidelities -------------------------------------------------------


def _paired_finite(low: Sequence[float], high: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The pairs where both fidelities have a finite value (a failed trial has no rank)."""
    if len(low) != len(high):
        raise ValueError(f"low and high differ in length: {len(low)} != {len(high)}")
    pairs = [(_finite(a), _finite(b)) for a, b in zip(low, high, strict=True)]
    kept = [(a, b) for a, b in pairs if a is not None and b is not None]
    x = np.asarray([a for a, _ in kept], dtype=float)
    y = np.asarray([b for _, b in kept], dtype=float)
    return x, y


def _varies(values: np.ndarray) -> bool:
    return values.size > 0 and bool(np.ptp(values) > 0)


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho of each row pair (Pearson of average ranks, as scipy); NaN if constant."""
    rx = stats.rankdata(x, axis=1)
    ry = stats.rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denominator = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip((rx * ry).sum(axis=1) / denominator, -1.0, 1.0)


def _kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall tau-b of each row pair, vectorised over rows; NaN where a row is constant.

    tau-b = (concordant - discordant) / sqrt((pairs untied in x) * (pairs untied in y)), the
    statistic scipy.stats.kendalltau computes by default.
    """
    first, second = np.triu_indices(x.shape[1], k=1)
    out = np.empty(x.shape[0])
    chunk = max(1, _BOOT_CHUNK_CELLS // max(1, first.size))
    for start in range(0, x.shape[0], chunk):
        rows = slice(start, start + chunk)
        dx = np.sign(x[rows][:, first] - x[rows][:, second])
        dy = np.sign(y[rows][:, first] - y[rows][:, second])
        untied = (dx != 0).sum(axis=1) * (dy != 0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[rows] = (dx * dy).sum(axis=1) / np.sqrt(untied.astype(float))
    return np.clip(out, -1.0, 1.0)


def _percentile_interval(samples: np.ndarray, confidence: float) -> list[float] | None:
    """Percentile bootstrap interval of the defined (finite) resample statistics."""
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return [float(low), float(high)]


def _top_k_recall(x: np.ndarray, y: np.ndarray, k: int) -> float | None:
    """Share of the k best by the high fidelity that the low fidelity also puts in its k best.

    Ties are broken by input order (a stable sort), so the figure is deterministic.
    """
    if k == 0:
        return None
    best_low = set(np.argsort(x, kind="stable")[:k].tolist())
    best_high = set(np.argsort(y, kind="stable")[:k].tolist())
    return len(best_low & best_high) / k


def rank_agreement(
    low: Sequence[float],
    high: Sequence[float],
    *,
    top_k: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """How well a short trial ranks candidates like a longer one (low[i], high[i]: one candidate).

    Spearman and Kendall (tau-b) are scipy's. Their intervals are percentile bootstraps over
    candidates (pairs resampled with numpy's default_rng(seed); resamples where a correlation
    is undefined are skipped). Correlations are None below 3 candidates or when either side is
    constant. top_k defaults to max(1, n // 4) and is capped at n. Pairs with a missing or
    non-finite value on either side are left out.
    """
    _check_level("confidence", confidence)
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    x, y = _paired_finite(low, high)
    n = int(x.size)
    k = min(n, max(1, n // 4) if top_k is None else top_k)
    result: dict[str, Any] = {
        "n": n,
        "spearman": None,
        "spearman_interval": None,
        "kendall": None,
        "kendall_interval": None,
        "top_k": k,
        "top_k_recall": _top_k_recall(x, y, k),
    }
    if n < 3 or not _varies(x) or not _varies(y):
        return result
    result["spearman"] = _finite(stats.spearmanr(x, y).statistic)
    result["kendall"] = _finite(stats.kendalltau(x, y).statistic)
    if n_boot > 0:
        index = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
        bx, by = x[index], y[index]
        result["spearman_interval"] = _percentile_interval(_spearman_rows(bx, by), confidence)
        result["kendall_interval"] = _percentile_interval(_kendall_rows(bx, by), confidence)
    return result


# --- seed noise against the spread between candidates ---------------------------------------


def noise_and_spread(values_by_candidate: Mapping[Hashable, Sequence[float]]) -> dict[str, Any]:
    """Seed noise (pooled within-candidate std) next to the spread of candidate means.

    A signal-to-noise ratio near 1 or below means a single-seed ranking is mostly noise. The
    noise floor pools variances weighted by their degrees of freedom over candidates with at
    least two values; the spread is the std (ddof=1) of the means of all candidates with a value.
    """
    samples = [_finite_array(v) for v in values_by_candidate.values()]
    repeated = [s for s in samples if s.size >= 2]
    dof = sum(s.size - 1 for s in repeated)
    noise = None
    if dof > 0:
        pooled = sum(float(np.sum((s - s.mean()) ** 2)) for s in repeated) / dof
        noise = _finite(math.sqrt(pooled))
    means = [float(s.mean()) for s in samples if s.size >= 1]
    spread = _finite(np.std(means, ddof=1)) if len(means) >= 2 else None
    ratio = None
    if spread is not None and noise is not None and noise > 0:
        ratio = _finite(spread / noise)
    return {
        "noise_floor": noise,
        "noise_candidates": len(repeated),
        "noise_runs": int(sum(s.size for s in repeated)),
        "spread": spread,
        "spread_candidates": len(means),
        "signal_to_noise": ratio,
    }


# --- confirmation: candidates against the baseline ------------------------------------------


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected, in input order.

    Controls the family-wise error rate at alpha for any dependence between the tests (the
    candidates share the baseline's runs). A missing or non-finite p-value is never rejected.
    """
    _check_level("alpha", alpha)
    p = [1.0 if _finite(v) is None else float(v) for v in p_values]
    m = len(p)
    rejected = [False] * m
    for step, i in enumerate(sorted(range(m), key=p.__getitem__)):
        if p[i] > alpha / (m - step):
            break
        rejected[i] = True
    return rejected


def _degenerate_difference(diffs: np.ndarray) -> dict[str, Any]:
    """Fewer than two pairs or equal differences: no t test is defined.

    Equal, strictly negative differences over at least two seeds are taken as a certain
    improvement (p 0.0, interval [mean, mean], the t test's limit as the variance vanishes);
    anything else, a single seed included, is no evidence (p 1.0, no interval).
    """
    n = int(diffs.size)
    mean = _finite(diffs.mean()) if n else None
    if n >= 2 and mean is not None and bool(np.all(diffs < 0)):
        return {"n": n, "mean": mean, "low": mean, "high": mean, "p_value": 0.0}
    return {"n": n, "mean": mean, "low": None, "high": None, "p_value": 1.0}


def paired_difference(
    candidate: Mapping[int, float], baseline: Mapping[int, float], confidence: float = 0.95
) -> dict[str, Any]:
    """Candidate minus baseline, paired by seed: mean, two-sided t interval, one-sided p.

    Pairing removes the part of seed noise that a seed shares across blocks (data order,
    initialisation luck). p_value is scipy's ttest_rel(candidate, baseline, alternative="less"):
    small when the candidate is lower. Only seeds with a finite value on both sides count.
    Degenerate cases (n < 2, zero variance of the differences): see `_degenerate_difference`.
    """
    _check_level("confidence", confidence)
    seeds = sorted(s for s in candidate if s in baseline)
    pairs = [(_finite(candidate[s]), _finite(baseline[s])) for s in seeds]
    kept = [(c, b) for c, b in pairs if c is not None and b is not None]
    cand = np.asarray([c for c, _ in kept], dtype=float)
    base = np.asarray([b for _, b in kept], dtype=float)
    diffs = cand - base
    n = int(diffs.size)
    if n < 2 or not _varies(diffs):
        return _degenerate_difference(diffs)
    mean = _finite(diffs.mean())
    se = _finite(np.std(diffs, ddof=1) / math.sqrt(n))
    p_value = _finite(stats.ttest_rel(cand, base, alternative="less").pvalue)
    if mean is None or not se or p_value is None:
        return _degenerate_difference(diffs)
    half = _t_half_width(se, n, confidence)
    return {
        "n": n,
        "mean": mean,
        "low": _finite(mean - half),
        "high": _finite(mean + half),
        "p_value": p_value,
    }


def _per_seed(runs: Sequence[Mapping[str, Any]], key: str) -> dict[int, float]:
    """Mean of `key` per seed over the runs with a finite val_loss (repeats of a seed averaged)."""
    collected: dict[int, list[float]] = {}
    for run in runs:
        value = _finite(run.get(key))
        if _finite(run.get("val_loss")) is not None and value is not None:
            collected.setdefault(int(run["seed"]), []).append(value)
    return {seed: float(np.mean(values)) for seed, values in collected.items()}


def _failed_runs(runs: Sequence[Mapping[str, Any]]) -> int:
    return sum(1 for run in runs if _finite(run.get("val_loss")) is None)


def _perplexities(losses: Mapping[int, float]) -> list[float]:
    """exp(loss) per seed; a loss too large for a float's exp is left out."""
    with np.errstate(over="ignore"):
        return [float(v) for v in np.exp(np.asarray(list(losses.values()), dtype=float))]


def _feasible(mode: str, step_time: Summary, max_ratio: float) -> bool | None:
    if mode == "pareto":
        return True
    return None if step_time.mean is None else step_time.mean <= max_ratio


def _describe(entry: Mapping[str, Any], losses: dict[int, float], mode: str, limit: float) -> dict:
    """One entry's row of the report, before the test against the baseline."""
    runs = entry.get("runs") or []
    step_time = summarize(list(_per_seed(runs, "step_time_ratio").values()))
    return {
        "candidate_id": int(entry["candidate_id"]),
        "name": entry.get("name"),
        "is_baseline": bool(entry.get("is_baseline", False)),
        "search_rank": None if entry.get("search_rank") is None else int(entry["search_rank"]),
        "seeds": len(losses),
        "failed_runs": _failed_runs(runs),
        "val_loss": summarize(list(losses.values())).as_dict(),
        "perplexity": summarize(_perplexities(losses)).as_dict(),
        "step_time_ratio": step_time.as_dict(),
        "difference": None,
        "significant": False,
        "feasible": _feasible(mode, step_time, limit),
        "beats_baseline": False,
    }


def _seed_phrase(rows: Sequence[Mapping[str, Any]]) -> str:
    counts = sorted({row["seeds"] for row in rows})
    if not counts:
        return "no seeds"
    if len(counts) == 1:
        return f"{counts[0]} seed{'s' if counts[0] != 1 else ''} each"
    return f"{counts[0]}-{counts[-1]} seeds each"


def _verdict(rows: list[dict], compared: list[dict], winner: dict | None, alpha: float) -> str:
    """One sentence a person can act on."""
    m = len(compared)
    if winner is not None:
        d = winner["difference"]
        name = f" ({winner['name']})" if winner["name"] else ""
        return (
            f"candidate {winner['candidate_id']}{name} beats the baseline: val_loss "
            f"{d['mean']:+.3f} [{_fmt(d['low'])}, {_fmt(d['high'])}] over {d['n']} seeds "
            f"(Holm-corrected, {m} compared)"
        )
    infeasible = sum(1 for row in compared if row["significant"] and row["feasible"] is not True)
    extra = f"; {infeasible} lower but over the step-time limit or unmeasured" if infeasible else ""
    return (
        f"no block was shown to beat the baseline ({m} compared, {_seed_phrase(rows)}, "
        f"Holm-corrected at alpha {alpha:g}{extra})"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _sort_key(row: Mapping[str, Any]) -> tuple[bool, float]:
    mean = row["val_loss"]["mean"]
    return (mean is None, 0.0 if mean is None else mean)


def confirmation_report(
    entries: Sequence[Mapping[str, Any]],
    baseline_id: int,
    *,
    mode: str,
    max_step_time_ratio: float = 1.0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Is any retrained candidate shown to beat the baseline beyond seed noise?

    Each non-baseline entry is compared with the baseline entry `baseline_id`, paired by seed,
    by a one-sided paired t test; Holm's procedure over the m compared entries keeps the chance
    of any false win at alpha. Intervals are two-sided at 1 - 2 alpha / m (each end a
    one-sided Bonferroni bound at alpha / m, the test's own level), so they hold
    simultaneously; a winner's interval must also lie below zero, so the report never
    declares a win its printed interval does not show. A winner must also be feasible: in
    "constrained" mode its mean step-time ratio is at most max_step_time_ratio; in "pareto"
    mode every block is feasible.
    Other baselines (is_baseline True) are reported with their difference but never tested.
    Raises ValueError for an unknown mode or a baseline_id with no entry.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    _check_level("alpha", alpha)
    by_id = {int(e["candidate_id"]): e for e in entries}
    if int(baseline_id) not in by_id:
        raise ValueError(f"baseline {baseline_id} has no entry in the confirmation")
    losses = {cid: _per_seed(e.get("runs") or [], "val_loss") for cid, e in by_id.items()}
    rows = [_describe(e, losses[cid], mode, max_step_time_ratio) for cid, e in by_id.items()]
    base = losses[int(baseline_id)]
    others = [row for row in rows if row["candidate_id"] != int(baseline_id)]
    compared = [row for row in others if not row["is_baseline"]]
    m = len(compared)
    level = 1.0 - 2 * alpha / max(1, m)
    for row in others:
        row["difference"] = paired_difference(losses[row["candidate_id"]], base, level)
    rejected = holm([row["difference"]["p_value"] for row in compared], alpha)
    for row, significant in zip(compared, rejected, strict=True):
        row["significant"] = significant
        high = row["difference"]["high"]
        shown = (high is not None and high < 0) or row["difference"]["p_value"] == 0.0
        row["beats_baseline"] = significant and shown and row["feasible"] is True
    rows.sort(key=_sort_key)
    winners = [row for row in rows if row["beats_baseline"]]
    winner = winners[0] if winners else None
    ranked = [
        r for r in compared if r["search_rank"] is not None and r["val_loss"]["mean"] is not None
    ]
    return {
        "alpha": alpha,
        "correction": "holm",
        "interval_confidence": level,
        "compared": m,
        "baseline_id": int(baseline_id),
        "candidates": rows,
        "rank_correlation": rank_agreement(
            [r["search_rank"] for r in ranked], [r["val_loss"]["mean"] for r in ranked]
        ),
        "winner": None if winner is None else winner["candidate_id"],
        "verdict": _verdict(rows, compared, winner, alpha),
    }
