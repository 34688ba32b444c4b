"""The controller's storage: migrations, job configs, submission, transitions, leases."""

from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import func, inspect, select

from nas_service import jobs
from nas_service.job_config import JobConfig
from nas_service.models import Candidate, Job, JobEvent
from nas_service.runner import Runner
from nas_service.settings import Settings

MINIMAL = """
name: quick
dataset: text:data/tinyshakespeare_head.txt
search_space: {preset: proxy-cpu}
objective: {mode: pareto}
trial: {budget_s: 5}
limits: {max_trials: 6}
workers: {concurrency: 2}
seed: 0
"""


def config(shakespeare: str, **sections) -> JobConfig:
    return JobConfig.model_validate({"name": "t", "dataset": shakespeare, **sections})


def count(db, model) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_migrations_create_every_table(database):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from nas_service.models import Base

    tables = set(inspect(database.engine).get_table_names())
    assert {"jobs", "candidates", "curve_points", "job_events", "alembic_version"} <= tables
    database.upgrade()  # idempotent
    with database.engine.connect() as connection:  # the migrations build exactly the models
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_the_minimal_file_is_accepted_with_defaults():
    import yaml

    parsed = JobConfig.model_validate(yaml.safe_load(MINIMAL))
    assert parsed.trial.budget_s == 5 and parsed.limits.max_trials == 6
    assert parsed.evolution.population_size == 3 and parsed.hurdle.at_fraction == 0.25
    assert parsed.evolution.tournament_size == 2  # both derived from the 6 trials
    assert parsed.objective.baseline == "glam" and parsed.workers.max_attempts == 3


BAD = [
    ({"name": ""}, "name"),
    ({"name": 5}, "name"),
    ({"dataset": "s3://bucket"}, "dataset"),
    ({"search_space": {"preset": "huge"}}, "search_space.preset"),
    ({"search_space": {"overrides": {"d_model": [0]}}}, "search_space.overrides.d_model.0"),
    ({"search_space": {"overrides": {"gating": ["top3"]}}}, "search_space.overrides.gating.0"),
    ({"search_space": {"overrides": {"width": [1]}}}, "search_space.overrides.width"),
    ({"objective": {"mode": "fastest"}}, "objective.mode"),
    ({"objective": {"baseline": "gpt"}}, "objective.baseline"),
    ({"objective": {"max_step_time_ratio": 0}}, "objective.max_step_time_ratio"),
    ({"trial": {"budget_s": -1}}, "trial.budget_s"),
    ({"trial": {"budget_s": "long"}}, "trial.budget_s"),
    ({"trial": {"batch_size": 0}}, "trial.batch_size"),
    ({"trial": {"learning_rate": 0}}, "trial.learning_rate"),
    ({"limits": {"max_trials": 0}}, "limits.max_trials"),
    ({"limits": {"max_hours": -2}}, "limits.max_hours"),
    ({"evolution": {"population_size": 1}}, "evolution.population_size"),
    ({"evolution": {"tournament_size": 30}}, "evolution.tournament_size"),
    ({"hurdle": {"at_fraction": 1.5}}, "hurdle.at_fraction"),
    ({"workers": {"concurrency": 0}}, "workers.concurrency"),
    ({"workers": {"gpus_per_trial": -1}}, "workers.gpus_per_trial"),
    ({"workers": {"max_attempts": 0}}, "workers.max_attempts"),
    ({"seed": -1}, "seed"),
    ({"objective": {"baseline": "switch"}}, "objective.baseline"),  # no top-1 in proxy-cpu
    ({"surprise": True}, "surprise"),
    ({"trial": {"budget_s": 3, "budget_steps": 10}}, "trial"),
    ({"trial": {"budget_steps": 0}}, "trial.budget_steps"),
    ({"trial": {"budget_flops": -1}}, "trial.budget_flops"),
    ({"trial": {"eval_at": [0]}}, "trial.eval_at.0"),
    ({"trial": {"reference_steps": 1}}, "trial.reference_steps"),
    ({"trial": {"precision": "float16"}}, "trial.precision"),
    ({"search_space": {"preset": "paper"}, "trial": {"batch_size": 16}}, "trial.batch_size"),
]


