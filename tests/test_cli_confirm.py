"""`nas confirm` and `nas export --job N --best` against a real server, on a job whose
confirmation declared a winner, one that has none yet and one whose search found nothing."""

import json

import pytest
from dashboard_seed import seed_job, seed_ladder_job
from test_cli_space import nas

from api.cli.local_server import start_server, stop_server
from nas_service.db import Database


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, shakespeare):
    url = f"sqlite:///{tmp_path_factory.mktemp('confirm') / 'nas.db'}"
    db = Database(url)
    db.upgrade()
    ladder = seed_ladder_job(db, shakespeare, 30, "laddered", seed=4)
    plain = seed_job(db, shakespeare, 6, "plain", status="completed")
    db.dispose()
    process, server = start_server("--no-runner", "--database-url", url, timeout=60)
    yield server, ladder, plain
    stop_server(process)


def test_the_report_is_a_table_with_the_verdict(seeded):
    server, ladder, _ = seeded
    shown = nas("confirm", str(ladder.job.id), "--report", "--server", server)
    assert shown.returncode == 0, shown.stderr
    out = " ".join(shown.stdout.split())
    assert f"candidate {ladder.winner} (winner)" in out and "baseline glam" in out
    assert f"candidate {ladder.winner} beats the baseline" in out


def test_export_best_takes_the_declared_winner_with_its_report(seeded, tmp_path):
    server, ladder, _ = seeded
    path = tmp_path / "best.json"
    exported = nas(
        "export", "--job", str(ladder.job.id), "--best", "-o", str(path), "--server", server
    )
    assert exported.returncode == 0, exported.stderr
    assert "declared winner" in exported.stderr
    body = json.loads(path.read_text())
    assert body["candidate"]["id"] == ladder.winner
    assert body["manifest"]["confirmation"]["winner"] == ladder.winner


def test_confirm_requests_it_and_refuses_twice(seeded):
    server, _, plain = seeded
    job = str(plain.id)
    assert "no confirmation" in nas("confirm", job, "--report", "--server", server).stdout
    queued = nas("confirm", job, "--seeds", "2", "--no-wait", "--server", server)
    assert queued.returncode == 0, queued.stderr
    assert "runs once the search ends" in queued.stdout
    again = nas("confirm", job, "--server", server)
    assert again.returncode == 2 and "only a completed job can be confirmed" in again.stderr
    export = nas("export", "--job", job, "--best", "--server", server)
    assert export.returncode == 2 and "still running" in export.stderr
