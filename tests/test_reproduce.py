"""bench/reproduce.py: the table and report helpers, and the whole pipeline at --quick size."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SHAKESPEARE = Path(__file__).resolve().parent / "data" / "tinyshakespeare_head.txt"
sys.path.insert(0, str(BENCH))

import reproduce  # noqa: E402  (bench/ is a folder of scripts, not a package)


def summary(mean, low=None, high=None, n=3):
    return {"mean": mean, "se": None, "low": low, "high": high, "n": n}


def model(name, ppl, rate, status="ok"):
    return {
        "name": name,
        "label": "",
        "block": f"{name} block",
        "params_activated": 9_822_912,
        "params_total": 89_449_152,
        "perplexity": ppl,
        "steps_per_s": rate,
        "runs": [{"status": status}, {"status": "ok"}],
    }


def test_table_has_the_papers_columns_and_intervals():
    models = [
        model("searched", summary(3.1234, 3.0, 3.25), summary(1.5, 1.4, 1.6)),
        model("GLaM", summary(3.5, 3.4, 3.6), summary(1.2, 1.1, 1.3), status="failed"),
        model("dense", summary(None, n=0), summary(2.0)),
    ]
    table = reproduce.table_markdown(models).splitlines()
    assert table[0].startswith("| model | activated params | total params | val perplexity")
    assert len(table) == 5
    assert "| searched | 9.8M | 89.4M | 3.123 [3.000, 3.250] | 1.500 [1.400, 1.600] | 2/2 |" in (
        table
    )
    assert table[3].endswith("| 1/2 |")
    assert "| n/a | 2.000 |" in table[4]  # no perplexity; a mean without interval
    lines = reproduce.comparison_lines(models)
    assert lines[0] == "searched / GLaM perplexity: 0.892 (intervals apart)"
    assert "searched / GLaM steps/s: 1.250 (intervals apart)" in lines
    assert not any("dense perplexity" in line for line in lines)


def test_arguments_may_come_from_a_file(tmp_path):
    (tmp_path / "args").write_text("--data builtin:stdlib\n--seeds 2 --results\n")
    assert reproduce.expand_args(["--quick", f"@{tmp_path / 'args'}", "--json", "x.json"]) == [
        "--quick",
        "--data",
        "builtin:stdlib",
        "--seeds",
        "2",
        "--results",
        "--json",
        "x.json",
    ]


def test_a_block_that_scales_to_a_baselines_model_is_said_to():
    space = reproduce.get_preset(reproduce.PRESET)
    glam = reproduce.baseline("glam", space)
    models, batch = reproduce.scaled_models(glam, "a copy", 1e6)
    assert models[0]["same_as"] == "GLaM" and "same_as" not in models[1]
    assert batch >= 16
    models[1]["runs"] = [{"status": "ok"}]
    assert "the same model as GLaM" in reproduce.table_markdown(models[:1])


def test_parameter_counts_read_as_the_paper_writes_them():
    assert [reproduce.params(n) for n in (None, 999, 1_500, 10_040_800, 1.2e9)] == [
        "n/a",
        "999",
        "1.5K",
        "10.0M",
        "1.2B",
    ]


def test_the_results_section_is_created_then_only_its_own_corpus_replaced():
    before = "# Benchmark results\n\n## Other\n\ntext\n"
    first = reproduce.upsert_results(before, "### Corpus: `a.txt`\n\nrun 1\n")
    assert first.startswith(before)
    assert reproduce.SECTION in first and first.endswith("run 1\n")
    second = reproduce.upsert_results(first, "### Corpus: `builtin:stdlib`\n\nrun 2\n")
    third = reproduce.upsert_results(second, "### Corpus: `a.txt`\n\nrun 3\n")
    assert "run 1" not in third and "run 2" in third and "run 3" in third
    assert third.index("`a.txt`") < third.index("`builtin:stdlib`")  # kept in place
    assert third.count(reproduce.SECTION) == 1 and third.startswith(before)
    # A section written later by someone else stays after ours, untouched.
    later = third + "\n## Later\n\nmore\n"
    fourth = reproduce.upsert_results(later, "### Corpus: `builtin:stdlib`\n\nrun 4\n")
    assert fourth.endswith("## Later\n\nmore\n") and "run 2" not in fourth and "run 4" in fourth
    assert reproduce.upsert_results("", "### Corpus: `x`\n\ny\n").startswith(reproduce.SECTION)


def test_the_winner_is_the_declared_one_else_the_best_by_mean_labelled():
    space = reproduce.get_preset(reproduce.PRESET)
    glam = reproduce.baseline("glam", space).model_dump(mode="json")
    switch = reproduce.baseline("switch", space).model_dump(mode="json")
    ec = reproduce.baseline("glam-ec", space).model_dump(mode="json")
    rows = [
        {"candidate_id": 1, "is_baseline": True, "val_loss": summary(2.0)},
        {"candidate_id": 5, "is_baseline": False, "val_loss": summary(2.2)},
        {"candidate_id": 7, "is_baseline": False, "val_loss": summary(2.1)},
    ]
    search = {
        "specs": {"1": glam, "5": switch, "7": ec},
        "confirmation": {"winner": None, "baseline_id": 1, "candidates": rows},
        "trials": [
            {"candidate_id": 1, "status": "completed", "feasible": True, "val_loss": 1.0},
            {"candidate_id": 5, "status": "completed", "feasible": False, "val_loss": 2.0},
            {"candidate_id": 7, "status": "completed", "feasible": True, "val_loss": 3.0},
        ],
    }
    chosen = reproduce.choose_winner(search)
    assert chosen["candidate_id"] == 7 and chosen["kind"] == "best_by_mean"
    assert "not shown better" in chosen["label"]
    search["confirmation"]["winner"] = 5
    assert reproduce.choose_winner(search)["kind"] == "confirmed"
    search["confirmation"] = {"status": "not_requested"}  # nothing was feasible to confirm
    chosen = reproduce.choose_winner(search)
    assert chosen["candidate_id"] == 7 and chosen["kind"] == "search_best"  # feasible first
    search["trials"][2]["feasible"] = False
    chosen = reproduce.choose_winner(search)
    assert chosen["candidate_id"] == 5 and "over the step-time limit" in chosen["label"]
    search["specs"] = {"1": glam}
    assert reproduce.choose_winner(search) is None


@pytest.mark.slow
def test_quick_pipeline_end_to_end(tmp_path):
    data = f"text:{SHAKESPEARE}"
    out = tmp_path / "reproduce.json"
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n")
    command = [
        sys.executable,
        str(BENCH / "reproduce.py"),
        "--quick",
        "--data",
        data,
        "--json",
        str(out),
        "--results",
        "--results-file",
        str(results),
    ]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "NAS_HOME": str(tmp_path / "home")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=420, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| model | activated params | total params |" in done.stdout
    assert "total wall time:" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["search"]["status"] == "completed"
    assert figures["search"]["confirmation"]["status"] == "done"
    assert figures["search"]["fidelity"]["pairs"]
    models = figures["scaled"]["models"]
    assert [m["name"] for m in models] == ["searched", "GLaM", "dense"]
    for m in models:
        assert m["params_total"] >= m["params_activated"] > 0
        assert m["perplexity"]["n"] >= 1 and math.isfinite(m["perplexity"]["mean"])
        assert m["perplexity"]["mean"] > 1
    text = results.read_text()
    assert reproduce.SECTION in text and "Verdict:" in text
