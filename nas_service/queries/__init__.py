"""Read-side queries for the API and dashboard, one module per resource:

- `candidates`: filtered and sorted candidate pages, one candidate with its lineage, export;
- `fronts`: the Pareto front and scatter (reduced above a point budget), hypervolume;
- `ladder`: runs of the fidelity ladder: each rung's front, fidelity between rungs,
  the confirmation report;
- `jobs`: a job's progress (trials by state, best candidate, front), deleting a job;
- `compare`: jobs side by side, each front normalised by its own baseline;
- `importance`: which block features explain a job's perplexity and step time;
- `events`: a job's event stream pages;
- `metrics`: the service-wide snapshot for `/metrics`.

Sorting, filtering, pagination and the scatter's reduction happen in SQL, so a request stays
fast with a hundred thousand candidates in a job. The names below are re-exported so that
`from nas_service import queries; queries.pareto(...)` keeps working.
"""

from __future__ import annotations

from nas_service.queries.candidates import (
    MAX_LINEAGE,
    SORTABLE,
    candidate,
    candidate_page,
    export_inputs,
)
from nas_service.queries.compare import compare_jobs
from nas_service.queries.events import JOB_FINAL, events_after, last_event_id
from nas_service.queries.fronts import (
    DEFAULT_MAX_POINTS,
    ScoredColumns,
    hypervolume_history,
    pareto,
)
from nas_service.queries.importance import job_importance
from nas_service.queries.jobs import (
    Progress,
    delete_job,
    eta_s,
    progress,
    reference_device_kind,
)
from nas_service.queries.ladder import (
    candidate_runs,
    confirmation,
    fidelity,
    rungs,
    top_rung_best,
)
from nas_service.queries.metrics import Snapshot, snapshot

__all__ = [
    "DEFAULT_MAX_POINTS",
    "JOB_FINAL",
    "MAX_LINEAGE",
    "SORTABLE",
    "Progress",
    "ScoredColumns",
    "Snapshot",
    "candidate",
    "candidate_page",
    "candidate_runs",
    "compare_jobs",
    "confirmation",
    "delete_job",
    "eta_s",
    "events_after",
    "export_inputs",
    "fidelity",
    "hypervolume_history",
    "job_importance",
    "last_event_id",
    "pareto",
    "progress",
    "reference_device_kind",
    "rungs",
    "snapshot",
    "top_rung_best",
]
