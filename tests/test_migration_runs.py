"""Upgrading a database filled under an earlier schema (revision 0003) keeps every result:
candidates, their curves and events are unchanged, each candidate is at rung 0 with the
precision it trained in (float32), and its result reads back as its own run."""

from contextlib import ExitStack

import pytest
import sqlalchemy as sa
from conftest import postgres_schema

from nas_service import queries
from nas_service.db import Database, upgrade

CONFIG = {
    "name": "old",
    "dataset": "builtin:stdlib",
    "trial": {"budget_s": 5.0},
    "limits": {"max_trials": 3},
    "seed": 7,
}


def _fill(url: str) -> None:
    """Rows as revision 0003's runner wrote them (the tables reflected, not today's models)."""
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine)
    jobs, candidates, curve, events = (
        meta.tables[name] for name in ("jobs", "candidates", "curve_points", "job_events")
    )
    now = sa.func.now()
    with engine.begin() as connection:
        connection.execute(
            jobs.insert().values(
                id=1, name="old", config=CONFIG, status="completed", created_at=now,
                updated_at=now, started_at=now, finished_at=now,
            )
        )  # fmt: skip
        for i, (loss, ratio) in enumerate([(3.1, 1.0), (2.9, 0.8), (None, None)]):
            connection.execute(
                candidates.insert().values(
                    id=i + 1, job_id=1, spec={"layers": []}, spec_hash=f"h{i}", mutation="",
                    birth=i, is_baseline=i == 0, status="completed" if loss else "failed",
                    feasible=True, attempt=1, val_loss=loss,
                    perplexity=None if loss is None else 2.718281828**loss,
                    step_time_ms=None if ratio is None else 100 * ratio,
                    reference_step_time_ms=100.0, step_time_ratio=ratio, steps=40,
                    reason=None if loss else "diverged at step 3", created_at=now,
                )
            )  # fmt: skip
        connection.execute(
            curve.insert(), [{"candidate_id": 2, "index": k, "train_s": k, "loss": 5.0 - k}
                             for k in range(4)]
        )  # fmt: skip
        connection.execute(
            events.insert().values(job_id=1, kind="job", message="completed", created_at=now)
        )
    engine.dispose()


def _snapshot(url: str) -> dict[str, list[tuple]]:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        out = {
            table: sorted(map(tuple, connection.execute(sa.text(f"SELECT * FROM {table}"))))
            for table in ("jobs", "candidates", "curve_points", "job_events")
        }
    engine.dispose()
    return out


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrading_an_old_database_keeps_every_result(backend, tmp_path):
    with ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'old.db'}"
        else:
            url = stack.enter_context(postgres_schema())
        upgrade(url, "0003")
        _fill(url)
        before = _snapshot(url)
        upgrade(url)
        after = _snapshot(url)
        assert after["curve_points"] == before["curve_points"]
        assert after["job_events"] == before["job_events"]
        # Each job row is as it was, with (revision 0006) no note and no warm start.
        assert [row[:-2] for row in after["jobs"]] == before["jobs"]
        assert [row[-2:] for row in after["jobs"]] == [(None, None)]
        # Each candidate row is as it was, with the new columns at its end: rung 0, (0005)
        # the precision every trial before it trained in and (0006) no note.
        assert [row[:-3] for row in after["candidates"]] == before["candidates"]
        assert [row[-3:] for row in after["candidates"]] == [(0, "float32", None)] * 3

        db = Database(url)
        stack.callback(db.dispose)
        runs, rungs = queries.candidate_runs(db, 2)
        (own,) = runs
        assert own["id"] is None and own["rung"] == 0 and own["seed"] == 7
        assert own["val_loss"] == 2.9 and own["step_time_ratio"] == 0.8
        assert own["budget"] == {"seconds": 5.0}
        assert rungs[0]["val_loss"]["mean"] == 2.9 and rungs[0]["val_loss"]["se"] is None
        assert queries.candidate_runs(db, 3)[0][0]["reason"] == "diverged at step 3"
        ladder = queries.rungs(db, 1)
        assert ladder["top_rung"] == 0 and ladder["rungs"][0]["candidates"] == 3
        assert queries.confirmation(db, 1) == {"status": "not_requested"}
