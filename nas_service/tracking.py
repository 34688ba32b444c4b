"""Experiment tracking: every trial the runner records, logged as an MLflow run.

Optional (the `[mlflow]` extra) and off unless `NAS_MLFLOW_TRACKING_URI` is set. One
experiment per job (`nas job {id}: {name}`) holds a run per recorded trial: a candidate's
own, and each run of the fidelity ladder, noise calibration and confirmation (tags
`nas.stage`, `nas.rung`, `nas.seed`). Every ending is logged, not only completed ones: the
MLflow status is FINISHED (completed), KILLED (pruned, cancelled) or FAILED (failed,
diverged), and the tags `nas.status` and `nas.reason` say which and why. Results reused from
another job were not trained here and are not logged. Params: the spec's features
(`search_space.features`) and its sub-layer kinds in order; metrics: the result's numbers
and the learning curve as the history of `loss`; artifact: `spec.json`; tags: the ids, spec
hash, mutation, device kind.

A tracking server that is slow, down or refusing must never delay or fail a trial: the
runner only queues ids; one background thread reads the stored rows and logs them through an
explicit `MlflowClient` (never `mlflow.start_run`, whose active run is process-global state),
and every error is a logged warning.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from nas_service.db import Database
from nas_service.models import Candidate, CurvePoint, Job, Run
from search_space import ArchSpec
from search_space.features import block_features
from search_space.results import RESULT_FIELDS

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000  # trials waiting to be logged; beyond it one is dropped, with a warning
CLOSE_WAIT_S = 5.0  # at shutdown, how long to wait for what is still queued
# MLflow's limits per log_batch call, and on a tag's value.
BATCH_METRICS, BATCH_PARAMS, TAG_CHARS = 1000, 100, 5000
# The run's MLflow status by trial status: finished, stopped early on purpose, or broke.
RUN_STATUS = {"completed": "FINISHED", "pruned": "KILLED", "cancelled": "KILLED"}
METRICS = tuple(f.name for f in RESULT_FIELDS if f.scalar)
LOSSES_AT = ("smoothed_loss_at", "val_loss_at")  # {fraction: loss}: a metric per fraction


@dataclass(frozen=True)
class Finished:
    """A trial just recorded: a candidate's own (`run_id` None) or one of its runs."""

    job_id: int
    candidate_id: int
    run_id: int | None = None


def open_tracker(uri: str | None, db: Database) -> Tracker | None:
    """The tracker for `uri`, or None when tracking is off: no URI, MLflow not installed or
    the URI refused (each of the last two says why in one warning)."""
    if not uri:
        return None
    try:
        from mlflow.tracking import MlflowClient  # imported only when tracking is on
    except ImportError:
        log.warning(
            "NAS_MLFLOW_TRACKING_URI is set but MLflow is not installed: trials are not "
            "tracked (install nas-service[mlflow])"
        )
        return None
    try:
        client = MlflowClient(tracking_uri=uri)
    except Exception as exc:
        log.warning("MLflow tracking is off: the tracking URI %r was refused: %s", uri, exc)
        return None
    return Tracker(client, db)


class Tracker:
    """Logs finished trials from a background thread (started on the first, ended by
    `close`, started again by a later one)."""

    def __init__(self, client: Any, db: Database, queue_size: int = QUEUE_SIZE):
        self.client = client
        self.db = db
        self.queue_size = queue_size
        self._worker: tuple[queue.Queue[Finished | None], threading.Thread] | None = None
        self._experiments: dict[int, str] = {}  # job id -> experiment id

    def finished(self, trial: Finished) -> None:
        """Queue a recorded trial for logging; never blocks."""
        if self._worker is None:
            pending: queue.Queue[Finished | None] = queue.Queue(self.queue_size)
            thread = threading.Thread(
                target=self._work, args=(pending,), name="mlflow-tracking", daemon=True
            )
            thread.start()
            self._worker = (pending, thread)
        try:
            self._worker[0].put_nowait(trial)
        except queue.Full:
            log.warning(
                "MLflow tracking is %d trials behind: the trial of candidate %s (job %s) is "
                "not logged",
                self.queue_size,
                trial.candidate_id,
                trial.job_id,
            )

    def close(self, timeout: float = CLOSE_WAIT_S) -> None:
        """Log what is queued, waiting `timeout` seconds at most, and end the thread (what
        is left is logged on, unless the process exits first)."""
        if self._worker is None:
            return
        (pending, thread), self._worker = self._worker, None
        deadline = time.monotonic() + timeout
        try:
            pending.put(None, timeout=timeout)  # the end, after what is queued
            stop = 1
        except queue.Full:  # the thread stays, idle once it has drained the queue
            stop = 0
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning(
                "MLflow tracking: %d trial(s) still queued %g s after shutdown began",
                pending.qsize() - stop,
                timeout,
            )

    def _work(self, pending: queue.Queue[Finished | None]) -> None:
        while (trial := pending.get()) is not None:
            try:
                self._log(trial)
            except Exception as exc:
                log.warning(
                    "MLflow tracking: the trial of candidate %s (job %s) is not logged: %s",
                    trial.candidate_id,
                    trial.job_id,
                    exc,
                )

    def _log(self, trial: Finished) -> None:
        row = _stored(self.db, trial)
        if row is None:
            return  # deleted since (its job was)
        client = self.client
        run = client.create_run(
            self._experiment(trial.job_id, row["job_name"]),
            start_time=_ms(row["started_at"]),
            tags=_tags(trial, row),
            run_name=_run_name(trial, row),
        )
        run_id = run.info.run_id
        metrics = _metrics(row, _ms(row["started_at"]), _ms(row["finished_at"]))
        params = _params(row["spec"])
        for chunk in _chunks(params, BATCH_PARAMS):
            client.log_batch(run_id, params=chunk)
        for chunk in _chunks(metrics, BATCH_METRICS):
            client.log_batch(run_id, metrics=chunk)
        client.log_dict(run_id, row["spec"], "spec.json")
        client.set_terminated(
            run_id, RUN_STATUS.get(row["status"], "FAILED"), end_time=_ms(row["finished_at"])
        )

    def _experiment(self, job_id: int, name: str) -> str:
        """The job's experiment, created on its first trial (found again after a restart)."""
        if job_id not in self._experiments:
            title = f"nas job {job_id}: {name}"
            found = self.client.get_experiment_by_name(title)
            if found is None:
                experiment_id = self.client.create_experiment(
                    title, tags={"nas.job_id": str(job_id)}
                )
            else:
                experiment_id = found.experiment_id
            self._experiments[job_id] = experiment_id
        return self._experiments[job_id]


