"""Jobs with known candidates for the dashboard tests: real specs, rows as the runner writes.

Specs are sampled and mutated from the proxy-cpu space, so the block drawings and lineage are
those of real candidates; the metrics follow a noisy speed/quality trade-off.

Step times are as the runner records them: each trial runs on one of two worker slots, the
second under heavier load (LOAD), and its ratio is its step time over the baseline block's
timed on the same slot. So raw milliseconds and ratios rank candidates differently, and a
frontier drawn in milliseconds would not be the one in ratios.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from sqlalchemy import insert, select

from nas_service import jobs
from nas_service.db import Database
from nas_service.job_config import JobConfig
from nas_service.models import Candidate, CurvePoint, Job, JobEvent, Run
from search_space import baseline, mutate, sample, spec_hash
from search_space.space import PROXY_CPU

# Every 10 trials: 6 completed (one of them over the step-time limit), 2 pruned, 1 failed,
# 1 diverged.
PATTERN = (
    "completed",
    "completed",
    "pruned",
    "completed",
    "failed",
    "completed",
    "infeasible",
    "pruned",
    "completed",
    "diverged",
)
LOAD = (1.0, 1.6)  # the slowdown of each worker slot: same-slot ratios cancel it
DEVICE_KIND = "cpu:Seeded Test CPU @ 2.00GHz"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "workers/trainer.py", line 301, in train_proxy\n'
    "    params, opt_state, loss = program.train_step(params, opt_state, batch)\n"
    "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to "
    "allocate 17179869184 bytes.\n"
)


@dataclass
class SeededJob:
    id: int
    candidate_ids: list[int]
    statuses: list[str]
    baseline_id: int

    @property
    def scored(self) -> int:
        """Candidates with a perplexity and a step time: points of the Pareto plot."""
        return sum(s in ("completed", "infeasible", "pruned") for s in self.statuses)


def candidate_row(
    job_id: int,
    birth: int,
    spec,
    status: str,
    rng,
    reference: float | None = None,
    max_ratio: float | None = None,
) -> dict:
    """A finished candidate's columns as the runner records them. `reference`: the baseline's
    step time on an unloaded slot (None: this is the baseline); `max_ratio`: the step-time
    limit (infeasible ones are over it, the others under it)."""
    layers = spec.block.layers * spec.repeats
    step = 40.0 + 6.0 * len(layers) + 0.05 * spec.block.d_model + float(rng.normal(0, 3))
    if reference is not None and max_ratio is not None:
        limit = reference * max_ratio
        step = limit * rng.uniform(1.02, 1.25) if status == "infeasible" else min(step, limit)
    reference = step if reference is None else reference
    slot = birth % 2
    ppl = 4.0 + 900.0 / step + float(rng.exponential(0.4))
    val_loss = math.log(ppl)
    scored = status in ("completed", "infeasible", "pruned")
    moe = [
        {
            "layer": i,
            "expert_load": (load := rng.dirichlet(np.ones(layer.num_experts) * 3)).tolist(),
            "drop_fraction": float(rng.uniform(0, 0.08)),
            "router_entropy": float(-(load * np.log(load)).sum()),
        }
        for i, layer in enumerate(layers)
        if layer.kind == "moe"
    ]
    reasons = {
        "pruned": "hurdle at 25% of the budget: smoothed loss 3.91 > 3.52 (baseline x 1.1)",
        "failed": "out of memory: RESOURCE_EXHAUSTED while allocating 16.0 GiB",
        "diverged": "loss is NaN at step 37",
    }
    return {
        "job_id": job_id,
        "spec": spec.model_dump(mode="json"),
        "spec_hash": spec_hash(spec),
        "birth": birth,
        "status": "completed" if status == "infeasible" else status,
        "feasible": status != "infeasible" if scored else None,
        "attempt": 1,
        "reason": reasons.get(status),
        "traceback": TRACEBACK if status == "failed" else None,
        "perplexity": ppl if scored else None,
        "val_loss": val_loss if scored else None,
        # Expert choice: routed differently at batch 1 (as an exported model runs).
        "val_loss_inference": (
            val_loss + 0.03
            if scored and any(getattr(layer, "gating", None) == "expert_choice" for layer in layers)
            else None
        ),
        "val_loss_at": (
            {"0.25": val_loss + 0.6, "0.5": val_loss + 0.2}
            | ({"1": val_loss} if status != "pruned" else {})
            if scored
            else None
        ),
        "slot": slot,
        "device_kind": DEVICE_KIND,
        "step_time_ms": step * LOAD[slot] if scored else None,
        "step_time_p90_ms": step * LOAD[slot] * 1.08 if scored else None,
        "reference_step_time_ms": reference * LOAD[slot] if scored else None,
        "step_time_ratio": step / reference if scored else None,
        "steps": int(30_000 / (step * LOAD[slot])) if scored else None,
        "tokens": int(30_000 / (step * LOAD[slot])) * 16 * 64 if scored else None,
        "train_s": 30.0 if scored else None,
        "compile_s": 1.2,
        "params_total": 400_000 + 1000 * len(layers),
        "params_activated": 300_000 + 800 * len(layers),
        "mfu": 0.3 if scored else None,
        "moe": moe if status == "completed" else None,
        "node_id": "f" * 56,
    }


def seed_job(
    db: Database,
    dataset: str,
    n: int,
    name: str,
    seed: int = 0,
    status: str = "running",
    **settings,
) -> SeededJob:
    """A job with `n` finished candidates (the first is the GLaM baseline), `running` unless
    told; `settings`: more JobConfig sections (fidelity, confirm)."""
    config = JobConfig(
        name=name,
        dataset=dataset,
        limits={"max_trials": n + 20},
        objective={"mode": "constrained", "max_step_time_ratio": 1.2},
        **settings,
    )
    job = jobs.submit(db, config)
    rng = np.random.default_rng(seed)
    specs = [baseline("glam")]
    parents: list[int | None] = [None]
    mutations = ["initial: glam baseline"]
    seen = {spec_hash(specs[0])}
    while len(specs) < n:  # distinct specs, as the designer proposes
        if len(specs) < 6:
            child, parent, mutation = sample(PROXY_CPU, rng), None, "random sample"
        else:
            parent = int(rng.integers(max(0, len(specs) - 8), len(specs)))
            child, mutation = mutate(specs[parent], PROXY_CPU, rng)
        if spec_hash(child) not in seen:
            seen.add(spec_hash(child))
            specs.append(child)
            parents.append(parent)
            mutations.append(mutation)
    statuses = [PATTERN[birth % len(PATTERN)] for birth in range(n)]
    statuses[0] = "completed"
    ids: list[int] = []
    with db.transaction() as session:
        row = session.get(Job, job.id)
        row.status = status
        row.started_at = row.created_at
        start = row.created_at
        if status == "completed":
            row.finished_at = start + timedelta(seconds=10 * n + 600)
        reference = None
        for birth, spec in enumerate(specs):
            values = candidate_row(
                job.id,
                birth,
                spec,
                statuses[birth],
                rng,
                reference,
                config.objective.max_step_time_ratio,
            )
            if birth == 0:
                reference = values["step_time_ms"] / LOAD[values["slot"]]
            parent = parents[birth]
            candidate = Candidate(
                **values,
                is_baseline=birth == 0,
                mutation=mutations[birth],
                parent_id=ids[parent] if parent is not None else None,
                created_at=start + timedelta(seconds=10 * birth),
                started_at=start + timedelta(seconds=10 * birth + 1),
                finished_at=start + timedelta(seconds=10 * birth + 31),
            )
            session.add(candidate)
            session.flush()
            ids.append(candidate.id)
            if values["train_s"]:
                session.execute(
                    insert(CurvePoint),
                    [
                        {
                            "candidate_id": candidate.id,
                            "index": k,
                            "train_s": 0.3 * k,
                            "loss": 5.5 * math.exp(-k / 30) + math.log(values["perplexity"]),
                        }
                        for k in range(100)
                    ],
                )
            session.add(
                JobEvent(
                    job_id=job.id,
                    kind="trial",
                    message=candidate.status,
                    data={"candidate_id": candidate.id},
                )
            )
    return SeededJob(job.id, ids, statuses, ids[0])


def add_finished(
    db: Database,
    job_id: int,
    birth: int,
    perplexity: float,
    step_ms: float,
    device_kind: str = DEVICE_KIND,
) -> int:
    """Record one more completed trial and its events, in one transaction as the runner does:
    timed on slot 0 (unloaded), so its ratio is `step_ms` over the baseline's step time."""
    rng = np.random.default_rng(birth)
    spec = sample(PROXY_CPU, rng)
    values = candidate_row(job_id, birth, spec, "completed", rng)
    with db.transaction() as session:
        job = session.get(Job, job_id)
        reference = session.scalar(
            select(Candidate.step_time_ms / Candidate.step_time_ratio).where(
                Candidate.job_id == job_id, Candidate.is_baseline.is_(True)
            )
        )
        values.update(
            perplexity=perplexity,
            val_loss=math.log(perplexity),
            slot=0,
            device_kind=device_kind,
            step_time_ms=step_ms,
            step_time_p90_ms=step_ms * 1.08,
            reference_step_time_ms=reference,
            step_time_ratio=step_ms / reference,
        )
        candidate = Candidate(  # finishing after the seeded ones (10 s apart)
            **values,
            is_baseline=False,
            mutation="random sample",
            finished_at=job.created_at + timedelta(seconds=10 * birth + 31),
        )
        session.add(candidate)
        session.flush()
        session.add(
            JobEvent(
                job_id=job_id,
                kind="trial",
                message="completed",
                data={"candidate_id": candidate.id},
            )
        )
        return candidate.id


