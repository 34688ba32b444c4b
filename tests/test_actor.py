"""The Ray worker actor on a local Ray: trials in a row, failures, cancellation, pinning."""

import os
import time
from pathlib import Path

import pytest

from search_space import baseline
from workers.actor import DatasetCache, LRUCache, worker_actor
from workers.cores import LOCK_DIR_ENV
from workers.data import load_dataset


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
    assert info["warm"]  # the matmul peak was measured at start, not in the first trial
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


def test_a_changed_dataset_fails_the_trial_and_is_then_reloaded(
    actor, ray_local, shakespeare, tmp_path
):
    corpus = tmp_path / "corpus.txt"
    raw = Path(shakespeare.removeprefix("text:")).read_bytes()
    corpus.write_bytes(raw)
    source = f"text:{corpus}"
    submitted = load_dataset(source).checksum
    ok = ray_local.get(actor.run.remote(request(30, source, 0.2, data_checksum=submitted)))
    assert ok["result"]["status"] == "ok", ok["result"].get("reason")
    corpus.write_bytes(raw[::-1])  # in place, same size: only the modification time tells
    changed = load_dataset(source).checksum
    stale = ray_local.get(actor.run.remote(request(31, source, 0.2, data_checksum=submitted)))
    assert stale["result"]["status"] == "failed"
    assert stale["result"]["reason"] == (
        f"dataset {source} changed since the job was submitted: checksum {changed} != {submitted}"
    )
    fresh = ray_local.get(actor.run.remote(request(32, source, 0.2, data_checksum=changed)))
    assert fresh["result"]["status"] == "ok", fresh["result"].get("reason")


def test_the_dataset_cache_rehashes_only_when_the_files_change(tmp_path, monkeypatch):
    from workers import data

    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"first version " * 100)
    loads = []
    load = data.load_dataset
    monkeypatch.setattr(data, "load_dataset", lambda *a, **k: loads.append(a) or load(*a, **k))
    cache = DatasetCache(data)
    source = f"text:{corpus}"
    first = cache.get(source)
    assert cache.get(source) is first and len(loads) == 1
    corpus.write_bytes(b"second version" * 100)
    os.utime(corpus, ns=(1, 1))  # a coarse clock could leave the mtime as it was
    second = cache.get(source)
    assert second.checksum != first.checksum and len(loads) == 2 and len(cache) == 1
    assert cache.get(source) is second and len(loads) == 2


def test_the_program_cache_is_a_bounded_lru():
    cache = LRUCache(2)
    cache["a"], cache["b"] = 1, 2
    assert cache.get("a") == 1  # a use: "b" is now the least recently used
    cache["c"] = 3
    assert list(cache) == ["a", "c"] and cache.get("b") is None and len(cache) == 2
    cache["a"] = 10
    cache["d"] = 4
    assert dict(cache) == {"a": 10, "d": 4}
    with pytest.raises(ValueError):
        LRUCache(0)


def test_an_actor_keeps_at_most_its_program_cache_size(ray_local, shakespeare, tmp_path):
    handle = worker_actor(
        slot=2,
        cpus_per_slot=1,
        program_cache_size=1,
        runtime_env={"env_vars": {LOCK_DIR_ENV: str(tmp_path)}},
    )
    try:
        compile_s = [
            ray_local.get(handle.run.remote(request(40 + i, shakespeare, 0.2, name=name)))[
                "result"
            ]["compile_s"]
            for i, name in enumerate(["dense", "dense", "switch", "dense"])
        ]
    finally:
        ray_local.kill(handle)
    assert compile_s[0] > 0 and compile_s[1] == 0.0  # kept...
    assert compile_s[2] > 0 and compile_s[3] > 0  # ...until another spec evicted it


def test_a_fractional_gpu_share_caps_the_actors_memory_and_marks_its_results(
    ray_local, shakespeare
):
    """Four trials per GPU: an actor holding 0.25 of one gets XLA's memory fraction from its
    share (read from the actor's own environment), and its results say the device was
    shared, so they are not compared with trials that had a device alone."""
    from workers.actor import GPU_MEMORY_USABLE

    handle = worker_actor(slot=7, cpus_per_slot=0.5, gpus_per_slot=0.25)
    try:
        info = ray_local.get(handle.info.remote())
        assert info["gpu_share"] == 0.25
        assert float(info["memory_fraction"]) == pytest.approx(0.25 * GPU_MEMORY_USABLE)
        done = ray_local.get(handle.run.remote(request(1, shakespeare, budget=0.3)))
        assert done["result"]["status"] == "ok"
        assert done["result"]["device"]["gpu_share"] == 0.25
    finally:
        ray_local.kill(handle)
    whole = worker_actor(slot=8, cpus_per_slot=0.5, gpus_per_slot=1)
    try:
        info = ray_local.get(whole.info.remote())
        assert info["gpu_share"] is None and info["memory_fraction"] is None
    finally:
        ray_local.kill(whole)
