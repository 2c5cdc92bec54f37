"""Releases of the template, as CHANGELOG.md names them, tagged in a scratch git copy.

Tags do not travel with a clone or a push, so the update tests never read the tags of the
repository they run in. They clone it, commit the working tree on top as "HEAD under test"
(uncommitted changes included, as while developing), and tag there each release with
scripts/tag-releases, as a template user does, plus HEAD under test as the next minor
release. `tagged_copy(..., tags=False)` leaves the copy without any tag, as a fresh clone.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from copier import run_copy, run_update
from packaging.version import Version

from helpers import TEMPLATE, git

TAG_RELEASES = TEMPLATE / "scripts" / "tag-releases"


def _tag_script() -> Any:
    """scripts/tag-releases as a module: the tests read releases exactly as the script does."""
    loader = importlib.machinery.SourceFileLoader("tag_releases", str(TAG_RELEASES))
    spec = importlib.util.spec_from_loader("tag_releases", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


_SCRIPT = _tag_script()
HEADING_FORM = _SCRIPT.HEADING_FORM


@dataclass(frozen=True)
class Release:
    tag: str
    version: Version
    commit: str


def parse_releases(changelog: str) -> list[Release]:
    """Every released section of a CHANGELOG, oldest first; a malformed release heading is an error."""
    return [Release(r.tag, Version(r.tag[1:]), r.commit) for r in _SCRIPT.parse_releases(changelog)]


def next_version(releases: list[Release]) -> Version:
    """The release that HEAD becomes: the next minor version after the newest release."""
    newest = releases[-1].version
    return Version(f"{newest.major}.{newest.minor + 1}.0")


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


def tag_releases(repo: Path) -> str:
    """Run scripts/tag-releases in `repo`, as a template user does in a clone without tags."""
    proc = subprocess.run([sys.executable, str(TAG_RELEASES), "-C", str(repo)], text=True,
                          capture_output=True, check=False)
    if proc.returncode:
        raise AssertionError(f"scripts/tag-releases failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def tagged_copy(dst: Path, source: Path = TEMPLATE, changelog: str | None = None, tags: bool = True) -> TemplateRepo:
    """Clone `source`, commit its working tree as HEAD under test, tag every release and HEAD.

    The releases are read from `changelog`, by default the working tree's CHANGELOG.md. With
    `tags=False` the copy stays as a fresh clone is, without any tag.
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

    if changelog is not None:
        (dst / "CHANGELOG.md").write_text(changelog)
        git(dst, "commit", "--quiet", "--all", "--no-verify", "-m", "HEAD under test: its CHANGELOG")
    releases = parse_releases((dst / "CHANGELOG.md").read_text())
    if not releases:
        raise AssertionError(f"CHANGELOG.md names no release: add a section '{HEADING_FORM}' "
                             "for the first release commit")
    if tags:
        tag_releases(dst)
    version = next_version(releases)
    head = Release(f"v{version}", version, git(dst, "rev-parse", "HEAD").strip())
    if tags:
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
