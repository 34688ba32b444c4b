"""Which block features explain a job's perplexity and step time: random-forest permutation
importance (scikit-learn), cross-validated, as shares of each objective's variance.

For each objective y (perplexity; step_time = the step-time ratio) over the candidates' rows
of features X:

1. k-fold cross-fitting (`FOLDS` folds, shuffled with a fixed seed): a random forest
   (`TREES` trees) is fitted on the other folds and scored on each held-out fold;
2. `sklearn.inspection.permutation_importance` on the held-out fold: how much its mean
   squared error grows when one feature's column is shuffled (`REPEATS` shuffles, mean),
   weighted by the fold's size and divided by the variance of y: the share of y's variance
   the forest loses without that feature;
3. the out-of-sample R^2: 1 - (the held-out predictions' mean squared error) / var(y);
4. the shares: each feature's loss clipped at 0, scaled so that they sum to R^2 (0 when R^2
   <= 0: the features explain nothing that generalises).

Permutation importance on held-out rows (rather than the forest's impurity importance) is
what scikit-learn recommends: it is not biased toward features with many values, and it
measures what the model predicts on candidates it did not see. Correlated features share
their importance (shuffling one leaves the others to stand in for it), so a feature that
varies with the true driver scores less than it would alone; features that order every
candidate exactly as an earlier feature of `FEATURES` does (the layer counts when every
block has the same depth) are left out and named in `equivalent`, as are constant ones.

Deterministic: fixed seeds, one thread. Above `MAX_ROWS` candidates the caller passes a
deterministic sample (the forests' cost grows with the rows, the shares barely do).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from search_space.features import FEATURES

OBJECTIVES = ("perplexity", "step_time")
MIN_CANDIDATES = 10  # fewer cannot be split into folds that each train a forest
MAX_ROWS = 500  # candidates fitted at most (a deterministic sample above it)
FOLDS = 5
TREES = 50
REPEATS = 2
SEED = 0

METHOD = (
    f"random forest ({TREES} trees, scikit-learn) with permutation importance on held-out "
    f"rows of {FOLDS}-fold cross-fitting ({REPEATS} shuffles per feature); a feature's share "
    "is the held-out squared error its shuffling adds over the objective's variance, clipped "
    "at 0 and scaled so that the shares sum to the out-of-sample R^2; most important first "
    "by perplexity share + step_time share"
)


@dataclass(frozen=True)
class Share:
    name: str
    perplexity: float
    step_time: float


@dataclass(frozen=True)
class Importance:
    r2: dict[str, float]  # out-of-sample R^2 per objective
    features: list[Share]  # most important first
    equivalent: dict[str, str] = field(default_factory=dict)  # left out -> the one kept


def _informative(x: np.ndarray) -> tuple[list[int], dict[str, str]]:
    """The columns kept (not constant, not ordering the rows as an earlier kept column
    does, in either direction) and, for each other non-constant one, the column kept."""
    kept: list[int] = []
    ranks: dict[bytes, int] = {}
    equivalent: dict[str, str] = {}
    for j in range(x.shape[1]):
        levels, rank = np.unique(x[:, j], return_inverse=True)
        if len(levels) < 2:
            continue
        same = ranks.get(rank.tobytes(), ranks.get((len(levels) - 1 - rank).tobytes()))
        if same is not None:
            equivalent[FEATURES[j]] = FEATURES[same]
            continue
        ranks[rank.tobytes()] = j
        kept.append(j)
    return kept, equivalent


def _shares(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """(out-of-sample R^2, each column's share of y's variance) for one objective."""
    # Imported here: scikit-learn takes about half a second to import, and only this uses it.
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance
    from sklearn.model_selection import KFold

    variance = float(np.var(y))
    if variance == 0.0:
        return 0.0, np.zeros(x.shape[1])
    losses = np.zeros(x.shape[1])
    squared_error = 0.0
    for train, test in KFold(FOLDS, shuffle=True, random_state=SEED).split(x):
        forest = RandomForestRegressor(TREES, random_state=SEED, n_jobs=1)
        forest.fit(x[train], y[train])
        squared_error += float(np.sum((forest.predict(x[test]) - y[test]) ** 2))
        result = permutation_importance(
            forest,
            x[test],
            y[test],
            scoring="neg_mean_squared_error",
            n_repeats=REPEATS,
            random_state=SEED,
            n_jobs=1,
        )
        losses += result.importances_mean * len(test)
    r2 = 1.0 - squared_error / len(y) / variance
    losses = np.clip(losses / len(y) / variance, 0.0, None)
    total = float(losses.sum())
    shares = losses * (max(r2, 0.0) / total) if total > 0 else losses
    return r2, shares


def importance(rows: list[dict[str, float]], targets: dict[str, list[float]]) -> Importance:
    """The features of `rows` (`block_features` dicts) ranked by the shares of the variance
    of each objective in `targets` (`OBJECTIVES`, one value per row) they explain; at least
    `MIN_CANDIDATES` rows."""
    if len(rows) < MIN_CANDIDATES:
        raise ValueError(f"need at least {MIN_CANDIDATES} rows, got {len(rows)}")
    x = np.array([[row[name] for name in FEATURES] for row in rows], dtype=float)
    kept, equivalent = _informative(x)
    if not kept:
        return Importance(r2=dict.fromkeys(OBJECTIVES, 0.0), features=[], equivalent=equivalent)
    r2: dict[str, float] = {}
    shares: dict[str, np.ndarray] = {}
    for objective in OBJECTIVES:
        r2[objective], shares[objective] = _shares(
            x[:, kept], np.asarray(targets[objective], dtype=float)
        )
    features = [
        Share(FEATURES[j], float(shares["perplexity"][i]), float(shares["step_time"][i]))
        for i, j in enumerate(kept)
    ]
    # Stable: equal totals keep the order of FEATURES.
    features.sort(key=lambda share: -(share.perplexity + share.step_time))
    return Importance(r2=r2, features=features, equivalent=equivalent)
