"""A job's runs read back: each rung's scores and front, the fidelity between rungs with the
seed noise, and the confirmation report. The same decisions as the runner's (`ladder`) over
the same rows, so what the API shows is what the runner acted on."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select

from nas_service import ladder, statistics, store
from nas_service.db import Database
from nas_service.job_config import JobConfig
from nas_service.jobs import JobNotFound
from nas_service.models import JOB_ACTIVE, RESULT_COLUMNS, Candidate, Job, Run
from nas_service.queries.fronts import FRONT_ELIGIBLE
from search_space import BASELINES, baseline, spec_hash

_METRICS = ("val_loss", "perplexity", "step_time_ratio")
_RUN_COLUMNS = (*store.RUN_FIELDS, "curve", "started_at", "finished_at")


def _own_run(row: Candidate, config: dict[str, Any]) -> dict[str, Any]:
    """A candidate's own row as its rung-0 run with the job's seed."""
    job_config = JobConfig.model_validate(config)
    return {
        "id": None,
        "candidate_id": row.id,
        "stage": "rung",
        "rung": 0,
        "seed": job_config.seed,
        "origin": "search",
        "attempt": row.attempt,
        "status": row.status,
        "budget": job_config.trial.budget(),
        **{name: getattr(row, name) for name in RESULT_COLUMNS},
        "curve": None,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
    }


def _as_run(run: Run) -> dict[str, Any]:
    return {name: getattr(run, name) for name in _RUN_COLUMNS}


def _summaries(runs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in runs if r["status"] == "completed" and r["val_loss"] is not None]
    return {
        "runs": len(done),
        **{
            m: statistics.summarize([r[m] for r in done if r[m] is not None]).as_dict()
            for m in _METRICS
        },
    }


def candidate_runs(
    db: Database, candidate_id: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A candidate's runs (its own trial first) and, per (stage, rung) with results, the mean
    over seeds with its standard error and interval."""
    with db.sessions() as session:
        row = session.get(Candidate, candidate_id)
        if row is None:
            raise JobNotFound(f"candidate {candidate_id} not found")
        config = session.scalar(select(Job.config).where(Job.id == row.job_id))
        runs = [_own_run(row, config), *(_as_run(r) for r in row.runs)]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["stage"], run["rung"]), []).append(run)
    rungs = [
        {"stage": stage, "rung": rung, **_summaries(group)}
        for (stage, rung), group in sorted(
            groups.items(), key=lambda kv: (kv[0][0] != "rung", kv[0][1])
        )
    ]
    return runs, [r for r in rungs if r["runs"]]


class _JobRuns:
    """A job's config, baseline and runs by (stage, rung), own trials included as rung 0."""

    def __init__(self, db: Database, job_id: int, rung0_ids: set[int] | None = None):
        with db.sessions() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise JobNotFound(f"job {job_id} not found")
            self.status = job.status
            self.config = JobConfig.model_validate(job.config)
            self.raw_config = job.config
            self.baseline_id = session.scalar(
                select(Candidate.id)
                .where(Candidate.job_id == job_id, Candidate.is_baseline.is_(True))
                .order_by(Candidate.birth)
                .limit(1)
            )
            runs = [_as_run(r) for r in session.scalars(select(Run).where(Run.job_id == job_id))]
            ids = {r["candidate_id"] for r in runs} | (rung0_ids or set())
            if self.baseline_id is not None:
                ids.add(self.baseline_id)
            own = session.scalars(select(Candidate).where(Candidate.id.in_(ids))).all()
            self.specs = {row.id: row.spec_hash for row in own}
            runs += [_own_run(row, job.config) for row in own]
        self.by_rung: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for run in runs:
            self.by_rung.setdefault((run["stage"], run["rung"]), []).append(run)

    def scores(self, rung: int, stage: str = "rung") -> list[ladder.Score]:
        return ladder.scores_from_runs(
            self.by_rung.get((stage, rung), []), self.config, self.baseline_id
        )

    def values(self, rung: int, stage: str = "rung") -> dict[int, list[float]]:
        """Each candidate's completed validation losses at a rung, one per seed."""
        out: dict[int, list[float]] = {}
        for run in self.by_rung.get((stage, rung), []):
            if run["status"] == "completed" and run["val_loss"] is not None:
                out.setdefault(run["candidate_id"], []).append(run["val_loss"])
        return out

    def top_rung(self) -> int:
        """The highest rung with a scored candidate other than the baseline."""
        ladder_rungs = [r for (stage, r) in self.by_rung if stage == "rung"]
        return max(
            (r for r in ladder_rungs if any(not s.is_baseline for s in self.scores(r))), default=0
        )


