#!/usr/bin/env python3
"""Time `plumbline audit --repos` on a generated fleet.

Makes a scratch template repository with its releases tagged (tests/releases.py), generates a
fleet of projects from it (distinct names; both flavours; most at the newest release, one in
five a release behind, one in ten with an edited README), commits each into its own git
repository, and times `plumbline audit --repos FILE` over their file:// URLs: shallow clones,
renders (one per distinct release and answers) and comparisons, end to end.

    python3 bench/fleet_audit.py            # 100 projects, writes docs/benchmarks.md
    python3 bench/fleet_audit.py --quick    # 10 projects, prints only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DOC, ROOT, RunInfo, fmt, markers, table  # noqa: E402

sys.path.insert(0, str(ROOT / "src"))
TARGET_SECONDS = 60.0


def write_section(body: str) -> Path:
    """Rewrite this script's block of docs/benchmarks.md, or add it at the end of the page."""
    start, end = markers("audit")
    page = DOC.read_text()
    block = f"{start}\n{body.strip()}\n{end}"
    if start in page and end in page:
        before, _, rest = page.partition(start)
        page = before + block + rest.partition(end)[2]
    else:
        page = page.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(page)
    return DOC


def generate(job: tuple[str, str, Path, dict]) -> Path:
    """Render one project at a release and commit it, as a team's repository."""
    from copier import run_copy

    from helpers import commit_all
    from plumbline.render import install_compile_memo

    install_compile_memo()
    template, ref, dst, answers = job
    edit = answers.pop("_edit", False)  # the bench's own marker, not an answer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_copy(template, str(dst), data=answers, vcs_ref=ref, defaults=True, unsafe=True, quiet=True)
    if edit:
        readme = dst / "README.md"
        readme.write_text(readme.read_text() + "\nOur own note.\n")
    commit_all(dst, "generated")
    return dst


def fleet_jobs(repo, root: Path, count: int) -> list[tuple[str, str, Path, dict]]:
    from helpers import DEFAULTS

    jobs = []
    for i in range(count):
        name = f"svc-{i:03d}"
        answers = {
            **DEFAULTS,
            "project_name": name,
            "flavour": "python" if i % 2 == 0 else "rust",
            "deploy_targets": ["systemd"] if i % 3 else ["systemd", "container"],
        }
        ref = repo.previous.tag if i % 5 == 4 else repo.head.tag
        job_answers = {**answers, "_edit": True} if i % 10 == 3 else answers
        jobs.append((str(repo.path), ref, root / name, job_answers))
    return jobs


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--projects", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="10 projects, print only")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = parser.parse_args(argv)
    count = 10 if args.quick else args.projects
    info = RunInfo.begin(["bench/fleet_audit.py", *argv])

    from releases import tagged_copy

    with tempfile.TemporaryDirectory(prefix="plumbline-fleet-") as tmp:
        root = Path(tmp)
        repo = tagged_copy(root / "plumbline")
        jobs = fleet_jobs(repo, root / "fleet", count)
        started = time.monotonic()
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            projects = list(pool.map(generate, [(t, r, d, dict(a)) for t, r, d, a in jobs]))
        generated = time.monotonic() - started
        repos = root / "repos.txt"
        repos.write_text("".join(f"file://{p}\n" for p in projects))

        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "plumbline", "audit", "--repos", str(repos), "--format", "json"],
                              env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # the audit's processes and theirs (render workers, git, systemd-analyze), once waited for
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    info.end()
    if proc.returncode == 2 or not proc.stdout:
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(f"the audit did not run (exit {proc.returncode})")
    report = json.loads(proc.stdout)
    statuses = report["summary"]
    behind = sum(1 for p in report["projects"] if p["template"] and p["template"]["behind"])
    edited = sum(1 for p in report["projects"] if any(f["state"] == "edited" for f in p["files"]))
    expected_behind = sum(1 for _, ref, _, _ in jobs if ref == repo.previous.tag)
    expected_edited = sum(1 for *_, a in jobs if a.get("_edit"))
    if (behind, edited) != (expected_behind, expected_edited):
        raise SystemExit(f"the audit found {behind} behind and {edited} edited, the fleet has {expected_behind} "
                         f"and {expected_edited}")
    rows = [[str(count), fmt(generated, 1), fmt(wall, 1), fmt(cpu, 1), fmt(wall / count * 1000, 0),
             str(statuses["in_line"]), str(statuses["failing"]), str(behind), str(edited)]]
    text = table(["projects", "generate (s)", "audit wall (s)", "audit CPU (s)", "per project (ms)", "in line",
                  "failing", "behind", "edited"], rows, right=[True] * 9)
    ok = wall <= TARGET_SECONDS * count / 100
    line = (f"- `plumbline audit --repos` over {count} projects: {fmt(wall, 1)} s wall "
            f"(target for 100 projects: ≤ {TARGET_SECONDS:.0f} s): **{'PASS' if ok else 'MISS'}**")
    cores = os.cpu_count() or 1
    line += (f"\n- CPU time of the audit and its processes: {fmt(cpu, 1)} s; spread over the {cores} cores of an idle "
             f"machine that is about {fmt(cpu / cores, 1)} s wall (an estimate: the wall time above is the measurement, "
             "and the load average shows how busy the machine was)")
    print(info.markdown(), text, line, sep="\n\n")
    if not args.no_write and not args.quick:
        body = "\n\n".join([
            "## Fleet audit: `plumbline audit --repos`",
            info.markdown(),
            "A fleet generated from a scratch template with its releases tagged: distinct names, both flavours, "
            "one project in five a release behind, one in ten with an edited README, each its own git repository. "
            "The audit clones each shallowly over file://, renders the template once per distinct release and "
            "answers (here: once or twice per project, since every name differs), and compares; wall time of the "
            "whole command.",
            text,
            line,
        ])
        print(f"wrote {write_section(body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
