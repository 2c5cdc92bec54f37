"""Each question, answered well and badly: through the API, the CLI and a real terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pexpect
import pytest
import yaml

from helpers import DEFAULTS, TEMPLATE

BAD_ANSWERS = [
    ("project_name", "Order_Router", "lowercase letters, digits and single hyphens"),
    ("project_name", "a", "2-40 characters"),
    ("project_name", "order--router", "single hyphens"),
    ("description", "   ", "The description must not be empty."),
    ("author_name", "", "The author name must not be empty."),
    ("author_email", "ops-at-example", "name@example.com"),
    ("http_port", 80, "use 1024-65535"),
    ("http_port", 70000, "use 1024-65535"),
    ("flavour", "go", "'go' is not in ['python', 'rust']"),
    ("ci_provider", "jenkins", "'jenkins' is not in ['github', 'gitlab', 'both', 'none']"),
    ("deploy_targets", ["systemd", "nomad"], "'nomad' is not in"),
    ("license", "GPL-3.0", "'GPL-3.0' is not in ['MIT', 'Apache-2.0', 'proprietary']"),
]


@pytest.mark.parametrize(("question", "answer", "message"), BAD_ANSWERS)
def test_bad_answer_is_rejected_with_what_is_allowed(
    copie: Any, question: str, answer: object, message: str
) -> None:
    result = copie.copy(extra_answers={**DEFAULTS, question: answer})
    assert result.exit_code != 0
    assert message in str(result.exception)
    assert question in str(result.exception)


def test_cli_rejects_a_bad_answer_and_writes_nothing(tmp_path: Path) -> None:
    dst = tmp_path / "svc"
    proc = subprocess.run(
        [sys.executable, "-m", "copier", "copy", "--trust", "--defaults", "-d", "http_port=80",
         str(TEMPLATE), str(dst)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "http_port" in proc.stderr and "1024-65535" in proc.stderr
    assert not (dst / ".copier-answers.yml").exists()


def test_defaults_name_the_project_after_its_folder(copie: Any) -> None:
    result = copie.copy(extra_answers={})
    assert result.exit_code == 0, result.exception
    # pytest-copie renders into copieNNN: the folder name is a valid project name
    assert result.answers["project_name"] == result.project_dir.name
    assert result.answers["flavour"] == "python"
    assert result.answers["deploy_targets"] == ["systemd"]


# -- a person at a terminal ------------------------------------------------------------
CLEAR = "\x15"  # Ctrl-U: empty the prefilled default
DOWN = "\x1b[B"
ENTER = "\r"


def _terminal(dst: Path) -> pexpect.spawn:
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"}
    return pexpect.spawn(
        sys.executable, ["-m", "copier", "copy", "--trust", str(TEMPLATE), str(dst)],
        encoding="utf-8", timeout=30, dimensions=(50, 160), env=env,
    )


def _screen_text(raw: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)


def test_interactive_prompts_through_a_pseudo_terminal(tmp_path: Path) -> None:
    dst = tmp_path / "somewhere"
    child = _terminal(dst)
    try:
        child.expect("Service name")
        child.send(CLEAR + "Bad_Name" + ENTER)
        child.expect("is not a valid project name")  # re-asked, with what is allowed
        child.send(CLEAR + "payments-api" + ENTER)
        child.expect("what does the service do")
        child.send(CLEAR + "Settles card payments" + ENTER)
        child.expect("Owner of the service")
        child.send(CLEAR + "Payments Team" + ENTER)
        child.expect("Contact e-mail")
        child.send(CLEAR + "payments@example.com" + ENTER)
        child.expect("Language of the service")
        child.send(DOWN + ENTER)  # Rust
        child.expect("Default HTTP port")
        child.send(CLEAR + "80" + ENTER)
        child.expect("out of range")
        child.send(CLEAR + "9100" + ENTER)
        child.expect("CI workflows to generate")
        child.send(DOWN + ENTER)  # GitLab CI
        child.expect("Deployment files to generate")
        # systemd is preselected: keep it, add kubernetes (third entry)
        child.send(DOWN + DOWN + " " + ENTER)
        child.expect("OpenTelemetry")
        child.send("y")
        child.expect("License")
        child.send(DOWN + ENTER)  # Apache-2.0
        child.expect(pexpect.EOF, timeout=60)
    finally:
        child.close()
    assert child.exitstatus == 0, _screen_text(child.before or "")
    answers = yaml.safe_load((dst / ".copier-answers.yml").read_text())
    assert answers["project_name"] == "payments-api"
    assert answers["description"] == "Settles card payments"
    assert answers["author_name"] == "Payments Team"
    assert answers["author_email"] == "payments@example.com"
    assert answers["flavour"] == "rust"
    assert answers["http_port"] == 9100
    assert answers["ci_provider"] == "gitlab"
    assert answers["deploy_targets"] == ["systemd", "kubernetes"]
    assert answers["opentelemetry"] is True
    assert answers["license"] == "Apache-2.0"
    assert "Apache License" in (dst / "LICENSE").read_text()
