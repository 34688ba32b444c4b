"""Measurements on equal terms, end to end: the same-slot step-time ratio, the paper's early
stop in both modes, reproducible budgets through the runner, and the schema migration."""

import pytest
from sqlalchemy import create_engine, text
from test_runner import rows, small_job, start_runner

from nas_service import jobs
from nas_service.db import Database, upgrade


@pytest.mark.slow
def test_constrained_mode_stops_slow_blocks_at_a_quarter_on_the_step_time_ratio(
    sqlite_db, ray_local, shakespeare
):
    config = small_job(
        shakespeare,
        objective={"mode": "constrained", "max_step_time_ratio": 0.05},  # nothing is 20x faster
        trial={"budget_steps": 24, "budget_s": None},
        limits={"max_trials": 4},
    )
    job = jobs.submit(sqlite_db, config)
    _, thread = start_runner(sqlite_db)
    thread.join(timeout=240)
    assert jobs.get(sqlite_db, job.id).status == "completed"
    found = rows(sqlite_db, job.id)
    base, others = found[0], found[1:]
    assert base.is_baseline and base.status == "completed" and base.steps == 24
    assert 0.7 < base.step_time_ratio < 1.4  # the baseline against itself on its slot
    assert base.feasible is False  # a limit of 0.05x excludes the baseline too
    for c in others:
        assert c.status == "pruned" and "step time" in c.reason and "25%" in c.reason, c.reason
        assert c.steps == 6 and c.step_time_ratio > 0.05 and c.feasible is False
        assert c.reference_step_time_ms > 0 and c.val_loss is not None  # still scored
        assert c.device_kind and c.device_kind.startswith("cpu:")


@pytest.mark.slow
def test_pareto_mode_stores_ratios_and_validation_at_fractions(sqlite_db, ray_local, shakespeare):
    config = small_job(
        shakespeare,
        trial={"budget_steps": 16, "budget_s": None, "eval_at": [0.25, 0.5, 1.0]},
        limits={"max_trials": 3},
        hurdle={"enabled": False},
    )
    job = jobs.submit(sqlite_db, config)
    _, thread = start_runner(sqlite_db)
    thread.join(timeout=240)
    done = [c for c in rows(sqlite_db, job.id) if c.status == "completed"]
    assert len(done) == 3
    for c in done:
        assert c.feasible is True and c.steps == 16
        assert c.step_time_ratio == pytest.approx(c.step_time_ms / c.reference_step_time_ms)
        assert set(c.val_loss_at) == {"0.25", "0.5", "1"} and c.val_loss_at["1"] == c.val_loss


def test_the_migration_keeps_results_and_derives_ratios_from_the_baseline(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0002")
    engine = create_engine(url)
    device = '{"platform": "cpu", "device_kind": "cpu", "host_cpu": "AMD EPYC"}'
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (id, name, config, status, created_at, updated_at) "
                "VALUES (1, 'old', '{}', 'completed', '2026-11-01', '2026-11-01')"
            )
        )
        for cid, baseline, step, ppl in (
            (1, 1, 100.0, 9.0),
            (2, 0, 150.0, 8.0),
            (3, 0, None, None),
        ):
            connection.execute(
                text(
                    "INSERT INTO candidates (id, job_id, spec, spec_hash, mutation, birth, "
                    "is_baseline, status, attempt, step_time_ms, perplexity, device, created_at) "
                    "VALUES (:id, 1, '{}', :hash, '', :id, :base, 'completed', 1, :step, :ppl, "
                    ":device, '2026-11-01')"
                ),
                {"id": cid, "hash": f"h{cid}", "base": baseline, "step": step, "ppl": ppl,
                 "device": device},
            )  # fmt: skip
    engine.dispose()
    db = Database(url)
    db.upgrade()
    with db.engine.connect() as connection:
        found = connection.execute(
            text(
                "SELECT id, step_time_ms, perplexity, step_time_ratio, device_kind "
                "FROM candidates ORDER BY id"
            )
        ).all()
    db.dispose()
    assert [tuple(row) for row in found] == [
        (1, 100.0, 9.0, 1.0, "cpu:AMD EPYC"),
        (2, 150.0, 8.0, 1.5, "cpu:AMD EPYC"),
        (3, None, None, None, "cpu:AMD EPYC"),
    ]


def test_the_device_kind_names_a_shared_gpu():
    """Perplexity in a wall-clock budget depends on the steps a device managed: a quarter of
    a GPU is a kind of its own, and a long name still shows the share."""
    from nas_service.measurements import device_kind

    gpu = {"platform": "gpu", "device_kind": "NVIDIA H200", "host_cpu": "AMD EPYC"}
    assert device_kind(gpu) == "gpu:NVIDIA H200"
    assert device_kind({**gpu, "gpu_share": 0.25}) == "gpu:NVIDIA H200 @0.25"
    assert device_kind({"platform": "cpu", "device_kind": "cpu", "host_cpu": "AMD EPYC"}) == (
        "cpu:AMD EPYC"
    )
    long = device_kind({**gpu, "device_kind": "x" * 300, "gpu_share": 0.5})
    assert len(long) == 200 and long.endswith(" @0.5")
    assert device_kind(None) is None and device_kind({}) is None