# --- the fidelity ladder: runs above rung 0, noise seeds, confirmation ------------------------

LADDER = {
    "fidelity": {
        "rungs": [{"budget_multiplier": 4, "promote": 0.3, "seeds": 3}],
        "random_share": 0.2,
        "noise_seeds": 3,
    },
    "confirm": {"top_k": 2, "seeds": 3, "budget_multiplier": 8},
}
CONFIRM_SEED_OFFSET = 1_000_003  # as nas_service.ladder: fresh seeds, none of the search's
RUNG1_SEED_SHIFT = (-0.012, 0.004, 0.009)  # each rung-1 seed's offset from the candidate's mean
NOISE_SHIFT = (0.021, -0.016)  # the baseline's noise seeds at rung 0, from its own trial
# Confirmation, per fresh seed: the baseline, and each confirmed candidate minus the baseline.
CONFIRM_BASELINE_SHIFT = (0.0, 0.03, -0.02)
CONFIRM_WINNER_DIFF = (-0.20, -0.21, -0.19)  # clearly better on every seed
CONFIRM_OTHER_DIFF = (-0.05, 0.06, 0.01)  # within the noise


@dataclass
class LadderJob:
    """A completed job with a fidelity ladder and a finished confirmation, with its numbers."""

    job: SeededJob
    seed: int  # the job's seed: rung 0's
    rung0: dict[int, float]  # candidate id -> its own trial's val_loss
    rung1: dict[int, list[float | None]]  # candidate id -> val_loss per rung-1 seed
    origins: dict[int, str]  # candidate id -> why it reached rung 1
    noise: list[float]  # the baseline's rung-0 val_loss: its own trial, then its noise seeds
    confirm: dict[int, list[float]]  # candidate id -> val_loss per confirmation seed
    winner: int
    runner_up: int

    @property
    def rung1_means(self) -> dict[int, float]:
        return {
            c: float(np.mean([v for v in values if v is not None]))
            for c, values in self.rung1.items()
        }


