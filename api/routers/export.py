"""/candidates/{id}/export: a winner as JSON with a manifest, a Flax module or a scaled config."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api.auth import ReadOwner
from api.deps import CandidateId, DbDep
from api.schemas import NOT_FOUND
from nas_service import export, queries
from nas_service.jobs import JobError
from search_space import ArchSpec

router = APIRouter(tags=["export"], responses=NOT_FOUND)


@router.get(
    "/candidates/{candidate_id}/export",
    responses={200: {"content": {"application/json": {}, "text/x-python": {}}}},
)
def export_candidate(
    candidate_id: CandidateId,
    db: DbDep,
    _: ReadOwner,
    format: Literal["json", "flax", "config"] = "json",
    target: Annotated[
        str | None, Query(description="100M, 1B, 8B or a parameter count (flax and config).")
    ] = None,
) -> Response:
    row, job, lineage = queries.export_inputs(db, candidate_id)
    spec = ArchSpec.model_validate(row["spec"])
    try:
        if format == "flax":
            source = export.flax_module(spec, target)
            filename = f"candidate-{candidate_id}{f'-{target}' if target else ''}.py"
            headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
            return Response(source, media_type="text/x-python", headers=headers)
        if format == "config":
            body = export.export_config(spec, target)
        else:
            body = export.export_json(row, job, lineage)
            confirmation = queries.confirmation(db, row["job_id"])
            if any(c["candidate_id"] == candidate_id for c in confirmation.get("candidates", [])):
                body["manifest"]["confirmation"] = confirmation
    except ValueError as exc:
        if not str(exc).startswith("target"):
            raise
        raise JobError("target", str(exc).removeprefix("target: ")) from exc
    return Response(json.dumps(body, default=str), media_type="application/json")
