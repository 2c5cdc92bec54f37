"""Carry a project's Prometheus rule unit tests to their new path, merging the team's cases.

v0.2.0 moved `deploy/prometheus/alerts_test.yml` to `deploy/prometheus/tests/alerts_test.yml`.
Copier's own update deletes a file that the new release no longer renders, even when the team
added test cases to it. This script runs after the update (Copier's `after` migration stage)
and makes a real three-way merge, the way Copier merges the files it keeps in place:

- base: the old path rendered from the release the project was on, with its answers then;
- ours: the old path as the project committed it (Copier refuses to update a dirty project,
  so HEAD holds the team's version);
- theirs: the new path as the update just rendered it.

The result goes to the new path: the team's cases are kept, the new release's changes
(the `rule_files` path relative to tests/) are applied, and a change that both sides made
to the same lines is left between conflict markers, never dropped.

It runs after the update, not before: a file moved before the update has no counterpart in
the old release, so Copier would diff it against an empty base and mark the whole file as
one conflict. Running it again, or on a project without the old file, changes nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath

import yaml
from copier import run_copy

OLD = PurePosixPath("deploy/prometheus/alerts_test.yml")
NEW = PurePosixPath("deploy/prometheus/tests/alerts_test.yml")
# The labels Copier itself writes on an update conflict, so that one search finds them all.
LABELS = ("before updating", "last update", "after updating")
CONFLICT_MARKERS = ("<<<<<<< ", ">>>>>>> ")


def git(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], text=True, capture_output=True, check=check)


def committed(path: PurePosixPath) -> str | None:
    """The file as the project's HEAD holds it, or None when HEAD has no such file."""
    # `./` makes the path relative to the project, which may be a subfolder of its repository.
    shown = git("show", f"HEAD:./{path}", check=False)
    return shown.stdout if shown.returncode == 0 else None


def render_old(template: str, ref: str, answers_file: str, workdir: Path) -> str | None:
    """The old path as release `ref` rendered it with the answers the project had then."""
    recorded = committed(PurePosixPath(answers_file))
    if recorded is None:
        raise SystemExit(f"{answers_file} is not committed: cannot tell which answers rendered {OLD}")
    answers = {k: v for k, v in (yaml.safe_load(recorded) or {}).items() if not k.startswith("_")}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        run_copy(
            template, tmp, data=answers, vcs_ref=ref, defaults=True, unsafe=True, quiet=True,
            skip_tasks=True, exclude=["*", f"!{OLD}"],  # render this one file only
        )
        rendered = Path(tmp, OLD)
        return rendered.read_text() if rendered.exists() else None


def migrate(template: str, ref: str, answers_file: str) -> str:
    """Merge the team's file into the new path; return what was done, in one line."""
    ours = committed(OLD)
    if ours is None:
        return f"{OLD} is not in the project: nothing to move"
    if committed(NEW) is not None:
        return f"{NEW} was already in the project before this update: left as Copier merged it"
    new, old = Path(NEW), Path(OLD)
    if not new.exists():
        return f"{NEW} is not in the updated project: nothing to merge into"
    theirs = new.read_text()
    if any(line.startswith(CONFLICT_MARKERS) for line in theirs.splitlines()):
        return f"{NEW} holds conflict markers: resolve them first, then run the update again"

    with tempfile.TemporaryDirectory() as tmp:
        base = render_old(template, ref, answers_file, Path(tmp))
        if base is None:
            return f"release {ref} did not render {OLD}: nothing to merge"
        if ours == base:
            old.unlink(missing_ok=True)
            return f"{OLD} was unchanged since {ref}: the new {NEW} replaces it"
        paths = {name: Path(tmp, name) for name in ("ours", "base", "theirs")}
        for name, text in (("ours", ours), ("base", base), ("theirs", theirs)):
            paths[name].write_text(text)
        # Exit status: 0 clean, N > 0 the number of conflicts, < 0 (here > 127) an error.
        merged = git("merge-file", "-L", LABELS[0], "-L", LABELS[1], "-L", LABELS[2],
                     str(paths["ours"]), str(paths["base"]), str(paths["theirs"]), check=False)
        if not 0 <= merged.returncode < 128:
            raise SystemExit(f"git merge-file failed on {OLD}: {merged.stderr.strip()}")
        new.write_text(paths["ours"].read_text())
    old.unlink(missing_ok=True)
    if merged.returncode:
        return (f"moved {OLD} to {NEW} with {merged.returncode} conflict(s) between your changes and "
                f"the new release: resolve the <<<<<<< {LABELS[0]} / >>>>>>> {LABELS[2]} blocks")
    return f"moved {OLD} to {NEW}, your test cases merged with the new release"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", required=True, help="local path of the template repository")
    parser.add_argument("--from", dest="ref", required=True, help="the release the project was on")
    parser.add_argument("--answers-file", default=".copier-answers.yml")
    args = parser.parse_args(argv)
    print(f"migration v0.2.0: {migrate(args.template, args.ref, args.answers_file)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