@pytest.mark.parametrize(("change", "field"), BAD)
def test_bad_config_names_the_field(change, field):
    with pytest.raises(ValidationError) as info:
        JobConfig.model_validate({"name": "t", "dataset": "builtin:stdlib", **change})
    assert field in [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]


@pytest.mark.parametrize(
    ("trials", "population", "tournament"),
    [(1, 3, 2), (6, 3, 2), (20, 5, 2), (50, 12, 3), (80, 20, 5), (10_000, 20, 5)],
)
def test_evolution_sizes_follow_the_trial_count_unless_given(trials, population, tournament):
    base = {"name": "t", "dataset": "builtin:stdlib", "limits": {"max_trials": trials}}
    derived = JobConfig.model_validate(base).evolution
    assert (derived.population_size, derived.tournament_size) == (population, tournament)
    given = JobConfig.model_validate({**base, "evolution": {"population_size": 8}}).evolution
    assert (given.population_size, given.tournament_size) == (8, 2)
    both = {"population_size": 30, "tournament_size": 7}
    kept = JobConfig.model_validate({**base, "evolution": both})
    assert (kept.evolution.population_size, kept.evolution.tournament_size) == (30, 7)
    assert JobConfig.model_validate(kept.model_dump()) == kept  # stored and read back


def test_a_given_tournament_must_fit_the_derived_population():
    base = {"name": "t", "dataset": "builtin:stdlib", "limits": {"max_trials": 6}}
    with pytest.raises(ValidationError) as info:
        JobConfig.model_validate({**base, "evolution": {"tournament_size": 4}})
    assert "derived from limits.max_trials 6" in str(info.value)
    assert ("evolution", "tournament_size") in [e["loc"] for e in info.value.errors()]
    with pytest.raises(ValidationError, match="exceeds population_size"):
        sizes = {"population_size": 4, "tournament_size": 5}
        JobConfig.model_validate({**base, "evolution": sizes})


def test_expert_choice_batch_size_is_checked_and_defaulted():
    paper = {"name": "t", "dataset": "builtin:stdlib", "search_space": {"preset": "paper"}}
    with pytest.raises(ValidationError) as info:
        JobConfig.model_validate({**paper, "trial": {"batch_size": 16}})
    message = str(info.value)  # 32 experts at capacity 1 need 32 sequences per step
    assert "trial.batch_size" in message and "smallest batch size that works is 32" in message
    assert JobConfig.model_validate(paper).trial.batch_size == 32  # the preset's defaults work
    assert JobConfig.model_validate({**paper, "trial": {"batch_size": 48}}).trial.batch_size == 48
    no_ec = {**paper, "search_space": {"preset": "paper", "overrides": {"gating": ["top2"]}}}
    assert JobConfig.model_validate({**no_ec, "trial": {"batch_size": 4}}).trial.batch_size == 4
    assert (
        JobConfig.model_validate({"name": "t", "dataset": "builtin:stdlib"}).trial.batch_size == 16
    )


def test_budgets_default_to_seconds_and_travel_as_one_kind():
    base = {"name": "t", "dataset": "builtin:stdlib"}
    assert JobConfig.model_validate(base).trial.budget() == {"seconds": 30.0}
    steps = JobConfig.model_validate({**base, "trial": {"budget_steps": 200}})
    assert steps.trial.budget() == {"steps": 200} and steps.trial.budget_s is None
    assert JobConfig.model_validate(steps.model_dump()) == steps  # stored and read back
    flops = JobConfig.model_validate({**base, "trial": {"budget_flops": 1e12}}).trial
    assert flops.budget() == {"flops": 1e12}
    assert "budget_s" not in flops.trainer_config()


