"""After `copier update`: carry every file the team changed into the new release; never lose one.

Copier runs this after every update (copier.yml `_migrations`). It decides from the state
of the project, not from version numbers, so it works the same when the template has no
tags, when the project was generated from a commit between releases, or when the update
goes to a branch or a commit:

- the project's git HEAD holds the team's files as they were before the update (Copier
  refuses to update a project with uncommitted changes);
- the template rendered at the commit the project was on (`_commit` in HEAD's answers
  file), with the answers of then, tells which files the team changed: the base;
- the working tree holds what the update made.

Then, for each file in HEAD:

1. gone after the update (the new release no longer renders it) and changed by the team:
   - when the file moved in the template (MOVES), the team's changes are merged into the
     new file, a three-way merge (base -> the team's file, applied to the new file); a
     line both changed is left between conflict markers, and the file is marked as
     conflicted for `git status`;
   - otherwise the file is put back where it was, and a line says what to do with it;
   a gone file the team never changed is left gone: the new release replaces it.
2. in a project-owned folder (copier.yml `_skip_if_exists`, which Copier never touches once
   a file exists): a file still exactly as the old render made it follows the new release
   (changed, or removed if the release dropped it); one the team changed is left alone; one
   the team deleted, which Copier renders again, is deleted again.

3. a line of the project that still names a module the update moved (the team's own
   `from <package>.work import ...`, `crate::work::...`) is named, file and line.

Every action is one line on stderr, in words. After the update is committed, running it
again finds nothing to do.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from copier import run_copy

TEMPLATE = Path(__file__).resolve().parents[1]
# Files the template moved: old path -> new path ({package} is the Python package name).
MOVES = {
    # v0.1.0 (before its release): the Prometheus rule tests moved to tests/.
    "deploy/prometheus/alerts_test.yml": "deploy/prometheus/tests/alerts_test.yml",
    # The platform/service split: the example work became the service part's jobs.
    "src/{package}/work.py": "src/{package}/service/jobs.py",
    "tests/test_work.py": "tests/service/test_jobs.py",
    "src/work.rs": "src/service/jobs.rs",
    "tests/work.rs": "tests/service/main.rs",
}
# Modules the template moved: the file that held one -> (its old name, its new name, the
# files that may name it, a pattern of those names: Python imports, Rust paths). The team's own
# lines that still name the old module are listed after the update, file and line.
RENAMED_MODULES = {
    "src/{package}/work.py": ("{package}.work", "{package}.service.jobs", ".py",
                              r"^\s*(?:from|import) {package}\.work\b|^\s*from (?:{package}|\.) import work\b|^\s*from \.work\b"),
    "src/work.rs": ("crate::work", "crate::service::jobs", ".rs", r"\b(?:crate|{package})::work\b"),
}
# The labels Copier itself writes on an update conflict, so that one search finds them all.
LABELS = ("before updating", "last update", "after updating")
PREFIX = "plumbline update:"


def git(*args: str, check: bool = True, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(["git", *args], input=stdin, capture_output=True, check=False)
    if check and proc.returncode:
        raise SystemExit(f"{PREFIX} git {' '.join(args)} failed: {proc.stderr.decode().strip()}")
    return proc


def committed(path: str) -> bytes | None:
    """The file as the project's HEAD holds it, or None when HEAD has no such file."""
    # `./` makes the path relative to the project, which may be a subfolder of its repository.
    shown = git("show", f"HEAD:./{path}", check=False)
    return shown.stdout if shown.returncode == 0 else None


def head_files() -> list[str]:
    listed = git("ls-tree", "-r", "-z", "--name-only", "HEAD").stdout.decode()
    return [name for name in listed.split("\0") if name]


def new_files() -> list[str]:
    """Files the update created: not in HEAD, not ignored (Copier refuses to update a dirty tree)."""
    listed = git("ls-files", "-z", "--others", "--exclude-standard").stdout.decode()
    return [name for name in listed.split("\0") if name]


def prune_empty(folder: Path, folders: list[str]) -> None:
    """Remove `folder` and its parents while they are empty, up to the project-owned folder."""
    while owned(f"{folder.as_posix()}/", folders) and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def answers_of(text: bytes | str | None) -> dict[str, Any]:
    return dict(yaml.safe_load(text or "") or {})


def public(answers: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answers.items() if not k.startswith("_")}