def run_row(
    job_id: int,
    candidate: Candidate,
    stage: str,
    rung: int,
    seed: int,
    origin: str,
    budget: dict,
    val_loss: float | None,
    ratio: float,
    at,
) -> dict:
    """A finished run's columns, as the runner records them (None: the run failed)."""
    ok = val_loss is not None
    step = (candidate.step_time_ms or 50.0) / (candidate.step_time_ratio or 1.0) * ratio
    seconds = budget.get("seconds", 30.0)
    return {
        "job_id": job_id,
        "candidate_id": candidate.id,
        "stage": stage,
        "rung": rung,
        "seed": seed,
        "origin": origin,
        "budget": budget,
        "status": "completed" if ok else "failed",
        "attempt": 1 if ok else 2,
        "slot": 0,
        "device_kind": DEVICE_KIND,
        "reason": None if ok else "out of memory: RESOURCE_EXHAUSTED while allocating 16.0 GiB",
        "val_loss": val_loss,
        "perplexity": math.exp(val_loss) if ok else None,
        "step_time_ms": step if ok else None,
        "reference_step_time_ms": step / ratio if ok else None,
        "step_time_ratio": ratio if ok else None,
        "steps": int(1000 * seconds / step) if ok else None,
        "train_s": seconds if ok else None,
        "curve": (
            [[seconds * k / 10, val_loss + 2.0 * math.exp(-k / 3)] for k in range(11)]
            if ok
            else None
        ),
        "created_at": at,
        "started_at": at + timedelta(seconds=1),
        "finished_at": at + timedelta(seconds=1 + seconds),
    }


