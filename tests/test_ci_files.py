"""The generated CI files: schema-valid, zizmor-clean, pinned, least privilege, and working."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy_renders import answers, combos, rendered, tool, validate
from helpers import TEMPLATE, generate

GITHUB = combos(ci="github")
GITLAB = combos(ci="gitlab")
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(?:/[\w./-]+)?@[0-9a-f]{40} # v\d+\.\d+\.\d+$")


def workflows(root: Path) -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted((root / ".github" / "workflows").glob("*.yml"))}


def uses_lines(root: Path) -> list[str]:
    lines = []
    for path in sorted((root / ".github").rglob("*.yml")):
        for line in path.read_text().splitlines():
            match = re.match(r"^\s*(?:- )?uses: (.+)$", line)
            if match:
                lines.append(match.group(1))
    return lines


def run_scripts(doc: Any) -> list[str]:
    """Every `run:` script of a workflow or composite action."""
    found: list[str] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "run" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(run_scripts(value))
    elif isinstance(doc, list):
        for item in doc:
            found.extend(run_scripts(item))
    return found


def test_every_ci_provider_is_covered() -> None:
    assert GITHUB and GITLAB
    assert {answers(c)["flavour"] for c in GITHUB} == {"python", "rust"}
    assert {answers(c)["flavour"] for c in GITLAB} == {"python", "rust"}
    none = rendered("python-none-none")
    assert not (none / ".github").exists() and not (none / ".gitlab-ci.yml").exists()


@pytest.mark.parametrize("combo", GITHUB)
def test_github_workflows_match_the_schemas(combo: str) -> None:
    root = rendered(combo)
    msrv = ["msrv.yml"] if answers(combo)["flavour"] == "rust" else []
    assert sorted(workflows(root)) == sorted(["audit.yml", "ci.yml", *msrv, "release.yml", "template-update.yml"])
    validate(["check-jsonschema", "--builtin-schema", "vendor.github-workflows",
              *map(str, sorted((root / ".github" / "workflows").glob("*.yml")))], root)
    validate(["check-jsonschema", "--builtin-schema", "vendor.github-actions",
              str(root / ".github" / "actions" / "setup" / "action.yml")], root)


@pytest.mark.parametrize("combo", GITHUB)
def test_zizmor_finds_nothing_of_medium_severity_or_more(combo: str) -> None:
    root = rendered(combo)
    proc = validate(["zizmor", "--offline", "--min-severity", "medium", "--format", "plain", ".github"], root)
    assert "No findings" in proc.stdout, proc.stdout


@pytest.mark.parametrize("combo", GITHUB)
def test_github_actions_are_pinned_by_commit_with_their_release(combo: str) -> None:
    lines = uses_lines(rendered(combo))
    assert len(lines) >= 5
    for line in lines:
        if line.startswith("./"):
            continue  # the project's own composite action
        assert PINNED.match(line), f"not pinned by full commit SHA with a # vX.Y.Z comment: {line}"


@pytest.mark.parametrize("combo", GITHUB)
def test_github_jobs_have_least_privilege_timeouts_and_no_persisted_credentials(combo: str) -> None:
    for name, doc in workflows(rendered(combo)).items():
        assert doc["permissions"] == {"contents": "read"}, name
        for job_id, job in doc["jobs"].items():
            assert isinstance(job.get("timeout-minutes"), int), f"{name}:{job_id} has no timeout-minutes"
            assert "permissions" not in job or job["permissions"] == {"contents": "read"}, f"{name}:{job_id}"
            for step in job["steps"]:
                if str(step.get("uses", "")).startswith("actions/checkout@"):
                    assert step.get("with", {}).get("persist-credentials") is False, f"{name}:{job_id}"


@pytest.mark.parametrize("combo", GITHUB)
def test_github_workflows_run_the_makefile_targets_and_the_rule_tests(combo: str) -> None:
    root = rendered(combo)
    docs = workflows(root)
    ci_runs = run_scripts(docs["ci.yml"])
    for target in ("setup", "lint", "test", "build", "contract"):
        assert f"make {target}" in ci_runs, target
    # the contract check runs on the service just built, with the template URL override
    steps = docs["ci.yml"]["jobs"]["check"]["steps"]
    runs = [step.get("run", "") for step in steps]
    assert runs.index("make contract") > runs.index("make build")
    contract = steps[runs.index("make contract")]
    assert contract["env"] == {"PLUMBLINE_TEMPLATE_URL": "${{ vars.PLUMBLINE_TEMPLATE_URL }}"}
    assert any("install" in run and "prometheus" in run for run in runs[: runs.index("make contract")])
    assert "promtool test rules deploy/prometheus/tests/alerts_test.yml" in ci_runs
    # `on:` parses as True in YAML 1.1
    assert docs["release.yml"][True]["push"]["tags"] == ["v*"]
    assert "make build" in run_scripts(docs["release.yml"])
    assert docs["template-update.yml"][True]["schedule"]
    action = yaml.safe_load((root / ".github" / "actions" / "setup" / "action.yml").read_text())
    used = " ".join(str(step.get("uses", "")) + str(step.get("run", "")) for step in action["runs"]["steps"])
    if answers(combo)["flavour"] == "python":
        assert "actions/setup-python@" in used and "astral-sh/setup-uv@" in used
        assert action["outputs"]["artifacts"]["value"] == "dist/*.whl"
    else:
        assert "rustup toolchain install" in used and "Swatinem/rust-cache@" in used
        assert action["outputs"]["artifacts"]["value"] == f"target/release/{answers(combo)['project_name']}"


@pytest.mark.parametrize("combo", sorted(set(GITHUB + GITLAB)))
def test_ci_shell_is_shellcheck_clean(combo: str, tmp_path: Path) -> None:
    root = rendered(combo)
    scripts: list[str] = []
    if (root / ".github").exists():
        for path in sorted((root / ".github").rglob("*.yml")):
            scripts += run_scripts(yaml.safe_load(path.read_text()))
    if (root / ".gitlab-ci.yml").exists():
        for job in yaml.safe_load((root / ".gitlab-ci.yml").read_text()).values():
            if isinstance(job, dict) and "script" in job:
                scripts.append("\n".join(job.get("before_script", []) + job["script"]))
    assert scripts
    for index, script in enumerate(scripts):
        # GitHub expressions are substituted before the shell sees the script
        body = re.sub(r"\$\{\{[^}]*\}\}", "value", script)
        path = tmp_path / f"script{index}.sh"
        path.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + body + "\n")
        validate(["shellcheck", str(path)], tmp_path)


@pytest.mark.parametrize("combo", GITLAB)
def test_gitlab_ci_matches_the_schema_and_has_every_stage(combo: str) -> None:
    root = rendered(combo)
    validate(["check-jsonschema", "--builtin-schema", "vendor.gitlab-ci", ".gitlab-ci.yml"], root)
    doc = yaml.safe_load((root / ".gitlab-ci.yml").read_text())
    assert doc["stages"] == ["lint", "test", "build", "contract", "release", "maintenance"]
    scripts = {name: job["script"] for name, job in doc.items() if isinstance(job, dict) and "script" in job}
    assert scripts["lint"] == ["make setup", "make lint"]
    assert scripts["test"] == ["make setup", "make test"]
    assert scripts["build"] == ["make setup", "make build"]
    # the contract check: on the service built in its job (Python) or by the build job (Rust)
    assert doc["contract"]["stage"] == "contract" and scripts["contract"][-1] == "make contract"
    if answers(combo)["flavour"] == "python":
        assert scripts["contract"][-2] == "make setup"
    else:
        assert doc["contract"]["needs"] == ["build"]
    assert "promtool test rules deploy/prometheus/tests/alerts_test.yml" in scripts["alert-rules"]
    assert doc["release-build"]["rules"] == [{"if": "$CI_COMMIT_TAG =~ /^v/"}]
    assert doc["release"]["release"]["tag_name"] == "$CI_COMMIT_TAG"
    assert doc["template-update"]["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "schedule"'}]
    assert any("copier check-update" in line for line in scripts["template-update"])
    for name, job in doc.items():
        if isinstance(job, dict) and "script" in job and name != "template-update":
            # the scheduled pipeline runs the update check alone
            rules = job.get("rules") or doc[job["extends"]]["rules"]
            assert {"if": '$CI_PIPELINE_SOURCE == "schedule"'} not in rules, name
    artifact = "dist/*.whl" if answers(combo)["flavour"] == "python" else f"target/release/{answers(combo)['project_name']}"
    assert doc["build"]["artifacts"]["paths"] == [artifact]


@pytest.mark.parametrize("combo", sorted(set(GITHUB + GITLAB)))
def test_ci_yaml_is_yamllint_clean(combo: str) -> None:
    root = rendered(combo)
    files = [str(p) for p in (root / ".github").rglob("*.yml")] if (root / ".github").exists() else []
    if (root / ".gitlab-ci.yml").exists():
        files.append(".gitlab-ci.yml")
    validate(["yamllint", "--strict", "-c", ".yamllint.yml", *files], root)


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@example.com", "PATH": "/usr/bin:/bin", "HOME": str(cwd)})


def _update_check(root: Path) -> subprocess.CompletedProcess[str]:
    """Run the scheduled workflow's check step, as GitHub runs it (bash -e), in the project."""
    doc = workflows(root)["template-update.yml"]
    (step,) = [s for s in doc["jobs"]["check-update"]["steps"] if "copier check-update" in s.get("run", "")]
    copier_dir = str(Path(tool("copier")).parent)
    return subprocess.run(["bash", "-e", "-c", step["run"]], cwd=root, text=True, capture_output=True,
                          timeout=300, env={"PATH": f"{copier_dir}:/usr/bin:/bin", "HOME": str(root)})


