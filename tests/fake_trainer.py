"""A trainer for runner tests whose truth is known: a block's loss is a fixed function of its
spec hash, so the controller's logic (what it dispatches, reuses, records) is what is under
test. Ray ships it by value (its workers cannot import the tests)."""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable

from nas_service.job_config import JobConfig
from nas_service.runner import Runner
from nas_service.settings import Settings


def true_loss(spec_hash: str) -> float:
    return 3.0 + int(spec_hash[:8], 16) / 2**32


def exact(request: dict) -> tuple[float, float]:
    """(loss, step-time ratio) of a block: its true loss, and a ratio that grows with it."""
    from search_space import ArchSpec, spec_hash

    loss = true_loss(spec_hash(ArchSpec.model_validate(request["spec"])))
    return loss, loss / 3.0


def fake_factory(measure: Callable[[dict], tuple[float, float]] = exact):
    """Actors whose trial of a request reports `measure(request)`: (loss, step-time ratio)."""
    from ray import cloudpickle

    # Ray's workers cannot import the tests: ship these functions, and measure's, by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(sys.modules[measure.__module__])

    def factory(slot: int, **_: object):
        import ray

        class FakeTrainer:  # defined here so that Ray ships it by value to the worker
            def info(self) -> dict:
                return {"slot": slot, "busy": False}

            def cancel(self, *_: object) -> None:
                pass

            def run(self, request: dict) -> dict:
                loss, ratio = measure(request)
                return {
                    "candidate_id": request["candidate_id"],
                    "attempt": request["attempt"],
                    "run_id": request.get("run_id"),
                    "node_id": "fake",
                    "slot": slot,
                    "result": {
                        "status": "ok",
                        "val_loss": loss,
                        "perplexity": math.exp(loss),
                        "steps": 10,
                        "train_s": 1.0,
                        "step_time_ms": 10.0 * ratio,
                        "reference_step_time_ms": 10.0,
                        "step_time_ratio": ratio,
                        "smoothed_loss_at": {"0.25": loss + 1, "0.5": loss + 0.5, "1": loss},
                        "device": {"platform": "cpu", "host_cpu": "fake"},
                    },
                }

        return ray.remote(FakeTrainer).options(num_cpus=0, max_concurrency=2).remote()

    return factory


def fake_job(**sections) -> JobConfig:
    base = {
        "name": "fake",
        "dataset": "builtin:stdlib",
        "limits": {"max_trials": 6},
        "evolution": {"population_size": 4, "tournament_size": 2},
        "workers": {"concurrency": 1},
        "hurdle": {"enabled": False},
    }
    return JobConfig.model_validate({**base, **sections})


def run_fake(db, timeout: float = 120) -> None:
    """Run every queued job to its end with the fake trainer."""
    runner = Runner(
        Settings(runner_id="fake", heartbeat_s=0.5, poll_s=0.02), db, worker_factory=fake_factory()
    )
    thread = threading.Thread(target=runner.run, args=(threading.Event(), True), daemon=True)
    thread.start()
    thread.join(timeout=timeout)
    assert not thread.is_alive(), "the runner did not finish its jobs"
