"""Rendered projects shared by the CI, deploy and monitoring tests, and the validators they run.

A handful of renders covers every ci_provider, every deploy target and both flavours (each
target with each flavour at least once); each is rendered once per test session.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from helpers import generate, require_tool

COMBOS: dict[str, dict[str, Any]] = {
    "python-github-systemd": {"flavour": "python", "ci_provider": "github", "deploy_targets": ["systemd"]},
    "rust-gitlab-ansible-kubernetes": {
        "flavour": "rust", "ci_provider": "gitlab", "deploy_targets": ["ansible", "kubernetes"],
    },
    # a name and port unlike the defaults: a value written in instead of derived shows up
    "python-both-all": {
        "flavour": "python", "ci_provider": "both", "project_name": "ledger-x9", "http_port": 9411,
        "deploy_targets": ["systemd", "ansible", "kubernetes", "container"],
    },
    "rust-both-systemd-container": {
        "flavour": "rust", "ci_provider": "both", "deploy_targets": ["systemd", "container"],
    },
    "python-none-none": {"flavour": "python", "ci_provider": "none", "deploy_targets": []},
}

_ROOT = Path(tempfile.mkdtemp(prefix="plumbline-deploy-"))
atexit.register(shutil.rmtree, _ROOT, True)


@functools.cache
def rendered(combo: str) -> Path:
    """The project rendered with the answers of `combo` (once per session)."""
    return generate(_ROOT / combo / COMBOS[combo].get("project_name", "order-router"), **COMBOS[combo])


def answers(combo: str) -> dict[str, Any]:
    return {"project_name": "order-router", "http_port": 8080, **COMBOS[combo]}


def combos(*, flavour: str | None = None, target: str | None = None, ci: str | None = None) -> list[str]:
    """The combos that render what a test needs: a flavour, a deploy target, a CI provider."""
    out = []
    for name, values in COMBOS.items():
        if flavour and values["flavour"] != flavour:
            continue
        if target and target not in values["deploy_targets"]:
            continue
        if ci and values["ci_provider"] not in (ci, "both"):
            continue
        out.append(name)
    return out


def tool(name: str) -> str:
    """The path of a validator installed next to this Python, or on PATH; the test fails naming it when absent."""
    return require_tool(name)


def validate(cmd: list[str], cwd: Path, *, expect_ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a validator; fail with its whole output when its verdict is not the expected one."""
    proc = subprocess.run([tool(cmd[0]), *cmd[1:]], cwd=cwd, text=True, capture_output=True, timeout=300)
    if (proc.returncode == 0) != expect_ok:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode} in {cwd}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc
