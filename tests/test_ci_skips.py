"""The skip check of tests/conftest.py: with NAS_CI_STRICT_SKIPS=1 a skip whose reason is not
allowed fails the session, so CI cannot pass with a test quietly missing. Each case runs pytest
on a generated file beside a copy of the conftest (about a second each)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")
TESTS = """
import pytest


def test_runs():
    pass


@pytest.mark.skipif(True, reason="root reads files of mode 000")
def test_allowed_by_mark():
    pass


def test_skipped_inside():
    pytest.skip({reason!r})
"""


def run_pytest(tmp_path: Path, reason: str, **env: str) -> tuple[int, str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_generated.py").write_text(TESTS.format(reason=reason))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NAS_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**environ, **env},
    )
    return done.returncode, done.stdout + done.stderr


def test_an_unlisted_skip_fails_a_strict_session_and_is_reported(tmp_path):
    report = tmp_path / "skips.json"
    code, out = run_pytest(
        tmp_path, "corpus not found", NAS_CI_STRICT_SKIPS="1", NAS_SKIP_REPORT=str(report)
    )
    assert code == pytest.ExitCode.TESTS_FAILED, out
    assert "skips by reason (2)" in out
    assert "1 x corpus not found [NOT ALLOWED]" in out
    assert "1 x root reads files of mode 000\n" in out
    assert "1 test(s) skipped for a reason not allowed here" in out
    assert json.loads(report.read_text()) == {
        "skipped": 2,
        "unexpected": 1,
        "by_reason": {"root reads files of mode 000": 1, "corpus not found": 1},
    }


def test_allowed_skips_pass_a_strict_session(tmp_path):
    code, out = run_pytest(tmp_path, "needs 3 cores: 2 + 1", NAS_CI_STRICT_SKIPS="1")
    assert code == pytest.ExitCode.OK, out
    assert "skips by reason (2)" in out and "NOT ALLOWED" not in out


def test_another_machine_may_allow_more_and_only_strict_sessions_fail(tmp_path):
    extra = {"NAS_CI_STRICT_SKIPS": "1", "NAS_ALLOWED_SKIPS": "kubectl; corpus not"}
    assert run_pytest(tmp_path, "corpus not found", **extra)[0] == pytest.ExitCode.OK
    code, out = run_pytest(tmp_path, "corpus not found")
    assert code == pytest.ExitCode.OK and "1 x corpus not found [not on CI's list]" in out
