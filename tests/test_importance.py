"""Feature importance: a synthetic job whose perplexity is driven by one feature (the norm)
and whose step time by another (the share of MoE sub-layers), stored as the runner stores
trials; the importance must rank each driver first for its objective."""

import math

import numpy as np
import pytest

from nas_service import importance, store
from nas_service.job_config import JobConfig
from nas_service.jobs import submit
from nas_service.models import RESULT_COLUMNS, utcnow
from nas_service.queries import importance as importance_query
from search_space import block_features, sample, spec_hash
from search_space.space import PROXY_CPU

API = "/api/v1"
KIND = "cpu:test"
# Both norms, so that the norm can drive perplexity.
SPACE = PROXY_CPU.override({"norm": ["layernorm", "rmsnorm"]})


def specs(n: int, seed: int = 0, space=SPACE) -> list:
    """`n` distinct specs sampled from `space`."""
    rng = np.random.default_rng(seed)
    found: dict[str, object] = {}
    while len(found) < n:
        spec = sample(space, rng)
        found.setdefault(spec_hash(spec), spec)
    return list(found.values())


def finish(
    db,
    job_id: int,
    spec,
    birth: int,
    perplexity: float | None,
    ratio: float | None,
    status: str = "completed",
    is_baseline: bool = False,
    step_time_ms: float | None = None,
    kind: str = KIND,
) -> int:
    """A trial as the runner records it: inserted running, then its outcome."""
    new = store.NewCandidate(
        job_id=job_id,
        spec=spec.model_dump(mode="json"),
        spec_hash=spec_hash(spec),
        birth=birth,
        parent_id=None,
        mutation="",
        is_baseline=is_baseline,
    )
    candidate_id = store.insert_running(db, new, slot=0)
    values = {
        "status": status,
        "perplexity": perplexity,
        "val_loss": math.log(perplexity) if perplexity else None,
        "step_time_ratio": ratio,
        "step_time_ms": step_time_ms,
        "device_kind": kind,
        "feasible": True if status == "completed" else None,
        "reason": None if status == "completed" else status,
        "finished_at": utcnow(),
    }
    recorded = store.record_outcomes(db, [store.Outcome(job_id, candidate_id, 1, values)])
    assert recorded
    return candidate_id


def synthetic_job(db, shakespeare: str, n: int = 40, seed: int = 0) -> tuple[int, list[int]]:
    """A job of `n` completed trials: perplexity 20 + 4 x rmsnorm, step-time ratio 0.8 +
    moe_fraction, each with a little noise; plus failed and pruned trials whose values
    (were they counted) would hide both drivers. Returns (job id, completed ids)."""
    job = submit(db, JobConfig(name="importance", dataset=shakespeare))
    rng = np.random.default_rng(seed)
    pool = specs(n + 6, seed)
    ids = []
    for birth, spec in enumerate(pool[:n]):
        features = block_features(spec)
        ids.append(
            finish(
                db,
                job.id,
                spec,
                birth,
                perplexity=20.0 + 4.0 * features["rmsnorm"] + float(rng.normal(0, 0.5)),
                ratio=0.8 + features["moe_fraction"] + float(rng.normal(0, 0.05)),
                is_baseline=birth == 0,
            )
        )
    for birth, spec in enumerate(pool[n:], start=n):
        status = "failed" if birth % 2 else "pruned"
        wild = float(rng.uniform(100, 1000)) if status == "pruned" else None
        finish(db, job.id, spec, birth, perplexity=wild, ratio=wild, status=status)
    return job.id, ids


