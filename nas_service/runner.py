"""The runner: claims jobs under a lease, proposes candidates, dispatches them to Ray slots,
and records each result once.

Restart safety comes from the database alone. A job is claimed with a compare-and-set
UPDATE on (runner_id, lease_expires_at), which works on SQLite (no row locks) and
PostgreSQL, and the lease is renewed as a heartbeat. When a runner claims a job it rebuilds
the designer from the job's candidate rows; candidates that were running under a previous
runner are re-dispatched as a new attempt of the same row (never a second row, never a
completed result trained again). A report is recorded only if it matches the candidate's
current attempt and the candidate is still running, so a late or repeated report changes
nothing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    RayActorError,
    RayError,
    RayTaskError,
)
from sqlalchemy.exc import DBAPIError, OperationalError
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from nas_service import ladder, store, warm_start
from nas_service.db import Database
from nas_service.designer import (
    ArchSearchSpace,
    EvolutionConfig,
    Proposal,
    RegularizedEvolution,
    SearchExhausted,
    Trial,
)
from nas_service.enqueue import ADDED_BY_HAND
from nas_service.job_config import JobConfig
from nas_service.ladder import Score
from nas_service.measurements import device_kind
from nas_service.models import (
    CANDIDATE_FINISHED,
    utcnow,
)
from nas_service.settings import Settings, get_settings
from nas_service.slots import Shape, Slot, SlotPool, shape_of
from nas_service.tracking import Finished, open_tracker
from search_space import ArchSpec, baseline, spec_hash
from search_space.results import result_values
from workers.actor import worker_actor

log = logging.getLogger(__name__)

CRASHES = (RayActorError, ActorDiedError, ActorUnavailableError)
TRAINER_STATUS = {"ok": "completed"}  # the trainer's other statuses are candidate statuses
MAX_FAILED_STEPS = 30  # in a row: then the process exits and `nas serve` starts a fresh one


def transient(exc: BaseException) -> bool:
    """Database errors that pass by themselves: a lost connection, a server restarting,
    SQLite busy beyond its timeout."""
    return isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def _refused(exc: RayTaskError) -> bool:
    """The worker refused the trial because it was still running another one."""
    return "is already running a trial" in str(exc)


@dataclass
class InFlight:
    job_id: int
    candidate_id: int
    attempt: int
    slot: Slot
    shape: Shape
    run_id: int | None = None  # a run of the candidate other than its own trial


@dataclass
class Report:
    """A finished trial waiting to be recorded: its payload, or the Ray error that ended it.
    Kept in memory until recorded, so a database outage loses no result."""

    state: JobState
    flight: InFlight
    payload: dict[str, Any] | None = None
    error: Exception | None = None


@dataclass
class JobState:
    """What the runner keeps in memory about a job it owns (rebuilt from rows on claim)."""

    id: int
    config: JobConfig
    designer: RegularizedEvolution
    status: str
    started: float
    created: int  # candidate rows the designer proposed so far (blocks added by hand: extra)
    baseline_id: int | None = None
    baseline: dict[str, Any] | None = None  # the baseline's finished row, once there is one
    reference: dict[str, Any] = field(default_factory=dict)  # the baseline's spec (JSON)
    data_checksum: str | None = None
    siblings: list[int] = field(default_factory=list)  # jobs whose results may be reused
    # The job's Pareto front of (perplexity, step-time ratio, candidate id), completed
    # feasible ones.
    front: list[tuple[float, float, int]] = field(default_factory=list)
    keys: dict[int, str] = field(default_factory=dict)  # candidate id -> spec hash
    ids: dict[str, int] = field(default_factory=dict)  # spec hash -> candidate id
    retry: deque[int] = field(default_factory=deque)  # candidate ids to (re)dispatch
    # Blocks added by hand (store.pending_enqueued rows), trained before new proposals.
    enqueued: deque[dict[str, Any]] = field(default_factory=deque)
    warm_jobs: list[int] = field(default_factory=list)  # the jobs its warm start took from
    # Runs other than candidates' own trials (higher rungs, noise seeds, confirmation).
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)  # run id -> run
    run_queue: deque[int] = field(default_factory=deque)  # run ids to (re)dispatch
    rung0: dict[int, Score] = field(default_factory=dict)  # completed own trials' metrics
    margin: float | None = None  # hurdle.margin: auto, once measured
    confirm_started: bool = False
    in_flight: int = 0
    last_dispatch: float = 0.0
    exhausted: bool = False

    @property
    def shape(self) -> Shape:
        w = self.config.workers
        return shape_of(w.cpus_per_trial, w.gpus_per_trial, w.resources)

    @property
    def calibrating(self) -> bool:
        """hurdle.margin: auto and the baseline's noise seeds are not all measured yet."""
        return self.config.hurdle.margin == "auto" and self.margin is None

    @property
    def baseline_first(self) -> bool:
        """Only the baseline's work may start: with hurdle.margin: auto, until its noise
        seeds have measured the margin, and while other jobs' results could be reused,
        until its result says which device kind they must match. Otherwise candidates start
        beside the baseline (the step-time ratio is timed on each trial's own slot, so the
        constraint needs nothing of it; those that start before its result have no loss
        hurdle) rather than leave the other slots idle."""
        waiting = self.calibrating or (self.baseline is None and bool(self.siblings))
        return self.baseline_id is not None and waiting


