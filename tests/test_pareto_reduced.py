"""The Pareto endpoint above a point budget (the front and baselines exactly, a binned
scatter of the rest) and the lineage's recursive query, on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest

from nas_service import jobs, queries
from nas_service.job_config import JobConfig
from nas_service.models import Candidate

API = "/api/v1"


def seed(database, shakespeare: str, n: int, seed: int = 0) -> tuple[int, list[int]]:
    """A job of `n` candidates: a baseline, completed (some infeasible, some exact copies),
    pruned and failed ones, on a noisy trade-off between perplexity and step-time ratio."""
    job = jobs.submit(database, JobConfig(name="reduced", dataset=shakespeare))
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        status = ("completed", "completed", "pruned", "completed", "failed")[i % 5]
        scored = status != "failed"
        ratio = round(float(rng.uniform(0.5, 3.0)), 2)  # coarse: ties and equal copies
        rows.append(
            Candidate(
                job_id=job.id,
                spec={"i": i},
                spec_hash=f"r{i}",
                birth=i,
                mutation="",
                status=status,
                is_baseline=i == 0,
                feasible=bool(ratio < 2.5) if status == "completed" else None,
                perplexity=round(2.0 + 4.0 / ratio + float(rng.exponential(0.5)), 1)
                if scored
                else None,
                step_time_ratio=ratio if scored else None,
                step_time_ms=100.0 * ratio if scored else None,
            )
        )
    with database.transaction() as session:
        session.add_all(rows)
        session.flush()
        return job.id, [r.id for r in rows]


def test_reduced_scatter_keeps_the_front_and_baselines(client, database, shakespeare):
    job_id, ids = seed(database, shakespeare, 600)
    url = f"{API}/jobs/{job_id}/pareto"
    full = client.get(url, params={"max_points": 1_000_000}).json()
    assert full["reduced"] is False and full["total"] == len(full["points"]["id"]) == 480
    assert len(full["front"]) > 3
    for max_points in (50, 200):
        got = client.get(url, params={"max_points": max_points}).json()
        points = got["points"]
        assert got["reduced"] is True and got["total"] == 480
        assert len(points["id"]) <= max_points + len(got["front"]) + len(got["baselines"])
        assert len(points["id"]) >= max_points // 4  # the grid as fine as fits, not too coarse
        assert got["front"] == full["front"] and set(got["front"]) <= set(points["id"])
        assert got["baselines"] == full["baselines"] == [ids[0]]
        assert points["id"] == sorted(points["id"])
        # Every point sent is the candidate's own, column by column.
        at = {i: k for k, i in enumerate(full["points"]["id"])}
        for name, column in points.items():
            assert column == [full["points"][name][at[i]] for i in points["id"]], name

        # Every group of the scatter is drawn: each status, infeasible ones apart.
        def groups(p):
            return {(s, f is False) for s, f in zip(p["status"], p["feasible"], strict=True)}

        assert groups(points) == groups(full["points"])
        # The same points on every call (a fixed order of ids, not a random sample).
        assert client.get(url, params={"max_points": max_points}).json() == got
    assert queries.pareto(database, job_id, 50).front == queries.pareto(database, job_id).front


def test_the_grid_follows_the_spread_of_the_points(database, shakespeare):
    """The binned points cover the cloud: a coarse grid over the full scatter has no
    occupied cell (of each status) without a point sent, once the budget allows it."""
    job_id, _ = seed(database, shakespeare, 2000, seed=1)
    full = queries.pareto(database, job_id)
    got = queries.pareto(database, job_id, 400)
    assert (
        got.reduced
        and got.total == full.total == 1600
        and len(got.id) <= 400 + len(got.front) + sum(got.is_baseline)
    )

    def cells(scored, side: int = 8) -> set[tuple[int, int, str]]:
        x0, x1 = min(full.step_time_ratio), max(full.step_time_ratio)
        y0, y1 = min(full.perplexity), max(full.perplexity)
        return {
            (
                min(side - 1, int((x - x0) / (x1 - x0) * side)),
                min(side - 1, int((y - y0) / (y1 - y0) * side)),
                status,
            )
            for x, y, status in zip(
                scored.step_time_ratio, scored.perplexity, scored.status, strict=True
            )
        }

    assert cells(got) == cells(full)


def test_below_the_budget_everything_as_before(client, database, shakespeare):
    job_id, _ = seed(database, shakespeare, 60)
    url = f"{API}/jobs/{job_id}/pareto"
    default = client.get(url).json()  # the default budget (5,000) is far above 48 points
    assert default["reduced"] is False and default["total"] == len(default["points"]["id"]) == 48
    for max_points in (48, 60, 1_000_000):
        assert client.get(url, params={"max_points": max_points}).json() == default
    # 60 rows but 48 scored: within a budget of 50 once counted, so nothing is dropped.
    assert client.get(url, params={"max_points": 50}).json() == default
    reduced = client.get(url, params={"max_points": 47}).json()
    assert reduced["reduced"] is True and reduced["total"] == 48


@pytest.mark.parametrize("bad", ["0", "9", "1000001", "-5", "many", "1.5"])
def test_bad_max_points_is_a_422_naming_the_field(client, database, shakespeare, bad):
    job_id, _ = seed(database, shakespeare, 5)
    response = client.get(f"{API}/jobs/{job_id}/pareto", params={"max_points": bad})
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["query", "max_points"]]


def test_openapi_describes_the_reduction(client):
    schema = client.get("/openapi.json").json()
    pareto = schema["components"]["schemas"]["ParetoPublic"]["properties"]
    assert "grid" in pareto["reduced"]["description"] and "total" in pareto
    (param,) = [
        p
        for p in schema["paths"][f"{API}/jobs/{{job_id}}/pareto"]["get"]["parameters"]
        if p["name"] == "max_points"
    ]
    assert param["schema"]["minimum"] == 10 and param["schema"]["maximum"] == 1_000_000


def chain(database, shakespeare: str, length: int) -> list[int]:
    """`length` candidates, each the parent of the next; their ids, oldest first."""
    job = jobs.submit(database, JobConfig(name="lineage", dataset=shakespeare))
    ids: list[int] = []
    with database.transaction() as session:
        for i in range(length):
            row = Candidate(
                job_id=job.id,
                spec={"i": i},
                spec_hash=f"l{i}",
                birth=i,
                mutation=f"m{i}",
                status="completed",
                parent_id=ids[-1] if ids else None,
            )
            session.add(row)
            session.flush()
            ids.append(row.id)
    return ids


def test_lineage_of_hundreds_of_ancestors_in_one_query(client, database, shakespeare):
    ids = chain(database, shakespeare, 400)
    row, _, lineage = queries.candidate(database, ids[-1])
    assert row.id == ids[-1]
    assert [c.id for c in lineage] == ids[-2::-1]  # nearest parent first
    assert [c.mutation for c in lineage[:2]] == ["m398", "m397"]
    detail = client.get(f"{API}/candidates/{ids[-1]}").json()
    assert [step["id"] for step in detail["lineage"]] == ids[-2::-1]
    assert queries.candidate(database, ids[0])[2] == []
    assert [c.id for c in queries.candidate(database, ids[5])[2]] == ids[4::-1]


def test_lineage_depth_is_bounded(database, shakespeare, monkeypatch):
    from nas_service.queries import candidates

    ids = chain(database, shakespeare, 30)
    monkeypatch.setattr(candidates, "MAX_LINEAGE", 10)
    assert [c.id for c in queries.candidate(database, ids[-1])[2]] == ids[-2:-12:-1]
    # A cycle (a corrupted row) ends at the bound instead of looping.
    with database.transaction() as session:
        session.get(Candidate, ids[0]).parent_id = ids[1]
    lineage = queries.candidate(database, ids[1])[2]
    assert [c.id for c in lineage] == [ids[0], ids[1]] * 5


def test_a_finished_trial_changes_the_reduced_scatter(client, database, shakespeare):
    """The binned scatter is kept between requests until one of the job's trials finishes."""
    from nas_service.models import utcnow

    job_id, ids = seed(database, shakespeare, 600)
    url = f"{API}/jobs/{job_id}/pareto"
    before = client.get(url, params={"max_points": 50}).json()
    assert client.get(url, params={"max_points": 50}).json() == before
    with database.transaction() as session:
        row = session.get(Candidate, ids[4])  # a failed trial, retried: now the best
        row.status, row.feasible, row.finished_at = "completed", True, utcnow()
        row.perplexity, row.step_time_ratio, row.step_time_ms = 1.0, 0.1, 10.0
    after = client.get(url, params={"max_points": 50}).json()
    assert after["total"] == before["total"] + 1 and after["front"] == [ids[4]]
    assert ids[4] in after["points"]["id"] and ids[4] not in before["points"]["id"]
