"""What every bench script shares: statistics, tables, the results page, the machine's state.

Each script writes its own section of docs/benchmarks.md, between two marker comments, so
that a run rewrites its section and leaves the others as they were.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "bench" / "results"  # scratch space of the runs (git-ignored)

# tests/helpers.py renders the template and knows the shared Rust build cache.
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

DOC_HEADER = """# Benchmarks

Measured by the scripts in `bench/` (see `bench/README.md` for what each one measures and how
to run it). Each script rewrites its own section below. Every comparison ran side by side in
one run, alternating between the contenders, and reports medians; the load average of the
machine is noted with each run, as a busy machine makes every figure worse.
"""

T = TypeVar("T")


def median(values: Iterable[float]) -> float:
    """The median, or NaN for no values (a failed measurement shows as `n/a`, not a crash)."""
    data = list(values)
    return statistics.median(data) if data else float("nan")


def ratio(value: float, reference: float) -> float:
    """value / reference, NaN when the reference is zero or missing."""
    if reference == 0 or math.isnan(reference):
        return float("nan")
    return value / reference


def fmt(value: float, digits: int = 2, unit: str = "") -> str:
    """A number for a table: fixed digits, `n/a` for NaN."""
    if math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def verdict(ok: bool | None) -> str:
    """PASS / MISS for a target, `n/a` when it could not be measured."""
    if ok is None:
        return "n/a"
    return "PASS" if ok else "MISS"


def alternate(cases: Sequence[T], rounds: int) -> Iterator[tuple[int, T]]:
    """(round, case) for every round, cases in turn: A, B, C, A, B, C, ...

    Alternating spreads slow drifts of the machine (other load, thermal state) over every
    case instead of charging them to whichever case ran last.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    for index in range(rounds):
        for case in cases:
            yield index, case


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    """A Markdown table, columns padded so that it reads as well in a terminal."""
    if any(len(row) != len(headers) for row in rows):
        raise ValueError(f"every row needs {len(headers)} cells: {headers}")
    right = list(right) if right is not None else [False] + [True] * (len(headers) - 1)
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            str(cell).rjust(width) if is_right else str(cell).ljust(width)
            for cell, width, is_right in zip(cells, widths, right, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if r else (":" + "-" * (w + 1)) for w, r in zip(widths, right, strict=True)) + "|"
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def markers(section: str) -> tuple[str, str]:
    return f"<!-- bench:{section}:start -->", f"<!-- bench:{section}:end -->"


# The order of the sections on the page, whatever order the scripts run in.
SECTIONS = ("generation", "suite", "load", "attacks", "mutation")


def replace_section(page: str, section: str, body: str) -> str:
    """The page with `section`'s block replaced by `body` (added in SECTIONS order if absent)."""
    if section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}: use one of {', '.join(SECTIONS)}")
    start, end = markers(section)
    block = f"{start}\n{body.strip()}\n{end}"
    if start in page and end in page:
        before, _, rest = page.partition(start)
        _, _, after = rest.partition(end)
        return before + block + after
    # Insert before the first section that comes later in SECTIONS, else at the end.
    for later in SECTIONS[SECTIONS.index(section) + 1 :]:
        later_start = markers(later)[0]
        if later_start in page:
            before, _, after = page.partition(later_start)
            return before + block + "\n\n" + later_start + after
    return page.rstrip("\n") + "\n\n" + block + "\n"


def write_section(section: str, body: str, doc: Path = DOC) -> Path:
    """Rewrite this script's section of docs/benchmarks.md."""
    page = doc.read_text() if doc.exists() else DOC_HEADER
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(replace_section(page, section, body))
    return doc


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}"


@dataclass
class RunInfo:
    """When and where a run happened: printed with its table and written above it."""

    command: str
    started: str
    load_before: str
    load_after: str = ""

    @classmethod
    def begin(cls, argv: Sequence[str]) -> RunInfo:
        return cls(
            command=" ".join(["python3", *argv]),
            started=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            load_before=load_average(),
        )

    def end(self) -> None:
        self.load_after = load_average()

    def markdown(self) -> str:
        return (
            f"Run `{self.command}` on {self.started}; {machine()}. "
            f"Load average (1/5/15 min) {self.load_before} before, {self.load_after} after."
        )


def git_commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "unknown"


def require_matplotlib() -> object:
    """matplotlib.pyplot with a headless backend, or a clear error saying how to install it."""
    try:
        import matplotlib  # optional: only the plots need it

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise SystemExit(
            f"plots need matplotlib ({error}): `python3 -m pip install -r bench/requirements.txt`, or run with --no-plot"
        ) from error
    return plt
