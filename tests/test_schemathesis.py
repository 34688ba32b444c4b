"""Property-based API tests: schemathesis over the app's own OpenAPI schema (SQLite).

Every operation gets a bounded number of generated requests (valid and invalid, derandomized);
each response must not be a server error and must conform to the schema (documented status
code and content type, body matching the declared model, declared headers).

Path ids are drawn either from the schema (mostly unknown ids) or from the rows seeded below,
so the 200 paths of the id routes run too; POST /jobs bodies sometimes get the builtin corpus
as their dataset so that some submissions succeed.

`?format=csv` and `format=flax` are in: the schema declares text/csv and text/x-python without
a body schema, so for them the content type is checked and the body is not.

Left out: GET /jobs/{job_id}/events, a server-sent-events stream that stays open while its job
is alive (three of the seeded jobs are), so a generated request would hang; it has its own tests.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema_rs
import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.errors import InvalidSchema

from api.app import create_app
from api.deps import get_db
from nas_service.db import Database
from nas_service.models import Candidate, CurvePoint, Job, JobEvent
from search_space import PRESETS, baseline, cost, sample, spec_hash

API = "/api/v1"


def response_schema_conformance_draft_2020(ctx, response, case):
    """schemathesis's check, except where it cannot build its validator (it is a bug there).

    schemathesis 4.32 rewrites `prefixItems` (a tuple, e.g. HypervolumePublic.reference) to
    the Draft 4 `items: [...]` in response schemas, then validates them as Draft 2020-12 and
    raises InvalidSchema. Then the body is validated here against the app's own schema.
    """
    try:
        return response_schema_conformance(ctx, response, case)
    except InvalidSchema:
        raw = app.openapi()
        declared = raw["paths"][case.operation.path][case.method.lower()]["responses"]
        media = declared[str(response.status_code)]["content"]["application/json"]
        validator = jsonschema_rs.Draft202012Validator(
            {**media["schema"], "components": raw["components"]}
        )
        errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(response.json())]
        assert not errors, f"response does not match its schema: {errors}"
        return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance_draft_2020,
    response_headers_conformance,
]

app = create_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(
    path=f"{API}/jobs/{{job_id}}/events"
)

# Ids of the seeded rows, filled by the `template` fixture before any example is drawn.
KNOWN: dict[str, list[int]] = {"job_id": [], "candidate_id": []}


@schema.hook
def flatmap_path_parameters(context, path_parameters: dict[str, Any]) -> st.SearchStrategy:
    """Keep the generated id, or swap in the id of a seeded row."""
    if not isinstance(path_parameters, dict):
        return st.just(path_parameters)
    return st.fixed_dictionaries(
        {
            name: st.sampled_from([value, *KNOWN[name]]) if KNOWN.get(name) else st.just(value)
            for name, value in path_parameters.items()
        }
    )


@schema.hook
def flatmap_body(context, body: Any) -> st.SearchStrategy:
    """POST /jobs: keep the body, point its dataset at the builtin corpus, or use a minimal one."""
    operation = context.operation
    if operation is None or (operation.method.upper(), operation.path) != ("POST", f"{API}/jobs"):
        return st.just(body)
    valid = {"name": "schemathesis", "dataset": "builtin:stdlib"}
    options = [body, valid]
    if isinstance(body, dict) and "dataset" in body:
        options.insert(1, {**body, "dataset": "builtin:stdlib"})
    return st.sampled_from(options)


def _seed(db: Database) -> None:
    """Jobs queued, running, paused and completed, each with candidates (real specs), curves
    and events."""
    with TestClient(app) as client:
        app.dependency_overrides[get_db] = lambda: db
        try:
            for name in ("queued", "running", "paused", "completed"):
                response = client.post(
                    f"{API}/jobs", json={"name": name, "dataset": "builtin:stdlib"}
                )
                assert response.status_code == 201, response.text
        finally:
            app.dependency_overrides.pop(get_db, None)
    specs = [baseline(name) for name in ("dense", "switch", "glam")] + [
        sample(PRESETS["proxy-cpu"], np.random.default_rng(seed)) for seed in range(5)
    ]
    with db.transaction() as session:
        jobs = {job.name: job for job in session.query(Job)}
        for name in ("running", "paused", "completed"):
            jobs[name].status = name
        for job in jobs.values():
            parent = None
            for i, spec in enumerate(specs):
                status = ["completed", "completed", "failed", "pruned"][i % 4]
                row = Candidate(
                    job_id=job.id,
                    spec=spec.model_dump(mode="json"),
                    spec_hash=spec_hash(spec),
                    birth=i,
                    mutation="" if parent is None else f"mutation {i}",
                    is_baseline=i < 3,
                    status=status,
                    feasible=status != "failed",
                    parent_id=parent,
                    val_loss=2.0 - i * 0.05 if status != "failed" else None,
                    perplexity=8.0 - i * 0.3 if status != "failed" else None,
                    step_time_ms=50.0 + 7 * i,
                    reference_step_time_ms=50.0,
                    step_time_ratio=(50.0 + 7 * i) / 50.0,
                    device_kind="cpu:Schemathesis CPU",
                    val_loss_at=(
                        {"0.25": 2.5, "0.5": 2.2, "1": 2.0 - i * 0.05}
                        if status != "failed"
                        else None
                    ),
                    val_loss_inference=2.1 - i * 0.05 if i == 1 else None,
                    params_total=cost(spec).params_total,
                    reason="boom" if status == "failed" else None,
                    traceback="Traceback: boom" if status == "failed" else None,
                )
                session.add(row)
                session.flush()
                session.add_all(
                    CurvePoint(candidate_id=row.id, index=k, train_s=k * 0.5, loss=5.0 - k)
                    for k in range(3)
                )
                session.add(
                    JobEvent(
                        job_id=job.id,
                        kind="trial",
                        message=status,
                        data={"candidate_id": row.id},
                    )
                )
                parent = row.id
        session.flush()
        KNOWN["job_id"] = sorted(job.id for job in jobs.values())
        KNOWN["candidate_id"] = sorted(c.id for c in session.query(Candidate))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A migrated, seeded SQLite file, copied for each example so that writes don't leak."""
    path = tmp_path_factory.mktemp("schemathesis") / "nas.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    try:
        _seed(db)
    finally:
        db.dispose()
    return path


@contextmanager
def fresh_copy(template: Path) -> Iterator[Database]:
    """The seeded database as a new file, served by the app, for one generated request."""
    with tempfile.TemporaryDirectory() as folder:
        for file in template.parent.iterdir():
            shutil.copy(file, Path(folder) / file.name)
        db = Database(f"sqlite:///{Path(folder) / template.name}")
        app.dependency_overrides[get_db] = lambda: db
        try:
            yield db
        finally:
            app.dependency_overrides.pop(get_db, None)
            db.dispose()


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_schema(case, template):
    with fresh_copy(template):  # each example starts from the same rows
        case.call_and_validate(checks=CHECKS)
