"""`copier update` keeps generated services in line with the template, and keeps their own work.

Every test runs on one scratch git copy of the template per run (tests/releases.py): each
release tagged by scripts/tag-releases at the commit CHANGELOG.md names, and the working tree
tagged as the next release; a second copy has no tag at all, as a fresh clone.
"""

from __future__ import annotations

import itertools
import os
import re
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
    TAG_RELEASES,
    Release,
    TemplateRepo,
    next_version,
    parse_releases,
    render,
    tagged_copy,
    tree,
    update,
)

OLD_ALERT_TESTS = "deploy/prometheus/alerts_test.yml"
NEW_ALERT_TESTS = "deploy/prometheus/tests/alerts_test.yml"
# A commit before v0.1.0 that projects were generated from: the rule tests at their old path.
BEFORE_THE_ALERT_MOVE = "81afdcc"
# The folders the project owns (copier.yml `_skip_if_exists`), per flavour.
OWNED = {
    "python": ["src/order_router/service/", "tests/service/"],
    "rust": ["src/service/", "tests/service/"],
}
# The old example work and where the split moved it, per flavour: (old, new) pairs.
SPLIT = {
    "python": [("src/order_router/work.py", "src/order_router/service/jobs.py"),
               ("tests/test_work.py", "tests/service/test_jobs.py")],
    "rust": [("src/work.rs", "src/service/jobs.rs"), ("tests/work.rs", "tests/service/main.rs")],
}
# What a team adds to each of them: a function and its test.
TEAM_CODE = {
    "src/order_router/work.py": (
        '\n\ndef business_days(days: int) -> int:\n    """The team\'s own rule."""\n    return days - 2 * (days // 7)\n'
    ),
    "tests/test_work.py": "\n\ndef test_business_days() -> None:\n    assert 14 - 2 * (14 // 7) == 10\n",
    "src/work.rs": "\n/// The team's own rule.\npub fn business_days(days: u32) -> u32 {\n    days - 2 * (days / 7)\n}\n",
    "tests/work.rs": "\n#[test]\nfn business_days_skip_weekends() {\n    assert_eq!(14 - 2 * (14 / 7), 10);\n}\n",
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


@pytest.fixture(scope="module")
def tagless(scratch_environment: Path) -> TemplateRepo:
    """The same template as a fresh clone has it: the same commits, no tag."""
    return tagged_copy(scratch_environment / "plumbline-tagless", tags=False)


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


def release_sections(changelog: str) -> dict[str, str]:
    """The text of each released section of a CHANGELOG, by tag."""
    sections, tag = {}, None
    for line in changelog.splitlines():
        if line.startswith("## "):
            tag = line.split()[1] if line.startswith("## v") else None
            if tag:
                sections[tag] = ""
        elif tag:
            sections[tag] += line + "\n"
    return sections


PATH_IN_TEXT = re.compile(r"`([A-Za-z0-9_.<>-]+(?:/[A-Za-z0-9_.<>-]*)+)`")


def test_each_release_commit_renders_the_paths_its_section_names(repo: TemplateRepo, workdir: Path) -> None:
    """A path a section names is in that release: in the template's tree or in a project it renders."""
    sections = release_sections((TEMPLATE / "CHANGELOG.md").read_text())
    for release in repo.releases:
        paths = {m.replace("<package>", "order_router") for m in PATH_IN_TEXT.findall(sections[release.tag])}
        assert paths, f"the {release.tag} section names no path to check"
        listed = set(git(repo.path, "ls-tree", "-r", "--name-only", release.tag).splitlines())
        for flavour in ("python", "rust"):
            project = render(repo, workdir / f"{release.tag}-{flavour}", release.tag,
                             {**DEFAULTS, "ci_provider": "both", "deploy_targets": TARGETS, "flavour": flavour})
            listed |= set(tree(project))
        missing = [p for p in sorted(paths) if p not in listed and not any(f.startswith(p.rstrip("/") + "/") for f in listed)]
        assert missing == [], f"{release.tag} at {release.commit} has none of {missing}, which its section names"


def test_tag_releases_recreates_the_tags_of_a_fresh_clone(tagless: TemplateRepo, workdir: Path) -> None:
    clone = workdir / "clone"
    git(workdir, "clone", "--quiet", "--no-tags", f"file://{tagless.path}", str(clone))
    script = [sys.executable, str(TAG_RELEASES), "-C", str(clone)]
    missing = run([*script, "--check"], workdir, check=False)
    assert missing.returncode == 1 and "v0.1.0: missing" in missing.stderr
    made = run(script, workdir)
    for release in tagless.releases:
        assert f"{release.tag}: tagged {release.commit}" in made.stdout
        assert git(clone, "rev-parse", f"{release.tag}^{{commit}}").startswith(release.commit)
    assert "already at" in run(script, workdir).stdout  # a second run changes nothing
    # A tag at another commit than the CHANGELOG names is reported, never moved.
    git(clone, "tag", "--force", tagless.releases[0].tag, tagless.releases[-1].commit)
    wrong = run(script, workdir, check=False)
    assert wrong.returncode == 1 and f"{tagless.releases[0].tag}: the tag points at" in wrong.stderr


def test_the_migration_runs_after_every_update_and_knows_the_owned_folders() -> None:
    """No `version`: it decides from the project's files. Its folders are `_skip_if_exists`."""
    config = yaml.safe_load((TEMPLATE / "copier.yml").read_text())
    (migration,) = config["_migrations"]
    assert "version" not in migration and "after" in migration["when"]
    owned = [arg.removeprefix("--owned=") for arg in migration["command"] if arg.startswith("--owned=")]
    assert owned == config["_skip_if_exists"]
    assert all(pattern.endswith("/") for pattern in owned), "owned entries are folders"


def test_the_owned_folders_exist_in_their_flavour(repo: TemplateRepo, workdir: Path) -> None:
    """Each `_skip_if_exists` folder holds files in a flavour: none is stale."""
    patterns = yaml.safe_load((TEMPLATE / "copier.yml").read_text())["_skip_if_exists"]
    seen = set()
    for flavour, folders in OWNED.items():
        project = render(repo, workdir / flavour, repo.head.tag, {**DEFAULTS, "flavour": flavour})
        for folder in folders:
            assert any((project / folder).iterdir()), f"{folder} is declared project-owned but {flavour} has none"
            seen.add(folder.replace("order_router", "{{ package_name }}"))
        for old, new in SPLIT[flavour]:
            assert not (project / old).exists() and (project / new).is_file()
    assert seen == set(patterns)


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


def add_team_code(project: Path, flavour: str) -> None:
    """The team's function in the old work module and its test in the old work tests."""
    for old, _ in SPLIT[flavour]:
        (project / old).write_text((project / old).read_text() + TEAM_CODE[old])


def assert_team_code_carried(project: Path, flavour: str, conflicts_allowed: bool = False) -> None:
    """The team's lines are in the new files: as they were, or (when allowed) inside conflict markers."""
    for old, new in SPLIT[flavour]:
        assert not (project / old).exists(), f"{old} is still there after the split"
        moved = (project / new).read_text()
        if conflicts_allowed and "<<<<<<< before updating" in moved:
            ours = moved.split("<<<<<<< before updating", 1)[1].split("=======", 1)[0]
            assert TEAM_CODE[old].strip() in ours, f"the team's lines of {old} are not in {new}"
        else:
            assert TEAM_CODE[old] in moved, f"the team's lines of {old} are not in {new}"
            assert "<<<<<<<" not in moved


@pytest.mark.parametrize("flavour", ["python", "rust"])
def test_a_teams_edits_survive_the_update_and_the_new_standard_arrives(
        repo: TemplateRepo, workdir: Path, flavour: str) -> None:
    project = generated(repo, workdir / "project", repo.previous.tag, flavour=flavour)
    add_team_code(project, flavour)
    edit(project / "cfg" / "config.toml", "interval_secs = 60", "interval_secs = 15")
    edit(project / "cfg" / "config.toml", "max_concurrency = 4", "max_concurrency = 16")
    edit(project / "README.md", "# order-router\n", "# order-router\nOn call: page #orders.\n")
    commit_all(project, "the team's changes")

    update(project, repo.head.tag)

    assert_team_code_carried(project, flavour)
    config = (project / "cfg" / "config.toml").read_text()
    assert "interval_secs = 15" in config and "max_concurrency = 16" in config
    assert (project / "README.md").read_text().startswith("# order-router\nOn call: page #orders.\n")
    # Nothing else differs from a fresh render: every edit above is accounted for.
    fresh = expected_after_update(repo, workdir, {**DEFAULTS, "flavour": flavour})
    got = tree(project)
    differing = {p for p in set(fresh) | set(got) if fresh.get(p) != got.get(p)}
    assert differing == {new for _, new in SPLIT[flavour]} | {"cfg/config.toml", "README.md"}


# ---------------------------------------------------------------- whatever the versions say


def copier_cli(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Copier as a team runs it, a separate process: its output is what the team reads."""
    if shutil.which("copier") is None:
        pytest.fail("the update tests need `copier` on PATH (requirements-dev.txt)")
    return run(args if args[0] == "copier" else ["copier", *args], cwd, check=check)


def assert_quiet(output: str) -> None:
    assert output.count("No git tags found") <= 1, output
    assert "copier._vcs.clone" not in output and "Traceback" not in output, output


def update_cli(project: Path, *extra: str) -> str:
    proc = copier_cli(["copier", "update", "--trust", "--defaults", *extra], project)
    output = proc.stdout + proc.stderr
    assert_quiet(output)
    return output


def test_from_the_previous_release_in_a_clone_without_tags(tagless: TemplateRepo, workdir: Path) -> None:
    """No tag anywhere: the project records a commit, the update goes to HEAD, the split still runs."""
    project = generated(tagless, workdir / "project", tagless.previous.commit, flavour="python")
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == tagless.previous.commit
    add_team_code(project, "python")
    commit_all(project, "the team's code")
    output = update_cli(project)
    assert_team_code_carried(project, "python")
    assert "plumbline update: src/order_router/work.py is now src/order_router/service/jobs.py" in output


def test_a_teams_line_that_imports_the_moved_module_is_named(repo: TemplateRepo, workdir: Path) -> None:
    project = generated(repo, workdir / "project", repo.previous.tag, flavour="python")
    work_tests = project / "tests/test_work.py"
    work_tests.write_text(work_tests.read_text() + (
        "\n\ndef test_the_teams_import() -> None:\n    from order_router.work import prepare\n\n    assert prepare\n"))
    commit_all(project, "the team's test")
    output = update_cli(project)
    lines = (project / "tests/service/test_jobs.py").read_text().splitlines()
    number = lines.index("    from order_router.work import prepare") + 1
    assert (f"plumbline update: tests/service/test_jobs.py:{number} still names from order_router.work "
            "(order_router.work is now order_router.service.jobs)") in output, output
    assert output.count("still names") == 1, output


def test_from_the_previous_release_in_a_tagged_clone(repo: TemplateRepo, workdir: Path) -> None:
    project = generated(repo, workdir / "project", repo.previous.tag, flavour="rust")
    add_team_code(project, "rust")
    commit_all(project, "the team's code")
    output = update_cli(project)
    assert_team_code_carried(project, "rust")
    assert "plumbline update: tests/work.rs is now tests/service/main.rs" in output
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == repo.head.tag



# A commit between v0.1.0 and v0.2.0 (the example work still in work.py / work.rs).
BETWEEN_THE_RELEASES = "8f3f461"


@pytest.mark.slow
@pytest.mark.parametrize(("commit", "flavour"), [
    (BEFORE_THE_ALERT_MOVE, "python"), (BEFORE_THE_ALERT_MOVE, "rust"), (BETWEEN_THE_RELEASES, "python"),
])
def test_from_a_commit_between_releases_every_moved_file_keeps_the_teams_lines(
        repo: TemplateRepo, workdir: Path, commit: str, flavour: str) -> None:
    """A project from a commit that is no release: whatever moved since keeps the team's lines.

    The example's tests grew a lot since those commits, so the team's test may meet changed
    lines of the release at the same place: then it is between markers, never lost.
    """
    project = generated(repo, workdir / "project", commit, flavour=flavour)
    alert_tests_moved = (project / OLD_ALERT_TESTS).exists()
    if alert_tests_moved:
        (project / OLD_ALERT_TESTS).write_text((project / OLD_ALERT_TESTS).read_text() + TEAM_ALERT_CASE)
    else:
        (project / NEW_ALERT_TESTS).write_text((project / NEW_ALERT_TESTS).read_text() + TEAM_ALERT_CASE)
    add_team_code(project, flavour)
    commit_all(project, "the team's rule test and code")
    update(project, repo.head.tag)
    assert_team_code_carried(project, flavour, conflicts_allowed=True)
    assert not (project / OLD_ALERT_TESTS).exists()
    moved = (project / NEW_ALERT_TESTS).read_text()
    assert TEAM_ALERT_CASE in moved and "  - ../alerts.yml\n" in moved and "<<<<<<<" not in moved
    run(["promtool", "test", "rules", NEW_ALERT_TESTS], project)


def test_a_conflict_in_a_moved_file_is_marked_and_named(repo: TemplateRepo, workdir: Path) -> None:
    """The team changed the line the move changes too (`rule_files`): both stay, marked, and named."""
    project = generated(repo, workdir / "project", BEFORE_THE_ALERT_MOVE)
    edit(project / OLD_ALERT_TESTS, "rule_files:\n  - alerts.yml\n", "rule_files:\n  - alerts.yml\n  - team.yml\n")
    commit_all(project, "the team's rules")
    output = update_cli(project, "--vcs-ref", repo.head.tag)
    moved = (project / NEW_ALERT_TESTS).read_text()
    assert "<<<<<<< before updating" in moved and ">>>>>>> after updating" in moved
    assert "  - team.yml\n" in moved and "  - ../alerts.yml\n" in moved
    assert f"{OLD_ALERT_TESTS} is now {NEW_ALERT_TESTS}" in output and "1 of them between" in output
    assert f"UU {NEW_ALERT_TESTS}" in git(project, "status", "--porcelain")


def test_a_file_the_team_deleted_stays_deleted(repo: TemplateRepo, workdir: Path) -> None:
    project = generated(repo, workdir / "project", BEFORE_THE_ALERT_MOVE)
    (project / OLD_ALERT_TESTS).unlink()
    commit_all(project, "no rule tests here")
    update(project, repo.head.tag)
    assert not (project / OLD_ALERT_TESTS).exists()


def test_an_example_file_the_team_deleted_from_its_service_part_stays_deleted(
        repo: TemplateRepo, workdir: Path) -> None:
    """The README has the team delete the example's test; Copier renders a missing owned file again."""
    project = generated(repo, workdir / "project", repo.head.tag)
    shutil.rmtree(project / "tests/service")
    commit_all(project, "the team's own service part, no example test")
    output = update_cli(project, "--skip-answered")
    assert not (project / "tests/service").exists()
    assert git(project, "status", "--porcelain") == ""
    # Nothing changed: one line says so, instead of asking for a review of nothing.
    assert "order-router already follows this template release: nothing changed." in output
    assert "Before committing" not in output


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


def test_a_conflicting_edit_is_shown_never_dropped(repo: TemplateRepo, workdir: Path) -> None:
    """The team and the next release changed the same line: both versions stay visible."""
    newer, tag = next_release(repo, workdir, {CONFIG_TEMPLATE: ("interval_secs = 60", "interval_secs = 30")})
    project = generated(newer, workdir / "project", repo.head.tag)
    edit(project / "cfg" / "config.toml", "interval_secs = 60", "interval_secs = 15")
    commit_all(project, "faster")
    update(project, tag)
    text = (project / "cfg" / "config.toml").read_text()
    assert "<<<<<<< before updating" in text and ">>>>>>> after updating" in text
    assert "interval_secs = 15" in text and "interval_secs = 30" in text
    assert "UU cfg/config.toml" in git(project, "status", "--porcelain")


SERVICE_API = "template/{% if is_python %}src{% endif %}/{{ package_name }}/service/api.py.jinja"
PLATFORM_APP = "template/{% if is_python %}src{% endif %}/{{ package_name }}/app.py"


SERVICE_TESTS = "template/{% if is_python %}tests{% endif %}/service/test_jobs.py.jinja"


def test_a_deleted_example_test_stays_deleted_when_the_release_changes_it(repo: TemplateRepo, workdir: Path) -> None:
    first = (TEMPLATE / SERVICE_TESTS).read_text().splitlines()[0]
    newer, tag = next_release(repo, workdir, {SERVICE_TESTS: (first, f"{first}\n# example change of the next release")})
    project = generated(newer, workdir / "project", repo.head.tag)
    shutil.rmtree(project / "tests/service")
    commit_all(project, "the team's own service part, no example test")
    update(project, tag)
    assert not (project / "tests/service").exists()
    assert git(project, "status", "--porcelain").splitlines() == [" M .copier-answers.yml"]


def test_a_platform_change_arrives_while_the_service_part_stays_the_teams(repo: TemplateRepo, workdir: Path) -> None:
    """A later release changes a platform file and an example file of the service part."""
    app_line = (TEMPLATE / PLATFORM_APP).read_text().splitlines()[0]
    api_line = (TEMPLATE / SERVICE_API).read_text().splitlines()[0]
    newer, tag = next_release(repo, workdir, {
        PLATFORM_APP: (app_line, f"{app_line}\n# platform change of the next release"),
        SERVICE_API: (api_line, f"{api_line}\n# example change of the next release"),
    })
    project = generated(newer, workdir / "project", repo.head.tag)
    jobs = project / "src/order_router/service/jobs.py"
    jobs.write_text(jobs.read_text() + TEAM_CODE["src/order_router/work.py"])
    teams_jobs = jobs.read_text()
    commit_all(project, "the team's jobs")
    update(project, tag)
    assert "# platform change of the next release" in (project / "src/order_router/app.py").read_text()
    # api.py was never changed by the team: it follows the release; jobs.py is the team's, untouched.
    assert "# example change of the next release" in (project / "src/order_router/service/api.py").read_text()
    assert jobs.read_text() == teams_jobs
    marked = [p for p, data in tree(project).items() if any(line.startswith(b"<<<<<<< ") for line in data.splitlines())]
    assert marked == []
    assert "UU" not in git(project, "status", "--porcelain")


def test_a_changed_file_the_release_drops_is_kept_and_named(repo: TemplateRepo, workdir: Path) -> None:
    newer = workdir / "plumbline-next"
    git(workdir, "clone", "--quiet", f"file://{repo.path}", str(newer))
    git(newer, "rm", "--quiet", "template/LICENSE.jinja")
    git(newer, "commit", "--quiet", "-m", "next release: no LICENSE")
    project = generated(repo, workdir / "project", repo.head.tag)
    (project / "LICENSE").write_text((project / "LICENSE").read_text() + "Amended by the team.\n")
    # The project follows the clone with the next release (docs/updating.md: edit _src_path).
    edit(project / ".copier-answers.yml", f"_src_path: {repo.path}", f"_src_path: {newer}")
    commit_all(project, "the team's license, the template's new place")
    output = update_cli(project, "--vcs-ref", "HEAD")
    assert (project / "LICENSE").read_text().endswith("Amended by the team.\n")
    assert "plumbline update: kept LICENSE: the update removes it" in output and "git rm LICENSE" in output


# ---------------------------------------------------------------- README and CI, as written


README = (TEMPLATE / "README.md").read_text()


def readme_command(starts: str) -> str:
    """The command of the README that starts with `starts`, without its comment."""
    for line in README.splitlines():
        for part in line.split(" && "):
            if part.startswith(starts):
                return part.split("  #")[0].strip()
    raise AssertionError(f"README.md has no command starting with {starts!r}")


def test_the_readme_installs_the_pinned_versions() -> None:
    pins = (TEMPLATE / "requirements-dev.txt").read_text()
    install = readme_command("python3 -m pip install")
    for package in ("copier", "copier-template-extensions"):
        pinned = re.search(rf"^{package}==(\S+)$", pins, re.MULTILINE)
        assert pinned and f"{package}=={pinned[1]}" in install.split()


@pytest.mark.slow
@pytest.mark.parametrize("tags", [False, True], ids=["fresh-clone", "tags-recreated"])
def test_the_quick_start_and_the_update_commands_work_as_written(
        repo: TemplateRepo, tagless: TemplateRepo, workdir: Path, tags: bool) -> None:
    clone = workdir / "plumbline"
    git(workdir, "clone", "--quiet", "--no-tags", f"file://{tagless.path}", str(clone))
    if tags:
        run(["scripts/tag-releases"], clone)  # as a template user runs it, in the clone
    copy = run(["bash", "-c", readme_command("copier copy")], clone)
    assert_quiet(copy.stdout + copy.stderr)
    project = workdir / "order-router"
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["_src_path"] == str(clone)
    put_in_git = re.search(r"`(git init[^`]*)`", README)
    assert put_in_git, "README.md no longer says how to put the generated service in git"
    run(["bash", "-c", put_in_git[1]], project)
    # A newer template: a commit on the clone, released as the next version when tags are kept.
    edit(clone / "template" / "cfg" / "config.toml.jinja", "[work]", "# the next release\n[work]")
    git(clone, "commit", "--quiet", "--all", "-m", "the next release")
    if tags:
        git(clone, "tag", f"v{repo.head.version}")
    check = run(["bash", "-c", readme_command("copier check-update")], project)
    assert "New template version available" in check.stdout + check.stderr
    assert_quiet(check.stdout + check.stderr)
    updated = run(["bash", "-c", readme_command("copier update")], project)
    assert_quiet(updated.stdout + updated.stderr)
    assert "# the next release" in (project / "cfg" / "config.toml").read_text()
    if tags:  # generated from the newest tag, v0.2.0: the update to the next release made the split
        assert answers["_commit"] == repo.previous.tag
        assert (project / "src/order_router/service/jobs.py").is_file()
        assert not (project / "src/order_router/work.py").exists()
    commit_all(project, "updated")
    assert "Project is up-to-date" in run(["bash", "-c", readme_command("copier check-update")], project).stdout
    if not tags:  # docs/updating.md: from the template's folder, the project as an absolute path
        edit(clone / "template" / "cfg" / "config.toml.jinja", "[work]", "# one more\n[work]")
        git(clone, "commit", "--quiet", "--all", "-m", "one more")
        again = run(["bash", "-c", 'copier update --trust --defaults "$(realpath ../order-router)"'], clone)
        assert_quiet(again.stdout + again.stderr)
        assert "# one more" in (project / "cfg" / "config.toml").read_text()


@pytest.mark.slow
def test_a_relative_source_is_fixed_by_editing_src_path(tagless: TemplateRepo, workdir: Path) -> None:
    """What the old README's `copier copy --trust --defaults . ../order-router` left behind."""
    project = workdir / "order-router"
    copier_cli(["copier", "copy", "--trust", "--defaults", ".", str(project)], tagless.path)
    commit_all(project, "generated with a relative source")
    broken = copier_cli(["copier", "check-update"], project, check=False)
    assert broken.returncode != 0
    edit(project / ".copier-answers.yml", "_src_path: .", f"_src_path: {tagless.path}")
    commit_all(project, "template source: the clone's absolute path")
    assert "Project is up-to-date" in copier_cli(["copier", "check-update"], project).stdout


def ci_update_scripts(project: Path) -> dict[str, str]:
    github = yaml.safe_load((project / ".github/workflows/template-update.yml").read_text())
    (step,) = [s for s in github["jobs"]["check-update"]["steps"] if "copier check-update" in s.get("run", "")]
    gitlab = yaml.safe_load((project / ".gitlab-ci.yml").read_text())
    return {"github": step["run"], "gitlab": gitlab["template-update"]["script"][-1]}


def test_the_ci_update_check_says_in_one_line_that_a_local_source_is_out_of_reach(
        repo: TemplateRepo, workdir: Path) -> None:
    project = generated(repo, workdir / "project", repo.head.tag, ci_provider="both")
    edit(project / ".copier-answers.yml", f"_src_path: {repo.path}", "_src_path: /home/alice/src/plumbline")
    for provider, script in ci_update_scripts(project).items():
        proc = subprocess.run(["bash", "-e", "-c", script], cwd=project, text=True, capture_output=True, timeout=120)
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        assert proc.returncode == 0, f"{provider}: {lines}"
        assert len(lines) == 1 and "/home/alice/src/plumbline" in lines[0] and "not checked" in lines[0], lines


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


# A fleet: services of both flavours, each changed by its team the way teams do.
FLEET = [
    pytest.param("python", "order-router", 8080, 9180, id="python-order-router"),
    pytest.param("python", "price-feed", 8081, 9181, id="python-price-feed"),
    pytest.param("rust", "ledger-sync", 8082, 9182, marks=pytest.mark.rust, id="rust-ledger-sync"),
    pytest.param("rust", "risk-gate", 8083, 9183, marks=pytest.mark.rust, id="rust-risk-gate"),
]
RUNBOOK = "# Runbook\n\nWhen the upstream is down, page #desk-oncall; the service keeps the last value.\n"


@pytest.mark.slow
@pytest.mark.parametrize(("flavour", "name", "port", "team_port"), FLEET)
def test_a_fleet_service_updates_without_conflict_and_its_tests_pass(
        repo: TemplateRepo, workdir: Path, flavour: str, name: str, port: int, team_port: int) -> None:
    """Generated at the previous release, changed by its team, updated to HEAD: nothing lost, green."""
    tool = {"python": "uv", "rust": "cargo"}[flavour]
    require_tool(tool)
    package = name.replace("-", "_")
    project = generated(repo, workdir / name, repo.previous.tag, flavour=flavour, project_name=name,
                        http_port=port, deploy_targets=["systemd", "kubernetes"])
    old, new = SPLIT[flavour][0]
    old, new = old.replace("order_router", package), new.replace("order_router", package)
    team_code = TEAM_CODE[SPLIT[flavour][0][0]]
    (project / old).write_text((project / old).read_text() + team_code)
    edit(project / "cfg" / "config.toml", f"port = {port}\n", f"port = {team_port}\n")
    (project / "docs").mkdir(exist_ok=True)
    (project / "docs" / "runbook.md").write_text(RUNBOOK)
    commit_all(project, "the team's changes")

    update(project, repo.head.tag)

    assert "UU" not in git(project, "status", "--porcelain")
    marked = [p for p, data in tree(project).items() if any(line.startswith(b"<<<<<<< ") for line in data.splitlines())]
    assert marked == [], f"conflict markers in {marked}"
    assert not (project / old).exists() and team_code in (project / new).read_text()
    assert f"port = {team_port}\n" in (project / "cfg" / "config.toml").read_text()
    assert (project / "docs" / "runbook.md").read_text() == RUNBOOK
    run(["make", "setup", "test"] if flavour == "python" else ["make", "test"], project, timeout=3600)
    run(["promtool", "test", "rules", NEW_ALERT_TESTS], project)
    if flavour == "python":  # `make setup` compiled the packages once; `make test` does not again
        again = run(["make", "test"], project, timeout=900)
        assert "Bytecode compiled" not in again.stdout + again.stderr
