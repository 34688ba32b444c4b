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
from collections import OrderedDict
from typing import Any

import ray

from search_space.specs import ArchSpec
from workers import cores

# Of a fractional GPU share's memory, what its actor's XLA may use: the rest is left for
# each process's CUDA context and the allocator's fragmentation.
GPU_MEMORY_USABLE = 0.9


class TrialWorker:
    """Runs trials one after another; keeps datasets and compiled programs across trials."""

    def __init__(
        self,
        slot: int,
        cpus_per_slot: int = 1,
        cache_dir: str | None = None,
        program_cache_size: int = 32,
    ):
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
        # Trials may share a GPU: don't let the first one take 75% of its memory, and cap a
        # fractional share's actor at its share of the memory (4 actors at 0.25 each).
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        gpus = float(assigned.get("GPU", 0.0))
        self.gpu_share = gpus if 0 < gpus < 1 else None
        if self.gpu_share is not None:
            fraction = self.gpu_share * GPU_MEMORY_USABLE
            os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{fraction:.3f}"
        from workers import data, device, trainer  # JAX is imported here, after pinning

        # Warm up before the first trial (Ray queues calls until this returns): devices
        # found, the fingerprint read, the matmul peak (the MFU denominator) measured, rather
        # than inside the first trial's wall time.
        device.enable_compilation_cache(cache_dir)
        device.fingerprint()
        device.matmul_peak_flops(dtype=device.default_precision())
        self._data = data
        self._trainer = trainer
        self._cache_dir = cache_dir
        self._programs = LRUCache(program_cache_size)  # compiled steps, by program_key
        self._datasets = DatasetCache(data)
        self._cancelled: set[tuple[int, int, int | None]] = set()
        self._busy = threading.Lock()

    def info(self) -> dict[str, Any]:
        from workers.device import fingerprint, matmul_peak_flops

        return {
            "slot": self.slot,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "cores": sorted(os.sched_getaffinity(0)) if self.cores else [],  # as pinned
            "cores_shared": self.cores_shared,
            "busy": self._busy.locked(),  # a trial is running (the runner waits for idle)
            "device": fingerprint(),
            # the matmul peak (the MFU denominator) was measured before any trial
            "warm": matmul_peak_flops.cache_info().currsize > 0,
            "gpu_share": self.gpu_share,
            "memory_fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
        }

    def cancel(self, candidate_id: int, attempt: int, run_id: int | None = None) -> None:
        """Stop that trial at its next step (or before it starts, if it has not)."""
        self._cancelled.add((candidate_id, attempt, run_id))

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        """Train one trial. Request: candidate_id, attempt, spec (JSON object), budget
        ({"seconds": s} | {"steps": n} | {"flops": f}, or budget_s), data (source string),
        seed, and optionally run_id (a run of the candidate other than its own trial), config
        (TrainConfig fields) and reference (the spec whose step time, measured on this slot,
        is the trial's unit of step time)."""
        key = (request["candidate_id"], request["attempt"], request.get("run_id"))
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
            "run_id": key[2],
            "node_id": ray.get_runtime_context().get_node_id(),
            "slot": self.slot,
            "result": result,
        }

    def _run(self, request: dict[str, Any], key: tuple[int, int, int | None]) -> dict[str, Any]:
        trainer = self._trainer
        try:
            spec = ArchSpec.model_validate(request["spec"])
            source = request["data"]
            dataset = self._datasets.get(source)
            expected = request.get("data_checksum")
            if expected and dataset.checksum != expected:
                return trainer.TrialResult(
                    status="failed",
                    reason=f"dataset {source} changed since the job was submitted: checksum "
                    f"{dataset.checksum} != {expected}",
                ).to_json()
            config_fields = {  # JSON lists back to the frozen config's tuples
                name: _tuples(value) for name, value in (request.get("config") or {}).items()
            }
            reference = request.get("reference")
            result = trainer.train_proxy(
                spec,
                trainer.Budget(**request.get("budget", {"seconds": request.get("budget_s")})),
                dataset,
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
            if self.gpu_share is not None:  # timed beside other trials on one GPU: say so
                out["device"] = {**out["device"], "gpu_share": self.gpu_share}
            return out
        except Exception as exc:
            failed = trainer.TrialResult(
                status="failed",
                reason=f"{type(exc).__name__}: {exc}"[:1000],
                traceback=traceback.format_exc(),
            )
            return failed.to_json()


class LRUCache(OrderedDict):
    """A mapping that keeps its ``maxsize`` most recently used entries (``get`` and ``[]``
    count as a use), evicting the least recently used one when a new key would exceed it."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        super().__init__()
        self.maxsize = maxsize

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)


class DatasetCache:
    """Loaded datasets keyed by (source, checksum), so that a changed file is reloaded.

    A source is re-hashed only when its `source_signature` (sizes, inodes, modification times)
    differs from the one seen when it was last loaded; a changed source replaces its entry.
    """

    def __init__(self, data: Any):
        self._data = data
        self._datasets: dict[tuple[str, str], Any] = {}
        self._seen: dict[str, tuple[tuple, str]] = {}  # source -> (signature, checksum)

    def get(self, source: str) -> Any:
        signature = self._data.source_signature(source)
        seen = self._seen.get(source)
        if seen is not None and seen[0] == signature and (source, seen[1]) in self._datasets:
            return self._datasets[(source, seen[1])]
        # Accepted when the job was submitted: the server's size cap and roots applied there.
        dataset = self._data.load_dataset(source, max_text_bytes=None)
        for key in [key for key in self._datasets if key[0] == source]:
            del self._datasets[key]
        self._datasets[(source, dataset.checksum)] = dataset
        self._seen[source] = (signature, dataset.checksum)
        return dataset

    def __len__(self) -> int:
        return len(self._datasets)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


def worker_actor(
    slot: int,
    cpus_per_slot: float = 1,
    gpus_per_slot: float = 0,
    resources: dict[str, float] | None = None,
    cache_dir: str | None = None,
    program_cache_size: int = 32,
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
    return remote.remote(slot, max(1, math.ceil(cpus_per_slot)), cache_dir, program_cache_size)
