"""The fidelity ladder and confirmation, as pure decisions over a job's results.

Rung 0 is the search: every candidate's own trial, one seed. A rung above it trains the
candidates promoted from the rung below for a longer budget, with one or more seeds. The
runner asks `promotions` after every recorded result (and once more when a rung can get no
more results) and queues what it returns; everything here is recomputed from stored rows, so
a restarted runner decides the same (a run's key is unique, so deciding twice queues once).

Promotion is asynchronous, in the manner of ASHA (Li et al., 2020): a candidate is promoted
as soon as it is within the top share of the results its rung has *so far*, without waiting
for the rung to fill. A share given as a count `c` of a rung expected to hold `N` results is
the fraction c / N while the rung fills, and exactly `c` once it is complete. A further share
is promoted at random, whatever its rank (a deterministic draw per candidate and rung, so a
restart draws the same), so that the measured rank correlation between rungs is not only
over the candidates the low rung already liked.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nas_service.job_config import JobConfig
from nas_service.pareto import nondominated_ranks


@dataclass(frozen=True)
class Score:
    """A candidate's metrics at one rung: means over its completed seeds."""

    candidate_id: int
    val_loss: float
    perplexity: float
    step_time_ratio: float
    feasible: bool
    is_baseline: bool = False


FINISHED = ("completed", "failed", "pruned", "diverged", "cancelled")


def scores_from_runs(
    runs: Iterable[Mapping[str, Any]], config: JobConfig, baseline_id: int | None
) -> list[Score]:
    """Candidates' scores at one rung from their runs there: a candidate counts once all its
    runs have finished and at least one completed with metrics; its figures are the means
    over those. Feasibility (constrained mode) is the mean step-time ratio within the limit."""
    by_candidate: dict[int, list[Mapping[str, Any]]] = {}
    for run in runs:
        by_candidate.setdefault(run["candidate_id"], []).append(run)
    limit = config.objective.max_step_time_ratio
    constrained = config.objective.mode == "constrained"
    scores = []
    for candidate_id, group in by_candidate.items():
        if any(run["status"] not in FINISHED for run in group):
            continue
        done = [
            r
            for r in group
            if r["status"] == "completed"
            and r["val_loss"] is not None
            and r["step_time_ratio"] is not None
        ]
        if not done:
            continue
        loss = sum(r["val_loss"] for r in done) / len(done)
        ratio = sum(r["step_time_ratio"] for r in done) / len(done)
        perplexity = sum(r["perplexity"] or math.exp(r["val_loss"]) for r in done) / len(done)
        is_baseline = candidate_id == baseline_id
        feasible = not constrained or (limit >= 1.0 if is_baseline else ratio <= limit)
        scores.append(Score(candidate_id, loss, perplexity, ratio, feasible, is_baseline))
    return scores


def ranking(scores: Sequence[Score], mode: str) -> list[Score]:
    """Best first by the job's objective ordering, feasible ones first: constrained mode by
    validation loss; pareto mode by non-dominated rank of (perplexity, step-time ratio),
    then perplexity."""
    feasible = [s for s in scores if s.feasible]
    infeasible = [s for s in scores if not s.feasible]

    def order(group: list[Score]) -> list[Score]:
        if mode == "constrained":
            return sorted(group, key=lambda s: (s.val_loss, s.candidate_id))
        ranks = nondominated_ranks([(s.perplexity, s.step_time_ratio) for s in group])
        keyed = sorted(zip(ranks, group, strict=True), key=lambda p: (p[0], p[1].perplexity))
        return [s for _, s in keyed]

    return order(feasible) + order(infeasible)


def front(scores: Sequence[Score]) -> list[Score]:
    """The feasible candidates on the Pareto front of (perplexity, step-time ratio)."""
    feasible = [s for s in scores if s.feasible]
    ranks = nondominated_ranks([(s.perplexity, s.step_time_ratio) for s in feasible])
    return sorted(
        (s for s, r in zip(feasible, ranks, strict=True) if r == 0),
        key=lambda s: s.step_time_ratio,
    )


def expected_sizes(config: JobConfig) -> list[int]:
    """How many candidates each rung is expected to hold when the search is complete."""
    sizes = [max(1, config.limits.max_trials - 1)]  # rung 0, the baseline apart
    for rung in config.fidelity.rungs:
        below = sizes[-1]
        sizes.append(int(rung.promote) if rung.promote >= 1 else math.ceil(rung.promote * below))
    return sizes


