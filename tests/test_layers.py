"""The layers' import rules (docs/architecture.md): arrows never point upward, and the
controller and API processes never load JAX."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What each layer must never import (its own and lower layers are fine).
FORBIDDEN = {
    "search_space": ("workers", "nas_service", "api", "jax", "flax", "ray", "sqlalchemy"),
    "workers": ("nas_service", "api", "sqlalchemy", "fastapi"),
    "nas_service": ("api", "fastapi", "jax", "flax"),
}


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(layer):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported(path) & set(FORBIDDEN[layer]))
        for path in (ROOT / layer).rglob("*.py")
        if "migrations" not in path.parts
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_controller_and_the_api_never_load_jax():
    code = (
        "import sys, api.app, api.cli, nas_service.runner, nas_service.jobs, nas_service.export;"
        "print(sorted(m for m in ('jax', 'flax', 'optax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
