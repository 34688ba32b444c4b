"""The ladder and confirmation through the real runner, with a fake trainer whose truth is
known: each block has a true validation loss, each seed shifts every block alike, and each
run adds its own noise. The confirmation must declare the truly best confirmed block when it
is clearly better than the baseline, and no winner when every block is as good as it."""

import hashlib
import threading

import pytest
from fake_trainer import fake_factory

from nas_service import jobs, queries
from nas_service.job_config import JobConfig
from nas_service.runner import Runner
from nas_service.settings import Settings
from search_space import ArchSpec, spec_hash

BASELINE_LOSS = 3.4


def _uniform(*key: object) -> float:
    digest = hashlib.sha256(":".join(map(str, key)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def true_loss(spec: dict, reference: dict, spread: float) -> float:
    """The block's true loss: the baseline's, or spread below it at most (0: all equal)."""
    if spec == reference:
        return BASELINE_LOSS
    return BASELINE_LOSS - spread * _uniform("truth", spec_hash(ArchSpec.model_validate(spec)))


def measure(spread: float, noise: float):
    """(loss, step-time ratio 1) of a run: the block's truth, a shift shared by every block
    of the seed, and the run's own noise."""

    def run(request: dict) -> tuple[float, float]:
        truth = true_loss(request["spec"], request["reference"], spread)
        seed = request["seed"]
        shared = noise * (2 * _uniform("seed", seed) - 1)  # every block alike
        own = noise * (2 * _uniform("run", request["candidate_id"], seed) - 1)
        return truth + shared + own, 1.0

    return run


def run_job(db, spread: float, noise: float) -> tuple[int, dict[int, float]]:
    config = JobConfig.model_validate(
        {
            "name": "fake",
            "dataset": "builtin:stdlib",
            "objective": {"mode": "constrained", "max_step_time_ratio": 1.0},
            "limits": {"max_trials": 24},
            "evolution": {"population_size": 8, "tournament_size": 3},
            "workers": {"concurrency": 2},
            "fidelity": {
                "rungs": [{"budget_multiplier": 2, "promote": 0.25, "seeds": 2}],
                "random_share": 0.1,
                "noise_seeds": 3,
            },
            "hurdle": {"margin": "auto"},
            "confirm": {"top_k": 3, "seeds": 5, "budget_multiplier": 2},
        }
    )
    job = jobs.submit(db, config)
    runner = Runner(
        Settings(runner_id="fake", heartbeat_s=0.5, poll_s=0.02),
        db,
        worker_factory=fake_factory(measure(spread, noise)),
    )
    thread = threading.Thread(target=runner.run, args=(threading.Event(), True), daemon=True)
    thread.start()
    thread.join(timeout=180)
    assert not thread.is_alive() and jobs.get(db, job.id).status == "completed"
    reference = next(c for c in jobs.candidates(db, job.id) if c.is_baseline).spec
    truths = {c.id: true_loss(c.spec, reference, spread) for c in jobs.candidates(db, job.id)}
    return job.id, truths


@pytest.mark.slow
def test_confirmation_declares_the_truly_best_block(sqlite_db, ray_local):
    job_id, truths = run_job(sqlite_db, spread=0.4, noise=0.01)
    report = queries.confirmation(sqlite_db, job_id)
    confirmed = [c["candidate_id"] for c in report["candidates"] if not c["is_baseline"]]
    assert 2 <= len(confirmed) <= 3 and report["status"] == "done"  # top_k: 3 at most
    best = min(confirmed, key=truths.get)
    assert truths[best] < BASELINE_LOSS - 0.05  # clearly better: it must be found
    assert report["winner"] is not None
    assert truths[report["winner"]] <= truths[best] + 0.04  # the best, up to the noise
    # The ladder's top rung ranked like the truth, and the fidelity endpoint says so.
    (pair,) = queries.fidelity(sqlite_db, job_id)["pairs"]
    assert pair["n"] >= 3 and pair["kendall"] > 0.5


@pytest.mark.slow
def test_confirmation_declares_no_winner_when_nothing_is_better(sqlite_db, ray_local):
    job_id, truths = run_job(sqlite_db, spread=0.0, noise=0.02)
    assert set(truths.values()) == {BASELINE_LOSS}
    report = queries.confirmation(sqlite_db, job_id)
    assert report["status"] == "done" and report["compared"] >= 2
    assert report["winner"] is None
    assert report["verdict"].startswith("no block was shown to beat the baseline")
