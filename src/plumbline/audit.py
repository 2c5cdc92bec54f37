"""Audit generated projects: release and drift from `.copier-answers.yml`, and the direct rules.

One project or a fleet go through the same two phases: read each project and submit the
renders it needs (deduplicated across the fleet), then compare each project with its renders.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plumbline import rules
from plumbline.errors import AuditError
from plumbline.render import Renderer, Tree
from plumbline.rules import ANSWERS, Finding
from plumbline.templates import Release, Template, open_template

# The base configuration: template-owned, and edited by every service (its values, its sections).
CONFIG = "cfg/config.toml"


@dataclass(frozen=True)
class FileState:
    path: str
    state: str  # identical, edited, missing (in the project); new, removed (update only)
    added: int = 0
    removed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "state": self.state, "added": self.added, "removed": self.removed}

    @property
    def detail(self) -> str:
        return f"{self.state} (+{self.added}/-{self.removed})" if self.state == "edited" else self.state


@dataclass
class ProjectReport:
    path: str
    source: str  # what was asked for: the folder, or the git URL in fleet mode
    template: dict[str, Any] | None = None
    files: list[FileState] = field(default_factory=list)
    update: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        return "fails" if any(f.level == "fail" for f in self.findings) else "in line"

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "source": self.source,
            "status": self.status,
            "error": self.error,
            "template": self.template,
            "files": [f.as_dict() for f in self.files],
            "update": self.update,
            "findings": [f.as_dict() for f in self.findings],
        }


def line_changes(old: bytes, new: bytes) -> tuple[int, int]:
    """Lines added and removed going from `old` (the render) to `new` (the project)."""
    a = old.decode("utf-8", "replace").splitlines()
    b = new.decode("utf-8", "replace").splitlines()
    added = removed = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag in ("replace", "delete"):
            removed += i2 - i1
        if tag in ("replace", "insert"):
            added += j2 - j1
    return added, removed


def owned_by_project(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, p) for p in patterns)


def compare(project: Path, render: Tree, patterns: list[str]) -> list[FileState]:
    """Each template-owned file of the render, as the project has it."""
    states = []
    for path, expected in render.items():
        if path == ANSWERS or owned_by_project(path, patterns):
            continue
        actual_path = project / path
        if not actual_path.is_file():
            states.append(FileState(path, "missing"))
            continue
        actual = actual_path.read_bytes()
        if actual == expected:
            states.append(FileState(path, "identical"))
        else:
            states.append(FileState(path, "edited", *line_changes(expected, actual)))
    return states


@dataclass
class _Pending:
    report: ProjectReport
    project: Path
    template: Template | None = None
    commit: str = ""
    newest: Release | None = None
    owned: list[str] = field(default_factory=list)
    owned_newest: list[str] = field(default_factory=list)
    recorded: Future[Tree] | None = None
    updated: Future[Tree] | None = None


class Auditor:
    """Audits projects; holds the opened templates and the shared render cache."""

    def __init__(self, cache_dir: Path, jobs: int, template: str | None = None, allow_edits: bool = False) -> None:
        self.cache_dir = cache_dir
        self.jobs = jobs
        self.template_override = template
        self.allow_edits = allow_edits
        self.renderer = Renderer(jobs)
        self._templates: dict[str, Template] = {}
        self._lock = threading.Lock()

    def template(self, source: str) -> Template:
        source = self.template_override or source
        with self._lock:
            if source not in self._templates:
                self._templates[source] = open_template(source, self.cache_dir)
            return self._templates[source]

    # ------------------------------------------------------------------ phase 1
    def start(self, project: Path, source: str) -> _Pending:
        """Check the direct rules, read the answers, submit the renders (raises AuditError)."""
        report = ProjectReport(str(project), source)
        pending = _Pending(report, project)
        if not project.is_dir():
            raise AuditError(f"{project} is not a directory")
        answers, findings = rules.read_answers(project)
        report.findings.extend(findings)
        report.findings.extend(rules.direct_rules(project))
        if answers is None:
            return pending
        template = self.template(str(answers["_src_path"]))
        commit = template.resolve(str(answers["_commit"]))
        release, newest, behind = template.release_of(commit), template.newest, template.behind(commit)
        report.template = {
            "src_path": answers["_src_path"],
            "commit": str(answers["_commit"]),
            "release": release.tag if release else None,
            "newest": newest.tag if newest else None,
            "behind": len(behind),
            "releases_behind": [r.tag for r in behind],
        }
        if behind:
            report.findings.append(
                Finding(
                    "release",
                    "fail",
                    ANSWERS,
                    f"{len(behind)} release{'s' if len(behind) > 1 else ''} behind {newest.tag if newest else ''}: "
                    f"{', '.join(r.tag for r in behind)} (copier update --trust)",
                )
            )
        data = {k: v for k, v in answers.items() if not str(k).startswith("_")}
        pending.template, pending.commit, pending.newest = template, commit, newest
        pending.owned = template.project_owned(commit)
        pending.recorded = self.renderer.submit(template.export(commit), data)
        if newest is not None and behind:
            pending.owned_newest = template.project_owned(newest.commit)
            pending.updated = self.renderer.submit(template.export(newest.commit), data)
        return pending

    # ------------------------------------------------------------------ phase 2
    def finish(self, pending: _Pending) -> ProjectReport:
        report = pending.report
        if pending.recorded is None:
            return report
        try:
            recorded = pending.recorded.result()
        except Exception as exc:  # Copier refuses the answers (a validator) or the tree
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            report.findings.append(Finding("answers", "fail", ANSWERS, f"the recorded answers do not render: {first}"))
            return report
        report.files = compare(pending.project, recorded, pending.owned)
        # A contract key that the project's own release did not have yet is not missing there:
        # being behind is the release rule's finding, and `copier update` brings the key.
        stated = rules.config_keys(recorded[CONFIG].decode("utf-8", "replace")) if CONFIG in recorded else None
        if stated is not None:
            report.findings = [f for f in report.findings if (key := rules.missing_key(f)) is None or key in stated]
        level = "warn" if self.allow_edits else "fail"
        for state in report.files:
            if state.state == "missing":
                report.findings.append(Finding("drift", "fail", state.path, "template-owned file is missing"))
            elif state.state == "edited" and state.path == CONFIG:
                # Every service sets its values and replaces the example's section here (the
                # generated README says so); the config-keys and config-secrets rules judge it.
                values = f"the service's values: +{state.added}/-{state.removed} lines (config-keys, config-secrets check it)"
                report.findings.append(Finding("drift", "warn", state.path, values))
            elif state.state == "edited":
                report.findings.append(
                    Finding("drift", level, state.path, f"template-owned file edited: +{state.added}/-{state.removed} lines")
                )
        if pending.updated is not None and pending.newest is not None:
            try:
                updated = pending.updated.result()
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                report.findings.append(
                    Finding("release", "warn", ANSWERS, f"{pending.newest.tag} does not render with these answers: {first}")
                )
                return report
            patterns = [*pending.owned, *pending.owned_newest]
            changes = [s for s in compare(pending.project, updated, patterns) if s.state != "identical"]
            changes = [
                FileState(s.path, "new", s.added, s.removed) if s.path not in recorded and s.state == "missing" else s
                for s in changes
            ]
            gone = [
                FileState(p, "removed")
                for p in recorded
                if p not in updated and p != ANSWERS and not owned_by_project(p, patterns) and (pending.project / p).exists()
            ]
            report.update = {"to": pending.newest.tag, "files": [s.as_dict() for s in [*changes, *gone]]}
        return report


def _progress(done: int, total: int, what: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\rplumbline audit: {what} {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
    elif done == total or done % max(1, total // 4) == 0:
        sys.stderr.write(f"plumbline audit: {what} {done}/{total}\n")
    sys.stderr.flush()


def audit_projects(auditor: Auditor, projects: list[tuple[Path, str]], fleet: bool) -> list[ProjectReport]:
    """Audit each (folder, source); in fleet mode a project that cannot be audited is a row with
    its error, otherwise the AuditError stops the audit."""

    def start(item: tuple[Path, str]) -> _Pending | ProjectReport:
        try:
            return auditor.start(*item)
        except AuditError as exc:
            if not fleet:
                raise
            return ProjectReport(str(item[0]), item[1], error=str(exc))

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(projects)))) as pool:
        started = list(pool.map(start, projects))
    reports = []
    for index, item in enumerate(started, 1):
        reports.append(item if isinstance(item, ProjectReport) else auditor.finish(item))
        if fleet:
            _progress(index, len(started), "audited")
    return reports


# ---------------------------------------------------------------------- fleet
def read_repo_list(path: Path) -> list[str]:
    """One git URL per line; blank lines and `#` comments ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuditError(f"cannot read the repository list {path}: {exc.strerror}") from None
    urls = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    urls = [u for u in urls if u]
    if not urls:
        raise AuditError(f"the repository list {path} names no repository")
    return urls