def render(ref: str, answers: dict[str, Any], paths: Iterable[str], tmp: Path) -> dict[str, bytes]:
    """The given paths as the template at `ref` renders them (a path it does not render is left out)."""
    paths = sorted(set(paths))
    if not paths:
        return {}
    dst = Path(tempfile.mkdtemp(dir=tmp))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_copy(str(TEMPLATE), str(dst), data=public(answers), vcs_ref=ref, defaults=True, unsafe=True,
                 quiet=True, skip_tasks=True, exclude=["*", *(f"!{p}" for p in paths)])
    return {p: (dst / p).read_bytes() for p in paths if (dst / p).is_file()}


def merge(ours: bytes, base: bytes, theirs: bytes, tmp: Path) -> tuple[bytes, int]:
    """Three-way merge with git merge-file: the merged text and the number of conflicts left.

    Where both sides only added lines at the same place (the base has none there, as when the
    team and the release both appended to the end of a file), both additions are kept, the
    release's first: nothing to choose, so no conflict. Every other conflict keeps its markers.
    """
    files = []
    for name, data in (("ours", ours), ("base", base), ("theirs", theirs)):
        path = tmp / name
        path.write_bytes(data)
        files.append(str(path))
    merged = git("merge-file", "-p", "--diff3", "-L", LABELS[0], "-L", LABELS[1], "-L", LABELS[2], *files,
                 check=False)
    # Exit status: 0 clean, N > 0 the number of conflicts, < 0 (here > 127) an error.
    if not 0 <= merged.returncode < 128:
        raise SystemExit(f"{PREFIX} git merge-file failed: {merged.stderr.decode().strip()}")
    # With no base at all, the whole file is an addition on both sides: that is a real conflict.
    return resolve_additions(merged.stdout, keep_additions=bool(base.strip()))


def resolve_additions(text: bytes, keep_additions: bool = True) -> tuple[bytes, int]:
    """Keep both sides of an add/add conflict; turn the others into Copier's two-part markers."""
    start, middle, stop = (f"{mark} {label}".encode() for mark, label in (("<<<<<<<", LABELS[0]),
                                                                           ("|||||||", LABELS[1]),
                                                                           (">>>>>>>", LABELS[2])))
    out: list[bytes] = []
    conflicts = 0
    lines = iter(text.splitlines(keepends=True))
    for line in lines:
        if line.rstrip(b"\r\n") != start:
            out.append(line)
            continue
        ours, base, theirs, part = [], [], [], "ours"
        for inner in lines:
            bare = inner.rstrip(b"\r\n")
            if part == "ours" and bare == middle:
                part = "base"
            elif part in ("ours", "base") and bare == b"=======":
                part = "theirs"
            elif part == "theirs" and bare == stop:
                break
            else:
                {"ours": ours, "base": base, "theirs": theirs}[part].append(inner)
        if keep_additions and not b"".join(base).strip():
            out += theirs + ours
        else:
            conflicts += 1
            out += [line, *ours, b"=======\n", *theirs, stop + b"\n"]
    return b"".join(out), conflicts


def mark_conflicted(path: str, base: bytes, ours: bytes, theirs: bytes) -> None:
    """Record the three versions in the index, as a merge does: `git status` shows `both modified`."""
    mode = git("ls-files", "-s", "--", path).stdout.decode().split(" ", 1)[0] or "100644"
    top = Path(git("rev-parse", "--show-toplevel").stdout.decode().strip())
    full = Path.cwd().resolve().relative_to(top.resolve()) / path
    lines = [f"0 {'0' * 40}\t{full.as_posix()}"]
    for stage, data in ((1, base), (2, ours), (3, theirs)):
        sha = git("hash-object", "-w", "--stdin", stdin=data).stdout.decode().strip()
        lines.append(f"{mode} {sha} {stage}\t{full.as_posix()}")
    git("update-index", "--index-info", stdin=("\n".join(lines) + "\n").encode())


def carry_over(old: str, new: str, ours: bytes, base: bytes | None, tmp: Path) -> str:
    """Merge the team's changes of `old` (gone) into `new` (rendered by the update)."""
    theirs = Path(new).read_bytes()
    merged, conflicts = merge(ours, base or b"", theirs, tmp)
    Path(new).write_bytes(merged)
    Path(f"{old}.rej").unlink(missing_ok=True)  # Copier's patch of the same changes, with --conflict rej
    if conflicts:
        mark_conflicted(new, base or b"", ours, theirs)
        return (f"{old} is now {new}: your changes are merged in, {conflicts} of them between "
                f"<<<<<<< {LABELS[0]} and >>>>>>> {LABELS[2]} markers (your lines first, the new "
                f"release's after): keep what is right, delete the markers, then git add {new}")
    return f"{old} is now {new}: your changes are merged into it"