def test_the_scheduled_update_check_fails_only_when_the_template_has_a_newer_release(tmp_path: Path) -> None:
    # Arrange: the template as a git repository released as v1.0.0, a project generated from it
    template = tmp_path / "template"
    shutil.copytree(TEMPLATE, template, ignore=shutil.ignore_patterns(".git", ".cache", "__pycache__", "bench"))
    _git(template, "init", "-q", "-b", "main")
    _git(template, "add", "-A")
    _git(template, "commit", "-q", "-m", "release")
    _git(template, "tag", "v1.0.0")
    from copier import run_copy  # noqa: PLC0415  (only this test renders from a tagged copy)

    project = tmp_path / "order-router"
    run_copy(str(template), str(project), data={"project_name": "order-router", "ci_provider": "github"},
             defaults=True, unsafe=True, quiet=True, vcs_ref="v1.0.0")
    _git(project, "init", "-q", "-b", "main")
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "generated")

    # Act / Assert: up to date, then a newer release appears
    current = _update_check(project)
    assert current.returncode == 0, current.stdout + current.stderr
    (template / "NEWS").write_text("a newer release\n")
    _git(template, "add", "NEWS")
    _git(template, "commit", "-q", "-m", "next release")
    _git(template, "tag", "v1.1.0")
    outdated = _update_check(project)
    assert outdated.returncode == 1, outdated.stdout + outdated.stderr
    assert "::error title=Template update available::" in outdated.stdout
    assert "1.1.0" in outdated.stdout


def test_a_workflow_without_answers_is_not_a_jinja_file() -> None:
    workflows_dir = TEMPLATE / "template" / "{% if ci_github %}.github{% endif %}" / "workflows"
    for path in workflows_dir.iterdir():
        # a flavour's own workflow carries one guard in its name, its content stays plain
        name = re.sub(r"^\{% if \w+ %\}(.*)\{% endif %\}$", r"\1", path.name)
        assert name.endswith(".yml"), f"{path.name}: workflows need no answers and stay plain YAML"
        assert "{{" not in path.read_text().replace("${{", "") and "{%" not in path.read_text()


def test_the_same_workflows_render_for_another_project(tmp_path: Path) -> None:
    root = generate(tmp_path / "svc", project_name="a1-b2", flavour="rust", ci_provider="github")
    action = (root / ".github" / "actions" / "setup" / "action.yml").read_text()
    assert "target/release/a1-b2" in action
