"""The CLI against a real server: `nas serve` (uvicorn) on a free port."""

import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from dashboard_seed import seed_job
from test_cli_space import NAS, nas

from api.cli.local_server import start_server, stop_server
from nas_service.db import Database
from search_space import PRESETS, sample

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quick.yaml"


@pytest.fixture(scope="module")
def server_db(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('serve') / 'nas.db'}"


@pytest.fixture(scope="module")
def server(server_db):
    process, url = start_server("--no-runner", "--database-url", server_db, timeout=60)
    yield url
    stop_server(process)


def test_submit_and_drive_a_job(server, tmp_path):
    submitted = nas("submit", str(EXAMPLE), "--server", server)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert job_id.isdigit()
    listed = nas("jobs", "--server", server)
    assert listed.returncode == 0 and "quick" in listed.stdout
    status = nas("status", job_id, "--server", server)
    assert "queued" in status.stdout and "0/6 done" in status.stdout
    assert "paused" in nas("pause", job_id, "--server", server).stdout
    again = nas("pause", job_id, "--server", server)
    assert again.returncode == 2 and "cannot pause a job that is paused" in again.stderr
    assert "running" in nas("resume", job_id, "--server", server).stdout
    assert "cancelled" in nas("cancel", job_id, "--server", server).stdout
    watched = nas("watch", job_id, "--server", server, "--interval", "0.2")
    assert watched.returncode == 0 and "cancelled" in watched.stdout


def test_relative_dataset_paths_are_relative_to_the_job_file(server, tmp_path, shakespeare):
    corpus = tmp_path / "data" / "corpus.txt"
    corpus.parent.mkdir()
    corpus.write_bytes(Path(shakespeare.removeprefix("text:")).read_bytes()[:200_000])
    job = tmp_path / "job.yaml"
    job.write_text("name: rel\ndataset: text:data/corpus.txt\n")
    submitted = nas("submit", str(job), "--server", server)
    assert submitted.returncode == 0, submitted.stderr
    detail = httpx.get(f"{server}/api/v1/jobs/{submitted.stdout.strip()}").json()
    assert detail["config"]["dataset"] == f"text:{corpus.resolve()}"