def stale_imports(package: str, moved: list[str]) -> list[str]:
    """One line per line of the project that still names a module the update moved."""
    lines = []
    for old_path, (old, new, suffix, pattern) in RENAMED_MODULES.items():
        if old_path.format(package=package) not in moved:
            continue
        names = re.compile(pattern.format(package=re.escape(package)), re.MULTILINE)
        listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout.decode()
        for path in sorted({name for name in listed.split("\0") if name.endswith(suffix)}):
            if not os.path.isfile(path):
                continue
            text = Path(path).read_text(encoding="utf-8", errors="replace")
            for found in names.finditer(text):
                line = text.count("\n", 0, found.start()) + 1
                lines.append(f"{path}:{line} still names {found.group(0).strip()} "
                             f"({old.format(package=package)} is now {new.format(package=package)})")
    return lines


def keep(path: str) -> str:
    git("checkout", "HEAD", "--", path)
    Path(f"{path}.rej").unlink(missing_ok=True)
    return (f"kept {path}: the update removes it (the new release, or your new answers, have no such "
            f"file) but you changed it; move what you need elsewhere, then delete it: git rm {path}")


def owned(path: str, folders: list[str]) -> bool:
    return any(path.startswith(folder.rstrip("/") + "/") for folder in folders)


def after_update(package: str, folders: list[str], answers_file: str) -> list[str]:
    """Do the work in the current directory (the project); return one line per action."""
    recorded = committed(answers_file)
    if recorded is None:
        return [f"{answers_file} is not committed: nothing to compare with, nothing done"]
    before, now = answers_of(recorded), answers_of(Path(answers_file).read_text())
    old_ref, new_ref = str(before.get("_commit", "")), str(now.get("_commit", ""))
    moves = {old.format(package=package): new.format(package=package) for old, new in MOVES.items()}
    files = head_files()
    gone = [p for p in files if not os.path.lexists(p)]
    mine = [p for p in files if owned(p, folders) and os.path.isfile(p)]
    added = [p for p in new_files() if owned(p, folders)]
    if not gone and not mine and not added:
        return []
    done: list[str] = []
    with tempfile.TemporaryDirectory(prefix="plumbline-update.") as name:
        tmp = Path(name)
        try:
            base = render(old_ref, before, [*gone, *mine, *added], tmp)
        except Exception as error:  # noqa: BLE001  (any failure: keep every changed file, say why)
            done.append(f"could not render the template at {old_ref} ({error}): every file the update "
                        "removed is kept as you had it")
            return done + [keep(p) for p in gone]
        # Copier renders a project-owned file again when it is missing, even when the team
        # deleted it (its rule skips existing files only): the old release had it, HEAD has
        # not, so the team deleted it, and it stays deleted. A file new in the release arrives.
        for path in added:
            if path in base:
                Path(path).unlink()
                Path(f"{path}.rej").unlink(missing_ok=True)  # the release's change to it, with --conflict rej
                prune_empty(Path(path).parent, folders)
        for path in gone:
            ours = committed(path)
            if ours is None or ours == base.get(path):
                continue  # unchanged since the old release: the new release replaces it
            target = moves.get(path)
            if target is not None and Path(target).is_file():
                done.append(carry_over(path, target, ours, base.get(path), tmp))
            else:
                done.append(keep(path))
        done += stale_imports(package, gone)
        untouched = [p for p in mine if p in base and committed(p) == base[p]]
        new = render(new_ref, now, untouched, tmp) if untouched else {}
        for path in untouched:
            if path not in new:
                Path(path).unlink()
                done.append(f"removed {path}: unchanged since it was generated, and the new release drops it")
            elif new[path] != Path(path).read_bytes():
                Path(path).write_bytes(new[path])
                done.append(f"updated {path}: unchanged since it was generated, so it follows the new release")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path, help="the project's folder")
    parser.add_argument("--package", required=True, help="the Python package name of the project")
    parser.add_argument("--owned", action="append", default=[], help="a project-owned folder (repeatable)")
    parser.add_argument("--answers-file", default=".copier-answers.yml")
    args = parser.parse_args(argv)
    os.chdir(args.project)
    for line in after_update(args.package, args.owned, args.answers_file):
        print(f"{PREFIX} {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
