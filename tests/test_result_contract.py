"""One trial-result contract (`search_space.results`): the trainer's result, the candidate
columns and the API's candidate schemas all follow it."""

import dataclasses

from sqlalchemy import JSON, BigInteger, Float, Integer, String, Text

from api.schemas import CandidateDetail, CandidatePublic
from nas_service.models import Candidate
from search_space.results import RESULT_FIELDS, RESULT_NAMES
from workers.trainer import TrialResult

COLUMN_TYPES = {
    float: (Float,),
    int: (Integer, BigInteger),
    str: (Text, String),
    dict: (JSON,),
    list: (JSON,),
}


def test_the_trainer_reports_exactly_the_contract():
    reported = {f.name for f in dataclasses.fields(TrialResult)}
    assert reported - {"status", "curve"} == set(RESULT_NAMES)


def test_every_field_is_a_candidate_column_of_its_type():
    columns = Candidate.__table__.columns
    for field in RESULT_FIELDS:
        assert field.name in columns, field.name
        assert isinstance(columns[field.name].type, COLUMN_TYPES[field.type]), field.name
        assert columns[field.name].nullable  # NULL where a trial produced none


def test_the_api_returns_every_field():
    assert set(RESULT_NAMES) <= set(CandidateDetail.model_fields)
    public = {f.name for f in RESULT_FIELDS if f.scalar} | {"reason"}
    assert public <= set(CandidatePublic.model_fields)  # and so the CSV columns