def allowance(promote: float, results: int, expected: int, final: bool) -> int:
    """How many of a rung's `results` so far may be promoted by rank."""
    if results == 0:
        return 0
    if promote < 1:
        share = math.floor(promote * results)
        return max(1, share) if final else share
    if final:
        return min(int(promote), results)
    return min(int(promote), math.floor(promote * results / max(expected, results)))


def random_draw(seed: int, candidate_id: int, rung: int) -> float:
    """A uniform draw in [0, 1) fixed by (job seed, candidate, rung)."""
    digest = hashlib.sha256(f"{seed}:{candidate_id}:{rung}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Promotion:
    candidate_id: int
    rung: int  # the rung it enters
    origin: str  # rank, random or baseline


def promotions(
    config: JobConfig,
    rung: int,
    scores: Sequence[Score],
    above: Mapping[int, str],
    final: bool,
) -> list[Promotion]:
    """Who enters rung `rung + 1` now, from the completed results of rung `rung`.

    `above`: the candidates already at rung + 1, with their origin. `final`: rung `rung`
    will get no more results (the search ended and nothing of it is left to run).
    """
    rungs = config.fidelity.rungs
    if rung >= len(rungs):
        return []
    spec = rungs[rung]
    entering = rung + 1
    out: list[Promotion] = []
    ranked = ranking([s for s in scores if not s.is_baseline], config.objective.mode)
    expected = expected_sizes(config)[rung]
    allowed = allowance(spec.promote, len(ranked), expected, final)
    by_rank = sum(1 for origin in above.values() if origin == "rank")
    for score in ranked[:allowed]:
        if by_rank >= allowed:
            break
        if score.candidate_id not in above:
            out.append(Promotion(score.candidate_id, entering, "rank"))
            by_rank += 1
    chosen = {p.candidate_id for p in out} | set(above)
    share = config.fidelity.random_share
    for score in ranked:
        if score.candidate_id in chosen:
            continue
        if random_draw(config.seed, score.candidate_id, entering) < share:
            out.append(Promotion(score.candidate_id, entering, "random"))
    if out or any(origin != "baseline" for origin in above.values()):
        # The baseline joins every rung that has a candidate: its reference there.
        for score in scores:
            if score.is_baseline and score.candidate_id not in above:
                out.append(Promotion(score.candidate_id, entering, "baseline"))
    return out


def scaled_budget(budget: Mapping[str, float], multiplier: float) -> dict[str, float]:
    """A trial budget ({"seconds": s} / {"steps": n} / {"flops": f}) times `multiplier`."""
    ((kind, amount),) = budget.items()
    scaled = amount * multiplier
    return {kind: max(1, round(scaled)) if kind == "steps" else scaled}


def rung_seeds(config: JobConfig, rung: int) -> list[int]:
    """The seeds a rung trains with: the job's seed first (rung 0's), then the next ones."""
    count = 1 if rung == 0 else config.fidelity.rungs[rung - 1].seeds
    return [config.seed + i for i in range(count)]


def noise_seeds(config: JobConfig) -> list[int]:
    """The baseline's extra rung-0 seeds for noise calibration (its own trial is the first)."""
    return [config.seed + i for i in range(1, config.fidelity.noise_seeds)]


CONFIRM_SEED_OFFSET = 1_000_003  # fresh seeds: none of the search's


def confirm_seeds(config: JobConfig) -> list[int]:
    assert config.confirm is not None
    return [config.seed + CONFIRM_SEED_OFFSET + i for i in range(config.confirm.seeds)]


def confirm_selection(config: JobConfig, scores: Sequence[Score]) -> list[Score]:
    """The candidates confirmation retrains: the top_k feasible ones (constrained mode) or
    the front's top_k by perplexity (pareto mode)."""
    assert config.confirm is not None
    top_k = config.confirm.top_k
    candidates = [s for s in scores if not s.is_baseline]
    if config.objective.mode == "constrained":
        return [s for s in ranking(candidates, "constrained") if s.feasible][:top_k]
    return sorted(front(candidates), key=lambda s: s.perplexity)[:top_k]


def auto_margin(losses: Sequence[float]) -> float | None:
    """hurdle.margin: auto. Twice the relative standard deviation over seeds of the
    baseline's smoothed loss at the hurdle's fraction (a candidate as good as the baseline
    is pruned by noise alone about 2% of the time), at least 0.005; None with fewer than 2."""
    values = [v for v in losses if v is not None and math.isfinite(v)]
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return max(0.005, 2 * std / mean)
