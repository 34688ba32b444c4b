"""Derived features of a block: values on known specs, every feature defined and finite,
and the features of each candidate in the API (list, detail, CSV)."""

import csv
import io
import math

import numpy as np
import pytest
from test_importance import finish

from nas_service.job_config import JobConfig
from nas_service.jobs import submit
from search_space import (
    FEATURES,
    PRESETS,
    ArchSpec,
    AttentionSpec,
    BlockSpec,
    FFNSpec,
    MoESpec,
    baseline,
    block_features,
    cost,
    sample,
    spec_features,
)

API = "/api/v1"


def test_glam_baseline():
    spec = baseline("glam")  # (attn, ffn, attn, moe) x 2 at d_model 128, 8 experts, top-2
    f = block_features(spec)
    assert list(f) == list(FEATURES)
    assert (f["attention_fraction"], f["ffn_fraction"], f["moe_fraction"]) == (0.5, 0.25, 0.25)
    assert (f["layers"], f["attention_layers"], f["ffn_layers"], f["moe_layers"]) == (8, 4, 2, 2)
    assert f["first_moe_position"] == 3 / 8
    assert (f["gating_top1"], f["gating_top2"], f["gating_expert_choice"]) == (0, 1, 0)
    assert (f["capacity_factor"], f["experts"]) == (1.0, 8.0)
    # heads x head_dim = d_model, hidden = 4 d_model
    assert (f["attention_width"], f["ffn_width"], f["moe_width"]) == (1.0, 4.0, 4.0)
    assert (f["d_model"], f["repeats"], f["rmsnorm"], f["activation_geglu"]) == (128, 1, 1, 1)
    report = cost(spec)
    assert f["params_total"] == report.params_total
    assert f["params_activated"] == report.params_activated < report.params_total
    assert f["flops_per_token"] == report.flops_per_token


def test_other_baselines():
    dense = block_features(baseline("dense"))
    assert dense["moe_fraction"] == dense["moe_layers"] == 0.0
    assert dense["first_moe_position"] == 1.0  # none: one past the last position
    assert dense["capacity_factor"] == dense["experts"] == dense["moe_width"] == 0.0
    assert dense["gating_top1"] == dense["gating_top2"] == dense["gating_expert_choice"] == 0
    assert dense["params_activated"] == dense["params_total"]
    switch = block_features(baseline("switch"))
    assert (switch["gating_top1"], switch["gating_top2"]) == (1.0, 0.0)
    ec = block_features(baseline("glam-ec"))
    assert (ec["gating_expert_choice"], ec["capacity_factor"]) == (1.0, 2.0)


def test_mixed_block():
    spec = ArchSpec(
        block=BlockSpec(
            d_model=128,
            norm="layernorm",
            layers=(
                MoESpec(
                    hidden=256, num_experts=4, gating="top1", capacity_factor=1.0, activation="relu"
                ),
                AttentionSpec(heads=2, head_dim=32),
                FFNSpec(hidden=512, activation="gelu"),
                MoESpec(
                    hidden=128, num_experts=8, gating="top2", capacity_factor=2.0, activation="gelu"
                ),
            ),
        ),
        repeats=2,
        vocab_size=256,
        seq_len=64,
    )
    f = block_features(spec)
    assert (f["attention_fraction"], f["ffn_fraction"], f["moe_fraction"]) == (0.25, 0.25, 0.5)
    assert f["first_moe_position"] == 0.0
    assert (f["gating_top1"], f["gating_top2"], f["gating_expert_choice"]) == (0.5, 0.5, 0.0)
    assert (f["capacity_factor"], f["experts"]) == (1.5, 6.0)
    assert (f["attention_width"], f["ffn_width"], f["moe_width"]) == (0.5, 4.0, 1.5)
    assert f["activation_relu"] == pytest.approx(1 / 3)
    assert f["activation_gelu"] == pytest.approx(2 / 3)
    assert (f["rmsnorm"], f["repeats"]) == (0.0, 2.0)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_feature_is_finite(preset):
    rng = np.random.default_rng(0)
    for _ in range(100):
        f = block_features(sample(PRESETS[preset], rng))
        assert list(f) == list(FEATURES)
        assert all(isinstance(v, float) and math.isfinite(v) for v in f.values())
        assert f["attention_fraction"] + f["ffn_fraction"] + f["moe_fraction"] == pytest.approx(1)
        if f["ffn_fraction"] + f["moe_fraction"] > 0:
            assert sum(f[n] for n in FEATURES if n.startswith("activation_")) == pytest.approx(1)


def test_stored_specs():
    spec = baseline("glam")
    assert spec_features(spec.model_dump(mode="json")) == block_features(spec)
    assert spec_features({"i": 1}) == {}  # not a spec: no features


def test_candidates_carry_features(client, database, shakespeare):
    job = submit(database, JobConfig(name="features", dataset=shakespeare))
    spec = baseline("glam")
    candidate_id = finish(database, job.id, spec, 0, perplexity=20.0, ratio=1.0)
    expected = block_features(spec)
    page = client.get(f"{API}/jobs/{job.id}/candidates").json()
    assert page["items"][0]["features"] == expected
    assert client.get(f"{API}/candidates/{candidate_id}").json()["features"] == expected
    text = client.get(f"{API}/jobs/{job.id}/candidates", params={"format": "csv"}).text
    (row,) = csv.DictReader(io.StringIO(text))
    assert "features" not in row
    assert {name: float(row[f"feature.{name}"]) for name in FEATURES} == expected
    assert row["id"] == str(candidate_id) and row["perplexity"] == "20.0"
