"""How long the template's own test suite takes, and where the time goes.

The fast tier (`pytest -m "not slow"`) runs several times (median); the full tier (`pytest`,
which builds and boots both flavours) once, or not at all with --fast-only. Each run asks
pytest for every test's duration; the report groups them by test file and lists the
slowest tests.

    python3 bench/suite.py --fast-only   # 3 fast runs: about 7 minutes
    python3 bench/suite.py               # plus the full tier: about 30 minutes (builds both flavours)
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field

from common import ROOT, RunInfo, fmt, median, table, write_section

TOP = 15
# `0.52s call     tests/test_render.py::test_matrix[python-full]`
_DURATION = re.compile(r"^(?P<secs>\d+(?:\.\d+)?)s (?P<phase>setup|call|teardown)\s+(?P<test>.+?)\s*$")
# `12 passed, 3 skipped, 1 deselected in 41.20s` (with or without the `===` rule around it)
_SUMMARY = re.compile(r"(?P<counts>(?:\d+ \w+(?:, )?)+) in (?P<secs>\d+(?:\.\d+)?)s")
_COUNT = re.compile(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed|warnings?)")


@dataclass
class SuiteRun:
    wall: float
    counts: dict[str, int]
    # (test id, phase) -> seconds
    durations: dict[tuple[str, str], float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.counts.get("failed") and not self.counts.get("error") and not self.counts.get("errors")


def parse_output(text: str, wall: float) -> SuiteRun:
    """The counts of the summary line and every `--durations` line of pytest's output."""
    counts: dict[str, int] = {}
    for line in reversed(text.splitlines()):
        match = _SUMMARY.search(line)
        if match:
            counts = {kind: int(n) for n, kind in _COUNT.findall(match.group("counts"))}
            break
    durations: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        match = _DURATION.match(line.strip())
        if match:
            key = (match.group("test"), match.group("phase"))
            durations[key] = durations.get(key, 0.0) + float(match.group("secs"))
    return SuiteRun(wall, counts, durations)


def test_file(test_id: str) -> str:
    """`tests/test_x.py::test_y[p]` -> `tests/test_x.py`."""
    return test_id.split("::", 1)[0]


def by_file(run: SuiteRun) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for (test, _), secs in run.durations.items():
        totals[test_file(test)] += secs
    return dict(totals)


def by_test(run: SuiteRun) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for (test, _), secs in run.durations.items():
        totals[test] += secs
    return dict(totals)


def pytest_command(tier: str) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--durations=0",
        "--durations-min=0",
    ]
    if tier == "fast":
        cmd += ["-m", "not slow"]
    elif tier != "full":
        raise ValueError(f"unknown tier {tier!r}: use 'fast' or 'full'")
    return cmd


class TierTimeout(Exception):
    """A tier ran past --full-timeout; pytest prints durations only at the end, so none are known."""


def run_tier(tier: str, timeout: float | None = None) -> SuiteRun:
    start = time.perf_counter()
    # A session of its own, so that a timeout stops the services and builds pytest started too.
    with subprocess.Popen(
        pytest_command(tier),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as expired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise TierTimeout(f"the {tier} tier did not finish within {timeout:g} s") from expired
    wall = time.perf_counter() - start
    result = parse_output(stdout, wall)
    if not result.counts:
        raise RuntimeError(f"no pytest summary line in the {tier} tier's output:\n{stdout[-3000:]}\n{stderr[-2000:]}")
    return result


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())


def tiers_table(runs: dict[str, list[SuiteRun]]) -> str:
    rows = []
    for tier, tier_runs in runs.items():
        walls = [r.wall for r in tier_runs]
        rows.append(
            [
                "fast (`-m 'not slow'`)" if tier == "fast" else "full",
                fmt(median(walls), 1),
                f"{fmt(min(walls), 1)}–{fmt(max(walls), 1)}",
                counts_text(tier_runs[-1].counts),
                str(len(tier_runs)),
            ]
        )
    return table(["tier", "wall (s)", "min–max (s)", "tests (last run)", "n"], rows)