def objectives(config: JobConfig, row: dict[str, Any]) -> tuple[float, float] | None:
    """(quality, cost) for the designer: perplexity (pareto) or validation loss
    (constrained) against the step-time ratio to the baseline timed on the same slot (raw
    step times depend on the device and on what ran beside the trial); None when the trial
    produced no usable metrics."""
    quality = row["perplexity"] if config.objective.mode == "pareto" else row["val_loss"]
    if row["status"] != "completed" or quality is None or row["step_time_ratio"] is None:
        return None
    return (quality, row["step_time_ratio"])


class Runner:
    def __init__(
        self,
        settings: Settings | None = None,
        db: Database | None = None,
        worker_factory: Callable[..., Any] = worker_actor,
    ):
        self.settings = settings or get_settings()
        self.worker_factory = worker_factory
        self.db = db or Database(self.settings.resolved_database_url, durable=False)
        self.id = self.settings.runner_id
        self.jobs: dict[int, JobState] = {}
        self.pools: dict[Shape, SlotPool] = {}
        self.in_flight: dict[Any, InFlight] = {}
        # Slots held until their actor answers that it is idle (it died, was unreachable or
        # refused a trial), with when the probe began.
        self.probing: dict[Any, tuple[Slot, float]] = {}
        self.reports: list[Report] = []  # finished, not yet recorded
        self._next_slot = 0
        self._last_heartbeat = 0.0
        self._last_claim = 0.0
        # MLflow (NAS_MLFLOW_TRACKING_URI): None when off.
        self.tracker = open_tracker(self.settings.mlflow_tracking_uri, self.db)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.db.upgrade()
        if not ray.is_initialized():
            ray.init(
                address=self.settings.ray_address, include_dashboard=False, log_to_driver=False
            )

    def run(self, stop: threading.Event, until_idle: bool = False) -> None:
        """Loop until `stop` is set (or, with `until_idle`, until no job is queued or running).

        Each step is an error boundary: transient database errors are retried with backoff
        for `settings.db_retry_s`, anything else is logged and the loop goes on after a pause
        (finished results stay in memory until recorded). After `MAX_FAILED_STEPS` failures
        in a row the error is raised, so a supervisor (`nas serve`) starts a fresh process.
        """
        self.start()
        failures = 0
        try:
            while not stop.is_set():
                try:
                    busy = self._step_with_retries()
                    done = until_idle and not self.jobs and not self.reports
                    if done and not store.any_active_job(self.db):
                        break
                    failures = 0
                except Exception:
                    failures += 1
                    if failures >= MAX_FAILED_STEPS:
                        raise
                    pause = min(30.0, self.settings.poll_s * 2**failures)
                    log.exception(
                        "runner step failed (%d in a row); again in %.1f s", failures, pause
                    )
                    stop.wait(pause)
                    continue
                if not busy:
                    stop.wait(self.settings.poll_s)
        finally:
            self.shutdown()

    def _step_with_retries(self) -> bool:
        for attempt in Retrying(
            retry=retry_if_exception(transient),
            wait=wait_exponential(multiplier=self.settings.poll_s, max=10.0),
            stop=stop_after_delay(self.settings.db_retry_s),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        ):
            with attempt:
                return self.step()
        raise AssertionError("unreachable: Retrying re-raises")

    def shutdown(self) -> None:
        for pool in self.pools.values():
            pool.shutdown()
        self.pools.clear()
        if self.tracker is not None:
            self.tracker.close()

    def step(self) -> bool:
        now = time.monotonic()
        if now - self._last_heartbeat >= self.settings.heartbeat_s:
            self._heartbeat()
            self._last_heartbeat = now
        if now - self._last_claim >= min(1.0, self.settings.heartbeat_s):
            self._claim()
            self._sync_statuses()
            self._last_claim = now
        self._check_probes()
        dispatched = self._dispatch()
        collected = self._collect()
        self._record_reports()
        self._finish_jobs()
        return bool(dispatched or collected)

    # --- leases ---------------------------------------------------------------------------

    def _claim(self) -> None:
        for job_id in store.claimable_jobs(self.db, self.id):
            if job_id not in self.jobs and store.claim_job(
                self.db, job_id, self.id, self.settings.lease_s
            ):
                self._adopt(job_id)

    def _heartbeat(self) -> None:
        for job_id in list(self.jobs):
            if not store.renew_lease(self.db, job_id, self.id, self.settings.lease_s):
                log.warning("lost the lease of job %s", job_id)  # its new owner's reports win
                self._drop(job_id)
            else:
                self._find_siblings(self.jobs[job_id])

    def _sync_statuses(self) -> None:
        """Pick up pause / resume / cancel requests written by the API."""
        if not self.jobs:
            return
        for job_id, status in store.job_statuses(self.db, list(self.jobs)).items():
            state = self.jobs[job_id]
            if status == "cancelled" and state.status != "cancelled":
                self._cancel_in_flight(job_id)
            state.status = status
        for request in store.pending_enqueued(self.db, list(self.jobs)):
            state = self.jobs[request["job_id"]]
            if all(request["id"] != queued["id"] for queued in state.enqueued):
                state.enqueued.append(request)

    # --- adopting a job: the designer rebuilt from rows -------------------------------------

    def _adopt(self, job_id: int) -> None:
        adopted = store.adopt_job(self.db, job_id)
        config = JobConfig.model_validate(adopted.config)
        rows = adopted.rows
        space = config.search_space.space()
        initial = self._initial(config)  # the objective's baseline first: the reference
        warm = [
            (ArchSpec.model_validate(entry["spec"]), warm_start.mutation(entry))
            for entry in adopted.warm_start
        ]
        evolution = EvolutionConfig(
            population_size=config.evolution.population_size,
            tournament_size=config.evolution.tournament_size,
            mode=config.objective.mode,
            seed=config.seed,
        )
        keys = {row["id"]: row["spec_hash"] for row in rows}
        trials = [
            Trial(
                key=row["spec_hash"],
                spec=ArchSpec.model_validate(row["spec"]),
                birth=row["birth"],
                objectives=objectives(config, row),
                feasible=row["feasible"] is not False,
                parent=keys.get(row["parent_id"]) if row["parent_id"] else None,
                mutation=row["mutation"],
            )
            for row in rows
        ]
        designer = RegularizedEvolution.from_trials(
            ArchSearchSpace(space), evolution, trials, initial=initial, warm=warm
        )
        state = JobState(
            id=job_id,
            config=config,
            designer=designer,
            status=adopted.status,
            started=time.monotonic() - adopted.elapsed_s,
            created=sum(row["mutation"] != ADDED_BY_HAND for row in rows),
            reference=initial[0].model_dump(mode="json"),
            data_checksum=adopted.data_checksum,
            warm_jobs=config.warm_start.jobs if config.warm_start else [],
            keys=keys,
            ids={key: cid for cid, key in keys.items()},
        )
        for row in rows:
            _joins_front(state, row["id"], row)
            _scores_rung0(state, row)
            if row["is_baseline"]:
                state.baseline_id = row["id"]
                if row["status"] in CANDIDATE_FINISHED:
                    state.baseline = row
            if row["status"] == "queued":
                state.retry.append(row["id"])
        for run in adopted.runs:
            state.runs[run["id"]] = run
            state.confirm_started |= run["stage"] == "confirm"
            if run["status"] == "queued":
                state.run_queue.append(run["id"])
        self._find_siblings(state)
        self.jobs[job_id] = state
        if state.baseline_id is not None:  # if a runner stopped before queueing them
            self._queue_noise_runs(state)
        self._calibrate(state)
        store.add_event(
            self.db, job_id, "job", "claimed", {"runner": self.id, "candidates": len(rows)}
        )

    def _initial(self, config: JobConfig) -> list[ArchSpec]:
        """The objective's baseline first (started before anything else), then the other
        initial baselines that lie in the space."""
        space = config.search_space.space()
        names = [config.objective.baseline, *config.evolution.initial]
        specs = [baseline(name, space) for name in dict.fromkeys(names)]
        return [specs[0], *(spec for spec in specs[1:] if space.contains(spec))]

    def _drop(self, job_id: int) -> None:
        """Forget a job whose lease another runner took. Its trials are cancelled on their
        workers; their slots stay busy until each trial's reference resolves (a slot freed
        earlier would be sent a trial while its actor still trains) and their results are
        then ignored: the new owner re-runs them."""
        self.jobs.pop(job_id, None)
        self._cancel_in_flight(job_id)
        self.reports = [r for r in self.reports if r.state.id != job_id]

    # --- dispatch -----------------------------------------------------------------------

    def _dispatch(self) -> int:
        sent = 0
        # Fair share: fewest trials in flight first, then the longest without a dispatch.
        for state in sorted(self.jobs.values(), key=lambda s: (s.in_flight, s.last_dispatch)):
            while self._can_dispatch(state):
                pool = self._pool(state)
                slot = pool.acquire()
                if slot is None:
                    break
                try:
                    started = self._start_next(state, slot)
                except BaseException:
                    slot.busy = False
                    raise
                if started is None:
                    slot.busy = False
                    break
                self._send(state, *started, slot, pool.shape)
                sent += 1
        return sent

    def _can_dispatch(self, state: JobState) -> bool:
        if state.status != "running" or state.in_flight >= state.config.workers.concurrency:
            return False
        if self._time_is_up(state) and not state.confirm_started:
            return False
        if state.baseline_first:
            return bool(state.run_queue) or (bool(state.retry) and state.in_flight == 0)
        return bool(state.retry or state.run_queue or state.enqueued) or (
            state.created < state.config.limits.max_trials and not state.exhausted
        )

    def _time_is_up(self, state: JobState) -> bool:
        hours = state.config.limits.max_hours
        return hours is not None and time.monotonic() - state.started > hours * 3600

    def _pool(self, state: JobState) -> SlotPool:
        shape = state.shape
        pool = self.pools.get(shape)
        if pool is None:
            pool = self.pools[shape] = SlotPool(
                shape, self.settings.jax_cache_dir, self.worker_factory
            )
        wanted = max(s.config.workers.concurrency for s in self.jobs.values() if s.shape == shape)
        self._next_slot = pool.grow(wanted, self._next_slot)
        return pool

    def _start_next(self, state: JobState, slot: Slot) -> tuple[int, int, dict, int | None] | None:
        """Mark the next trial running on `slot`: a retry first, then a queued run (a
        promotion, a noise seed, a confirmation), else the designer's next proposal, written
        as a running row in the same transaction. Returns (candidate id, attempt, spec, run
        id or None) or None when there is nothing to run.

        A proposal already trained by another job under the same trial settings, data and
        device kind reuses that result (copied into its own row) instead of training again.
        """
        while state.retry:
            candidate_id = state.retry[0]
            started = store.start_retry(self.db, state.id, candidate_id, slot.index)
            state.retry.popleft()  # only once the row says what happened
            if started is not None:
                return candidate_id, *started, None
        while state.run_queue:
            run_id = state.run_queue[0]
            started = store.start_run(self.db, state.id, run_id, slot.index)
            state.run_queue.popleft()
            if started is not None:
                run = state.runs[run_id]
                run.update(status="running", attempt=started[0])
                return run["candidate_id"], *started, run_id
        if state.baseline_first:
            return None
        if self._time_is_up(state):
            return None
        while state.enqueued and state.baseline_id is not None:  # the baseline is birth 0
            request = state.enqueued[0]
            if request["spec_hash"] in state.ids:  # the designer proposed it meanwhile
                store.link_enqueued(self.db, request["id"], state.ids[request["spec_hash"]])
                state.enqueued.popleft()
                continue
            proposal = state.designer.add(ArchSpec.model_validate(request["spec"]), ADDED_BY_HAND)
            started = self._start_proposal(state, proposal, slot, request)
            state.enqueued.popleft()
            if started is not None:
                return started
        while state.created < state.config.limits.max_trials:
            try:
                proposal = state.designer.ask()
            except SearchExhausted:
                state.exhausted = True
                return None
            started = self._start_proposal(state, proposal, slot)
            if started is not None:
                return started
        return None

    def _start_proposal(
        self,
        state: JobState,
        proposal: Proposal,
        slot: Slot,
        request: dict[str, Any] | None = None,
    ) -> tuple[int, int, dict, None] | None:
        """Write a proposal's row: running on `slot` (returned as `_start_next` returns it),
        or completed with a reused result (None: the slot is still free). `request`: the
        block added by hand that it is."""
        try:
            source = self._reusable(state, proposal)
            if source is None:
                candidate_id = self._write_candidate(state, proposal, slot=slot, request=request)
                return candidate_id, 1, proposal.spec.model_dump(mode="json"), None
            self._write_candidate(state, proposal, reuse=source, request=request)
            return None
        except BaseException:
            state.designer.retract(proposal.key)  # births stay those of the rows
            raise

    def _find_siblings(self, state: JobState) -> None:
        """Other jobs whose results this one may reuse: same data, trial settings and seed,
        or, for the jobs its warm start names, same data and trial settings (another seed's
        result is a measurement of the block all the same; the warm start asked for it).
        Refreshed with the heartbeat, so the per-proposal lookup is skipped when there are
        none (the common case)."""
        found = store.sibling_configs(self.db, state.id, state.data_checksum)
        trial = state.config.trial.model_dump(mode="json")
        reference = state.config.objective.baseline  # ratios are to the same baseline
        state.siblings = [
            job_id
            for job_id, config in found
            if config["trial"] == trial
            and (config["seed"] == state.config.seed or job_id in state.warm_jobs)
            and config["objective"]["baseline"] == reference
        ]

    def _reusable(self, state: JobState, proposal: Proposal) -> dict[str, Any] | None:
        if not state.siblings or state.baseline is None or not state.baseline.get("device"):
            return None  # our device is known once the baseline has run
        device = state.baseline["device"]
        return store.find_reusable(self.db, proposal.key, state.siblings, device)

    def _write_candidate(
        self,
        state: JobState,
        proposal: Proposal,
        slot: Slot | None = None,
        reuse: dict[str, Any] | None = None,
        request: dict[str, Any] | None = None,
    ) -> int:
        """The child is a row before it is dispatched (restart-safe): running on `slot`, or
        completed with a reused result; a block added by hand (`request`) is linked to it."""
        is_baseline = proposal.birth == 0
        new = store.NewCandidate(
            job_id=state.id,
            spec=proposal.spec.model_dump(mode="json"),
            spec_hash=proposal.key,
            birth=proposal.birth,
            parent_id=state.ids.get(proposal.parent) if proposal.parent else None,
            mutation=proposal.mutation,
            is_baseline=is_baseline,
            note=request["note"] if request else None,
        )
        enqueued = request["id"] if request else None
        feasible = self._feasible(state, reuse, is_baseline=False) if reuse else None
        if reuse is None:
            candidate_id = store.insert_running(self.db, new, slot.index, enqueued)
        else:
            candidate_id = store.insert_reused(self.db, new, reuse, feasible, enqueued)
        state.keys[candidate_id] = proposal.key
        state.ids[proposal.key] = candidate_id
        state.created += request is None  # blocks added by hand are extra to max_trials
        if is_baseline:
            state.baseline_id = candidate_id
            self._queue_noise_runs(state)
        if reuse is not None:
            row_values = {**reuse, "status": "completed", "feasible": feasible}
            _joins_front(state, candidate_id, row_values)
            state.designer.tell(
                proposal.key, objectives(state.config, row_values), feasible=feasible is not False
            )
        return candidate_id

    def _send(
        self,
        state: JobState,
        candidate_id: int,
        attempt: int,
        spec: dict[str, Any],
        run_id: int | None,
        slot: Slot,
        shape: Shape,
    ) -> None:
        run = state.runs[run_id] if run_id is not None else None
        request = {
            "candidate_id": candidate_id,
            "attempt": attempt,
            "run_id": run_id,
            "spec": spec,
            "budget": run["budget"] if run else state.config.trial.budget(),
            "data": state.config.dataset,
            "data_checksum": state.data_checksum,
            "seed": run["seed"] if run else state.config.seed,
            "config": self._trainer_config(state, candidate_id, run),
            "reference": state.reference,
        }
        ref = slot.actor.run.remote(request)
        self.in_flight[ref] = InFlight(state.id, candidate_id, attempt, slot, shape, run_id)
        state.in_flight += 1
        state.last_dispatch = time.monotonic()

    def _trainer_config(
        self, state: JobState, candidate_id: int, run: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The trial's settings with the paper's early stop at `hurdle.at_fraction`: in the
        constrained mode a step-time ratio over the limit, or a smoothed loss above the
        baseline's x (1 + margin); in the pareto mode the loss hurdle prunes only a candidate
        that is also not faster than the baseline (it could not join the front's fast end).
        Runs of higher rungs and of confirmation train to the end (the hurdles are the
        search's); confirmation interleaves the baseline's timing windows with training."""
        config = state.config.trial.trainer_config()
        hurdle, objective = state.config.hurdle, state.config.objective
        if run is not None and run["stage"] == "confirm":
            windows = state.config.confirm.reference_windows
            config["reference_windows"] = windows
            config["reference_steps"] = max(config["reference_steps"], 4 * windows)
            return config
        if (run is not None and run["rung"] > 0) or not hurdle.enabled:
            return config
        if candidate_id == state.baseline_id:
            config["report_fractions"] = [hurdle.at_fraction, 0.5, 1.0]
            return config
        if objective.mode == "constrained":
            config["step_hurdle"] = [hurdle.at_fraction, objective.max_step_time_ratio]
        else:
            config["loss_hurdle_min_ratio"] = 1.0
        if state.baseline and state.baseline["smoothed_loss_at"]:
            loss = state.baseline["smoothed_loss_at"].get(f"{hurdle.at_fraction:g}")
            if loss is not None:
                margin = state.margin if hurdle.margin == "auto" else hurdle.margin
                config["hurdles"] = [[hurdle.at_fraction, loss * (1 + margin)]]
        return config

    # --- results --------------------------------------------------------------------------

    def _collect(self) -> int:
        if not self.in_flight:
            return 0
        refs = list(self.in_flight)
        ready, _ = ray.wait(refs, num_returns=1, timeout=self.settings.poll_s)
        if ready:  # and whatever else has finished meanwhile
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            flight = self.in_flight.pop(ref)
            flight.slot.busy = False
            state = self.jobs.get(flight.job_id)
            if state is not None:
                state.in_flight -= 1
            try:
                payload = ray.get(ref)
            except ActorUnavailableError as exc:
                # Maybe only unreachable: its trial may still run. Stop it, and hold the
                # slot until the actor says it is idle, so a retry never lands on it busy.
                flight.slot.actor.cancel.remote(flight.candidate_id, flight.attempt, flight.run_id)
                self._probe(flight.slot)
                payload, error = None, exc
            except CRASHES as exc:
                self._probe(flight.slot)
                payload, error = None, exc
            except RayTaskError as exc:
                if _refused(exc):  # the slot was busy: a retry, not a failure
                    self._probe(flight.slot)
                payload, error = None, exc
            else:
                error = None
            if state is not None:
                self.reports.append(Report(state, flight, payload, error))
        return len(ready)

    def _record_reports(self) -> None:
        """Record what finished; a report leaves memory only once its rows are written."""
        while self.reports:
            report = self.reports[0]
            if report.state.id not in self.jobs:
                self.reports.pop(0)
            elif report.error is None:
                batch = [r for r in self.reports if r.error is None]
                self._record([(r.state, r.flight, r.payload) for r in batch])
                self.reports = [r for r in self.reports if r.error is not None]
            elif isinstance(report.error, RayTaskError) and _refused(report.error):
                self._requeue(report.state, report.flight, refused=True)
                self.reports.pop(0)
            elif isinstance(report.error, CRASHES):
                self._crashed(report.state, report.flight, report.error)
                self.reports.pop(0)
            else:
                reason = f"ray: {report.error}"[:1000]
                payload = {"result": {"status": "failed", "reason": reason}}
                self._record([(report.state, report.flight, payload)])
                self.reports.pop(0)

    def _probe(self, slot: Slot, since: float | None = None) -> None:
        """Hold a slot until its actor answers that it is idle: after a crash, until Ray has
        restarted it (a retry sent to a restarting actor would fail again and use up an
        attempt); after it was unreachable or refused a trial, until its trial has ended."""
        slot.busy = True
        self.probing[slot.actor.info.remote()] = (
            slot,
            time.monotonic() if since is None else since,
        )

    def _check_probes(self) -> None:
        """Free the slots whose actor answered that it is idle; give a new actor to those
        that stayed silent or kept failing for `probe_timeout_s` (their node died, or the
        actor cannot start), or whose actor is dead for good."""
        if not self.probing:
            return
        ready, _ = ray.wait(list(self.probing), num_returns=len(self.probing), timeout=0)
        answers = {}
        for ref in ready:
            try:
                answers[ref] = not ray.get(ref).get("busy", False)
            except ActorDiedError as exc:
                answers[ref] = None if getattr(exc, "preempted", False) else "dead"
            except RayError:
                answers[ref] = None
        now = time.monotonic()
        for ref, (slot, since) in list(self.probing.items()):
            answer = answers.get(ref)
            if answer is True:
                del self.probing[ref]
                slot.busy = False
            elif answer == "dead" or now - since > self.settings.probe_timeout_s:
                del self.probing[ref]
                self._replace(slot)
            elif ref in answers:  # answered busy or failed: ask again
                del self.probing[ref]
                self._probe(slot, since)

    def _replace(self, slot: Slot) -> None:
        """Give a slot whose actor stopped answering a new actor (Ray places it wherever
        the resources are) and free it; the old one is killed for good."""
        pool = next((p for p in self.pools.values() if slot in p.slots), None)
        if pool is None:
            return
        log.warning("worker slot %s did not answer for %g s: replacing its actor",
                    slot.index, self.settings.probe_timeout_s)  # fmt: skip
        pool.replace(slot)
        slot.busy = False

    def _requeue(self, state: JobState, flight: InFlight, refused: bool = False) -> bool:
        """Back to the queue (same row). A trial the worker refused never ran: its attempt
        is given back."""
        reason = "the worker was still busy" if refused else "the worker died"
        requeued = store.requeue(
            self.db,
            state.id,
            flight.candidate_id,
            flight.attempt,
            reason,
            state.config.workers.max_attempts,
            refund=refused,
            run_id=flight.run_id,
        )
        if requeued and flight.run_id is not None:
            state.runs[flight.run_id]["status"] = "queued"
            if state.status != "cancelled":
                state.run_queue.append(flight.run_id)
        elif requeued and state.status != "cancelled":
            state.retry.append(flight.candidate_id)
        return requeued

    def _crashed(self, state: JobState, flight: InFlight, exc: Exception) -> None:
        """The worker died mid-trial: retry as a new attempt, or give up after max_attempts."""
        reason = f"worker died during attempt {flight.attempt}: {type(exc).__name__}"
        if state.status != "cancelled" and self._requeue(state, flight):
            return
        status = "cancelled" if state.status == "cancelled" else "failed"
        result = {
            "status": status,
            "reason": f"{reason} (attempt {flight.attempt} of {state.config.workers.max_attempts})",
        }
        self._record([(state, flight, {"result": result})])

    def _record(self, reports: list[tuple[JobState, InFlight, dict[str, Any]]]) -> None:
        """Record finished trials in one transaction; each only if it is still the
        candidate's current, running attempt. Memory (front, designer) follows the rows."""
        states, outcomes = {}, []
        for state, flight, payload in reports:
            result = payload["result"]
            values = result_values(result)
            values.update(
                status=TRAINER_STATUS.get(result["status"], result["status"]),
                finished_at=utcnow(),
                node_id=payload.get("node_id"),
                device_kind=device_kind(result.get("device")),
            )
            if flight.run_id is None:
                values["feasible"] = self._feasible(
                    state, values, is_baseline=flight.candidate_id == state.baseline_id
                )
            states[flight.candidate_id] = state
            outcomes.append(
                store.Outcome(
                    state.id,
                    flight.candidate_id,
                    flight.attempt,
                    values,
                    result.get("curve") or [],
                    run_id=flight.run_id,
                )
            )
        fronts = {id(state): list(state.front) for state in states.values()}

        def front_event(outcome: store.Outcome) -> list[store.Event]:
            state = states[outcome.candidate_id]
            if outcome.run_id is not None:
                return []
            if not _joins_front(state, outcome.candidate_id, outcome.values):
                return []
            front = [point[2] for point in state.front]
            return [("front", "changed", {"candidate_id": outcome.candidate_id, "front": front})]

        try:
            recorded = store.record_outcomes(self.db, outcomes, front_event)
        except BaseException:
            for state in states.values():  # nothing was written: neither was the front
                state.front = fronts[id(state)]
            raise
        for outcome in recorded:
            if self.tracker is not None:
                self.tracker.finished(
                    Finished(outcome.job_id, outcome.candidate_id, outcome.run_id)
                )
            state = states[outcome.candidate_id]
            if outcome.run_id is not None:
                state.runs[outcome.run_id].update(outcome.values)
                continue
            if outcome.candidate_id == state.baseline_id:
                state.baseline = outcome.values
            _scores_rung0(state, {"id": outcome.candidate_id, **outcome.values})
            state.designer.tell(
                state.keys[outcome.candidate_id],
                objectives(state.config, outcome.values),
                feasible=outcome.values["feasible"] is not False,
            )
        for state in {id(s): s for s in states.values()}.values():
            self._calibrate(state)
            self._promote(state)

    def _feasible(self, state: JobState, values: dict[str, Any], is_baseline: bool) -> bool | None:
        """Constrained mode: the step-time ratio to the baseline timed on the same slot is
        within max_step_time_ratio (the baseline is its own reference: ratio 1)."""
        limit = state.config.objective.max_step_time_ratio
        if state.config.objective.mode != "constrained":
            return True
        if is_baseline:
            return limit >= 1.0
        ratio = values.get("step_time_ratio")
        return None if ratio is None else ratio <= limit

    # --- ending jobs ----------------------------------------------------------------------

    def _cancel_in_flight(self, job_id: int) -> None:
        for flight in self.in_flight.values():
            if flight.job_id == job_id:
                flight.slot.actor.cancel.remote(flight.candidate_id, flight.attempt, flight.run_id)

    def _finish_jobs(self) -> None:
        for state in list(self.jobs.values()):
            time_up = self._time_is_up(state) and not state.confirm_started
            if state.status == "running" and time_up and state.in_flight:
                self._cancel_in_flight(state.id)
            if state.in_flight or any(r.state is state for r in self.reports):
                continue
            ending = self._ending(state)
            if ending is None:
                continue
            status, error = ending
            store.finish_job(self.db, state.id, self.id, status, error)  # if still ours
            self.jobs.pop(state.id)
        self._release_idle_pools()

    def _ending(self, state: JobState) -> tuple[str, str | None] | None:
        if state.status == "cancelled":
            return ("cancelled", None)
        if state.status == "paused":
            return None
        baseline = state.baseline
        constrained = state.config.objective.mode == "constrained"
        if constrained and baseline is not None and baseline["status"] != "completed":
            # The constraint is relative to the baseline's step time: nothing to search for.
            return (
                "failed",
                f"the baseline did not complete ({baseline['status']}): {baseline.get('reason')}",
            )
        if self._time_is_up(state) and not state.confirm_started:
            # The search and the ladder end here: what is queued of them will not run.
            store.cancel_queued_runs(self.db, state.id, "the job's time limit (limits.max_hours)")
            state.run_queue.clear()
            state.retry.clear()  # finish_job cancels their rows
        elif state.retry or state.run_queue or state.enqueued or not self._search_done(state):
            return None
        else:
            self._promote(state)
            if state.run_queue:
                return None
        if state.config.confirm is not None and not state.confirm_started:
            state.confirm_started = True
            if self._start_confirm(state):
                return None
        return ("completed", None)

    def _search_done(self, state: JobState) -> bool:
        return (
            state.created >= state.config.limits.max_trials
            or state.exhausted
            or self._time_is_up(state)
        )

    # --- the fidelity ladder, noise calibration and confirmation ----------------------------

    def _queue_runs(self, state: JobState, runs: list[store.NewRun]) -> None:
        for run in store.insert_runs(self.db, runs):
            state.runs[run["id"]] = run
            state.run_queue.append(run["id"])

    def _queue_noise_runs(self, state: JobState) -> None:
        """The baseline's noise seeds (fidelity.noise_seeds), at rung 0 with its budget."""
        budget = state.config.trial.budget()
        self._queue_runs(
            state,
            [
                store.NewRun(state.id, state.baseline_id, "rung", 0, seed, "noise", budget)
                for seed in ladder.noise_seeds(state.config)
            ],
        )

    def _rung_scores(self, state: JobState, rung: int) -> list[Score]:
        """Candidates whose runs of `rung` have all finished and produced metrics: their
        means over seeds (rung 0: their own trials)."""
        if rung == 0:
            return list(state.rung0.values())
        runs = (
            run for run in state.runs.values() if run["stage"] == "rung" and run["rung"] == rung
        )
        return ladder.scores_from_runs(runs, state.config, state.baseline_id)

    def _rung_final(self, state: JobState, rung: int) -> bool:
        """Rung `rung` can get no more results: the search is over and nothing of it, or of
        a rung below it, is queued or running."""
        if not self._search_done(state) or state.retry:
            return False
        if any(f.job_id == state.id and f.run_id is None for f in self.in_flight.values()):
            return False
        return not any(
            run["stage"] == "rung"
            and run["rung"] <= rung
            and run["status"] in ("queued", "running")
            for run in state.runs.values()
        )

    def _promote(self, state: JobState) -> None:
        """Queue the promotions the results so far call for, rung by rung."""
        rungs = state.config.fidelity.rungs
        if not rungs or state.status != "running" or state.confirm_started:
            return
        for rung in range(len(rungs)):
            above = {
                run["candidate_id"]: run["origin"]
                for run in state.runs.values()
                if run["stage"] == "rung" and run["rung"] == rung + 1
            }
            chosen = ladder.promotions(
                state.config,
                rung,
                self._rung_scores(state, rung),
                above,
                final=self._rung_final(state, rung),
            )
            budget = ladder.scaled_budget(
                state.config.trial.budget(), rungs[rung].budget_multiplier
            )
            self._queue_runs(
                state,
                [
                    store.NewRun(state.id, p.candidate_id, "rung", p.rung, seed, p.origin, budget)
                    for p in chosen
                    for seed in ladder.rung_seeds(state.config, p.rung)
                ],
            )

    def _calibrate(self, state: JobState) -> None:
        """hurdle.margin: auto: once the baseline's own trial and its noise seeds have
        finished, set the margin from their spread at the hurdle's fraction."""
        if not state.calibrating or state.baseline is None:
            return
        noise = [r for r in state.runs.values() if r["origin"] == "noise"]
        if any(run["status"] not in CANDIDATE_FINISHED for run in noise):
            return
        key = f"{state.config.hurdle.at_fraction:g}"
        losses = [
            (row.get("smoothed_loss_at") or {}).get(key)
            for row in (state.baseline, *noise)
            if row.get("status") == "completed"
        ]
        measured = ladder.auto_margin(losses)
        state.margin = measured if measured is not None else 0.1
        store.add_event(
            self.db,
            state.id,
            "job",
            "calibrated",
            {"margin": state.margin, "measured": measured is not None, "losses": losses},
        )

    def _start_confirm(self, state: JobState) -> bool:
        """Queue the confirmation: the best of the highest rung with results, and the
        baselines, each with the same fresh seeds at the longer budget. False if there is
        nothing to confirm."""
        confirm = state.config.confirm
        top = max(
            (r for r in range(len(state.config.fidelity.rungs) + 1) if self._rung_scores(state, r)),
            default=0,
        )
        selected = [
            s.candidate_id
            for s in ladder.confirm_selection(state.config, self._rung_scores(state, top))
        ]
        space = state.config.search_space.space()
        baselines = [state.baseline_id] + [
            state.ids.get(spec_hash(baseline(name, space))) for name in confirm.baselines
        ]
        chosen = [c for c in dict.fromkeys([*selected, *baselines]) if c is not None]
        if not selected or state.baseline_id is None:
            store.add_event(self.db, state.id, "job", "confirm", {"candidates": [], "rung": top})
            return False
        budget = ladder.scaled_budget(state.config.trial.budget(), confirm.budget_multiplier)
        self._queue_runs(
            state,
            [
                store.NewRun(state.id, candidate_id, "confirm", top, seed, "confirm", budget)
                for candidate_id in chosen
                for seed in ladder.confirm_seeds(state.config)
            ],
        )
        store.add_event(self.db, state.id, "job", "confirm", {"candidates": chosen, "rung": top})
        return True

    def _release_idle_pools(self) -> None:
        wanted = {state.shape for state in self.jobs.values()}
        for shape in list(self.pools):
            busy = any(flight.shape == shape for flight in self.in_flight.values())
            if shape not in wanted and not busy:
                pool = self.pools.pop(shape)
                self.probing = {
                    ref: probe for ref, probe in self.probing.items() if probe[0] not in pool.slots
                }
                pool.shutdown()


def _scores_rung0(state: JobState, row: dict[str, Any]) -> None:
    """Keep a candidate's own trial's metrics for the ladder's ranking at rung 0."""
    loss, ratio = row.get("val_loss"), row.get("step_time_ratio")
    if row.get("status") != "completed" or loss is None or ratio is None:
        return
    perplexity = row.get("perplexity") or math.exp(loss)
    state.rung0[row["id"]] = Score(
        row["id"],
        loss,
        perplexity,
        ratio,
        row.get("feasible") is not False,
        row["id"] == state.baseline_id or bool(row.get("is_baseline")),
    )


def _joins_front(state: JobState, candidate_id: int, row: dict[str, Any]) -> bool:
    """Add a finished candidate to the job's front if no member dominates it."""
    ppl, step = row.get("perplexity"), row.get("step_time_ratio")
    if row.get("status") != "completed" or row.get("feasible") is False or None in (ppl, step):
        return False
    if any(p <= ppl and s <= step for p, s, _ in state.front):
        return False
    state.front = [m for m in state.front if not (ppl <= m[0] and step <= m[1])]
    state.front.append((ppl, step, candidate_id))
    state.front.sort(key=lambda m: m[1])
    return True