def _rung0_front_ids(db: Database, job_id: int) -> set[int]:
    with db.sessions() as session:
        rows = session.execute(
            select(Candidate.id, Candidate.perplexity, Candidate.step_time_ratio).where(
                Candidate.job_id == job_id, *FRONT_ELIGIBLE
            )
        ).all()
    front = ladder.front(
        [ladder.Score(r.id, 0.0, r.perplexity, r.step_time_ratio, True) for r in rows]
    )
    return {s.candidate_id for s in front}


def rungs(db: Database, job_id: int) -> dict[str, Any]:
    """Each rung's candidates (means over seeds, standard errors, intervals) and its own
    front. Rung 0 lists the candidates promoted from it and its front (the whole search is
    `/pareto`'s), with `candidates` counting them all."""
    job = _JobRuns(db, job_id, _rung0_front_ids(db, job_id))
    promoted = {
        r["candidate_id"]
        for (stage, rung), runs in job.by_rung.items()
        if stage == "rung" and rung > 0
        for r in runs
    }
    with db.sessions() as session:
        rung0_total = session.scalar(
            select(func.count()).select_from(Candidate).where(Candidate.job_id == job_id)
        )
    out = []
    budget = job.config.trial.budget()
    for rung in range(len(job.config.fidelity.rungs) + 1):
        runs = job.by_rung.get(("rung", rung), [])
        if rung == 0:
            keep = promoted | set(job.specs)
            runs = [r for r in runs if r["candidate_id"] in keep]
        elif not runs:
            continue
        scores = {s.candidate_id: s for s in job.scores(rung)}
        origin = {r["candidate_id"]: r["origin"] for r in runs}
        grouped: dict[int, list[dict[str, Any]]] = {}
        for run in runs:
            grouped.setdefault(run["candidate_id"], []).append(run)
        points = [
            {
                "candidate_id": cid,
                "is_baseline": cid == job.baseline_id,
                "origin": "baseline" if cid == job.baseline_id else origin[cid],
                "feasible": scores[cid].feasible if cid in scores else None,
                "seeds": len(group),
                **{m: v for m, v in _summaries(group).items() if m != "runs"},
            }
            for cid, group in sorted(grouped.items())
        ]
        multiplier = 1.0 if rung == 0 else job.config.fidelity.rungs[rung - 1].budget_multiplier
        out.append(
            {
                "rung": rung,
                "budget": ladder.scaled_budget(budget, multiplier) if rung else budget,
                "seeds": len(ladder.rung_seeds(job.config, rung)),
                "candidates": rung0_total if rung == 0 else len(grouped),
                "front": [s.candidate_id for s in ladder.front(list(scores.values()))],
                "points": points,
            }
        )
    return {"top_rung": job.top_rung(), "rungs": out}


def fidelity(db: Database, job_id: int) -> dict[str, Any]:
    """How each rung ranks candidates against the rung above it (rank correlations with
    bootstrap intervals, top-k recall, over the candidates in both), and the seed noise at
    each rung next to the spread between candidates."""
    job = _JobRuns(db, job_id)
    rung_count = len(job.config.fidelity.rungs) + 1
    # Rung 0's figures are the candidates' own trials (one seed each, the job's seed);
    # the baseline's noise seeds enter the noise floor only.
    with db.sessions() as session:
        rows = session.execute(
            select(Candidate.id, Candidate.val_loss).where(
                Candidate.job_id == job_id,
                Candidate.status == "completed",
                Candidate.val_loss.is_not(None),
            )
        ).all()
    means: list[dict[int, float]] = [{row.id: row.val_loss for row in rows}]
    for rung in range(1, rung_count):
        means.append({s.candidate_id: s.val_loss for s in job.scores(rung)})
    origins = {
        (r["rung"], r["candidate_id"]): r["origin"]
        for (stage, _), runs in job.by_rung.items()
        if stage == "rung"
        for r in runs
    }
    pairs = []
    for low in range(rung_count - 1):
        shared = sorted(set(means[low]) & set(means[low + 1]))
        agreement = statistics.rank_agreement(
            [means[low][c] for c in shared], [means[low + 1][c] for c in shared]
        )
        points = [
            {
                "candidate_id": c,
                "origin": "baseline" if c == job.baseline_id else origins.get((low + 1, c), "rank"),
                "low": means[low][c],
                "high": means[low + 1][c],
            }
            for c in shared
        ]
        pairs.append({"low": low, "high": low + 1, **agreement, "points": points})
    noise = []
    for rung in range(rung_count):
        values = job.values(rung)
        if rung == 0:  # every candidate's own trial, and the baseline's noise seeds
            values = {c: [v] for c, v in means[0].items()} | values
        if values:
            noise.append({"rung": rung, **statistics.noise_and_spread(values)})
    return {"metric": "val_loss", "pairs": pairs, "noise": noise, "margin": _margin(job)}


