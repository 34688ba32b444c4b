"""Export: scaled configs, the standalone Flax module (run as a script), the JSON bundle."""

import ast
import json
import os
import re
import subprocess
import sys
import types
from datetime import datetime

import numpy as np
import pytest

from nas_service.export import (
    _inline_project_imports,
    export_config,
    export_json,
    flax_module,
    package_versions,
)
from nas_service.job_config import JobConfig
from search_space import PRESETS, ArchSpec, baseline, cost, sample, scale, spec_hash

ALLOWED_IMPORTS = {"jax", "flax", "optax", "numpy"} | set(sys.stdlib_module_names)


def sampled(seed: int, tied: bool, positions: str) -> ArchSpec:
    spec = sample(PRESETS["proxy-cpu"], np.random.default_rng(seed))
    return spec.model_copy(update={"tied_embeddings": tied, "positions": positions})


# Run as scripts (each imports JAX, so few, and concurrently): (spec, target, script args).
SCRIPTS: dict[str, tuple[ArchSpec, str | None, list[str]]] = {
    "switch": (baseline("switch"), None, []),
    "glam-ec": (baseline("glam-ec"), None, []),  # batch 1: the inference routing
    "sampled-untied-learned": (sampled(0, False, "learned"), None, []),  # top2, EC c=2 and 3
    "glam-100M": (baseline("glam"), "100M", ["--max-params", "0"]),  # 734M total: count only
}
# Counted in-process through one executed module's eval_shape.
IN_PROCESS: dict[str, ArchSpec] = {
    "dense": baseline("dense"),
    "glam": baseline("glam"),
    "dense-layernorm": baseline("dense").model_copy(
        update={"block": baseline("dense").block.model_copy(update={"norm": "layernorm"})}
    ),
    **{
        f"sampled-{seed}-{'tied' if tied else 'untied'}-{positions}": sampled(seed, tied, positions)
        for seed, (tied, positions) in enumerate(
            [(True, "rotary"), (False, "rotary"), (True, "learned"), (False, "learned")], start=1
        )
    },
}