def test_submit_resolves_and_checksums_the_dataset(database, shakespeare, tmp_path):
    job = jobs.submit(database, config(shakespeare), owner="ada")
    stored = jobs.get(database, job.id)
    assert stored.status == "queued" and stored.owner == "ada"
    assert stored.config["dataset"].startswith("text:/") and len(stored.data_checksum) == 64
    assert JobConfig.model_validate(stored.config).trial.budget_s == 30.0


@pytest.mark.parametrize(
    ("dataset", "message"),
    [("text:/nonexistent/corpus.txt", "does not exist"), ("tokens:/etc", "not a file")],
)
def test_bad_data_stores_nothing(database, dataset, message):
    with pytest.raises(jobs.JobError) as info:
        jobs.submit(database, JobConfig(name="t", dataset=dataset))
    assert info.value.field == "dataset" and message in str(info.value)
    assert count(database, Job) == 0


def test_too_short_data_stores_nothing(database, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("x" * 500)
    with pytest.raises(jobs.JobError, match="dataset"):
        jobs.submit(database, JobConfig(name="t", dataset=f"text:{short}"))
    assert count(database, Job) == 0


def test_transitions_are_compare_and_set(database, shakespeare):
    job = jobs.submit(database, config(shakespeare))
    assert jobs.transition(database, job.id, "pause").status == "paused"
    with pytest.raises(jobs.JobError, match="cannot pause a job that is paused"):
        jobs.transition(database, job.id, "pause")
    assert jobs.transition(database, job.id, "resume").status == "running"
    assert jobs.transition(database, job.id, "cancel").status == "cancelled"
    with pytest.raises(jobs.JobError, match="status"):
        jobs.transition(database, job.id, "resume")
    with pytest.raises(jobs.JobNotFound):
        jobs.transition(database, 999, "cancel")
    with database.sessions() as session:
        kinds = [e.message for e in session.scalars(select(JobEvent).order_by(JobEvent.id))]
    # No runner held it: the cancel finished the job at once, with the final event.
    assert kinds == ["submitted", "pause", "resume", "cancel", "cancelled"]
    assert jobs.get(database, job.id).finished_at is not None


def test_two_runners_never_drive_one_job(database, shakespeare):
    job = jobs.submit(database, config(shakespeare))
    first = Runner(Settings(runner_id="a", lease_s=30), database)
    second = Runner(Settings(runner_id="b", lease_s=30), database)
    first._claim()
    second._claim()
    assert list(first.jobs) == [job.id] and second.jobs == {}
    stored = jobs.get(database, job.id)
    assert stored.runner_id == "a" and stored.status == "running"
    # an expired lease may be taken over; the old owner notices at its next heartbeat
    expired = Runner(Settings(runner_id="c", lease_s=0.001), database)
    with database.transaction() as session:
        session.get(Job, job.id).lease_expires_at = stored.created_at
    expired._claim()
    assert list(expired.jobs) == [job.id]
    first._heartbeat()
    assert first.jobs == {}


def test_candidate_spec_is_unique_per_job(database, shakespeare):
    from sqlalchemy.exc import IntegrityError

    job = jobs.submit(database, config(shakespeare))
    row = {"job_id": job.id, "spec": {}, "spec_hash": "h", "mutation": "", "birth": 0}
    with database.transaction() as session:
        session.add(Candidate(**row))
    with pytest.raises(IntegrityError), database.transaction() as session:
        session.add(Candidate(**{**row, "birth": 1}))
    assert count(database, Candidate) == 1


def test_the_example_job_file_is_valid():
    import yaml

    example = Path(__file__).resolve().parents[1] / "examples" / "quick.yaml"
    parsed = JobConfig.model_validate(yaml.safe_load(example.read_text()))
    assert parsed.dataset == "builtin:stdlib" and parsed.limits.max_trials == 6
