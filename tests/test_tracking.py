"""Experiment tracking: a real job through the real runner, logged to a local MLflow file
store with the real client and read back; a store that fails never fails a trial; off by
default."""

import json
import logging
import shutil
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import select
from test_runner import rows, small_job

from nas_service import jobs
from nas_service.models import CurvePoint, Run
from nas_service.runner import Runner
from nas_service.settings import Settings
from nas_service.tracking import open_tracker
from search_space import ArchSpec
from search_space.features import FEATURES, block_features

mlflow_tracking = pytest.importorskip("mlflow.tracking")

FINISHED = {"completed": "FINISHED", "pruned": "KILLED", "failed": "FAILED", "diverged": "FAILED"}


@pytest.fixture
def file_store(tmp_path, monkeypatch):
    """A `file:` tracking URI in tmp_path (MLflow 3 asks for the opt-in to its file store)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return f"file:{tmp_path / 'mlruns'}"


def tracking_runner(db, uri: str) -> Runner:
    settings = Settings(runner_id="test", heartbeat_s=0.5, poll_s=0.05, mlflow_tracking_uri=uri)
    return Runner(settings, db)


def run_to_the_end(runner: Runner) -> None:
    """Until no job is left; the runner closes its tracker (logging what is queued) as it
    stops."""
    thread = threading.Thread(target=runner.run, args=(threading.Event(), True), daemon=True)
    thread.start()
    thread.join(timeout=240)
    assert not thread.is_alive()


def tiny_job(shakespeare: str, trials: int, **sections):
    return small_job(
        shakespeare,
        name="tracked",
        trial={"budget_steps": 8, "budget_s": None},
        limits={"max_trials": trials},
        **sections,
    )


@pytest.mark.slow
def test_every_finished_trial_is_an_mlflow_run(sqlite_db, ray_local, shakespeare, file_store):
    config = tiny_job(shakespeare, 3, fidelity={"noise_seeds": 2}, hurdle={"enabled": False})
    job_id = jobs.submit(sqlite_db, config).id
    run_to_the_end(tracking_runner(sqlite_db, file_store))
    assert jobs.get(sqlite_db, job_id).status == "completed"
    candidates = {c.id: c for c in rows(sqlite_db, job_id)}
    with sqlite_db.sessions() as session:
        runs = {r.id: r for r in session.scalars(select(Run).where(Run.job_id == job_id))}
        curves = {
            cid: [
                p.loss
                for p in session.scalars(
                    select(CurvePoint)
                    .where(CurvePoint.candidate_id == cid)
                    .order_by(CurvePoint.index)
                )
            ]
            for cid in candidates
        }
    assert len(candidates) == 3 and len(runs) == 1  # the baseline's second noise seed

    client = mlflow_tracking.MlflowClient(tracking_uri=file_store)
    experiment = client.get_experiment_by_name(f"nas job {job_id}: tracked")
    assert experiment is not None
    logged = client.search_runs([experiment.experiment_id], max_results=100)
    own = {
        int(r.data.tags["nas.candidate_id"]): r for r in logged if "nas.run_id" not in r.data.tags
    }
    ladder = {int(r.data.tags["nas.run_id"]): r for r in logged if "nas.run_id" in r.data.tags}
    assert set(own) == set(candidates) and set(ladder) == set(runs)

    for cid, logged_run in own.items():
        row, data = candidates[cid], logged_run.data
        assert logged_run.info.status == FINISHED[row.status]
        assert data.tags["nas.status"] == row.status and data.tags["nas.spec_hash"] == row.spec_hash
        assert data.tags["nas.mutation"] == row.mutation
        assert data.tags["nas.device_kind"] == row.device_kind
        features = block_features(ArchSpec.model_validate(row.spec))
        assert set(data.params) == {*FEATURES, "layer_kinds"}
        assert data.params["layer_kinds"] == " ".join(
            layer["kind"] for layer in row.spec["block"]["layers"]
        )
        assert all(
            float(data.params[name]) == pytest.approx(features[name], rel=1e-5) for name in FEATURES
        )
        assert data.metrics["steps"] == row.steps
        for name in (
            "perplexity",
            "val_loss",
            "step_time_ms",
            "step_time_ratio",
            "tokens_per_s",
            "mfu",
            "params_total",
        ):
            assert data.metrics[name] == pytest.approx(getattr(row, name)), name
        history = client.get_metric_history(logged_run.info.run_id, "loss")
        assert [m.step for m in history] == list(range(len(curves[cid])))
        assert [m.value for m in history] == pytest.approx(curves[cid])
        spec_path = client.download_artifacts(logged_run.info.run_id, "spec.json")
        assert json.loads(Path(spec_path).read_text()) == row.spec

    for run_id, logged_run in ladder.items():
        run, tags = runs[run_id], logged_run.data.tags
        assert (tags["nas.stage"], tags["nas.rung"], tags["nas.seed"]) == (
            run.stage,
            str(run.rung),
            str(run.seed),
        )
        assert int(tags["nas.candidate_id"]) == run.candidate_id
        assert logged_run.data.metrics["val_loss"] == pytest.approx(run.val_loss)
        history = client.get_metric_history(logged_run.info.run_id, "loss")
        assert len(history) == len(run.curve) > 0


@pytest.mark.slow
def test_a_failing_store_never_fails_a_trial(sqlite_db, ray_local, shakespeare, file_store, caplog):
    # The store is a directory when the runner starts, then a file: every log fails.
    store = file_store.removeprefix("file:")
    config = tiny_job(shakespeare, 2, hurdle={"enabled": False})
    job = jobs.submit(sqlite_db, config)
    runner = tracking_runner(sqlite_db, file_store)
    assert runner.tracker is not None
    shutil.rmtree(store)
    Path(store).write_text("")
    with caplog.at_level(logging.WARNING, logger="nas_service.tracking"):
        run_to_the_end(runner)
    assert jobs.get(sqlite_db, job.id).status == "completed"
    found = rows(sqlite_db, job.id)
    assert len(found) == 2 and all(c.status == "completed" for c in found)
    failures = [r.getMessage() for r in caplog.records if "is not logged" in r.getMessage()]
    assert len(failures) == 2, failures  # one warning per trial
    for c in found:
        assert any(f"candidate {c.id} (job {job.id})" in message for message in failures)


def test_a_refused_uri_or_no_mlflow_turns_tracking_off_with_one_warning(
    sqlite_db, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    (tmp_path / "a-file").write_text("")
    with caplog.at_level(logging.WARNING, logger="nas_service.tracking"):
        assert open_tracker(f"file:{tmp_path / 'a-file' / 'mlruns'}", sqlite_db) is None
        monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
        assert open_tracker(f"file:{tmp_path / 'mlruns'}", sqlite_db) is None
    refused, missing = [r.getMessage() for r in caplog.records]
    assert "tracking URI" in refused and "was refused" in refused
    assert "install nas-service[mlflow]" in missing


def test_tracking_is_off_by_default(sqlite_db, monkeypatch):
    monkeypatch.delenv("NAS_MLFLOW_TRACKING_URI", raising=False)
    assert Settings().mlflow_tracking_uri is None
    assert Runner(Settings(), sqlite_db).tracker is None
    monkeypatch.setenv("NAS_MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    assert Settings().mlflow_tracking_uri == "sqlite:///mlflow.db"
