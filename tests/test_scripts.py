"""scripts/demo.sh and scripts/test.sh: a fresh clone gets .venv, later runs reinstall only
when pyproject.toml changed; pyproject.toml installs without setuptools deprecations."""

import os
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Stand-ins for `python3 -m venv` and the venv's python/nas: each call is logged; pip and the
# tools do nothing, anything else (the stamp's hash) runs the real interpreter.
FAKE_BASE = """#!/usr/bin/env bash
echo "base $*" >>"$LOG"
[ "$1 $2" = "-m venv" ] || exit 1
mkdir -p "$3/bin"
cat >"$3/bin/python" <<'PY'
#!/usr/bin/env bash
case "$1 $2" in
  "-m pip"|"-m pytest") echo "python $*" >>"$LOG"; exit 0 ;;
esac
exec "$REAL_PYTHON" "$@"
PY
printf '#!/usr/bin/env bash\\necho "nas $*" >>"$LOG"\\n' >"$3/bin/nas"
chmod +x "$3/bin/python" "$3/bin/nas"
"""


@pytest.fixture
def clone(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    base = tmp_path / "python3"
    base.write_text(FAKE_BASE)
    base.chmod(base.stat().st_mode | stat.S_IEXEC)
    return repo, base, tmp_path / "log"


def run(repo, base, log, script, *args):
    env = {**os.environ, "PYTHON": str(base), "LOG": str(log), "REAL_PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(repo / "scripts" / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return lines


def installs(lines):
    return [line for line in lines if line.startswith("python -m pip install") and "-e" in line]


def test_demo_installs_on_a_fresh_clone_then_only_when_pyproject_changes(clone):
    repo, base, log = clone
    first = run(repo, base, log, "demo.sh", "--trials", "4")
    assert first[0] == "base -m venv .venv" and installs(first) == [
        "python -m pip install --quiet -e ."
    ]
    assert first[-1] == "nas demo --trials 4"
    again = run(repo, base, log, "demo.sh")
    assert installs(again) == [] and again == ["nas demo"]  # no venv, no pip: straight on
    with (repo / "pyproject.toml").open("a") as file:
        file.write("\n# a change\n")
    assert installs(run(repo, base, log, "demo.sh")) == ["python -m pip install --quiet -e ."]
    assert installs(run(repo, base, log, "demo.sh")) == []


def test_the_dev_extra_has_its_own_stamp_and_covers_the_demo(clone):
    repo, base, log = clone
    run(repo, base, log, "demo.sh")
    tests = run(repo, base, log, "test.sh", "-k", "cost")
    assert installs(tests) == ["python -m pip install --quiet -e .[dev]"]
    assert tests[-1] == "python -m pytest -k cost"
    assert installs(run(repo, base, log, "test.sh")) == []
    assert installs(run(repo, base, log, "demo.sh")) == []  # dev includes the base install


def test_a_failed_install_is_retried_next_time(clone):
    repo, base, log = clone
    run(repo, base, log, "demo.sh")
    (repo / ".venv" / ".nas-installed-base").unlink()  # as if pip had failed midway
    assert installs(run(repo, base, log, "demo.sh")) == ["python -m pip install --quiet -e ."]


def test_pyproject_uses_the_spdx_license_string():
    """The `license = {text = ...}` table is deprecated (setuptools warns at every install);
    the SPDX string needs setuptools >= 77."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert project["build-system"]["requires"] == ["setuptools>=77"]
