"""A test that needs a missing tool fails, naming the tool; it never skips.

A skipped check passes every tier silently: the fast tier of CI would stay green on a machine
without promtool, kubectl, uv or cargo, and a bug that only that tool sees would get through.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TEMPLATE, require_tool

ABSENT = "plumbline-no-such-tool"
# A skip in the template's tests is allowed only on a line that says why: `# skip-ok: <reason>`.
SKIP = re.compile(r"pytest\.skip\(|mark\.skipif\(|importorskip\(|mark\.skip\(")


def test_an_installed_tool_is_found() -> None:
    assert Path(require_tool("git")).name == "git"


def test_a_missing_tool_fails_the_test_naming_it() -> None:
    with pytest.raises(pytest.fail.Exception, match=f"`{ABSENT}` is not installed"):
        require_tool(ABSENT)


def test_the_needs_tool_mark_fails_before_any_fixture_runs(tmp_path: Path) -> None:
    (tmp_path / "test_marked.py").write_text(
        "import pytest\n\n\n"
        "@pytest.fixture\n"
        "def expensive():\n"
        "    raise AssertionError('a fixture ran before the tool check')\n\n\n"
        f"@pytest.mark.needs_tool('git', '{ABSENT}')\n"
        "def test_marked(expensive):\n"
        "    pass\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-c", str(TEMPLATE / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-q", "test_marked.py"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(TEMPLATE / "tests")},
        text=True, capture_output=True, timeout=120, check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert f"`{ABSENT}` is not installed" in out and "a fixture ran" not in out, out
    assert "skipped" not in out, out


def test_no_test_skips_without_saying_why() -> None:
    offenders = []
    for path in sorted((TEMPLATE / "tests").rglob("*.py")):
        if path.name == Path(__file__).name:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if SKIP.search(line) and "# skip-ok:" not in line:
                offenders.append(f"{path.relative_to(TEMPLATE)}:{number}: {line.strip()}")
    assert not offenders, "a missing tool must fail the test (helpers.require_tool), not skip it:\n" + "\n".join(offenders)
