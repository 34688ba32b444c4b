"""Worker slots: long-lived Ray actors, one per trial slot, grouped by resource shape.

Jobs that ask for the same resources per trial (CPUs, GPUs, custom resources such as TPU)
share one pool, so several running jobs share the slots; Ray places each actor where its
resources are and restarts it if it dies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from nas_service.settings import get_settings
from workers.actor import worker_actor

Shape = tuple[float, float, tuple[tuple[str, float], ...]]  # cpus, gpus, custom resources


def shape_of(cpus: float, gpus: float, resources: dict[str, float]) -> Shape:
    return (cpus, gpus, tuple(sorted(resources.items())))


@dataclass
class Slot:
    index: int
    actor: Any
    busy: bool = False


@dataclass
class SlotPool:
    shape: Shape
    cache_dir: str | None
    # Starts one actor; `worker_actor` trains, a benchmark may pass a no-op evaluator.
    factory: Callable[..., Any] = worker_actor
    slots: list[Slot] = field(default_factory=list)
    # Compiled programs each actor keeps (an LRU); NAS_PROGRAM_CACHE_SIZE by default.
    program_cache_size: int = field(default_factory=lambda: get_settings().program_cache_size)

    def grow(self, size: int, next_index: int) -> int:
        """Start actors until the pool has `size`; returns the next free global slot index."""
        while len(self.slots) < size:
            self.slots.append(Slot(next_index, self._start(next_index)))
            next_index += 1
        return next_index

    def replace(self, slot: Slot) -> None:
        """A new actor for `slot` (same index); the old one is killed for good."""
        with contextlib.suppress(ValueError):  # already gone
            ray.kill(slot.actor, no_restart=True)
        slot.actor = self._start(slot.index)

    def _start(self, index: int) -> Any:
        cpus, gpus, resources = self.shape
        return self.factory(
            slot=index,
            cpus_per_slot=cpus,
            gpus_per_slot=gpus,
            resources=dict(resources),
            cache_dir=self.cache_dir,
        )

    def acquire(self) -> Slot | None:
        for slot in self.slots:
            if not slot.busy:
                slot.busy = True
                return slot
        return None

    @property
    def free(self) -> int:
        return sum(not slot.busy for slot in self.slots)

    def shutdown(self) -> None:
        for slot in self.slots:
            ray.kill(slot.actor, no_restart=True)
        self.slots.clear()
