"""Helpers shared by the template's tests: render a project, run a command in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from copier import run_copy

TEMPLATE = Path(__file__).resolve().parents[1]
# One build cache for the whole run: Rust dependencies compile once, uv's cache is reused.
CACHE = Path(os.environ.get("PLUMBLINE_CACHE", TEMPLATE / ".cache"))
CARGO_TARGET_DIR = CACHE / "cargo-target"

DEFAULTS: dict[str, Any] = {
    "project_name": "order-router",
    "description": "Routes orders to the right desk",
    "author_name": "Ops Team",
    "author_email": "ops@example.com",
    "flavour": "python",
    "http_port": 8080,
    "ci_provider": "github",
    "deploy_targets": ["systemd"],
    "opentelemetry": False,
    "license": "MIT",
}
FULL: dict[str, Any] = {
    **DEFAULTS,
    "ci_provider": "both",
    "deploy_targets": ["systemd", "ansible", "kubernetes", "container"],
    "opentelemetry": True,
}


def require_tool(name: str) -> str:
    """The path of a tool a test needs (next to this Python, or on PATH); fail naming it when absent.

    A missing tool fails the test, never skips it: a skipped check passes every tier silently.
    `.ci/run` installs every tool; a developer's machine may not have them all.
    """
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed: this test needs it (.ci/run installs every tool the suite needs)",
                    pytrace=False)
    return found


def generate(dst: Path, **answers: Any) -> Path:
    """Render the template (working tree, uncommitted changes included) into `dst`."""
    data = {**DEFAULTS, **answers}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "dirty template" warnings while developing
        run_copy(str(TEMPLATE), str(dst), data=data, defaults=True, unsafe=True, quiet=True, vcs_ref="HEAD")
    return dst


def run(cmd: list[str] | str, cwd: Path, timeout: float = 900, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output, and fail with that output when it fails."""
    full_env = {**os.environ, "CARGO_TARGET_DIR": str(CARGO_TARGET_DIR), **(env or {})}
    proc = subprocess.run(
        cmd, cwd=cwd, env=full_env, text=True, capture_output=True, timeout=timeout,
        shell=isinstance(cmd, str),
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{cmd} failed with exit {proc.returncode} in {cwd}\n"
            f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


# The identity of the commits made in scratch repositories, whatever the machine's git config.
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "plumbline tests", "GIT_AUTHOR_EMAIL": "tests@plumbline.invalid",
    "GIT_COMMITTER_NAME": "plumbline tests", "GIT_COMMITTER_EMAIL": "tests@plumbline.invalid",
}


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, text=True, capture_output=True, check=False,
                          env={**os.environ, **GIT_IDENTITY})
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}:\n{proc.stderr}")
    return proc.stdout


def commit_all(project: Path, message: str) -> None:
    """Commit everything in a project (a repository is made on first use), as a team would."""
    if not (project / ".git").exists():
        git(project, "init", "--quiet", "--initial-branch=main")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "--allow-empty", "--no-verify", "-m", message)
