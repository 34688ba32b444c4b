"""The Ray worker actor: one long-lived process per trial slot, running trials in turn.

This module must not import JAX at top level: on CPUs the actor pins itself to cores of
its own (`workers.cores`, chosen per node) with `os.sched_setaffinity` *before* JAX starts
(XLA sizes its thread pool from the affinity mask and ignores OMP_NUM_THREADS), so concurrent
trials do not fight over cores.

Create it with `worker_actor(...)`: it runs with `max_concurrency=2`, so `cancel` is served
while `run` is busy; the trainer checks the cancel flag between steps.
"""

from __future__ import annotations

import math
import os
import threading
import traceback
from typing import Any

import ray

from search_space.specs import ArchSpec
from workers import cores


class TrialWorker:
    """Runs trials one after another; keeps datasets and compiled programs across trials."""

    def __init__(self, slot: int, cpus_per_slot: int = 1, cache_dir: str | None = None):
        self.slot = slot
        assigned = ray.get_runtime_context().get_assigned_resources()
        self.accelerated = any(name in assigned for name in ("GPU", "TPU"))
        self.cores: list[int] = []
        self.cores_shared = False
        if not self.accelerated and hasattr(os, "sched_setaffinity"):
            # Locked for the life of the process: the OS frees them when it dies.
            self._core_lease = cores.allocate(cpus_per_slot)
            self.cores, self.cores_shared = self._core_lease.cores, self._core_lease.shared
            os.sched_setaffinity(0, self.cores)
        # Trials may share a GPU: don't let the first one take 75% of its memory.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        from workers import data, trainer  # JAX is imported here, after pinning

        self._data = data
        self._trainer = trainer
        self._cache_dir = cache_dir
        self._programs: dict[tuple, Any] = {}
        self._datasets: dict[str, Any] = {}
        self._cancelled: set[tuple[int, int]] = set()
        self._busy = threading.Lock()

    def info(self) -> dict[str, Any]:
        from workers.device import fingerprint

        return {
            "slot": self.slot,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "cores": sorted(os.sched_getaffinity(0)) if self.cores else [],  # as pinned
            "cores_shared": self.cores_shared,
            "device": fingerprint(),
        }

    def cancel(self, candidate_id: int, attempt: int) -> None:
        """Stop that trial at its next step (or before it starts, if it has not)."""
        self._cancelled.add((candidate_id, attempt))

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        """Train one trial. Request: candidate_id, attempt, spec (JSON object), budget
        ({"seconds": s} | {"steps": n} | {"flops": f}, or budget_s), data (source string),
        seed, and optionally config (TrainConfig fields) and reference (the spec whose step
        time, measured on this slot, is the trial's unit of step time)."""
        key = (request["candidate_id"], request["attempt"])
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(f"worker slot {self.slot} is already running a trial")
        try:
            result = self._run(request, key)
        finally:
            self._busy.release()
            self._cancelled.discard(key)
        return {
            "candidate_id": key[0],
            "attempt": key[1],
            "node_id": ray.get_runtime_context().get_node_id(),
            "slot": self.slot,
            "result": result,
        }

    def _run(self, request: dict[str, Any], key: tuple[int, int]) -> dict[str, Any]:
        trainer = self._trainer
        try:
            spec = ArchSpec.model_validate(request["spec"])
            source = request["data"]
            if source not in self._datasets:
                self._datasets[source] = self._data.load_dataset(source)
            config_fields = {  # JSON lists back to the frozen config's tuples
                name: _tuples(value) for name, value in (request.get("config") or {}).items()
            }
            reference = request.get("reference")
            result = trainer.train_proxy(
                spec,
                trainer.Budget(**request.get("budget", {"seconds": request.get("budget_s")})),
                self._datasets[source],
                seed=int(request.get("seed", 0)),
                config=trainer.TrainConfig(**config_fields),
                reference=ArchSpec.model_validate(reference) if reference else None,
                should_stop=lambda: key in self._cancelled,
                programs=self._programs,
                cache_dir=self._cache_dir,
            )
            out = result.to_json()
            if self.cores_shared:  # timed on cores other trials use too: say so
                out["device"] = {**out["device"], "cores_shared": True}
            return out
        except Exception as exc:
            failed = trainer.TrialResult(
                status="failed",
                reason=f"{type(exc).__name__}: {exc}"[:1000],
                traceback=traceback.format_exc(),
            )
            return failed.to_json()


def _tuples(value: Any) -> Any:
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


def worker_actor(
    slot: int,
    cpus_per_slot: float = 1,
    gpus_per_slot: float = 0,
    resources: dict[str, float] | None = None,
    cache_dir: str | None = None,
    **options: Any,
) -> Any:
    """Start a `TrialWorker` actor holding its slot's resources; Ray restarts it if it dies."""
    remote = ray.remote(TrialWorker).options(
        num_cpus=cpus_per_slot,
        num_gpus=gpus_per_slot,
        resources=resources or {},
        max_concurrency=2,
        max_restarts=-1,
        **options,
    )
    return remote.remote(slot, max(1, math.ceil(cpus_per_slot)), cache_dir)
