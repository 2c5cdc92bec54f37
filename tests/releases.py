"""Releases of the template, as CHANGELOG.md names them, tagged in a scratch git copy.

Tags do not travel with a clone or a push, so the update tests never read the tags of the
repository they run in. They clone it, commit the working tree on top as "HEAD under test"
(uncommitted changes included, as while developing), and tag there each release at the
commit its CHANGELOG section names, plus HEAD under test as the next minor release, so that
the migrations written for that release run when a project is updated to HEAD.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from copier import run_copy, run_update
from packaging.version import Version

from helpers import TEMPLATE, git

RELEASE_HEADING = re.compile(
    r"^## (?P<tag>v(?P<version>\d+\.\d+\.\d+)) \((?P<date>\d{4}-\d{2}-\d{2})\), commit (?P<sha>[0-9a-f]{7,40})$"
)
HEADING_FORM = "## vX.Y.Z (YYYY-MM-DD), commit <7 to 40 hex digits>"
@dataclass(frozen=True)
class Release:
    tag: str
    version: Version
    commit: str


def parse_releases(changelog: str) -> list[Release]:
    """Every released section of a CHANGELOG, oldest first; a malformed release heading is an error."""
    releases = []
    for number, line in enumerate(changelog.splitlines(), 1):
        if not line.startswith("## ") or line.strip() == "## Unreleased":
            continue
        match = RELEASE_HEADING.match(line.strip())
        if match is None:
            raise ValueError(f"CHANGELOG.md line {number}: {line.strip()!r} is not a release heading; "
                             f"allowed: '## Unreleased' or '{HEADING_FORM}'")
        releases.append(Release(match["tag"], Version(match["version"]), match["sha"]))
    if len({r.version for r in releases}) != len(releases):
        raise ValueError("CHANGELOG.md names a release twice")
    return sorted(releases, key=lambda r: r.version)


def next_version(releases: list[Release]) -> Version:
    """The release that HEAD becomes: the next minor version after the newest release."""
    newest = releases[-1].version
    return Version(f"{newest.major}.{newest.minor + 1}.0")


def migration_versions(copier_yml: Path = TEMPLATE / "copier.yml") -> list[Version]:
    """The version of each migration declared in copier.yml."""
    config = yaml.safe_load(copier_yml.read_text())
    return [Version(m["version"]) for m in config.get("_migrations", []) if "version" in m]


@dataclass(frozen=True)
class TemplateRepo:
    """A scratch git copy of the template with each release tagged, and HEAD under test."""

    path: Path
    releases: list[Release]
    head: Release

    @property
    def previous(self) -> Release:
        """The newest release before HEAD under test."""
        return self.releases[-1]


def tagged_copy(dst: Path, source: Path = TEMPLATE, changelog: str | None = None) -> TemplateRepo:
    """Clone `source`, commit its working tree as HEAD under test, tag every release and HEAD.

    The releases are read from `changelog`, by default the working tree's CHANGELOG.md.
    """
    # A file:// clone transfers one pack instead of copying loose objects: Copier clones this
    # copy on every render, and removing hundreds of object folders each time is slow.
    git(dst.parent, "clone", "--quiet", f"file://{source}", str(dst))
    # Replace the clone's tree with the working tree: modified, new and deleted files alike,
    # ignoring what .gitignore ignores (build caches, virtualenvs).
    listed = git(source, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for entry in dst.iterdir():
        if entry.name != ".git":
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for name in filter(None, listed):
        src = source / name
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree, not yet committed
        target = dst / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    git(dst, "add", "--all")
    git(dst, "commit", "--quiet", "--allow-empty", "--no-verify", "-m", "HEAD under test")

    releases = parse_releases((source / "CHANGELOG.md").read_text() if changelog is None else changelog)
    if not releases:
        raise AssertionError(f"CHANGELOG.md names no release: add a section '{HEADING_FORM}' "
                             "for the first release commit")
    for release in releases:
        known = subprocess.run(["git", "cat-file", "-e", f"{release.commit}^{{commit}}"], cwd=dst, check=False)
        if known.returncode:
            raise AssertionError(f"CHANGELOG.md: {release.tag} names commit {release.commit}, "
                                 "which is not in the template's history")
        git(dst, "tag", release.tag, release.commit)
    version = next_version(releases)
    head = Release(f"v{version}", version, git(dst, "rev-parse", "HEAD").strip())
    git(dst, "tag", head.tag, head.commit)
    git(dst, "repack", "-a", "-d", "-q")
    git(dst, "prune-packed")
    return TemplateRepo(dst, releases, head)


def render(repo: TemplateRepo, dst: Path, ref: str, answers: dict[str, Any]) -> Path:
    """Render the template at release (or commit) `ref` into `dst`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_copy(str(repo.path), str(dst), data=answers, vcs_ref=ref, defaults=True, unsafe=True, quiet=True)
    return dst


def update(project: Path, ref: str, data: dict[str, Any] | None = None, conflict: str = "inline") -> None:
    """`copier update` the project to `ref`, keeping its answers except those in `data`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_update(str(project), data=data or {}, vcs_ref=ref, defaults=True, unsafe=True,
                   overwrite=True, quiet=True, conflict=conflict)


def tree(root: Path) -> dict[str, bytes]:
    """Every file of a project by relative path, without .git and the `_commit` line of the answers."""
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] == ".git" or path.is_dir():
            continue
        data = path.read_bytes()
        if rel.as_posix() == ".copier-answers.yml":
            data = b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(b"_commit:"))
        files[rel.as_posix()] = data
    return files
