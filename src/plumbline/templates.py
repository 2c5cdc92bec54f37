"""The template a project was generated from: its git repository, releases and exported trees.

Releases are the `vX.Y.Z` tags of the template repository. A clone without tags (tags do not
travel with every clone or mirror) falls back on the CHANGELOG's release headings,
`## vX.Y.Z (YYYY-MM-DD), commit <sha>`, read at the repository's HEAD.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import tarfile
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from packaging.version import Version

from plumbline.errors import AuditError

TAG = re.compile(r"^v(\d+\.\d+\.\d+)$")
RELEASE_HEADING = re.compile(
    r"^## (?P<tag>v(?P<version>\d+\.\d+\.\d+)) \(\d{4}-\d{2}-\d{2}\), commit (?P<sha>[0-9a-f]{7,40})\s*$"
)
DESCRIBE = re.compile(r"^(?P<tag>.+)-(?P<count>\d+)-g(?P<sha>[0-9a-f]{4,40})$")
# What the service part of a project is, in every release: the team owns it, never drift.
SERVICE_PART = ("src/*/service/**", "tests/service/**", "src/service/**")


@dataclass(frozen=True)
class Release:
    tag: str
    version: Version
    commit: str  # full sha


def git(repo: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise AuditError(f"git {' '.join(args)} failed in {repo}: {last}")
    return proc.stdout


def normalize_source(source: str) -> str:
    """Copier's spelling of a template source as a git URL (`gh:org/repo` -> https URL)."""
    from copier._vcs import get_repo

    return get_repo(source) or source


def _is_local_repo(path: Path) -> bool:
    if not path.is_dir():
        return False
    proc = subprocess.run(["git", "rev-parse", "--git-dir"], cwd=path, capture_output=True, text=True, check=False)
    return proc.returncode == 0


class Template:
    """One template repository (a local clone, or a bare clone made from its URL)."""

    def __init__(self, source: str, repo: Path, cache_dir: Path) -> None:
        self.source = source
        self.repo = repo
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        self._exports: dict[str, Path] = {}
        self._ancestor: dict[tuple[str, str], bool] = {}
        self._resolved: dict[str, str] = {}
        self._owned: dict[str, list[str]] = {}
        self.releases = self._read_releases()

    # ------------------------------------------------------------------ releases
    def _read_releases(self) -> list[Release]:
        releases = []
        for line in git(self.repo, "tag", "--list", "v*").splitlines():
            match = TAG.match(line.strip())
            if match:
                sha = git(self.repo, "rev-parse", f"{line.strip()}^{{commit}}").strip()
                releases.append(Release(line.strip(), Version(match[1]), sha))
        if not releases:
            changelog = git(self.repo, "show", "HEAD:CHANGELOG.md", check=False)
            for line in changelog.splitlines():
                match = RELEASE_HEADING.match(line.strip())
                if match:
                    sha = self.commit_of(match["sha"])
                    if sha:
                        releases.append(Release(match["tag"], Version(match["version"]), sha))
        return sorted(releases, key=lambda r: r.version)

    @property
    def newest(self) -> Release | None:
        return self.releases[-1] if self.releases else None

    def commit_of(self, ref: str) -> str | None:
        out = git(self.repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False).strip()
        return out or None

    def resolve(self, recorded: str) -> str:
        """The full sha of an answers file's `_commit` (a tag, `git describe` output or a sha)."""
        recorded = str(recorded).strip()
        if recorded in self._resolved:
            return self._resolved[recorded]
        candidates = [recorded]
        if match := DESCRIBE.match(recorded):
            candidates.insert(0, match["sha"])
        for release in self.releases:
            if release.tag == recorded:
                candidates.append(release.commit)
        for ref in candidates:
            if sha := self.commit_of(ref):
                self._resolved[recorded] = sha
                return sha
        raise AuditError(f"the template {self.source} has no commit {recorded!r} (the answers file's _commit)")

    def contains(self, commit: str, release: Release) -> bool:
        """Does `commit` include `release` (the release's commit is an ancestor of it, or it)?"""
        key = (commit, release.commit)
        if key not in self._ancestor:
            proc = subprocess.run(
                ["git", "merge-base", "--is-ancestor", release.commit, commit], cwd=self.repo, capture_output=True, check=False
            )
            self._ancestor[key] = proc.returncode == 0
        return self._ancestor[key]

    def release_of(self, commit: str) -> Release | None:
        """The newest release the commit includes."""
        inside = [r for r in self.releases if self.contains(commit, r)]
        return inside[-1] if inside else None

    def behind(self, commit: str) -> list[Release]:
        """The releases the commit does not include: what `copier update` would bring."""
        return [r for r in self.releases if not self.contains(commit, r)]

    # ------------------------------------------------------------------ trees
    def export(self, commit: str) -> Path:
        """The template's files at `commit`, extracted once (renders read them, never git)."""
        with self._lock:
            if commit in self._exports:
                return self._exports[commit]
            dst = self.cache_dir / "exports" / commit
            if not (dst / ".complete").exists():
                proc = subprocess.run(["git", "archive", "--format=tar", commit], cwd=self.repo, capture_output=True, check=False)
                if proc.returncode != 0:
                    raise AuditError(f"cannot read commit {commit} of {self.source}: {proc.stderr.decode().strip()}")
                dst.mkdir(parents=True, exist_ok=True)
                with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
                    tar.extractall(dst, filter="tar")
                (dst / ".complete").write_text("")
            self._exports[commit] = dst
            return dst

    def copier_config(self, commit: str) -> dict[str, Any]:
        return yaml.safe_load(git(self.repo, "show", f"{commit}:copier.yml")) or {}

    def project_owned(self, commit: str) -> list[str]:
        """Glob patterns of the files the project owns at that release: the service part and
        the release's `_skip_if_exists` (Jinja expressions in them match any name)."""
        if commit not in self._owned:
            skip = self.copier_config(commit).get("_skip_if_exists") or []
            patterns = [re.sub(r"\{\{.*?\}\}", "*", str(p)) for p in skip]
            self._owned[commit] = [*SERVICE_PART, *patterns]
        return self._owned[commit]


@cache
def _lock_for(key: str) -> threading.Lock:
    return threading.Lock()


def open_template(source: str, cache_dir: Path) -> Template:
    """Open the template at `source`: a local git repository as it is, a URL cloned once."""
    local = Path(source.removeprefix("file://")).expanduser()
    if _is_local_repo(local):
        return Template(source, local, cache_dir)
    url = normalize_source(source)
    dst = cache_dir / "templates" / hashlib.sha256(url.encode()).hexdigest()[:16]
    with _lock_for(str(dst)):
        if not (dst / "HEAD").exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run(
                ["git", "clone", "--bare", "--quiet", url, str(dst)],
                capture_output=True,
                text=True,
                check=False,
                env=_no_prompt(),
            )
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise AuditError(f"cannot reach the template {source}: {last}")
    return Template(source, dst, cache_dir)


def _no_prompt() -> dict[str, str]:
    import os

    return {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
