"""The Ray worker actor on a local Ray: trials in a row, failures, cancellation, pinning."""

import os
import time

import pytest

from search_space import baseline
from workers.actor import worker_actor
from workers.cores import LOCK_DIR_ENV


def request(candidate_id: int, source: str, budget: float = 1.0, name: str = "dense", **extra):
    return {
        "candidate_id": candidate_id,
        "attempt": 1,
        "spec": baseline(name).model_dump(mode="json"),
        "budget_s": budget,
        "data": source,
        "seed": 0,
        **extra,
    }


@pytest.fixture(scope="module")
def actor(ray_local, tmp_path_factory):
    locks = str(tmp_path_factory.mktemp("core-locks"))  # cores of its own, whatever else runs
    handle = worker_actor(slot=1, cpus_per_slot=1, runtime_env={"env_vars": {LOCK_DIR_ENV: locks}})
    yield handle
    ray_local.kill(handle)


def test_actor_runs_trials_in_a_row_and_survives_a_failure(actor, ray_local, shakespeare):
    info = ray_local.get(actor.info.remote())
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) > 1:
        assert len(info["cores"]) == 1 and info["pid"] != os.getpid()
        assert info["cores"] == [min(os.sched_getaffinity(0))] and not info["cores_shared"]
    bad = ray_local.get(actor.run.remote(request(1, "text:/nonexistent/corpus.txt")))
    assert bad["candidate_id"] == 1 and bad["result"]["status"] == "failed"
    assert "does not exist" in bad["result"]["reason"] and bad["result"]["traceback"]
    first = ray_local.get(actor.run.remote(request(2, shakespeare)))
    second = ray_local.get(actor.run.remote(request(3, shakespeare)))
    assert first["result"]["status"] == second["result"]["status"] == "ok"
    assert first["result"]["compile_s"] > 0 and second["result"]["compile_s"] == 0.0
    assert first["node_id"] == info["node_id"] and first["slot"] == 1
    config = {"hurdles": [[0.25, 0.1]], "batch_size": 8}
    pruned = ray_local.get(actor.run.remote(request(4, shakespeare, budget=2.0, config=config)))
    assert pruned["result"]["status"] == "pruned"


def test_cancel_stops_a_running_trial_within_seconds(actor, ray_local, shakespeare):
    ray_local.get(actor.run.remote(request(10, shakespeare, budget=0.2)))  # compiled and warm
    running = actor.run.remote(request(11, shakespeare, budget=60.0))
    time.sleep(1.5)
    start = time.monotonic()
    actor.cancel.remote(11, 1)
    done = ray_local.get(running, timeout=30)
    assert done["result"]["status"] == "cancelled"
    assert time.monotonic() - start < 5.0
    assert done["result"]["train_s"] < 10.0


def test_a_cancel_before_the_trial_starts_still_counts(actor, ray_local, shakespeare):
    ray_local.get(actor.cancel.remote(20, 1))
    done = ray_local.get(actor.run.remote(request(20, shakespeare, budget=30.0)))
    assert done["result"]["status"] == "cancelled" and done["result"]["steps"] == 0