def files_table(tier_runs: list[SuiteRun]) -> str:
    """Seconds per test file (setup + call + teardown), median over the runs, slowest first."""
    files = sorted({name for run in tier_runs for name in by_file(run)})
    totals = {name: median(by_file(run).get(name, 0.0) for run in tier_runs) for name in files}
    whole = sum(totals.values())
    counts = defaultdict(set)
    for run in tier_runs:
        for test, _ in run.durations:
            counts[test_file(test)].add(test)
    rows = [
        [
            f"`{name}`",
            str(len(counts[name])),
            fmt(secs, 2),
            fmt(100 * secs / whole if whole else float("nan"), 1) + " %",
        ]
        for name, secs in sorted(totals.items(), key=lambda item: -item[1])
    ]
    return table(["test file", "tests", "seconds", "share"], rows)


def slowest_table(tier_runs: list[SuiteRun], top: int = TOP) -> str:
    tests = {name for run in tier_runs for name in by_test(run)}
    totals = {name: median(by_test(run).get(name, 0.0) for run in tier_runs) for name in tests}
    rows = [[f"`{name}`", fmt(secs, 2)] for name, secs in sorted(totals.items(), key=lambda i: -i[1])[:top]]
    return table(["test (setup + call + teardown)", "seconds"], rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast-only", action="store_true", help="skip the full tier")
    parser.add_argument("--fast-runs", type=int, default=3, help="runs of the fast tier (default 3)")
    parser.add_argument("--full-runs", type=int, default=1, help="runs of the full tier (default 1)")
    parser.add_argument(
        "--full-timeout",
        type=float,
        help="stop the full tier after this many seconds and report the fast tier alone",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    if args.fast_runs < 1:
        parser.error(f"--fast-runs must be at least 1, got {args.fast_runs}")
    if args.full_runs < 1:
        parser.error(f"--full-runs must be at least 1, got {args.full_runs}")
    if args.full_timeout is not None and args.full_timeout <= 0:
        parser.error(f"--full-timeout must be a positive number of seconds, got {args.full_timeout:g}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    info = RunInfo.begin(["bench/suite.py", *argv])
    plan = ["fast"] * args.fast_runs + ([] if args.fast_only else ["full"] * args.full_runs)
    runs: dict[str, list[SuiteRun]] = {}
    notes: list[str] = []
    for step, tier in enumerate(plan, start=1):
        print(f"  [{step}/{len(plan)}] {tier} tier ...", end=" ", flush=True)
        try:
            result = run_tier(tier, args.full_timeout if tier == "full" else None)
        except TierTimeout as timeout:
            print(timeout, flush=True)
            notes.append(f"**{str(timeout).capitalize()}** (`--full-timeout`): no figures for it.")
            break
        runs.setdefault(tier, []).append(result)
        print(f"{result.wall:.1f} s, {counts_text(result.counts)}", flush=True)
    info.end()
    parts = [
        "## The template's own test suite",
        "",
        info.markdown(),
        "",
        (
            "`pytest` with every test's duration (`--durations=0`); the slow tests build and boot "
            "generated services (Rust builds share one cargo target directory, so a warm cache is "
            "much faster than a cold one). Wall time includes pytest's start."
        ),
        "",
        tiers_table(runs),
        *(["", *notes] if notes else []),
    ]
    for tier, tier_runs in runs.items():
        failed = [r for r in tier_runs if not r.ok]
        parts += [
            "",
            f"### Where the time goes: {tier} tier",
            "",
            files_table(tier_runs),
            "",
            f"The {TOP} slowest tests:",
            "",
            slowest_table(tier_runs),
        ]
        if failed:
            parts += [
                "",
                (
                    f"**{len(failed)} of {len(tier_runs)} {tier} run(s) had failures**: timings of a "
                    "failing suite are not representative."
                ),
            ]
    body = "\n".join(parts)
    print()
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('suite', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
