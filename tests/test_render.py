"""Render every combination of the options that shape the tree, and check what comes out."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import tomllib
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from copier import run_copy

from helpers import DEFAULTS, TEMPLATE

FLAVOURS = ["python", "rust"]
CI_PROVIDERS = ["github", "gitlab", "both", "none"]
TARGETS = ["systemd", "ansible", "kubernetes", "container"]
TARGET_SETS = [list(c) for n in range(len(TARGETS) + 1) for c in itertools.combinations(TARGETS, n)]

MATRIX = [
    {"flavour": f, "ci_provider": c, "deploy_targets": t, "opentelemetry": o}
    for f, c, t, o in itertools.product(FLAVOURS, CI_PROVIDERS, TARGET_SETS, [False, True])
]
# The fast tier: every value of every option at least once, in 8 renders.
COVERING = [
    {"flavour": "python", "ci_provider": "github", "deploy_targets": [], "opentelemetry": False},
    {"flavour": "python", "ci_provider": "gitlab", "deploy_targets": ["systemd"], "opentelemetry": True},
    {"flavour": "python", "ci_provider": "both", "deploy_targets": TARGETS, "opentelemetry": True},
    {"flavour": "python", "ci_provider": "none", "deploy_targets": ["ansible", "container"], "opentelemetry": False},
    {"flavour": "rust", "ci_provider": "github", "deploy_targets": ["kubernetes"], "opentelemetry": True},
    {"flavour": "rust", "ci_provider": "gitlab", "deploy_targets": TARGETS, "opentelemetry": False},
    {"flavour": "rust", "ci_provider": "both", "deploy_targets": ["systemd", "container"], "opentelemetry": False},
    {"flavour": "rust", "ci_provider": "none", "deploy_targets": [], "opentelemetry": True},
]

# Names that only the template knows: seeing one inside Jinja delimiters in the output means a
# tag was left unrendered. (Ansible templates and CI expressions have Jinja-like syntax of their
# own, so the check looks for the template's own names, not for braces.)
TEMPLATE_NAMES = (
    "project_name|description|author_name|author_email|flavour|http_port|ci_provider|deploy_targets"
    "|opentelemetry|license|package_name|env_prefix|metric_prefix|class_name|is_python|is_rust"
    "|ci_github|ci_gitlab|has_ci|deploy_systemd|deploy_ansible|deploy_kubernetes|deploy_container"
    "|needs_unit|copyright_year|_copier"
)
LEFTOVER = re.compile(r"\{[{%#]-?\s*(?:if\s+|elif\s+|not\s+)?(?:" + TEMPLATE_NAMES + r")\b|\{%-?\s*(?:raw|endraw)\s*-?%\}")


@pytest.fixture(scope="session")
def template_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template's working tree without .git: Copier renders it without cloning, so fast."""
    dst = tmp_path_factory.mktemp("template") / "plumbline"
    shutil.copytree(TEMPLATE, dst, ignore=shutil.ignore_patterns(".git", ".cache", "__pycache__", "bench"))
    return dst


def render(template: Path, dst: Path, **answers: Any) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_copy(str(template), str(dst), data={**DEFAULTS, **answers}, defaults=True, unsafe=True, quiet=True)
    return dst


def check_tree(root: Path, answers: dict[str, Any]) -> None:
    """No Jinja left over, no .jinja file names, every structured file parses."""
    problems: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if path.suffix == ".jinja" or "{{" in str(rel) or "{%" in str(rel):
            problems.append(f"{rel}: unrendered file name")
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for match in LEFTOVER.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            problems.append(f"{rel}:{line}: Jinja left over: {match.group(0)!r}")
        try:
            if path.suffix == ".toml" or path.name == "Cargo.lock" or path.name == "uv.lock":
                tomllib.loads(text)
            elif path.suffix in (".yml", ".yaml"):
                list(yaml.safe_load_all(text))
            elif path.suffix == ".json":
                json.loads(text)
        except Exception as error:  # noqa: BLE001 - every parser's error is reported the same way
            problems.append(f"{rel}: does not parse: {error}")
    assert not problems, f"answers {answers}:\n" + "\n".join(problems)


def check_shape(root: Path, answers: dict[str, Any]) -> None:
    """The files that each answer promises are there, and only those."""
    python, rust = answers["flavour"] == "python", answers["flavour"] == "rust"
    assert (root / "pyproject.toml").exists() == python
    assert (root / "Cargo.toml").exists() == rust
    assert (root / "cfg" / "config.toml").exists()
    assert (root / "README.md").exists()
    ci = answers["ci_provider"]
    assert (root / ".github" / "workflows").is_dir() == (ci in ("github", "both"))
    assert (root / ".gitlab-ci.yml").exists() == (ci in ("gitlab", "both"))
    for target in ("kubernetes", "ansible"):
        assert (root / "deploy" / target).is_dir() == (target in answers["deploy_targets"]), target


@pytest.mark.parametrize("answers", COVERING, ids=lambda a: "-".join(str(v) for v in a.values()))
def test_covering_set_renders_cleanly(template_copy: Path, tmp_path: Path, answers: dict[str, Any]) -> None:
    root = render(template_copy, tmp_path / "order-router", **answers)
    check_tree(root, answers)
    check_shape(root, answers)


@pytest.mark.slow
@pytest.mark.parametrize("answers", MATRIX, ids=lambda a: "-".join(str(v) for v in a.values()))
def test_every_combination_renders_cleanly(template_copy: Path, tmp_path: Path, answers: dict[str, Any]) -> None:
    root = render(template_copy, tmp_path / "order-router", **answers)
    check_tree(root, answers)
    check_shape(root, answers)


@pytest.mark.parametrize(
    ("license_", "expected"),
    [("MIT", "MIT License"), ("Apache-2.0", "Apache License"), ("proprietary", "All rights reserved.")],
)
def test_each_license(template_copy: Path, tmp_path: Path, license_: str, expected: str) -> None:
    root = render(template_copy, tmp_path / "svc", license=license_, author_name="Ops Team")
    text = (root / "LICENSE").read_text()
    assert expected in text
    if license_ != "Apache-2.0":
        assert "Ops Team" in text


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_names_and_port_reach_the_project(template_copy: Path, tmp_path: Path, flavour: str) -> None:
    root = render(template_copy, tmp_path / "svc", project_name="a1-b2", http_port=65535, flavour=flavour,
                  description="Does one thing well", author_name="Ada", author_email="ada@example.org")
    config = tomllib.loads((root / "cfg" / "config.toml").read_text())
    assert config["http"]["port"] == 65535
    assert config["paths"]["pid_file"] == "${PREFIX}/run/a1-b2.pid"
    answers = yaml.safe_load((root / ".copier-answers.yml").read_text())
    assert answers["project_name"] == "a1-b2" and answers["author_email"] == "ada@example.org"
    readme = (root / "README.md").read_text()
    assert "a1-b2" in readme and "A1_B2_HTTP__PORT" in readme
    manifest = root / ("pyproject.toml" if flavour == "python" else "Cargo.toml")
    text = manifest.read_text()
    assert "a1-b2" in text and "Does one thing well" in text
