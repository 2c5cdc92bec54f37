"""bench/mutation.py: the planted bugs it knows, and how it tells killed from an error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TEMPLATE

sys.path.insert(0, str(TEMPLATE / "bench"))

import mutation  # noqa: E402


def test_the_known_bugs_are_all_in_the_list() -> None:
    names = {m.name for m in mutation.MUTANTS}
    assert len(names) == len(mutation.MUTANTS), "two mutants share a name"
    assert {
        "systemd-no-new-privileges-by-name", "systemd-no-new-privileges-exposure",
        "alert-threshold-expression", "alert-threshold-rules",
        "logrotate-copytruncate-text", "logrotate-copytruncate-live",
        "missing-tool-skips", "missing-promtool-skips",
        "python-ewma-alpha", "rust-ewma-alpha",
        "python-env-before-secrets", "rust-env-before-secrets",
        "python-heartbeat-once", "rust-heartbeat-once",
        "alert-tests-migration-takes-theirs",
    } <= names


def test_each_selection_names_a_test_file_of_the_template() -> None:
    for m in mutation.MUTANTS:
        assert (TEMPLATE / m.selection[0]).is_file(), f"{m.name}: {m.selection[0]}"
        assert all(old != new for old, new in m.edits), m.name


def test_a_mutant_is_planted_only_where_its_old_text_is_exactly_once(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("a = 1\nb = 2\nb = 2\n")
    planted = mutation.Mutant("m", "f.txt", (("a = 1\n", "a = 9\n"),), ("tests",), "why")
    assert mutation.plant(tmp_path, planted) == ""
    assert (tmp_path / "f.txt").read_text() == "a = 9\nb = 2\nb = 2\n"
    assert "found 0 times" in mutation.plant(tmp_path, planted)
    twice = mutation.Mutant("m", "f.txt", (("b = 2\n", "b = 3\n"),), ("tests",), "why")
    assert "found 2 times" in mutation.plant(tmp_path, twice)
    assert "does not exist" in mutation.plant(tmp_path, mutation.Mutant("m", "g.txt", (("x", "y"),), ("t",), "why"))


def test_a_variant_is_planted_when_the_first_edits_do_not_apply(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("alpha = 0.3\n")
    m = mutation.Mutant("m", "f.txt", (("ALPHA = 0.3\n", "ALPHA = 1.0\n"),), ("t",), "why",
                        variants=((("nothing here", ""),), (("alpha = 0.3\n", "alpha = 1.0\n"),)))
    assert mutation.plant(tmp_path, m) == ""
    assert (tmp_path / "f.txt").read_text() == "alpha = 1.0\n"
    # none applies: the first edits' problem is reported
    assert "'ALPHA = 0.3\\n'" in mutation.plant(tmp_path, m)


def test_old_text_not_found_is_an_error_never_a_kill(tmp_path: Path) -> None:
    missing = mutation.Mutant("gone", "copier.yml", (("text that is not in the file\n", ""),),
                              ("tests/test_tools.py",), "why")
    result = mutation.evaluate(missing, tmp_path, timeout=60, baseline=None)
    assert result.verdict == "error" and "found 0 times" in result.detail
    assert mutation.score([result]) == (0, 0, 1)
    assert "Score: 0/0 killed, 0 survived, 1 error(s)." in mutation.report([result])


def test_the_scratch_copy_has_the_working_tree_and_the_history(tmp_path: Path) -> None:
    copy = mutation.scratch_copy(TEMPLATE, tmp_path / "copy")
    for name in ("copier.yml", "tests/test_mutation.py", "bench/mutation.py"):
        assert (copy / name).read_bytes() == (TEMPLATE / name).read_bytes(), name
    log = subprocess.run(["git", "log", "--oneline", "-2"], cwd=copy, capture_output=True, text=True, check=True)
    assert len(log.stdout.splitlines()) == 2


@pytest.mark.slow
def test_the_mutation_check_kills_a_small_subset() -> None:
    subset = "alert-threshold-expression,missing-tool-skips,logrotate-copytruncate-text"
    proc = subprocess.run([sys.executable, "bench/mutation.py", "--only", subset, "--no-write"], cwd=TEMPLATE,
                          text=True, capture_output=True, timeout=900, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Score: 3/3 killed, 0 survived, 0 error(s)." in out, out