def imported_modules(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in a standalone module"
            modules.add((node.module or "").split(".")[0])
    return modules - {"__future__"}


@pytest.fixture(scope="module")
def script_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Each SCRIPTS module written out and run by `python -I` outside the project."""
    directory = tmp_path_factory.mktemp("export")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    processes = {}
    for name, (spec, target, args) in SCRIPTS.items():
        path = directory / f"{name}.py"
        path.write_text(flax_module(spec, target))
        processes[name] = subprocess.Popen(
            [sys.executable, "-I", str(path), *args],
            cwd=directory,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    runs = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        runs[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return runs


@pytest.mark.parametrize("name", SCRIPTS)
def test_module_runs_standalone_with_exact_param_count(script_runs, name):
    spec, target, _ = SCRIPTS[name]
    expected = cost(scale(spec, target).spec if target else spec).params_total
    run = script_runs[name]
    assert run.returncode == 0, run.stderr
    assert re.search(r"^params: (\d+)$", run.stdout, re.M).group(1) == str(expected)
    if target is None:
        shape = f"(1, {spec.seq_len}, {spec.vocab_size})"
        assert f"forward: ok logits shape {shape}" in run.stdout
    else:
        assert "forward: skipped" in run.stdout


@pytest.mark.parametrize(
    ("spec", "target"),
    [pytest.param(spec, None, id=name) for name, spec in IN_PROCESS.items()]
    + [pytest.param(spec, target, id=name) for name, (spec, target, _) in SCRIPTS.items()]
    + [pytest.param(baseline("switch"), "1B", id="switch-1B")],
)
def test_module_compiles_and_imports_only_jax_flax_numpy_stdlib(spec, target):
    source = flax_module(spec, target)
    compile(source, "model.py", "exec")
    assert imported_modules(source) <= ALLOWED_IMPORTS
    assert spec_hash(scale(spec, target).spec if target else spec) in source


def test_module_counts_params_of_every_spec_via_eval_shape(monkeypatch):
    module = types.ModuleType("exported_model")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look it up
    exec(compile(flax_module(baseline("dense")), "model.py", "exec"), module.__dict__)
    for name, spec in IN_PROCESS.items():
        loaded = module.load_spec(spec.model_dump(mode="json"))
        assert module.abstract_params(loaded) == cost(spec).params_total, name


@pytest.mark.parametrize(
    "line",
    [
        "from search_space.specs import describe",
        "from search_space.cost import (\n    cost,\n)",
        "from workers.data import load_dataset",
        "import nas_service.models",
        "from . import trainer",
    ],
)
def test_unhandled_project_import_is_refused(line):
    with pytest.raises(ValueError, match=r"model\.py"):
        _inline_project_imports(f"import jax\n{line}\n")


@pytest.mark.parametrize("target", ["100M", "1B", "8B"])
def test_export_config_scales_within_tolerance(target):
    exported = export_config(baseline("glam"), target)
    json.dumps(exported, allow_nan=False)
    spec = ArchSpec.model_validate(exported["spec"])
    assert exported["cost"] == cost(spec).model_dump(mode="json")
    scaled = exported["scale"]
    assert scaled["target"] == target and scaled["recipe"] == "fit"
    assert scaled["within_tolerance"] and abs(scaled["relative_error"]) <= 0.1
    activated = exported["cost"]["params_activated"]
    assert activated == pytest.approx(scaled["target_params"], rel=0.1)


def test_export_config_without_target_is_the_spec_itself():
    spec = baseline("dense")
    exported = export_config(spec, None)
    assert exported == {
        "spec": spec.model_dump(mode="json"),
        "cost": cost(spec).model_dump(mode="json"),
        "scale": None,
    }


@pytest.mark.parametrize("target", ["huge", "1", "-5M", "1e99"])
def test_export_config_rejects_bad_target(target):
    with pytest.raises(ValueError, match=r"^target"):
        export_config(baseline("dense"), target)


def test_export_json_bundles_metrics_lineage_and_manifest():
    spec = baseline("switch")
    config = JobConfig(name="quick", dataset="builtin:stdlib", seed=7).model_dump(mode="json")
    job = {"id": 3, "name": "quick", "config": config, "data_checksum": "ab" * 32}
    device = {"platform": "cpu", "device_kind": "cpu", "device_count": 1, "jax": "0.4.35"}
    candidate = {
        "id": 12,
        "job_id": 3,
        "spec": spec.model_dump(mode="json"),
        "spec_hash": spec_hash(spec),
        "status": "completed",
        "feasible": True,
        "val_loss": 1.5,
        "perplexity": 4.48,
        "step_time_ms": 80.0,
        "params_total": cost(spec).params_total,
        "mfu": None,
        "device": device,
    }
    lineage = [
        {"id": 12, "parent_id": 5, "mutation": "set ffn hidden 256"},
        {"id": 5, "parent_id": None, "mutation": ""},
    ]
    bundle = export_json(candidate, job, lineage)
    json.dumps(bundle, allow_nan=False)
    assert bundle["spec"] == candidate["spec"] and bundle["lineage"] == lineage
    assert bundle["candidate"]["spec_hash"] == spec_hash(spec)
    assert bundle["metrics"]["val_loss"] == 1.5 and bundle["metrics"]["mfu"] is None
    assert "device" not in bundle["metrics"] and "traceback" not in bundle["metrics"]
    manifest = bundle["manifest"]
    assert manifest["dataset"] == {"source": "builtin:stdlib", "checksum": "ab" * 32}
    assert manifest["seed"] == 7 and manifest["trial"] == config["trial"]
    assert manifest["device"] == device
    assert set(manifest["versions"]) == {
        "python",
        "jax",
        "jaxlib",
        "flax",
        "optax",
        "numpy",
        "nas-service",
    }
    assert manifest["versions"]["nas-service"] is not None
    assert datetime.fromisoformat(manifest["exported_at"]).tzinfo is not None
    pinned = {"python": "3.11.9", "jax": "0.4.35"}
    assert export_json(candidate, job, lineage, versions=pinned)["manifest"]["versions"] == pinned


def test_package_versions_match_this_environment():
    import flax
    import jax

    versions = package_versions()
    assert versions["jax"] == jax.__version__ and versions["flax"] == flax.__version__


def test_export_config_says_what_was_rounded_for_accelerators():
    scaled = export_config(baseline("glam"), "100M")["scale"]
    notes = scaled["rounding"]
    assert notes[0]["field"] == "block.d_model" and notes[0]["multiple"] == 128
    assert all(note["rounded"] % note["multiple"] == 0 for note in notes)
    assert {"field", "exact", "rounded", "multiple"} == set(notes[0])
    assert scaled["rounding_summary"].startswith("d_model ")
    assert export_config(baseline("glam"), None)["scale"] is None
