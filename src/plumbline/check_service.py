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


def _cases(junit: Path, suite: Path, kinds: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(rule, test, first line of why) of each test that ended in one of `kinds`; the rule is the
    first line of the test module's docstring."""
    if not junit.exists():
        return []
    found = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        problem = next((hit for kind in kinds if (hit := case.find(kind)) is not None), None)
        if problem is None:
            continue
        module = case.get("classname", "").split(".")
        test_file = suite.joinpath(*module[:2]).with_suffix(".py") if len(module) >= 2 else suite
        why = (problem.get("message") or problem.text or "").strip().splitlines()
        found.append((_section(test_file), case.get("name") or "", why[0][:200] if why else problem.tag))
    return found


def failures(junit: Path, suite: Path) -> list[str]:
    """One line per failed test: `FAIL <rule>: <test>: <why>`."""
    return [f"FAIL {rule}: {test}: {why}" for rule, test, why in _cases(junit, suite, ("failure", "error"))]


def skips(junit: Path, suite: Path) -> list[str]:
    """The skipped checks, one line per rule and reason: `SKIP <rule>: <n> checks (<tests>): <why>`."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for rule, test, why in _cases(junit, suite, ("skipped",)):
        grouped.setdefault((rule, why), []).append(test.split("[", 1)[0])
    lines = []
    for (rule, why), tests in grouped.items():
        count, names = len(tests), ", ".join(dict.fromkeys(tests))
        lines.append(f"SKIP {rule}: {count} check{'s' if count != 1 else ''} ({names}): {why}")
    return lines


def absolute_command(command: str) -> str:
    """The command line with a relative program path (`.venv/bin/x`) made absolute: the suite
    runs the service from scratch folders of its own."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise AuditError(f"--command {command!r} is not a command line: {exc}") from None
    if not words:
        raise AuditError("--command is empty: give the service's command line, e.g. '.venv/bin/order-router'")
    program = Path(words[0])
    if "/" in words[0] and not program.is_absolute():
        if not program.exists():
            raise AuditError(f"--command: {words[0]} does not exist (relative to {Path.cwd()}): build the service first")
        words[0] = str(program.resolve())
    return shlex.join(words)


def check_service(args: argparse.Namespace) -> int:
    project = args.project.resolve()
    if not (project / "cfg" / "config.toml").is_file():
        raise AuditError(f"{project} has no cfg/config.toml: give the project folder with --project")
    suite = suite_dir()
    env = {
        **os.environ,
        "PLUMBLINE_SERVICE_COMMAND": absolute_command(args.service_command) if args.service_command else "",
        "PLUMBLINE_SERVICE_URL": args.url or "",
        "PLUMBLINE_SERVICE_PROJECT": str(project),
        "PLUMBLINE_WITH_EXAMPLE": args.example,
        # the suite reads the contract's keys from this plumbline (plumbline.rules)
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])),
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
        skipped = skips(junit, suite)
        count = len(_cases(junit, suite, ("skipped",)))
    for line in skipped:
        print(line)
    if code == 0:
        print("plumbline check-service: every contract check passed" + (f", {count} skipped (SKIP lines above)" if count else ""))
        return 0
    if code == 1:
        print(f"plumbline check-service: {len(failed)} contract check{'s' if len(failed) != 1 else ''} failed")
        for line in failed:
            print(line)
        return 1
    raise AuditError(f"the contract suite could not run (pytest exit {code}); its output is above")
