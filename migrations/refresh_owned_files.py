"""Bring an untouched example work module to the new release; never touch one the team changed.

The project owns its work module and the tests of that work (`_skip_if_exists` in copier.yml),
so Copier keeps them as they are on every update. While a file is still exactly what the old
release rendered, though, nobody has made it the project's own yet, and keeping it would
leave the example of the old release wired to the modules of the new one. This script runs
after every update: for each owned file that HEAD holds byte for byte as the old release
rendered it, it writes what the new release renders. A file the team changed is left alone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from copier import run_copy


def committed(path: str) -> str | None:
    """The file as the project's HEAD holds it, or None when HEAD has no such file."""
    shown = subprocess.run(["git", "show", f"HEAD:./{path}"], text=True, capture_output=True, check=False)
    return shown.stdout if shown.returncode == 0 else None


def answers_of(text: str | None) -> dict[str, Any]:
    return {k: v for k, v in (yaml.safe_load(text or "") or {}).items() if not k.startswith("_")}


def rendered(template: str, ref: str, answers: dict[str, Any], paths: list[str], tmp: Path) -> dict[str, str]:
    """The given paths as release `ref` renders them with `answers` (a missing one is left out)."""
    dst = tmp / ref
    run_copy(template, dst, data=answers, vcs_ref=ref, defaults=True, unsafe=True, quiet=True,
             skip_tasks=True, exclude=["*", *(f"!{p}" for p in paths)])
    return {p: (dst / p).read_text() for p in paths if (dst / p).is_file()}


def refresh(template: str, old_ref: str, new_ref: str, answers_file: str, paths: list[str]) -> list[str]:
    """Refresh the untouched owned files; return one line per file saying what was done."""
    ours = {p: committed(p) for p in paths}
    present = [p for p, text in ours.items() if text is not None]
    if not present:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        old = rendered(template, old_ref, answers_of(committed(answers_file)), present, Path(tmp))
        untouched = [p for p in present if old.get(p) == ours[p]]
        new = rendered(template, new_ref, answers_of(Path(answers_file).read_text()), untouched, Path(tmp)) \
            if untouched else {}
    done = []
    for path in present:
        if path not in untouched:
            done.append(f"kept {path}: the project changed it")
        elif path in new and new[path] != ours[path]:
            Path(path).write_text(new[path])
            done.append(f"refreshed {path}: unchanged since {old_ref}, now as {new_ref} renders it")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", required=True, help="local path of the template repository")
    parser.add_argument("--from", dest="old_ref", required=True, help="the release the project was on")
    parser.add_argument("--to", dest="new_ref", required=True, help="the release the project is updated to")
    parser.add_argument("--answers-file", default=".copier-answers.yml")
    parser.add_argument("paths", nargs="+", help="the project-owned files")
    args = parser.parse_args(argv)
    for line in refresh(args.template, args.old_ref, args.new_ref, args.answers_file, args.paths):
        print(f"owned files: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
