"""The Python flavour's generated project passes its own setup, lint and tests, and stays formatted.

Each combination renders a project, then runs what its developers and CI run: `make setup
lint test`, then `make fmt`, after which git must see no change (the template ships code that
its own formatter leaves alone, for every project name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers import commit_all, generate, run

pytestmark = pytest.mark.needs_tool("uv")

COMBINATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "opentelemetry": {"opentelemetry": True},
    "short-name-high-port": {"project_name": "a1-b2", "http_port": 65535},
}


@pytest.mark.slow
@pytest.mark.parametrize("answers", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_generated_project_sets_up_lints_tests_and_stays_formatted(
    tmp_path: Path, answers: dict[str, Any]
) -> None:
    project = generate(tmp_path / "service", flavour="python", **answers)
    commit_all(project, "generated")

    run(["make", "setup", "lint", "test"], project, timeout=600)
    run(["make", "fmt"], project)

    assert run(["git", "status", "--porcelain"], project).stdout == ""


@pytest.mark.slow
@pytest.mark.parametrize("opentelemetry", [False, True], ids=["plain", "opentelemetry"])
def test_committed_lock_is_current(tmp_path: Path, opentelemetry: bool) -> None:
    """A stale lock fails here: regenerate it with scripts/lock-python."""
    project = generate(tmp_path / "service", flavour="python", opentelemetry=opentelemetry)

    result = run(["uv", "lock", "--check"], project, check=False)

    assert result.returncode == 0, f"uv.lock is stale; run scripts/lock-python\n{result.stderr}"


def test_python_files_carry_one_guard_and_no_rust_files() -> None:
    """Every Python-only path is guarded by `is_python` alone (no compound conditions)."""
    template = Path(__file__).resolve().parents[1] / "template"
    guarded = [p for p in template.rglob("*") if "is_python" in str(p.relative_to(template))]

    assert guarded
    for path in guarded:
        name = str(path.relative_to(template))
        assert " and " not in name
        assert " or " not in name