def test_refusals_name_the_field_and_no_server_says_how_to_start_one(server, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ndataset: builtin:stdlib\nworkers: {concurrency: 0}\n")
    refused = nas("submit", str(bad), "--server", server)
    assert refused.returncode == 2 and "workers.concurrency" in refused.stderr
    missing = nas("status", "4242", "--server", server)
    assert missing.returncode == 2 and "404" in missing.stderr
    nowhere = nas("jobs", "--server", "http://127.0.0.1:9")
    assert nowhere.returncode == 2 and "nas serve" in nowhere.stderr


def test_export_a_candidate_and_a_jobs_best(server, server_db, tmp_path):
    import json

    from nas_service.db import Database
    from nas_service.models import Candidate
    from search_space import baseline, spec_hash

    job_id = int(nas("submit", str(EXAMPLE), "--server", server).stdout)
    spec = baseline("glam-ec")
    db = Database(server_db)
    with db.transaction() as session:
        row = Candidate(
            job_id=job_id,
            spec=spec.model_dump(mode="json"),
            spec_hash=spec_hash(spec),
            birth=0,
            mutation="initial",
            status="completed",
            perplexity=6.0,
            val_loss=1.79,
            step_time_ms=80.0,
            reference_step_time_ms=80.0,
            step_time_ratio=1.0,
            is_baseline=True,
            feasible=True,
        )
        session.add(row)
        session.flush()
        candidate_id = row.id
    db.dispose()
    module = tmp_path / "model.py"
    out = nas(
        "export", str(candidate_id), "--format", "flax", "-o", str(module), "--server", server
    )
    assert out.returncode == 0, out.stderr
    compile(module.read_text(), str(module), "exec")
    best = nas(
        "export",
        "--job",
        str(job_id),
        "--best",
        "--format",
        "config",
        "--target",
        "1B",
        "--server",
        server,
    )
    assert best.returncode == 0, best.stderr
    assert json.loads(best.stdout)["scale"]["target"] == "1B"
    assert f"best: candidate {candidate_id} (lowest perplexity on the Pareto front" in best.stderr
    status = nas("status", str(job_id), "--server", server)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[1] == (
        f"best: candidate {candidate_id}, perplexity 6.000, step time 1.000x baseline "
        "(80.0 ms) (lowest perplexity on the Pareto front)"
    )
    assert lines[2] == f"front by step-time ratio (1): {candidate_id}"
    bad = nas(
        "export", str(candidate_id), "--format", "config", "--target", "huge", "--server", server
    )
    assert bad.returncode == 2 and "target" in bad.stderr
    neither = nas("export", "--server", server)
    assert neither.returncode == 2 and "--job JOB --best" in neither.stderr


@pytest.fixture(scope="module")
def seeded(server, server_db, shakespeare):
    """Two finished jobs written into the server's database (as a runner would)."""
    db = Database(server_db)
    jobs = [
        seed_job(db, shakespeare, 30, "first", seed=2, status="completed"),
        seed_job(db, shakespeare, 20, "second", seed=3, status="completed"),
    ]
    db.dispose()
    return jobs


def test_submit_like_a_job_with_a_file_over_it(server, tmp_path):
    original = nas("submit", str(EXAMPLE), "--server", server).stdout.strip()
    clone = nas("submit", "--like", original, "--server", server)
    assert clone.returncode == 0, clone.stderr
    config = httpx.get(f"{server}/api/v1/jobs/{clone.stdout.strip()}").json()["config"]
    assert config["name"] == "quick (copy)" and config["limits"]["max_trials"] == 6
    changes = tmp_path / "longer.yaml"
    changes.write_text("trial: {budget_steps: 40}\nlimits: {max_trials: 8}\n")
    longer = nas("submit", "--like", original, str(changes), "--name", "longer", "--server", server)
    assert longer.returncode == 0, longer.stderr
    config = httpx.get(f"{server}/api/v1/jobs/{longer.stdout.strip()}").json()["config"]
    assert config["name"] == "longer" and config["limits"]["max_trials"] == 8
    assert config["trial"]["budget_steps"] == 40 and config["trial"]["budget_s"] is None
    assert config["search_space"]["preset"] == "proxy-cpu"  # from the job cloned
    changes.write_text("# too few\nworkers: {concurrency: 0}\n")
    refused = nas("submit", "--like", original, str(changes), "--server", server)
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: {changes}, line 2: workers.concurrency: ")
    neither = nas("submit", "--server", server)
    assert neither.returncode == 2 and "give JOB_FILE, or --like JOB" in neither.stderr


def test_enqueue_a_block_and_refusals_name_the_field(server, tmp_path):
    job_id = nas("submit", str(EXAMPLE), "--server", server).stdout.strip()
    spec = sample(PRESETS["proxy-cpu"], np.random.default_rng(11)).model_dump(mode="json")
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    queued = nas("enqueue", job_id, str(path), "--note", "a hunch", "--server", server)
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout.startswith(f"job {job_id}: request ") and "it trains next" in queued.stdout
    spec["block"]["d_model"] = -1
    path.write_text(json.dumps({"spec": spec, "manifest": {}}))  # an export's shape
    refused = nas("enqueue", job_id, str(path), "--server", server)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: 422: spec.block.d_model: "), refused.stderr


def test_notes_set_from_an_argument_or_stdin_and_printed(server, seeded):
    first = seeded[0]
    saved = nas("note", str(first.id), "ratio *over* order", "--server", server)
    assert saved.returncode == 0 and saved.stdout == f"job {first.id}: note saved\n"
    shown = nas("note", str(first.id), "--server", server)
    assert shown.stdout == "ratio *over* order\n"
    candidate = str(first.baseline_id)
    blank = nas("note", "--candidate", candidate, "--server", server)
    assert blank.returncode == 0 and "has no note" in blank.stderr and blank.stdout == ""
    piped = subprocess.run(
        [NAS, "note", "--candidate", candidate, "-", "--server", server],
        input="# The reference\n\nGLaM.\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert piped.returncode == 0 and f"candidate {candidate}: note saved" in piped.stdout
    again = nas("note", "--candidate", candidate, "--server", server)
    assert again.stdout == "# The reference\n\nGLaM.\n"
    cleared = nas("note", str(first.id), "", "--server", server)
    assert cleared.stdout == f"job {first.id}: note cleared\n"
    assert nas("note", "--server", server).returncode == 2


def test_compare_prints_a_row_per_job(server, seeded):
    first, second = seeded
    shown = nas("compare", str(first.id), str(second.id), "--server", server)
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stdout.splitlines() if "first" in line or "second" in line]
    assert len(rows) == 2 and all("glam" in row for row in rows)
    refused = nas("compare", str(first.id), str(first.id), "--server", server)
    assert refused.returncode == 2 and "jobs" in refused.stderr


def test_importance_prints_the_features_or_why_not(server, seeded):
    shown = nas("importance", str(seeded[0].id), "--top", "3", "--server", server)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert out.startswith(f"job {seeded[0].id}: 18 completed candidates") and "method: " in out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert "perplexity share" in out and len(rows) == 3
    queued = nas("submit", str(EXAMPLE), "--server", server).stdout.strip()
    few = nas("importance", queued, "--server", server)
    assert few.returncode == 0 and few.stdout.startswith(f"job {queued}: 0 completed candidates")
    assert "perplexity share" not in few.stdout
