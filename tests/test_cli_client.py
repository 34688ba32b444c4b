"""The CLI against a real server: `nas serve` (uvicorn) on a free port."""

from pathlib import Path

import httpx
import pytest
from test_cli_space import nas

from api.cli.local_server import start_server, stop_server

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