def test_the_true_drivers_rank_first(client, database, shakespeare):
    job_id, ids = synthetic_job(database, shakespeare)
    # A reused result (copied from another trial) counts as a completed candidate.
    source = {name: None for name in RESULT_COLUMNS} | {"id": ids[1], "device_kind": KIND}
    reused_spec = specs(1, seed=99)[0]
    features = block_features(reused_spec)
    source |= {
        "perplexity": 20.0 + 4.0 * features["rmsnorm"],
        "step_time_ratio": 0.8 + features["moe_fraction"],
    }
    new = store.NewCandidate(
        job_id=job_id,
        spec=reused_spec.model_dump(mode="json"),
        spec_hash=spec_hash(reused_spec),
        birth=100,
        parent_id=None,
        mutation="",
        is_baseline=False,
    )
    store.insert_reused(database, new, source, feasible=True)

    response = client.get(f"{API}/jobs/{job_id}/importance")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["candidates"] == body["completed"] == len(ids) + 1  # failed, pruned left out
    assert body["message"] is None and body["min_candidates"] == importance.MIN_CANDIDATES
    assert "permutation importance" in body["method"]
    shares = body["features"]
    by_perplexity = sorted(shares, key=lambda f: -f["perplexity"])
    by_step_time = sorted(shares, key=lambda f: -f["step_time"])
    assert by_perplexity[0]["name"] == "rmsnorm"
    assert by_step_time[0]["name"] == "moe_fraction"
    # Shares are of the variance: non-negative, summing to the out-of-sample R^2.
    for objective in ("perplexity", "step_time"):
        assert body["r2"][objective] > 0.5
        assert all(f[objective] >= 0 for f in shares)
        assert sum(f[objective] for f in shares) == pytest.approx(body["r2"][objective])
    # Most important first (by the sum of both shares); constant features are left out.
    totals = [f["perplexity"] + f["step_time"] for f in shares]
    assert totals == sorted(totals, reverse=True)
    names = {f["name"] for f in shares}
    assert "repeats" not in names  # one value in this space
    assert client.get(f"{API}/jobs/9999/importance").status_code == 404


def test_too_few_candidates(client, database, shakespeare):
    job = submit(database, JobConfig(name="few", dataset=shakespeare))
    for birth, spec in enumerate(specs(importance.MIN_CANDIDATES - 1)):
        finish(database, job.id, spec, birth, perplexity=20.0 + birth, ratio=1.0)
    body = client.get(f"{API}/jobs/{job.id}/importance").json()
    assert body["features"] == [] and body["candidates"] == importance.MIN_CANDIDATES - 1
    assert body["r2"] == {"perplexity": None, "step_time": None}
    assert f"at least {importance.MIN_CANDIDATES}" in body["message"]


def test_sample_and_cache(sqlite_db, shakespeare, monkeypatch):
    """Above MAX_ROWS a fixed sample is fitted (and said so); a result is kept until another
    candidate completes."""
    monkeypatch.setattr(importance, "MAX_ROWS", 12)
    job_id, _ = synthetic_job(sqlite_db, shakespeare, n=15)
    first = importance_query.job_importance(sqlite_db, job_id)
    assert (first["candidates"], first["completed"]) == (12, 15)
    assert "sample of 12 of the 15" in first["message"]
    assert importance_query.job_importance(sqlite_db, job_id) is first  # cached
    spec = specs(1, seed=7)[0]
    finish(sqlite_db, job_id, spec, 200, perplexity=21.0, ratio=1.2)
    again = importance_query.job_importance(sqlite_db, job_id)
    assert again is not first and again["completed"] == 16


def test_deterministic_equivalent_and_constant_features():
    """The same rows give the same ranking; at a fixed depth, the layer counts order the
    blocks exactly as the fractions do and are reported as equivalent to them."""
    fixed_depth = SPACE.override({"min_layers": 4, "max_layers": 4})
    rows = [block_features(spec) for spec in specs(30, space=fixed_depth)]
    rng = np.random.default_rng(1)
    targets = {
        "perplexity": [20 + 4 * r["rmsnorm"] + rng.normal(0, 0.5) for r in rows],
        "step_time": [0.8 + r["moe_fraction"] + rng.normal(0, 0.05) for r in rows],
    }
    first = importance.importance(rows, targets)
    assert importance.importance(rows, targets) == first
    assert first.equivalent["moe_layers"] == "moe_fraction"
    assert first.equivalent["attention_layers"] == "attention_fraction"
    listed = [share.name for share in first.features]
    assert "layers" not in listed and "moe_layers" not in listed and "moe_fraction" in listed
    with pytest.raises(ValueError, match="at least"):
        importance.importance(rows[:5], {k: v[:5] for k, v in targets.items()})
