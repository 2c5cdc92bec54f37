"""Do the template's tests catch small, realistic bugs? A mutation check over a fixed list.

Each mutant is one bug: a file of the template, its exact old text, the new text, and the
pytest selection that must fail because of it. One at a time, on a scratch copy of the
repository (a shared git clone with the working tree copied over, uncommitted changes
included; the working tree is never written), the bug is planted and the selection run:

- killed: the selection fails with the bug planted (pytest exit 1);
- survived: it passes, so the bug would get through;
- error: the old text is not in the file (or not exactly once), the selection fails
  without the bug too (its baseline, run once per selection on an unmutated copy), or pytest
  stops without a verdict (no test collected, usage or collection error, timeout).

An error is never counted as killed. The score is killed / (killed + survived); the exit
status is 0 only when every mutant run was killed.

    python3 bench/mutation.py --list                 # the mutants and their selections
    python3 bench/mutation.py --fast-only            # the mutants whose selection builds no service: about a minute
    python3 bench/mutation.py                        # every mutant: about 5 minutes with a warm build cache
    python3 bench/mutation.py --only alert-threshold-rules,alert-threshold-expression --no-write
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import ROOT, RunInfo, fmt, table, write_section

PY_SRC = "template/{% if is_python %}src{% endif %}/{{ package_name }}"
RS_SRC = "template/{% if is_rust %}src{% endif %}"
SYSTEMD_UNIT = "includes/deploy/systemd.service.jinja"
LOGROTATE = "includes/deploy/logrotate.jinja"
# the operational log's rule (the audit file has its own, without this comment)
ROTATED_LOG = "    create 0640\n    compress\n    # keep"
COPYTRUNCATED_LOG = "    create 0640\n    copytruncate\n    compress\n    # keep"
ALERTS = "template/deploy/prometheus/alerts.yml.jinja"
# One render with a systemd unit is enough to show a deploy file's bug.
COMBO = "python-github-systemd"


Edits = tuple[tuple[str, str], ...]  # (exact old text, found exactly once; new text), applied in order


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository's root
    edits: Edits
    selection: tuple[str, ...]  # pytest arguments, run in the scratch copy
    why: str
    slow: bool = False  # the selection builds or boots a generated service
    # The same bug written for another version of the file (a rework under way); the first
    # set of edits that applies is planted. Never a looser match: each is exact text.
    variants: tuple[Edits, ...] = ()


def mutant(name: str, path: str, old: str, new: str, selection: str, why: str, *, slow: bool = False,
           more: Edits = (), variants: tuple[Edits, ...] = ()) -> Mutant:
    return Mutant(name, path, ((old, new), *more), tuple(selection.split("|")), why, slow, variants)


MUTANTS: list[Mutant] = [
    # ---------------------------------------------------------------- deploy files
    mutant("systemd-no-new-privileges-by-name", SYSTEMD_UNIT, "NoNewPrivileges=yes\n", "",
           f"tests/test_deploy_files.py|-k|hardening_directive and {COMBO}",
           "a hardening directive dropped from the unit, checked by name"),
    mutant("systemd-no-new-privileges-exposure", SYSTEMD_UNIT, "NoNewPrivileges=yes\n", "",
           f"tests/test_deploy_files.py|-k|exposure and {COMBO}",
           "the same, seen by `systemd-analyze security` (exposure 1.1 -> 1.2)"),
    mutant("alert-threshold-expression", ALERTS, 'kind="persistent"}[10m]) > 10\n', 'kind="persistent"}[10m]) > 100\n',
           f"tests/test_monitoring.py|-k|alerts_cover and {COMBO}",
           "the persistent-errors alert at 100 instead of 10, read from the parsed expression"),
    mutant("alert-threshold-rules", ALERTS, 'kind="persistent"}[10m]) > 10\n', 'kind="persistent"}[10m]) > 100\n',
           f"tests/test_monitoring.py|-k|rule_tests_pass and {COMBO}",
           "the same, seen by promtool's rule tests"),
    mutant("logrotate-copytruncate-text", LOGROTATE, ROTATED_LOG, COPYTRUNCATED_LOG,
           f"tests/test_deploy_files.py|-k|logrotate_rules_signal and {COMBO}",
           "copy-and-truncate rotation (loses the lines written in between), in the rules' text"),
    mutant("logrotate-copytruncate-live", LOGROTATE, ROTATED_LOG, COPYTRUNCATED_LOG,
           "tests/test_logrotate_live.py|-k|python",
           "the same, seen by rotating a running service that logs continuously", slow=True),
    # ---------------------------------------------------------------- the tests' own rules
    mutant("missing-tool-skips", "tests/helpers.py", "        pytest.fail(f\"`{name}` is not installed",
           "        pytest.skip(f\"`{name}` is not installed", "tests/test_tools.py",
           "a missing tool skips the tests that need it instead of failing them"),
    mutant("missing-promtool-skips", "tests/contract/test_metrics.py", '    promtool = require_tool("promtool")\n',
           '    promtool = shutil.which("promtool") or pytest.skip("promtool is not installed")\n',
           "tests/test_tools.py",
           "a test file goes back to skipping when its tool is missing"),
    # ---------------------------------------------------------------- the services (platform)
    mutant("python-env-before-secrets", f"{PY_SRC}/config.py",
           '    secrets_path = Path(prefix) / "key" / "env.toml"\n',
           '    merged.merge(_environment(model, env, merged), "env")\n    secrets_path = Path(prefix) / "key" / "env.toml"\n',
           "tests/contract/test_config.py|-k|env_overrides_secrets and python",
           "the env layer merged before the secrets layer (secrets then win over env)", slow=True,
           more=(('                merged.merge(secrets, "secrets")\n    merged.merge(_environment(model, env, merged), "env")\n',
                  '                merged.merge(secrets, "secrets")\n'),)),
    mutant("rust-env-before-secrets", f"{RS_SRC}/config.rs",
           "    let secrets = sources.secrets_file();\n",
           "    layers.push(LayerValues::from_env(&schema, &sources.env, &mut errors));\n"
           "    let secrets = sources.secrets_file();\n",
           "tests/contract/test_config.py|-k|env_overrides_secrets and rust",
           "the env layer merged before the secrets layer (secrets then win over env)", slow=True,
           more=(("    }\n    layers.push(LayerValues::from_env(&schema, &sources.env, &mut errors));\n    if !errors",
                  "    }\n    if !errors"),)),
    mutant("python-heartbeat-once", f"{PY_SRC}/heartbeat.py",
           "    while True:\n        now = time.time()\n        write(path, now)\n",
           "    write(path, time.time())\n    while True:\n        now = time.time()\n",
           "tests/contract/test_heartbeat.py|-k|advances and python",
           "the heartbeat file written once at start, never again", slow=True),
    mutant("rust-heartbeat-once", f"{RS_SRC}/app.rs",
           "                    if let Err(e) = self.heartbeat.beat() {\n",
           "                    if let Err(e) = Ok::<(), std::io::Error>(()) {\n",
           "tests/contract/test_heartbeat.py|-k|advances and rust",
           "the heartbeat file written once at start, never again", slow=True),
    # ---------------------------------------------------------------- the example service (team-owned part)
    mutant("python-ewma-alpha", f"{PY_SRC}/service/jobs.py.jinja", "EWMA_ALPHA = 0.3\n", "EWMA_ALPHA = 1.0\n",
           "tests/test_python_flavour.py|-k|test_generated_project_sets_up_lints_tests_and_stays_formatted and defaults",
           "the latency EWMA's default alpha 1.0 (no smoothing) instead of 0.3", slow=True),
    mutant("rust-ewma-alpha", f"{RS_SRC}/service/jobs.rs", "pub const EWMA_ALPHA: f64 = 0.3;\n",
           "pub const EWMA_ALPHA: f64 = 1.0;\n",
           "tests/test_rust_flavour.py|-k|test_generated_crate_lints_tests_and_stays_formatted and defaults",
           "the latency EWMA's default alpha 1.0 (no smoothing) instead of 0.3", slow=True),
    # ---------------------------------------------------------------- updates
    # Needs the rework of the update migrations merged: the alert-tests move becomes one case
    # of migrations/after_update.py (carry_over), replacing migrations/move_alert_tests.py.
    mutant("alert-tests-migration-takes-theirs", "migrations/after_update.py",
           "    Path(new).write_bytes(merged)\n", "    Path(new).write_bytes(theirs)\n",
           "tests/test_update.py|-k|every_moved_file_keeps_the_teams_lines",
           "the alert-tests migration writes the new release's file instead of the merge (the team's cases lost)"),
]


@dataclass
class Result:
    mutant: Mutant
    verdict: str  # killed, survived, error
    detail: str
    seconds: float


# ---------------------------------------------------------------- scratch copies


def tracked_and_untracked(root: Path) -> list[str]:
    """The repository's files as the working tree has them (ignored files aside)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name and (root / name).is_file()]


