"""Health and the search-space presets with the job configuration's JSON schema."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import ReadOwner
from api.schemas import Preset, Presets
from nas_service.job_config import JobConfig
from search_space import PRESETS

router = APIRouter(tags=["meta"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/search-space/presets", response_model=Presets)
def presets(_: ReadOwner) -> Presets:
    return Presets(
        presets=[Preset(name=name, space=space.model_dump()) for name, space in PRESETS.items()],
        job_config_schema=JobConfig.model_json_schema(),
    )
