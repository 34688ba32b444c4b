"""bench/accelerator.py at --quick size on this machine's device (the CPU here): the table,
the JSON, and figures that hang together."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "accelerator.py"


def test_the_accelerator_benchmark_quick_run(tmp_path):
    out = tmp_path / "accelerator.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["quick"] and figures["precision"] == "float32"  # the CPU's default
    assert set(figures["matmul_peak_tflops"]) == {"float32", "bfloat16"}
    assert all(peak > 0 for peak in figures["matmul_peak_tflops"].values())
    blocks = figures["blocks"]
    assert set(blocks) == {"dense", "glam", "switch", "glam-ec"}
    for name, block in blocks.items():
        assert block["step_ms"] > 0 and 0 < block["mfu"] < 1.5, name
        assert block["tokens_per_s"] == pytest.approx(
            figures["batch_size"] * figures["seq_len"] / (block["step_ms"] / 1e3)
        )
        if name != "dense":
            assert block["vs_matched_dense"] == pytest.approx(
                block["step_ms"] / block["matched_dense_step_ms"]
            )
    sharing = figures["sharing"]
    assert sharing["one"]["trials"] == 1 and sharing["shared"]["trials"] == 4
    assert sharing["one"]["steps"] > 0 and sharing["shared"]["steps"] > 0
    assert sharing["speedup"] == pytest.approx(
        sharing["shared"]["tokens_per_s"] / sharing["one"]["tokens_per_s"]
    )
    for line in ("block", "dense", "glam-ec", "4 trials per device"):
        assert line in done.stdout