def scratch_copy(root: Path, dst: Path) -> Path:
    """A git clone of `root` (its history, for the update tests) with the working tree copied over."""
    subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(root), str(dst)], check=True,
                   capture_output=True)
    subprocess.run(["git", "checkout", "-q", "--detach", subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()],
        cwd=dst, check=True, capture_output=True)
    files = set(tracked_and_untracked(root))
    for name in subprocess.run(["git", "ls-files", "-z"], cwd=dst, capture_output=True, check=True).stdout.decode().split("\0"):
        if name and name not in files:
            (dst / name).unlink(missing_ok=True)  # deleted in the working tree, not yet committed
    for name in files:
        target = dst / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)
    return dst


def mutated(root: Path, m: Mutant) -> tuple[str, str]:
    """The mutant's file under `root` with its edits applied, and the reason it cannot be ("" when it can)."""
    path = root / m.path
    if not path.exists():
        return "", f"{m.path} does not exist"
    original = text = path.read_text()
    first_problem = ""
    for edits in (m.edits, *m.variants):
        text, problem = original, ""
        for old, new in edits:
            found = text.count(old)
            if found != 1:
                problem = f"old text found {found} times in {m.path} (must be exactly once): {old!r}"
                break
            text = text.replace(old, new)
        if not problem:
            return text, ""
        first_problem = first_problem or problem
    return "", first_problem


