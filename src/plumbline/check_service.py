"""`plumbline check-service`: the template's contract suite (tests/contract) against a built service.

The suite is the one the template tests itself with; tests/external.py points its harness at
the given command line instead of a service it renders and builds. The wheel carries the
suite (plumbline/suite); from a clone of the template it is read from tests/.
"""

from __future__ import annotations

import argparse
import ast
import os
import shlex
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from plumbline.errors import AuditError

INI = """[pytest]
addopts = -p no:cacheprovider
markers =
    slow: boots a service
    rust: needs cargo
    example: checks the example service part; skipped for a service that replaced it
    needs_tool(name): fails naming the tool when it is not installed
"""


def suite_dir() -> Path:
    """The folder holding conftest.py, services.py and contract/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "suite", here.parents[1] / "tests"):
        if (candidate / "contract").is_dir() and (candidate / "external.py").is_file():
            return candidate
    raise AuditError("the contract suite is not installed with this plumbline (no suite/contract folder)")


def _section(test_file: Path) -> str:
    """`Contract §5: the HTTP endpoints...`: the first line of a test module's docstring."""
    try:
        doc = ast.get_docstring(ast.parse(test_file.read_text())) or ""
    except (OSError, SyntaxError):
        return test_file.stem
    return doc.strip().splitlines()[0].rstrip(".") if doc.strip() else test_file.stem


def outcomes(junit: Path, suite: Path, kinds: tuple[str, ...] = ("failure", "error")) -> list[str]:
    """One line per failed (or skipped) test: the rule (module docstring), the test and the first line of why."""
    if not junit.exists():
        return []
    lines = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        problem = next((found for kind in kinds if (found := case.find(kind)) is not None), None)
        if problem is None:
            continue
        module = case.get("classname", "").split(".")
        test_file = suite.joinpath(*module[:2]).with_suffix(".py") if len(module) >= 2 else suite
        why = (problem.get("message") or problem.text or "").strip().splitlines()
        word = "SKIP" if problem.tag == "skipped" else "FAIL"
        reason = why[0][:200] if why else ("skipped" if word == "SKIP" else "failed")
        lines.append(f"{word} {_section(test_file)}: {case.get('name')}: {reason}")
    return lines


def failures(junit: Path, suite: Path) -> list[str]:
    return outcomes(junit, suite)


def check_service(args: argparse.Namespace) -> int:
    project = args.project.resolve()
    if not (project / "cfg" / "config.toml").is_file():
        raise AuditError(f"{project} has no cfg/config.toml: give the project folder with --project")
    suite = suite_dir()
    env = {
        **os.environ,
        "PLUMBLINE_SERVICE_COMMAND": args.service_command or "",
        "PLUMBLINE_SERVICE_URL": args.url or "",
        "PLUMBLINE_SERVICE_PROJECT": str(project),
        "PLUMBLINE_WITH_EXAMPLE": args.example,
    }
    if args.name:
        env["PLUMBLINE_SERVICE_NAME"] = args.name
    if args.flavour:
        env["PLUMBLINE_SERVICE_FLAVOUR"] = args.flavour
    extra = [a for a in args.pytest_args if a != "--"]
    with tempfile.TemporaryDirectory(prefix="plumbline-check-") as tmp:
        ini, junit = Path(tmp) / "pytest.ini", Path(tmp) / "junit.xml"
        ini.write_text(INI)
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(ini),
            "--rootdir",
            str(suite),
            "--confcutdir",
            str(suite),
            f"--junitxml={junit}",
            "-q",
            "-rN",
            "--tb=short",
            str(suite / "contract"),
            *extra,
        ]
        print(f"plumbline check-service: {shlex.join(cmd[3:])}", file=sys.stderr)
        code = subprocess.run(cmd, cwd=suite, env=env, check=False).returncode
        failed = failures(junit, suite)
        skipped = outcomes(junit, suite, ("skipped",))
    for line in skipped:
        print(line)
    if code == 0:
        print("plumbline check-service: every contract check passed")
        return 0
    if code == 1:
        print(f"plumbline check-service: {len(failed)} contract check{'s' if len(failed) != 1 else ''} failed")
        for line in failed:
            print(line)
        return 1
    raise AuditError(f"the contract suite could not run (pytest exit {code}); its output is above")
