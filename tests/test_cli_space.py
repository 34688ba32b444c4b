"""`nas space ...` and `nas demo` as a user runs them: the installed console script."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from search_space import PRESETS, ArchSpec, baseline, cost

NAS = str(Path(sys.executable).with_name("nas"))


def nas(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([NAS, *args], capture_output=True, text=True, timeout=timeout)


def test_sample_prints_valid_seeded_specs():
    first = nas("space", "sample", "--preset", "proxy-cpu", "--n", "5", "--seed", "0")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.strip().splitlines()
    assert len(lines) == 5
    for line in lines:
        PRESETS["proxy-cpu"].check(ArchSpec.from_json(line))
    again = nas("space", "sample", "--preset", "proxy-cpu", "--n", "5", "--seed", "0")
    assert again.stdout == first.stdout
    other = nas("space", "sample", "--n", "5", "--seed", "1")
    assert other.stdout != first.stdout


def test_cost_json_matches_the_library(tmp_path):
    spec = baseline("glam")
    path = tmp_path / "glam.json"
    path.write_text(spec.to_json())
    out = nas("space", "cost", str(path), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == json.loads(cost(spec).model_dump_json())
    table = nas("space", "cost", str(path))
    assert table.returncode == 0 and "activated" in table.stdout


def test_baseline_then_scale(tmp_path):
    out = nas("space", "baseline", "glam-ec", "--preset", "proxy-cpu")
    assert out.returncode == 0, out.stderr
    path = tmp_path / "ec.json"
    path.write_text(out.stdout)
    scaled = nas("space", "scale", str(path), "--target", "1B", "--json")
    assert scaled.returncode == 0, scaled.stderr
    result = json.loads(scaled.stdout)
    assert result["within_tolerance"] and result["spec"]["repeats"] == 6
    text = nas("space", "scale", str(path), "--target", "8B")
    assert text.returncode == 0 and "within ±10%" in text.stdout


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (
            '{"block": {"d_model": 128, "norm": "rmsnorm", "layers": []}, "repeats": 1, '
            '"vocab_size": 256, "seq_len": 8}',
            "block.layers",
        ),
        (
            '{"block": {"d_model": 128, "norm": "rmsnorm", "layers": [{"kind": "attention", '
            '"heads": 0, "head_dim": 8}]}, "repeats": 1, "vocab_size": 256, "seq_len": 8}',
            "block.layers.0.attention.heads",
        ),
        ("not json", "invalid spec"),
    ],
)
def test_invalid_spec_file_exits_non_zero_naming_the_field(tmp_path, content, field):
    path = tmp_path / "bad.json"
    path.write_text(content)
    for command in (("space", "cost", str(path)), ("space", "scale", str(path))):
        out = nas(*command)
        assert out.returncode == 2
        assert field in out.stderr


def test_bad_options_name_the_option(tmp_path):
    missing = nas("space", "cost", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "cannot read spec file" in missing.stderr
    preset = nas("space", "sample", "--preset", "huge")
    assert preset.returncode == 2 and "--preset" in preset.stderr
    path = tmp_path / "dense.json"
    path.write_text(baseline("dense").to_json())
    target = nas("space", "scale", str(path), "--target", "lots")
    assert target.returncode == 2 and "target" in target.stderr
