"""`nas demo`, the README's main job, in a shortened form."""

import json
import re

import pytest
from test_cli_space import nas

from search_space import ArchSpec


@pytest.mark.slow
def test_demo_runs_a_search_end_to_end(tmp_path):
    out = tmp_path / "out"
    result = nas(
        "demo",
        "--trials",
        "3",
        "--budget",
        "1",
        "--home",
        str(tmp_path / "home"),
        "--out",
        str(out),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Pareto front" in result.stdout and "trial 3/3: candidate" in result.stdout
    # Piped: a line per finished trial, no status every two seconds; the URL whole.
    assert "running, best perplexity" not in result.stdout
    assert re.search(r"^  http://127\.0\.0\.1:\d+/#/jobs/1$", result.stdout, re.M)
    assert "dashboard (closes when the demo ends; --keep-serving keeps it up)" in result.stdout
    assert "baseline: candidate" in result.stdout and "perplexity / baseline" in result.stdout
    assert "evolution: " in result.stdout
    bundle = json.loads((out / "best.json").read_text())
    ArchSpec.model_validate(bundle["spec"])
    assert bundle["metrics"]["perplexity"] > 1 and bundle["manifest"]["dataset"]["checksum"]
    assert "params:" in (out / "best_model.py").read_text()
    assert json.loads((out / "best_100M.json").read_text())["scale"]["within_tolerance"]
