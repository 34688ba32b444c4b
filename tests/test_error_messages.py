"""Refusals a person reads once: one field name, the person's words, and for a job file the
file and line. Over the API (TestClient) and `nas submit FILE` (in process, against it)."""

import json
from pathlib import Path

import httpx
import pytest
import typer
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.cli.client import submit_cmd
from api.client import Client
from nas_service.job_config import JobConfig

API = "/api/v1"
BASE = {"name": "t", "dataset": "builtin:stdlib"}


@pytest.fixture
def client(sqlite_db):
    from api.app import create_app
    from api.deps import get_db

    app = create_app()
    app.dependency_overrides[get_db] = lambda: sqlite_db
    with TestClient(app) as test_client:
        yield test_client


def refusals(response) -> list[tuple[str, str]]:
    """(field, message) of each problem of a 422, the field without `body`."""
    assert response.status_code == 422, response.text
    return [(".".join(map(str, e["loc"][1:])), e["msg"]) for e in response.json()["detail"]]


# --- the API ----------------------------------------------------------------------------


def test_a_missing_dataset_names_the_field_once(client):
    response = client.post(f"{API}/jobs", json={**BASE, "dataset": "text:/nonexistent/x.txt"})
    [(field, message)] = refusals(response)
    assert field == "dataset"
    assert message == "/nonexistent/x.txt does not exist (source 'text:/nonexistent/x.txt')"


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            {"dataset": "s3://bucket/x"},
            "dataset",
            "expected text:PATH, tokens:PATH or builtin:stdlib, not 's3://bucket/x'",
        ),
        ({"search_space": {"preset": "huge"}}, "search_space.preset", "unknown preset 'huge'"),
        ({"trial": {"budget_s": 3, "budget_steps": 10}}, "trial", "give exactly one of"),
        (
            {"fidelity": {"rungs": [{"budget_multiplier": 2, "promote": 1.5}]}},
            "fidelity.rungs.0.promote",
            "a count must be a whole number (got 1.5)",
        ),
        (
            {"search_space": {"overrides": {"d_model": [96, 96]}}},
            "search_space.overrides.d_model",
            "duplicate values in [96, 96]",
        ),
        (
            {"search_space": {"overrides": {"min_layers": 6, "max_layers": 2}}},
            "search_space.overrides",
            "min_layers (6) exceeds max_layers (2)",
        ),
    ],
)
def test_validators_words_come_without_pydantics_prefix(client, change, field, message):
    [(got_field, got)] = refusals(client.post(f"{API}/jobs", json={**BASE, **change}))
    assert got_field == field and got.startswith(message), got
    assert "Value error" not in got


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            {"search_space": {"preset": "paper"}, "trial": {"batch_size": 4}},
            "trial.batch_size",
            "4 is too small for the expert-choice layers",
        ),
        (
            {"hurdle": {"margin": "auto"}},
            "hurdle.margin",
            "auto sets the margin from the measured seed noise",
        ),
        (
            {"objective": {"baseline": "switch"}},
            "objective.baseline",
            "'switch' is not in the search space",
        ),
        (
            {"evolution": {"population_size": 4, "tournament_size": 5}},
            "evolution.tournament_size",
            "5 exceeds population_size (4)",
        ),
        (
            {
                "fidelity": {
                    "rungs": [
                        {"budget_multiplier": 4, "promote": 0.5},
                        {"budget_multiplier": 2, "promote": 0.5},
                    ]
                }
            },
            "fidelity.rungs.1.budget_multiplier",
            "2 must exceed the rung below's (4)",
        ),
        (
            {"confirm": {"baselines": ["switch"]}},
            "confirm.baselines.0",
            "'switch' is not a candidate of this job",
        ),
    ],
)
def test_checks_across_fields_name_the_field_by_its_location_only(client, change, field, message):
    [(got_field, got)] = refusals(client.post(f"{API}/jobs", json={**BASE, **change}))
    assert got_field == field and got.startswith(message), got
    last = field.split(".")[-1]
    assert f"{field}:" not in got and not got.startswith(last)


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"trail": {"budget_s": 5}}, "trail", "unknown field; did you mean 'trial'?"),
        (
            {"trial": {"batchsize": 8}},
            "trial.batchsize",
            "unknown field; did you mean 'batch_size'?",
        ),
        (
            {"search_space": {"overrides": {"num_layer": [3]}}},
            "search_space.overrides.num_layer",
            "unknown field; did you mean",
        ),
        ({"xyzzy": 1}, "xyzzy", "unknown field; known fields: name, dataset, search_space"),
    ],
)
def test_an_unknown_key_suggests_the_closest_field(client, change, field, message):
    problems = refusals(client.post(f"{API}/jobs", json={**BASE, **change}))
    assert [f for f, _ in problems] == [field]
    assert problems[0][1].startswith(message), problems
    assert client.post(f"{API}/jobs", json={**BASE, **change}).json()["detail"][0]["type"] == (
        "extra_forbidden"
    )


def test_an_unknown_key_beside_other_errors_keeps_every_error_and_its_suggestion(client):
    body = {**BASE, "name": "", "trail": {}, "workers": {"concurency": 2, "max_attempts": 0}}
    problems = dict(refusals(client.post(f"{API}/jobs", json=body)))
    assert problems == {
        "name": "String should have at least 1 character",
        "trail": "unknown field; did you mean 'trial'?",
        "workers.concurency": "unknown field; did you mean 'concurrency'?",
        "workers.max_attempts": "Input should be greater than or equal to 1",
    }