def audit_fleet(auditor: Auditor, urls: list[str], into: Path, jobs: int) -> list[ProjectReport]:
    """Shallow-clone every URL with a bounded pool, and start auditing each as soon as it is
    cloned (its renders run while the other clones go on); one report per URL, in list order."""
    into.mkdir(parents=True, exist_ok=True)
    done = 0
    lock = threading.Lock()
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}

    def clone_and_start(item: tuple[int, str]) -> _Pending | ProjectReport:
        nonlocal done
        index, url = item
        name = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or "repo"
        dst = into / f"{index:04d}-{name}"
        if dst.exists():  # a clone left by an earlier run in the same --cache
            shutil.rmtree(dst)
        proc = subprocess.run(
            ["git", "clone", "--depth", "1", "--quiet", url, str(dst)], capture_output=True, text=True, check=False, env=env
        )
        with lock:
            done += 1
            _progress(done, len(urls), "cloned")
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return ProjectReport(str(dst), url, error=f"cannot clone {url}: {last}")
        try:
            return auditor.start(dst, url)
        except AuditError as exc:
            return ProjectReport(str(dst), url, error=str(exc))

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        started = list(pool.map(clone_and_start, enumerate(urls)))
    reports = []
    for index, item in enumerate(started, 1):
        reports.append(item if isinstance(item, ProjectReport) else auditor.finish(item))
        _progress(index, len(started), "audited")
    return reports
