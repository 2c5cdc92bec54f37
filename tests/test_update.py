"""`copier update` keeps generated services in line with the template, and keeps their own work.

Every test runs on one scratch git copy of the template per run (tests/releases.py): each
release tagged at the commit CHANGELOG.md names, and the working tree tagged as the next release.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.version import Version

from helpers import DEFAULTS, GIT_IDENTITY, TEMPLATE, commit_all, git, require_tool, run
from releases import (
    Release,
    TemplateRepo,
    migration_versions,
    next_version,
    parse_releases,
    render,
    tagged_copy,
    tree,
    update,
)

OLD_ALERT_TESTS = "deploy/prometheus/alerts_test.yml"
NEW_ALERT_TESTS = "deploy/prometheus/tests/alerts_test.yml"
MIGRATION = TEMPLATE / "migrations" / "move_alert_tests.py"
# Files the project owns once they exist (copier.yml `_skip_if_exists`), rendered per flavour.
OWNED = {
    "python": ["src/order_router/work.py", "tests/test_work.py"],
    "rust": ["src/work.rs", "tests/work.rs"],
}
TARGETS = ["systemd", "ansible", "kubernetes", "container"]
MATRIX = [
    (flavour, ci, [t for t, on in zip(TARGETS, chosen, strict=True) if on])
    for flavour in ("python", "rust")
    for ci in ("github", "gitlab", "both", "none")
    for chosen in itertools.product((False, True), repeat=len(TARGETS))
]
TEAM_ALERT_CASE = """\
  - name: a flapping target does not page (added by the team)
    interval: 1m
    input_series:
      - series: up{job="order-router", instance="c:8080"}
        values: 1 0 1 0 1 0 1
    alert_rule_test:
      - eval_time: 6m
        alertname: OrderRouterDown
        exp_alerts: []