def test_the_model_itself_says_the_same(client):
    """Python callers of JobConfig get the same errors as the API's."""
    with pytest.raises(ValidationError) as info:
        JobConfig.model_validate({**BASE, "trail": {}, "hurdle": {"margin": "auto"}})
    errors = {".".join(map(str, e["loc"])): e["msg"] for e in info.value.errors()}
    assert errors == {"trail": "unknown field; did you mean 'trial'?"}  # fields first
    with pytest.raises(ValidationError) as info:
        JobConfig.model_validate({**BASE, "hurdle": {"margin": "auto"}})
    assert "Value error" not in str(info.value) and "hurdle.margin\n  auto sets" in str(info.value)


def test_query_refusals_name_the_field_once(client, shakespeare):
    job = client.post(f"{API}/jobs", json={"name": "q", "dataset": shakespeare}).json()
    response = client.get(f"{API}/jobs/{job['id']}/candidates", params={"sort": "bogus"})
    [(field, message)] = refusals(response)
    assert field == "sort" and message.startswith("cannot sort by 'bogus'"), message


# --- `nas submit FILE` ------------------------------------------------------------------


@pytest.fixture
def submit(client, monkeypatch, capsys, tmp_path):
    """`nas submit` of a file with the given text, against the app: (exit code, stderr)."""
    in_process = httpx.MockTransport(client.send)  # the CLI's Client, served by the app
    monkeypatch.setattr(
        "api.cli.client.Client", lambda server, token: Client(server, token, transport=in_process)
    )

    def run(text: str, name: str = "job.yaml") -> tuple[int, str]:
        path = tmp_path / name
        path.write_text(text)
        capsys.readouterr()
        try:
            submit_cmd(path, server="http://testserver", token=None)
        except typer.Exit as exc:
            code = exc.exit_code
        else:
            code = 0
        return code, capsys.readouterr().err.replace(str(tmp_path) + "/", "")

    return run


def test_cli_yaml_syntax_errors_name_the_file_line_and_column(submit):
    code, err = submit("name: x\ndataset: builtin:stdlib\ntrial: {budget_s: 5\nlimits: {}\n")
    assert code == 2
    assert "<unicode string>" not in err
    first = err.splitlines()[0]
    assert first.startswith("error: job.yaml, line 4, column 7: expected ',' or '}'"), err
    assert "(while parsing a flow mapping at line 3, column 8)" in first
    code, err = submit("name: x\n  dataset: y\n", "indent.yml")
    assert code == 2 and err.startswith("error: indent.yml, line 2, column 10: mapping values")


def test_cli_unknown_keys_say_where_and_what_was_meant(submit):
    code, err = submit(
        "name: x\ndataset: builtin:stdlib\ntrail: {budget_s: 5}\nworkers:\n  concurency: 2\n"
    )
    assert code == 2
    assert err.splitlines() == [
        "error: job.yaml, line 3: trail: unknown field; did you mean 'trial'?",
        "error: job.yaml, line 5: workers.concurency: unknown field; did you mean 'concurrency'?",
    ]


def test_cli_a_missing_dataset_names_the_field_once_at_its_line(submit):
    code, err = submit("# a comment\nname: x\ndataset: text:/nonexistent/x.txt\n")
    assert code == 2
    assert err == (
        "error: job.yaml, line 3: dataset: /nonexistent/x.txt does not exist "
        "(source 'text:/nonexistent/x.txt')\n"
    )


def test_cli_checks_across_fields_point_at_the_field_or_its_section(submit):
    code, err = submit(
        "name: x\ndataset: builtin:stdlib\nsearch_space: {preset: paper}\ntrial:\n  batch_size: 4\n"
    )
    assert code == 2
    assert err.startswith("error: job.yaml, line 5: trial.batch_size: 4 is too small"), err
    code, err = submit("name: x\ndataset: builtin:stdlib\nhurdle: {margin: auto}\n")
    assert err.startswith("error: job.yaml, line 3: hurdle.margin: auto sets the margin"), err
    assert "Value error" not in err


def test_cli_a_file_that_is_not_a_job_says_so(submit):
    assert submit("- a\n- b\n") == (
        2,
        "error: job.yaml: expected the job's fields (name: ..., dataset: ...), got a list\n",
    )
    assert submit("")[1].endswith("got nothing\n")
    assert submit("dataset: builtin:stdlib\n") == (2, "error: job.yaml: name: Field required\n")


def test_cli_an_accepted_file_prints_the_job_id(submit, capsys, tmp_path, shakespeare):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps({"name": "ok", "dataset": shakespeare}))
    assert submit(path.read_text(), "ok.json") == (0, "")


def test_cli_older_servers_repeated_field_names_are_said_once():
    from api.client import problems

    detail = [
        {"loc": ["body", "dataset"], "msg": "dataset: dataset: /x does not exist"},
        {"loc": ["body", "trial"], "msg": "Value error, give exactly one budget"},
    ]
    assert problems(detail) == ["dataset: /x does not exist", "trial: give exactly one budget"]


def test_cli_reads_the_example_job_file_without_complaint():
    from api.cli.client import load_job_file

    example = Path(__file__).resolve().parents[1] / "examples" / "quick.yaml"
    body, locate = load_job_file(example)
    assert body["name"] and locate(["trial", "budget_s"])[0] > 1
