"""`nas train-proxy` as a user runs it."""

import json

from test_cli_space import nas

from search_space import baseline


def test_train_proxy_baseline_prints_the_result(shakespeare):
    out = nas("train-proxy", "--baseline", "switch", "--budget", "1", "--data", shakespeare)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "ok" and result["steps"] > 0
    assert result["params_total"] > 0 and result["val_loss"] > 0


def test_train_proxy_spec_file(tmp_path, shakespeare):
    path = tmp_path / "ec.json"
    path.write_text(baseline("glam-ec").to_json())
    out = nas(
        "train-proxy", str(path), "--budget", "0.5", "--data", shakespeare, "--batch-size", "8"
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "ok"


def test_train_proxy_bad_inputs_name_the_option(tmp_path):
    missing = nas("train-proxy", "--baseline", "dense", "--data", f"text:{tmp_path}/none.txt")
    assert missing.returncode == 2 and "--data" in missing.stderr
    assert "does not exist" in missing.stderr
    both = nas("train-proxy", "--baseline", "nope")
    assert both.returncode == 2 and "--baseline" in both.stderr
    neither = nas("train-proxy")
    assert neither.returncode == 2 and "SPEC_FILE or --baseline" in neither.stderr


def test_train_proxy_steps_budget_with_a_reference(shakespeare):
    out = nas(
        "train-proxy", "--baseline", "dense", "--steps", "8", "--reference", "dense",
        "--data", shakespeare,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["steps"] == 8 and set(result["val_loss_at"]) == {"1"}  # the default
    assert result["reference_step_time_ms"] > 0 and result["step_time_ratio"] > 0


def test_train_proxy_precision(shakespeare):
    out = nas(
        "train-proxy", "--baseline", "dense", "--steps", "3", "--precision", "bfloat16",
        "--data", shakespeare,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["precision"] == "bfloat16"
    bad = nas("train-proxy", "--baseline", "dense", "--steps", "3", "--precision", "fp8")
    assert bad.returncode == 2
    assert "--precision: 'fp8' is not one of float32, bfloat16" in bad.stderr


def test_train_proxy_budget_options_exclude_each_other(shakespeare):
    both = nas("train-proxy", "--baseline", "dense", "--steps", "3", "--flops", "1e9")
    assert both.returncode == 2 and "--steps and --flops" in both.stderr
    small = nas("train-proxy", "--baseline", "glam-ec", "--batch-size", "1", "--data", shakespeare)
    assert small.returncode == 2 and "--batch-size" in small.stderr
