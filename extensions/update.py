"""Jinja extension that copier.yml loads for updates: a path filter and one missing-tag warning.

- `absolute_path`: the migration runs from the template's folder (so that Copier's line
  `Running task ...` shows `migrations/after_update.py`, not a temporary path), and is
  handed the project as an absolute path.
- `git_changes`: the paths `git status` shows in the project, so that the message after an
  update that changed nothing says so in one line instead of asking for a review.
- Copier looks for the newest release tag once per template object it makes, and a copy or
  an update makes up to three: in a clone without tags each look-up printed
  `No git tags found in template; using HEAD as ref`. The first look-up happens before the
  template loads this extension, so its warning is printed; the later ones are made quiet.
  `scripts/tag-releases` recreates the tags, which silences the first one too.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
from pathlib import Path
from typing import Any

from jinja2.ext import Extension


def absolute_path(path: Any) -> str:
    return str(Path(str(path)).absolute())


def git_changes(path: Any) -> list[str]:
    """The project's changed, added or conflicted paths (`git status --porcelain`); [] when git fails."""
    status = subprocess.run(["git", "status", "--porcelain"], cwd=str(path), capture_output=True, text=True,
                            check=False)
    return status.stdout.splitlines() if status.returncode == 0 else []


def _one_missing_tag_warning() -> None:
    """Wrap Copier's tag look-up so that it no longer prints its warning (already printed once)."""
    try:
        from copier import _template  # noqa: PLC0415  (Copier's private module, pinned version)
    except ImportError:
        return
    lookup = getattr(_template, "get_latest_tag", None)
    if lookup is None or getattr(lookup, "plumbline_quiet", False):
        return

    def quiet_lookup(*args: Any, **kwargs: Any) -> str:
        with contextlib.redirect_stderr(io.StringIO()):
            return lookup(*args, **kwargs)

    quiet_lookup.plumbline_quiet = True  # type: ignore[attr-defined]
    _template.get_latest_tag = quiet_lookup


class UpdateHelpers(Extension):
    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        environment.filters["absolute_path"] = absolute_path
        environment.filters["git_changes"] = git_changes
        _one_missing_tag_warning()