def seed_ladder_job(db: Database, dataset: str, n: int, name: str, seed: int = 4) -> LadderJob:
    """A completed job of `n` candidates with a rung above the search (3 seeds, budget x4):
    the best six by rank (one with a failed seed), two at random (one of them too slow) and the
    baseline; the baseline's noise seeds at rung 0; and a finished confirmation of the best two
    and the baseline over 3 fresh seeds, the best beating the baseline on every seed."""
    job = seed_job(db, dataset, n, name, seed=seed, status="completed", **LADDER)
    rng = np.random.default_rng(seed + 100)
    config = JobConfig.model_validate(jobs.get(db, job.id).config)
    trial = config.trial.budget()
    job_seed = config.seed  # rung 0's; each rung's seeds count up from it
    ((kind, amount),) = trial.items()
    rung1_budget = {kind: amount * 4}
    confirm_budget = {kind: amount * 8}
    with db.transaction() as session:
        rows = {
            c.id: c for c in session.scalars(select(Candidate).where(Candidate.job_id == job.id))
        }
        scored = {i: c for i, c in rows.items() if c.status == "completed"}
        base = rows[job.baseline_id]
        feasible = sorted(
            (c for c in scored.values() if c.feasible and not c.is_baseline),
            key=lambda c: (c.val_loss, c.id),
        )
        infeasible = [c for c in scored.values() if c.feasible is False]
        origins = {c.id: "rank" for c in feasible[:6]}
        origins[feasible[-1].id] = "random"
        origins[infeasible[0].id] = "random"
        origins[base.id] = "baseline"
        rung0 = {c: rows[c].val_loss for c in origins}
        # Longer training: lower losses, ranked much as rung 0 ranked them, not exactly.
        means = {c: 0.85 * rung0[c] + float(rng.normal(0, 0.02)) for c in origins}
        rung1: dict[int, list[float | None]] = {}
        failed_seed = feasible[5].id  # its third seed ran out of memory
        at = base.finished_at + timedelta(seconds=60)
        runs = []
        for c, origin in origins.items():
            values: list[float | None] = [means[c] + shift for shift in RUNG1_SEED_SHIFT]
            if c == failed_seed:
                values[2] = None
            rung1[c] = values
            for i, value in enumerate(values):
                ratio = (rows[c].step_time_ratio or 1.0) * (1 + 0.01 * (i - 1))
                runs.append(
                    run_row(
                        job.id,
                        rows[c],
                        "rung",
                        1,
                        job_seed + i,
                        origin,
                        rung1_budget,
                        value,
                        ratio,
                        at,
                    )
                )
                at += timedelta(seconds=5)
            rows[c].rung = 1
        # The two best feasible at rung 1 (means over their completed seeds) are confirmed.
        observed = {c: float(np.mean([v for v in rung1[c] if v is not None])) for c in rung1}
        ranked = sorted(
            (c for c in origins if origins[c] != "baseline" and rows[c].feasible),
            key=observed.get,
        )
        winner, runner_up = ranked[0], ranked[1]
        noise = [base.val_loss] + [base.val_loss + shift for shift in NOISE_SHIFT]
        for i, value in enumerate(noise[1:], start=1):
            runs.append(
                run_row(job.id, base, "rung", 0, job_seed + i, "noise", trial, value, 1.0, at)
            )
        confirm_seeds = [job_seed + CONFIRM_SEED_OFFSET + i for i in range(3)]
        baseline_losses = [
            float(np.mean(rung1[base.id])) * 0.97 + shift for shift in CONFIRM_BASELINE_SHIFT
        ]
        confirm = {
            base.id: baseline_losses,
            winner: [b + d for b, d in zip(baseline_losses, CONFIRM_WINNER_DIFF, strict=True)],
            runner_up: [b + d for b, d in zip(baseline_losses, CONFIRM_OTHER_DIFF, strict=True)],
        }
        for c, values in confirm.items():
            for i, (s, value) in enumerate(zip(confirm_seeds, values, strict=True)):
                ratio = (rows[c].step_time_ratio or 1.0) * (1 + 0.005 * (i - 1))
                if c == base.id:
                    ratio = 1.0
                runs.append(
                    run_row(
                        job.id,
                        rows[c],
                        "confirm",
                        1,
                        s,
                        "confirm",
                        confirm_budget,
                        value,
                        ratio,
                        at,
                    )
                )
                at += timedelta(seconds=5)
        session.execute(insert(Run), runs)
    return LadderJob(job, job_seed, rung0, rung1, origins, noise, confirm, winner, runner_up)