def _margin(job: _JobRuns) -> float | None:
    """The hurdle's margin: as configured, or as measured from the baseline's seeds."""
    hurdle = job.config.hurdle
    if hurdle.margin != "auto":
        return hurdle.margin
    key = f"{hurdle.at_fraction:g}"
    losses = [
        (r["smoothed_loss_at"] or {}).get(key)
        for r in job.by_rung.get(("rung", 0), [])
        if r["candidate_id"] == job.baseline_id and r["status"] == "completed"
    ]
    return ladder.auto_margin(losses)


def _baseline_names(config: JobConfig) -> dict[str, str]:
    space = config.search_space.space()
    names = {}
    for name in BASELINES:
        try:
            names[spec_hash(baseline(name, space))] = name
        except ValueError:
            continue
    return names


def confirmation(db: Database, job_id: int) -> dict[str, Any]:
    """The confirmation report: every retrained block's mean and interval over the fresh
    seeds, its paired difference to the baseline (Holm-corrected), its step-time ratio, the
    rank correlation between the search's ranking and the confirmed one, and the declared
    winner (null until the confirmation is done, and when no block was shown to beat the
    baseline)."""
    job = _JobRuns(db, job_id)
    confirm_runs = [
        r for (stage, _), runs in job.by_rung.items() if stage == "confirm" for r in runs
    ]
    if not confirm_runs:
        if job.config.confirm is not None and job.status in JOB_ACTIVE:
            return {"status": "requested"}
        if job.config.confirm is not None and job.status == "completed":
            return {  # the search ended without a candidate to confirm
                "status": "done",
                "winner": None,
                "verdict": "nothing to confirm: the search found no feasible candidate",
            }
        return {"status": "not_requested"}
    settings = job.config.confirm
    rung = confirm_runs[0]["rung"]
    ranked = ladder.ranking(
        [s for s in job.scores(rung) if not s.is_baseline], job.config.objective.mode
    )
    search_rank = {s.candidate_id: i for i, s in enumerate(ranked)}
    names = _baseline_names(job.config)
    grouped: dict[int, list[dict[str, Any]]] = {}
    for run in confirm_runs:
        grouped.setdefault(run["candidate_id"], []).append(run)
    entries = []
    for cid, runs in grouped.items():
        name = names.get(job.specs.get(cid, ""))
        entries.append(
            {
                "candidate_id": cid,
                "name": f"baseline {name}" if name else None,
                "is_baseline": name is not None,
                "search_rank": None if name else search_rank.get(cid),
                "runs": [
                    {
                        "seed": r["seed"],
                        "val_loss": r["val_loss"] if r["status"] == "completed" else None,
                        "step_time_ratio": r["step_time_ratio"],
                    }
                    for r in runs
                ],
            }
        )
    pending = any(r["status"] in ("queued", "running") for r in confirm_runs)
    done = not pending and job.status not in JOB_ACTIVE
    report = statistics.confirmation_report(
        entries,
        job.baseline_id,
        mode=job.config.objective.mode,
        max_step_time_ratio=job.config.objective.max_step_time_ratio,
        alpha=settings.alpha if settings else 0.05,
    )
    if not done:
        report["winner"] = None
        report["verdict"] = "confirmation running: " + report["verdict"]
    seeds = sorted({r["seed"] for r in confirm_runs})
    return {
        "status": "done" if done else "running",
        "rung": rung,
        "seeds": seeds,
        "budget": confirm_runs[0]["budget"],
        **report,
    }


def top_rung_best(db: Database, job_id: int) -> tuple[int, list[int], int | None, float | None]:
    """The job's front and best at the highest rung with results: (rung, front ids, best id,
    its mean perplexity). Rung 0 when no candidate has reached a higher rung."""
    job = _JobRuns(db, job_id)
    rung = job.top_rung()
    scores = job.scores(rung)
    best = next((s for s in ladder.ranking(scores, job.config.objective.mode) if s.feasible), None)
    front = [s.candidate_id for s in ladder.front(scores)]
    return rung, front, best and best.candidate_id, best and best.perplexity