def plant(copy: Path, m: Mutant) -> str:
    """Apply the mutant's edits in `copy`; the reason it cannot, or "" when planted."""
    text, problem = mutated(copy, m)
    if not problem:
        (copy / m.path).write_text(text)
    return problem


def run_selection(copy: Path, selection: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
    """pytest's exit status on the selection in `copy` (None on timeout) and the tail of its output."""
    # Builds share the caller's cache (cargo target, uv): the scratch copy would start cold.
    env = {**os.environ, "PLUMBLINE_CACHE": os.environ.get("PLUMBLINE_CACHE", str(ROOT / ".cache"))}
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *selection],
                              cwd=copy, env=env, capture_output=True, text=True, timeout=timeout,
                              start_new_session=True)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:g} s"
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    return proc.returncode, "\n".join(lines[-15:])


def summary_line(output: str) -> str:
    return output.splitlines()[-1] if output else ""


def evaluate(m: Mutant, work: Path, timeout: float, baseline: dict[tuple[str, ...], tuple[int | None, str]] | None,
             ) -> Result:
    started = time.monotonic()
    copy = scratch_copy(ROOT, work / m.name)
    try:
        problem = plant(copy, m)
        if problem:
            return Result(m, "error", problem, time.monotonic() - started)
        if baseline is not None:
            code, output = baseline.get(m.selection, (None, "no baseline run"))
            if code != 0:
                return Result(m, "error", f"the selection fails without the bug (exit {code}): {summary_line(output)}",
                              time.monotonic() - started)
        code, output = run_selection(copy, m.selection, timeout)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    seconds = time.monotonic() - started
    if code == 1:
        return Result(m, "killed", summary_line(output), seconds)
    if code == 0:
        return Result(m, "survived", summary_line(output), seconds)
    return Result(m, "error", f"pytest exit {code}: {summary_line(output)}", seconds)