"""


@pytest.fixture(scope="module", autouse=True)
def scratch_environment() -> Iterator[Path]:
    """A git identity for the commits, and temporary files on tmpfs when the machine has one.

    Copier renders three trees and makes three repositories per update; on a disk file system
    removing them costs more than rendering them. Module scope: other test files keep their
    own environment.
    """
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix="plumbline-update-", dir=shm if os.access(shm, os.W_OK) else None))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**GIT_IDENTITY, "TMPDIR": str(base)}.items():
            patch.setenv(name, value)
        patch.setattr(tempfile, "tempdir", str(base))
        yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def repo(scratch_environment: Path) -> TemplateRepo:
    """The template with its releases tagged, and HEAD under test tagged as the next release."""
    return tagged_copy(scratch_environment / "plumbline")


@pytest.fixture
def workdir(scratch_environment: Path) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(dir=scratch_environment))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def generated(repo: TemplateRepo, dst: Path, ref: str, **answers: Any) -> Path:
    """A project rendered at `ref` and committed, as a team starts."""
    render(repo, dst, ref, {**DEFAULTS, **answers})
    commit_all(dst, f"generated from plumbline {ref}")
    return dst


def expected_after_update(repo: TemplateRepo, workdir: Path, answers: dict[str, Any]) -> dict[str, bytes]:
    """A fresh render at HEAD: an owned file the team left untouched follows the release too."""
    return tree(render(repo, workdir / "expected-fresh", repo.head.tag, answers))


def diff_summary(got: dict[str, bytes], want: dict[str, bytes]) -> str:
    lines = [f"only after update: {sorted(set(got) - set(want))}",
             f"only in a fresh render: {sorted(set(want) - set(got))}"]
    lines += [f"differs: {path}" for path in sorted(set(got) & set(want)) if got[path] != want[path]]
    return "\n".join(lines)


# ---------------------------------------------------------------- releases


def test_release_headings_parse_and_a_malformed_one_is_named() -> None:
    text = "## Unreleased\n## v0.2.0 (2026-12-01), commit abcdef1\n## v0.1.0 (2026-11-27), commit 1234567890\n"
    assert [(r.tag, r.commit) for r in parse_releases(text)] == [("v0.1.0", "1234567890"), ("v0.2.0", "abcdef1")]
    assert next_version(parse_releases(text)) == Version("0.3.0")
    with pytest.raises(ValueError, match=r"line 2: '## v0.2 \(2026-12-01\)' is not a release heading; allowed"):
        parse_releases("## Unreleased\n## v0.2 (2026-12-01)\n")
    with pytest.raises(ValueError, match="names a release twice"):
        parse_releases("## v0.1.0 (2026-11-27), commit abcdef1\n## v0.1.0 (2026-11-28), commit 1234567\n")


def test_the_changelog_names_each_release_commit_and_head_is_the_next_release(repo: TemplateRepo) -> None:
    assert repo.releases, "CHANGELOG.md names no release"
    for release in repo.releases:
        assert git(repo.path, "rev-parse", f"{release.tag}^{{commit}}").startswith(release.commit)
    assert repo.head.version == next_version(repo.releases)
    described = git(repo.path, "describe", "--tags", "--exact-match", "HEAD").strip()
    assert described == repo.head.tag


def test_every_migration_belongs_to_a_release_or_to_head(repo: TemplateRepo) -> None:
    """A migration runs when a project crosses its version: one beyond HEAD would never run."""
    known = {r.version for r in repo.releases} | {repo.head.version}
    assert migration_versions(), "copier.yml declares no migration"
    for version in migration_versions():
        assert version in known, f"migration v{version} is neither a release in CHANGELOG.md nor HEAD ({repo.head.tag})"


def test_the_owned_files_exist_in_their_flavour(repo: TemplateRepo, workdir: Path) -> None:
    """Each `_skip_if_exists` pattern names a file the template renders: none is stale."""
    patterns = yaml.safe_load((TEMPLATE / "copier.yml").read_text())["_skip_if_exists"]
    assert len(patterns) == sum(len(paths) for paths in OWNED.values())
    for flavour, paths in OWNED.items():
        project = render(repo, workdir / flavour, repo.head.tag, {**DEFAULTS, "flavour": flavour})
        for path in paths:
            assert (project / path).is_file(), f"{path} is declared project-owned but the {flavour} flavour lacks it"


# ---------------------------------------------------------------- every combination


@pytest.mark.slow
@pytest.mark.parametrize(("flavour", "ci", "targets"), MATRIX,
                         ids=[f"{f}-{c}-{'+'.join(t) or 'no-deploy'}" for f, c, t in MATRIX])
def test_update_from_the_previous_release_equals_a_fresh_render(
        repo: TemplateRepo, workdir: Path, flavour: str, ci: str, targets: list[str]) -> None:
    answers = {**DEFAULTS, "flavour": flavour, "ci_provider": ci, "deploy_targets": targets}
    project = generated(repo, workdir / "project", repo.previous.tag, **answers)
    update(project, repo.head.tag)
    got, want = tree(project), expected_after_update(repo, workdir, answers)
    assert got == want, diff_summary(got, want)


# ---------------------------------------------------------------- a team's edits


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} no longer holds {old!r}: the test needs a new anchor"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("flavour", ["python", "rust"])
def test_a_teams_edits_survive_the_update_and_the_new_standard_arrives(
        repo: TemplateRepo, workdir: Path, flavour: str) -> None:
    project = generated(repo, workdir / "project", repo.previous.tag, flavour=flavour)
    work = project / OWNED[flavour][0]
    work.write_text(work.read_text() + ("\n# The team's own work starts here.\n" if flavour == "python"
                                         else "\n// The team's own work starts here.\n"))
    teams_work = work.read_text()
    edit(project / "cfg" / "config.toml", "interval_secs = 60", "interval_secs = 15")
    edit(project / "cfg" / "config.toml", "max_concurrency = 4", "max_concurrency = 16")
    edit(project / "README.md", "# order-router\n", "# order-router\nOn call: page #orders.\n")
    (project / OLD_ALERT_TESTS).write_text((project / OLD_ALERT_TESTS).read_text() + TEAM_ALERT_CASE)
    commit_all(project, "the team's changes")

    update(project, repo.head.tag)

    assert work.read_text() == teams_work
    config = (project / "cfg" / "config.toml").read_text()
    assert "interval_secs = 15" in config and "max_concurrency = 16" in config
    assert (project / "README.md").read_text().startswith("# order-router\nOn call: page #orders.\n")
    # The new standard: the rule tests live in tests/, the CI runs them there, the team's case kept.
    assert not (project / OLD_ALERT_TESTS).exists()
    moved = (project / NEW_ALERT_TESTS).read_text()
    assert TEAM_ALERT_CASE in moved and "  - ../alerts.yml\n" in moved
    assert "<<<<<<<" not in moved
    run(["promtool", "test", "rules", NEW_ALERT_TESTS], project)
    # Nothing else differs from a fresh render: every edit above is accounted for.
    fresh = expected_after_update(repo, workdir, {**DEFAULTS, "flavour": flavour})
    differing = {p for p in set(fresh) | set(tree(project)) if fresh.get(p) != tree(project).get(p)}
    assert differing == {OWNED[flavour][0], "cfg/config.toml", "README.md", NEW_ALERT_TESTS}


def next_release(repo: TemplateRepo, workdir: Path, change: dict[str, tuple[str, str]]) -> tuple[TemplateRepo, str]:
    """A private copy of the template with one more release on top of HEAD, made of `change`."""
    copy = workdir / "plumbline-next"
    git(workdir, "clone", "--quiet", f"file://{repo.path}", str(copy))
    for path, (old, new) in change.items():
        edit(copy / path, old, new)
    git(copy, "commit", "--quiet", "--all", "-m", "next release")
    tag = f"v{repo.head.version.major}.{repo.head.version.minor + 1}.0"
    git(copy, "tag", tag)
    head = Release(tag, Version(tag[1:]), git(copy, "rev-parse", "HEAD").strip())
    return TemplateRepo(copy, [*repo.releases, repo.head], head), tag


CONFIG_TEMPLATE = "template/cfg/config.toml.jinja"


def test_a_new_config_key_arrives_and_the_teams_values_stay(repo: TemplateRepo, workdir: Path) -> None:
    text = (TEMPLATE / CONFIG_TEMPLATE).read_text()
    anchor = next(line for line in text.splitlines() if line.startswith("[work]"))
    newer, tag = next_release(repo, workdir, {CONFIG_TEMPLATE: (anchor, f"{anchor}\nbatch_size = 100")})
    project = generated(newer, workdir / "project", repo.head.tag)
    edit(project / "cfg" / "config.toml", "max_concurrency = 4", "max_concurrency = 16")
    commit_all(project, "more concurrency")
    update(project, tag)
    config = (project / "cfg" / "config.toml").read_text()
    assert "batch_size = 100" in config and "max_concurrency = 16" in config
    assert "<<<<<<<" not in config
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == tag


@pytest.mark.parametrize("mode", ["inline", "rej"])
def test_a_conflicting_edit_is_shown_never_dropped(repo: TemplateRepo, workdir: Path, mode: str) -> None:
    """The team and the new release changed the same line: both versions stay visible."""
    project = generated(repo, workdir / "project", repo.previous.tag)
    ci = project / ".github" / "workflows" / "ci.yml"
    team_line = f"run: promtool test rules {OLD_ALERT_TESTS} deploy/prometheus/team_test.yml"
    edit(ci, f"run: promtool test rules {OLD_ALERT_TESTS}", team_line)
    commit_all(project, "run the team's rule tests too")
    update(project, repo.head.tag, conflict=mode)
    text = ci.read_text()
    if mode == "inline":
        assert "<<<<<<< before updating" in text and ">>>>>>> after updating" in text
        assert team_line in text and f"run: promtool test rules {NEW_ALERT_TESTS}" in text
        assert "UU .github/workflows/ci.yml" in git(project, "status", "--porcelain")
    else:
        # The file takes the new release; the team's rejected hunk waits beside it in a .rej file.
        rejected = (project / ".github" / "workflows" / "ci.yml.rej").read_text()
        assert f"run: promtool test rules {NEW_ALERT_TESTS}" in text and team_line in rejected


# ---------------------------------------------------------------- the v0.2.0 migration


def old_release_with_alert_tests(repo: TemplateRepo) -> Release:
    release = repo.previous
    listed = git(repo.path, "ls-tree", "-r", "--name-only", release.tag, "template/deploy/prometheus/")
    if f"template/{OLD_ALERT_TESTS}.jinja" not in listed.splitlines():
        pytest.fail(f"{release.tag} has no {OLD_ALERT_TESTS}: the release named in CHANGELOG.md must come "
                    "before the move, or this migration has nothing left to test")
    return release


def run_migration(repo: TemplateRepo, project: Path, ref: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(MIGRATION), f"--template={repo.path}", f"--from={ref}"],
        cwd=project, text=True, capture_output=True, check=True,
    )
    return proc.stderr


def test_the_migration_is_idempotent(repo: TemplateRepo, workdir: Path) -> None:
    old = old_release_with_alert_tests(repo)
    project = generated(repo, workdir / "project", old.tag)
    (project / OLD_ALERT_TESTS).write_text((project / OLD_ALERT_TESTS).read_text() + TEAM_ALERT_CASE)
    commit_all(project, "the team's rule test")
    update(project, repo.head.tag)
    after_update = tree(project)
    # Again before committing (same update), then after committing: nothing changes.
    assert "your test cases merged" in run_migration(repo, project, old.tag)
    assert tree(project) == after_update
    commit_all(project, "update")
    assert "nothing to move" in run_migration(repo, project, old.tag)
    assert tree(project) == after_update


def test_the_migration_is_safe_when_the_team_removed_the_file(repo: TemplateRepo, workdir: Path) -> None:
    old = old_release_with_alert_tests(repo)
    project = generated(repo, workdir / "project", old.tag)
    (project / OLD_ALERT_TESTS).unlink()
    commit_all(project, "no rule tests here")
    update(project, repo.head.tag)
    assert not (project / OLD_ALERT_TESTS).exists()
    assert "nothing to move" in run_migration(repo, project, old.tag)


def test_the_migration_marks_a_conflict_in_the_moved_file(repo: TemplateRepo, workdir: Path) -> None:
    """The team changed the line the new release changes too (`rule_files`): both stay, marked."""
    old = old_release_with_alert_tests(repo)
    project = generated(repo, workdir / "project", old.tag)
    edit(project / OLD_ALERT_TESTS, "rule_files:\n  - alerts.yml\n", "rule_files:\n  - alerts.yml\n  - team.yml\n")
    commit_all(project, "the team's rules")
    update(project, repo.head.tag)
    moved = (project / NEW_ALERT_TESTS).read_text()
    assert "<<<<<<< before updating" in moved and ">>>>>>> after updating" in moved
    assert "  - team.yml\n" in moved and "  - ../alerts.yml\n" in moved


# ---------------------------------------------------------------- changing an answer


def file_set(root: Path) -> set[str]:
    return set(tree(root))


@pytest.mark.parametrize(("start", "change"), [
    pytest.param({"deploy_targets": ["systemd"]}, {"deploy_targets": ["systemd", "kubernetes"]}, id="add-kubernetes"),
    pytest.param({"ci_provider": "github"}, {"ci_provider": "gitlab"}, id="github-to-gitlab"),
    pytest.param({"opentelemetry": True}, {"opentelemetry": False}, id="opentelemetry-off"),
    pytest.param({"flavour": "rust", "opentelemetry": True}, {"opentelemetry": False}, id="rust-opentelemetry-off"),
])
def test_changing_an_answer_adds_and_removes_exactly_the_right_files(
        repo: TemplateRepo, workdir: Path, start: dict[str, Any], change: dict[str, Any]) -> None:
    project = generated(repo, workdir / "project", repo.head.tag, **start)
    before = file_set(project)
    update(project, repo.head.tag, data=change)
    want = tree(render(repo, workdir / "fresh", repo.head.tag, {**DEFAULTS, **start, **change}))
    got = tree(project)
    assert got == want, diff_summary(got, want)
    added, removed = set(got) - before, before - set(got)
    if "deploy_targets" in change:
        assert added and all(p.startswith("deploy/kubernetes/") for p in added) and not removed
    elif "ci_provider" in change:
        assert added == {".gitlab-ci.yml"} and removed and all(p.startswith(".github/") for p in removed)
    else:
        assert not added and removed and all("telemetry" in p for p in removed)


# ---------------------------------------------------------------- the generated project's own checks


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["python", pytest.param("rust", marks=pytest.mark.rust)])
def test_the_updated_project_passes_its_own_lint_and_tests(repo: TemplateRepo, workdir: Path, flavour: str) -> None:
    tool = {"python": "uv", "rust": "cargo"}[flavour]
    require_tool(tool)
    project = generated(repo, workdir / "project", repo.previous.tag, flavour=flavour,
                        deploy_targets=["systemd", "kubernetes"])
    (project / OLD_ALERT_TESTS).write_text((project / OLD_ALERT_TESTS).read_text() + TEAM_ALERT_CASE)
    commit_all(project, "the team's rule test")
    update(project, repo.head.tag)
    run(["make", "setup", "lint", "test"], project, timeout=3600)
    run(["promtool", "test", "rules", NEW_ALERT_TESTS], project)