def _stored(db: Database, trial: Finished) -> dict[str, Any] | None:
    """The trial as recorded: its row's result columns (the candidate's, or its run's), its
    curve as (train_s, loss) points, the candidate's spec and lineage, the job's name."""
    with db.sessions() as session:
        candidate = session.get(Candidate, trial.candidate_id)
        job_name = session.scalar(select(Job.name).where(Job.id == trial.job_id))
        if candidate is None or job_name is None:
            return None
        if trial.run_id is None:
            source: Candidate | Run | None = candidate
            curve = session.execute(
                select(CurvePoint.train_s, CurvePoint.loss)
                .where(CurvePoint.candidate_id == trial.candidate_id)
                .order_by(CurvePoint.index)
            ).all()
        else:
            source = session.get(Run, trial.run_id)
            if source is None:
                return None
            curve = source.curve or []
        row = {name: getattr(source, name) for name in (*METRICS, *LOSSES_AT)}
        row.update(
            job_name=job_name,
            curve=[(t, loss) for t, loss in curve],
            spec=candidate.spec,
            spec_hash=candidate.spec_hash,
            mutation=candidate.mutation,
            birth=candidate.birth,
            parent_id=candidate.parent_id,
            is_baseline=candidate.is_baseline,
            feasible=candidate.feasible,
            **{
                name: getattr(source, name)
                for name in (
                    "status",
                    "reason",
                    "attempt",
                    "device_kind",
                    "node_id",
                    "started_at",
                    "finished_at",
                )
            },
        )
        if isinstance(source, Run):
            row.update(stage=source.stage, rung=source.rung, seed=source.seed, origin=source.origin)
        return row


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _run_name(trial: Finished, row: dict[str, Any]) -> str:
    name = f"candidate {trial.candidate_id}"
    if trial.run_id is None:
        return name
    stage = "confirm" if row["stage"] == "confirm" else f"rung {row['rung']}"
    return f"{name} {stage} seed {row['seed']}"


def _tags(trial: Finished, row: dict[str, Any]) -> dict[str, str]:
    tags = {
        "nas.job_id": trial.job_id,
        "nas.candidate_id": trial.candidate_id,
        "nas.run_id": trial.run_id,
        **{
            f"nas.{name}": row.get(name)
            for name in (
                "spec_hash",
                "status",
                "reason",
                "mutation",
                "birth",
                "parent_id",
                "is_baseline",
                "feasible",
                "attempt",
                "device_kind",
                "node_id",
                "stage",
                "rung",
                "seed",
                "origin",
            )
        },
    }
    return {key: str(value)[:TAG_CHARS] for key, value in tags.items() if value is not None}


def _params(spec: dict[str, Any]) -> list[Any]:
    """The spec's features, and its sub-layers' kinds in order (the features count them)."""
    from mlflow.entities import Param

    parsed = ArchSpec.model_validate(spec)
    values: dict[str, Any] = {
        **block_features(parsed),
        "layer_kinds": " ".join(layer.kind for layer in parsed.block.layers),
    }
    return [Param(name, _text(value)) for name, value in values.items()]


def _text(value: Any) -> str:
    """A param's text: whole numbers without a fraction, others in full (repr)."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _metrics(row: dict[str, Any], start_ms: int | None, end_ms: int | None) -> list[Any]:
    """The result's numbers (at step 0, the trial's end), losses at budget fractions as
    `<name>/<fraction>`, and the curve as the history of `loss` (step: its index; time: the
    trial's start plus the training seconds)."""
    from mlflow.entities import Metric

    end_ms = end_ms or start_ms or int(time.time() * 1000)
    start_ms = start_ms or end_ms

    numbers = {name: row[name] for name in METRICS}
    for name in LOSSES_AT:
        numbers.update({f"{name}/{k}": v for k, v in (row[name] or {}).items()})
    metrics = [
        Metric(name, float(value), end_ms, 0)
        for name, value in numbers.items()
        if value is not None
    ]
    metrics += [
        Metric("loss", float(loss), start_ms + int(train_s * 1000), index)
        for index, (train_s, loss) in enumerate(row["curve"])
        if loss is not None
    ]
    return metrics


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
