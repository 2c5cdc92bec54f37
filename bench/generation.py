"""How long `copier copy` and `copier update` take, and how much memory they need.

Four answer sets (each flavour, default and full-featured answers from tests/helpers.py),
two operations, measured alternately as a user runs them: the `copier` command line in a
fresh process, timed from spawn to exit, with the peak RSS of the process tree (`wait4`).

The template is a temporary git repository made from the working tree (uncommitted changes
included) with two tags: `v1.0.0`, and `v1.1.0`, one extra commit on top, so that
`copier update` has a real change to merge.

    python3 bench/generation.py              # 5 rounds, about 3 minutes
    python3 bench/generation.py --rounds 1   # a smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from common import (
    ROOT,
    RunInfo,
    alternate,
    fmt,
    median,
    ratio,
    require_matplotlib,
    table,
    verdict,
    write_section,
)

from helpers import DEFAULTS, FULL  # tests/helpers.py, put on sys.path by common

COPY_TARGET_SECS = 1.5  # `copier copy` of the full-featured Python service
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


@dataclass(frozen=True)
class Case:
    flavour: str
    answers_name: str  # "default" or "full"

    @property
    def answers(self) -> dict[str, object]:
        base = DEFAULTS if self.answers_name == "default" else FULL
        return {**base, "flavour": self.flavour}

    @property
    def label(self) -> str:
        return f"{self.flavour} {self.answers_name}"


CASES = [Case(f, a) for f in ("python", "rust") for a in ("default", "full")]
OPERATIONS = ("copy", "update")


@dataclass
class Sample:
    wall: float  # seconds
    cpu: float  # user + system seconds, the process and its children
    peak_rss: float  # MiB, largest process of the tree


@dataclass
class Results:
    samples: dict[tuple[str, Case], list[Sample]] = field(default_factory=dict)

    def add(self, operation: str, case: Case, sample: Sample) -> None:
        self.samples.setdefault((operation, case), []).append(sample)

    def get(self, operation: str, case: Case) -> list[Sample]:
        return self.samples.get((operation, case), [])


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> Sample:
    """Run cmd to completion; wall time, CPU time and peak RSS from the kernel's accounting."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # Read the output before waiting, so that a chatty process cannot block on a full pipe.
    output = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit {proc.returncode}:\n{output.decode()[-4000:]}")
    # wait4's usage covers the process and the descendants it waited for; ru_maxrss is in KiB.
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def git(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def template_repo(dst: Path, env: dict[str, str]) -> Path:
    """A git repository of the working tree, tagged v1.0.0, plus one commit tagged v1.1.0."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file() and not name.startswith("bench/"):
            target = dst / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git(["init", "-q", "-b", "main"], dst, env)
    git(["add", "-A"], dst, env)
    git(["commit", "-q", "-m", "template v1.0.0"], dst, env)
    git(["tag", "v1.0.0"], dst, env)
    readme = dst / "template" / "README.md.jinja"
    readme.write_text(readme.read_text() + "\n<!-- a change of the template since v1.0.0 -->\n")
    git(["commit", "-q", "-am", "template v1.1.0"], dst, env)
    git(["tag", "v1.1.0"], dst, env)
    return dst


def copy_cmd(copier: list[str], repo: Path, answers_file: Path, dst: Path) -> list[str]:
    return [
        *copier,
        "copy",
        "--trust",
        "--defaults",
        "--quiet",
        "--vcs-ref",
        "v1.0.0",
        "--data-file",
        str(answers_file),
        str(repo),
        str(dst),
    ]


def measure(rounds: int, work: Path) -> Results:
    # `python -m copier` rather than the `copier` script on PATH, which may be a version
    # manager's shim (pyenv's adds a shell and a second interpreter start to every call).
    if importlib.util.find_spec("copier") is None:
        raise SystemExit("copier is not installed: python3 -m pip install -r requirements-dev.txt")
    copier = [sys.executable, "-m", "copier"]
    env = {**os.environ, **GIT_ENV}
    repo = template_repo(work / "template", env)
    answer_files = {}
    for case in CASES:
        path = work / f"answers-{case.flavour}-{case.answers_name}.yml"
        path.write_text(yaml.safe_dump(case.answers))
        answer_files[case] = path

    results = Results()
    plan = [(op, case) for op in OPERATIONS for case in CASES]
    total = len(plan) * rounds
    for step, (index, (operation, case)) in enumerate(alternate(plan, rounds), start=1):
        dst = work / f"r{index}-{operation}-{case.flavour}-{case.answers_name}"
        if operation == "copy":
            sample = timed(copy_cmd(copier, repo, answer_files[case], dst), work, env)
        else:
            subprocess.run(
                copy_cmd(copier, repo, answer_files[case], dst),
                cwd=work,
                env=env,
                check=True,
                capture_output=True,
            )
            git(["init", "-q", "-b", "main"], dst, env)
            git(["add", "-A"], dst, env)
            git(["commit", "-q", "-m", "generated"], dst, env)
            sample = timed([*copier, "update", "--trust", "--defaults", "--quiet", "--vcs-ref", "HEAD"], dst, env)
            if "a change of the template since v1.0.0" not in (dst / "README.md").read_text():
                raise RuntimeError(f"copier update did not bring v1.1.0's change into {dst}/README.md")
        results.add(operation, case, sample)
        print(
            f"  [{step}/{total}] {operation:6} {case.label:15} {sample.wall:6.2f} s {sample.peak_rss:6.1f} MiB",
            flush=True,
        )
        shutil.rmtree(dst, ignore_errors=True)
    return results


def report(results: Results) -> tuple[str, list[str]]:
    """The Markdown table and the target lines."""
    rows = []
    for operation in OPERATIONS:
        for case in CASES:
            samples = results.get(operation, case)
            wall = median(s.wall for s in samples)
            default = median(s.wall for s in results.get(operation, Case(case.flavour, "default")))
            copy = median(s.wall for s in results.get("copy", case))
            rows.append(
                [
                    f"copier {operation}",
                    case.label,
                    fmt(wall),
                    (
                        f"{fmt(min((s.wall for s in samples), default=float('nan')))}–"
                        f"{fmt(max((s.wall for s in samples), default=float('nan')))}"
                    ),
                    fmt(median(s.cpu for s in samples)),
                    fmt(median(s.peak_rss for s in samples), 1),
                    fmt(ratio(wall, default)) + "×",
                    fmt(ratio(wall, copy)) + "×",
                    str(len(samples)),
                ]
            )
    headers = [
        "operation",
        "answers",
        "wall (s)",
        "min–max (s)",
        "CPU (s)",
        "peak RSS (MiB)",
        "vs default",
        "vs copy",
        "n",
    ]
    full_py_samples = results.get("copy", Case("python", "full"))
    full_py = median(s.wall for s in full_py_samples)
    full_py_cpu = median(s.cpu for s in full_py_samples)
    passed = None if math.isnan(full_py) else full_py <= COPY_TARGET_SECS
    targets = [
        (
            f"- `copier copy` of the full-featured Python service: {fmt(full_py)} s wall, {fmt(full_py_cpu)} s CPU "
            f"(target ≤ {COPY_TARGET_SECS} s wall): **{verdict(passed)}**"
        )
    ]
    return table(headers, rows), targets


def plot(results: Results, path: Path) -> None:
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(8, 3.6))  # type: ignore[attr-defined]
    width = 0.38
    for offset, operation in ((-width / 2, "copy"), (width / 2, "update")):
        values = [median(s.wall for s in results.get(operation, case)) for case in CASES]
        xs = [i + offset for i in range(len(CASES))]
        bars = ax.bar(xs, values, width, label=f"copier {operation}")
        ax.bar_label(bars, fmt="%.2f s", fontsize=8)
    ax.axhline(COPY_TARGET_SECS, color="grey", linestyle="--", linewidth=1, label="copy target (full Python)")
    ax.set_xticks(range(len(CASES)), [case.label for case in CASES])
    ax.set_ylabel("wall time, median (s)")
    ax.set_title("Generating a project: copier copy and update")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)  # type: ignore[attr-defined]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="measurements of each case (default 5)")
    parser.add_argument("--no-plot", action="store_true", help="skip docs/benchmarks-generation.png")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    info = RunInfo.begin(["bench/generation.py", *argv])
    print(f"load average {info.load_before}; {args.rounds} round(s) of {len(OPERATIONS) * len(CASES)} cases")
    with tempfile.TemporaryDirectory(prefix="plumbline-bench-gen-") as tmp:
        results = measure(args.rounds, Path(tmp))
    info.end()
    text, targets = report(results)
    body = "\n".join(
        [
            "## Generation: `copier copy` and `copier update`",
            "",
            info.markdown(),
            "",
            (
                "The `copier` command line (`python3 -m copier`) in a fresh process, as a user runs it, from a local git "
                "repository of the template; medians of the rounds, run alternately. Peak RSS is the "
                "largest process of the tree (`wait4`). *vs default*: against the same flavour with "
                "default answers; *vs copy*: against `copier copy` of the same answers. `copier update` "
                "goes from v1.0.0 to v1.1.0 (one changed file) in a committed project."
            ),
            "",
            text,
            "",
            *targets,
        ]
    )
    if not (args.no_plot or args.no_write):
        image = ROOT / "docs" / "benchmarks-generation.png"
        plot(results, image)
        body += "\n\n![copier copy and update, median wall time](benchmarks-generation.png)"
    print()
    print(text)
    print("\n".join(targets))
    if not args.no_write:
        print(f"wrote {write_section('generation', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