def baselines(selected: list[Mutant], work: Path, timeout: float) -> dict[tuple[str, ...], tuple[int | None, str]]:
    """Each distinct selection run once on an unmutated copy: it must pass for a kill to mean anything."""
    copy = scratch_copy(ROOT, work / "baseline")
    try:
        out = {}
        for selection in dict.fromkeys(m.selection for m in selected):
            out[selection] = run_selection(copy, selection, timeout)
            print(f"baseline {' '.join(selection)}: {'ok' if out[selection][0] == 0 else 'FAILS'}", flush=True)
        return out
    finally:
        shutil.rmtree(copy, ignore_errors=True)


# ---------------------------------------------------------------- report


def score(results: list[Result]) -> tuple[int, int, int]:
    killed = sum(r.verdict == "killed" for r in results)
    survived = sum(r.verdict == "survived" for r in results)
    return killed, survived, len(results) - killed - survived


def report(results: list[Result]) -> str:
    killed, survived, errors = score(results)
    rows = [[f"`{r.mutant.name}`", r.mutant.why, f"`{' '.join(r.mutant.selection)}`", r.verdict, fmt(r.seconds, 0)]
            for r in results]
    ratio = f"{killed}/{killed + survived}" if killed + survived else "0/0"
    text = table(["mutant", "the bug", "selection that must catch it", "verdict", "s"], rows,
                 right=[False, False, False, False, True])
    return f"Score: {ratio} killed, {survived} survived, {errors} error(s).\n\n{text}\n"


def details(results: list[Result]) -> str:
    return "\n".join(f"- {r.mutant.name}: {r.verdict}: {r.detail}" for r in results if r.verdict != "killed")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated mutant names (see --list)")
    parser.add_argument("--fast-only", action="store_true", help="only the mutants whose selection builds no service")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--no-baseline", action="store_true",
                        help="do not run the selections unmutated first (a failing baseline would then count as killed)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per pytest run (default 1800)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    if args.only:
        known = {m.name for m in MUTANTS}
        unknown = sorted(set(args.only.split(",")) - known)
        if unknown:
            parser.error(f"unknown mutant(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return args


def select(args: argparse.Namespace) -> list[Mutant]:
    chosen = [m for m in MUTANTS if not args.fast_only or not m.slow]
    if args.only:
        names = set(args.only.split(","))
        chosen = [m for m in chosen if m.name in names]
    return chosen


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    chosen = select(args)
    if args.list:
        for m in chosen:
            print(f"{m.name:38} {'slow' if m.slow else 'fast'}  {m.path}\n{'':38}       pytest {' '.join(m.selection)}")
        return 0
    if not chosen:
        print("no mutant selected", file=sys.stderr)
        return 2
    info = RunInfo.begin(["bench/mutation.py", *argv])
    with tempfile.TemporaryDirectory(prefix="plumbline-mutation-") as tmp:
        work = Path(tmp)
        # no baseline for a selection whose every mutant cannot be planted (each is an error anyway)
        plantable = [m for m in chosen if not mutated(ROOT, m)[1]]
        base = None if args.no_baseline else baselines(plantable, work, args.timeout)
        results = []
        for m in chosen:
            result = evaluate(m, work, args.timeout, base)
            print(f"{result.verdict:8} {m.name} ({result.seconds:.0f} s): {result.detail}", flush=True)
            results.append(result)
    info.end()
    body = report(results)
    print("\n" + body)
    if details(results):
        print(details(results))
    if not args.no_write:
        section = (
            "## Mutation check: do the tests catch planted bugs?\n\n"
            f"{info.markdown()}\n\n"
            "Each bug of `bench/mutation.py` planted alone in a scratch copy, then its pytest selection run; "
            "an error (old text not found, a selection failing without the bug) is never counted as killed. "
            "A mutant written for a file that a rework under way moves or rewrites (its comment in `MUTANTS` "
            "says so) is an error until that rework is merged.\n\n"
            f"{body}\n{details(results)}\n"
        )
        print(f"wrote {write_section('mutation', section)}")
    killed, survived, errors = score(results)
    return 0 if survived == 0 and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
