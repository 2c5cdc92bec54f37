"""The bench scripts' pure parts: argument parsing, parsers of tool output, tables, the results page.

The benchmarks themselves are not tests (timings depend on the machine); these checks keep
the scripts from breaking silently between two benchmark runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import attacks
import common
import generation
import load
import suite


def test_alternate_takes_every_case_in_turn_each_round() -> None:
    assert list(common.alternate(["a", "b"], 2)) == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]
    with pytest.raises(ValueError, match="at least 1"):
        list(common.alternate(["a"], 0))


def test_table_pads_columns_and_aligns_numbers_right() -> None:
    text = common.table(["name", "req/s"], [["python flavour", "9,041"], ["axum peer", "39,555"]])
    assert text.splitlines() == [
        "| name           |  req/s |",
        "|:---------------|-------:|",
        "| python flavour |  9,041 |",
        "| axum peer      | 39,555 |",
    ]
    with pytest.raises(ValueError, match="every row needs 2 cells"):
        common.table(["a", "b"], [["only one"]])


def test_fmt_and_ratio_show_a_missing_figure_as_na() -> None:
    assert common.fmt(1234.567, 1) == "1,234.6"
    assert common.fmt(float("nan")) == "n/a"
    assert common.ratio(3, 0) != common.ratio(3, 0)  # NaN
    assert common.ratio(3, 2) == 1.5


def test_a_section_is_replaced_in_place_and_others_are_kept() -> None:
    page = common.DOC_HEADER
    page = common.replace_section(page, "load", "load v1")
    page = common.replace_section(page, "generation", "generation v1")
    # generation comes before load on the page, whatever order the scripts ran in
    assert page.index("generation v1") < page.index("load v1")
    page = common.replace_section(page, "load", "load v2")
    assert "load v1" not in page
    assert page.count("<!-- bench:load:start -->") == 1
    assert "generation v1" in page
    with pytest.raises(ValueError, match="unknown section"):
        common.replace_section(page, "nope", "x")


def test_wrk_summary_is_read_from_the_report_scripts_json_line() -> None:
    stdout = (
        "Running 1s test @ http://127.0.0.1:1/metrics\n  1 threads and 32 connections\n"
        '{"requests": 2000, "duration_us": 2000000, "bytes": 1, "p50_us": 1500, "p90_us": 2000, '
        '"p99_us": 4250, "max_us": 9000, "connect_errors": 0, "read_errors": 1, "write_errors": 0, '
        '"status_errors": 2, "timeouts": 0}\n'
    )
    result = load.parse_wrk(stdout)
    assert result.rps == 1000
    assert (result.p50_ms, result.p99_ms, result.errors) == (1.5, 4.25, 3)
    with pytest.raises(ValueError, match="no JSON summary"):
        load.parse_wrk("Running 1s test\n")


def test_quick_load_run_is_short_and_explicit_values_win() -> None:
    quick = load.parse_args(["--quick"])
    assert (quick.rounds, quick.cycles, quick.seconds, quick.warmup) == (1, 1, 1, 0)
    full = load.parse_args(["--rounds", "2"])
    assert (full.rounds, full.cycles, full.seconds, full.warmup) == (2, 3, 5, 1)
    with pytest.raises(SystemExit):
        load.parse_args(["--seconds", "0"])


def test_attacks_run_every_attack_unless_told_and_each_is_described() -> None:
    args = attacks.parse_args([])
    assert args.attacks == list(attacks.ATTACKS) and args.window == 80.0 and args.only is None
    assert set(attacks.DESCRIPTIONS) == set(attacks.ATTACKS)
    assert attacks.parse_args(["--only", "rust", "--attacks", "silent"]).attacks == ["silent"]
    with pytest.raises(SystemExit):
        attacks.parse_args(["--attacks", "nope"])


def test_targets_report_pass_and_miss() -> None:
    def summary(rps: float, p99: float, ready: float, rss: float, exit_s: float) -> load.Summary:
        routes = {path: rps for path in load.ROUTES}
        return load.Summary(
            routes,
            routes,
            {p: p99 for p in load.ROUTES},
            {p: (p99, p99) for p in load.ROUTES},
            dict.fromkeys(load.ROUTES, 0),
            ready,
            rss,
            rss,
            exit_s,
            exit_s,
            1,
            1,
        )

    servers = [
        load.Server("python flavour", "python", [], Path()),
        load.Server("aiohttp peer", "python", [], Path()),
    ]
    lines = load.target_lines(
        servers,
        {"python flavour": summary(700, 20, 0.4, 50, 0.1), "aiohttp peer": summary(1000, 10, 0.3, 40, 0.1)},
    )
    text = "\n".join(lines)
    table = load.throughput_table(
        servers,
        {"python flavour": summary(700, 20, 0.4, 50, 0.1), "aiohttp peer": summary(1000, 10, 0.3, 40, 0.1)},
    )
    row = next(line for line in table.splitlines() if "live" in line and "python flavour" in line)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    # route, server, req/s, p50, p99, p99 of the rounds, errors, req/s vs peer, p99 vs peer
    assert cells[2:] == ["700", "700.000", "20.000", "20.0–20.0", "0", "0.70×", "2.00×"]
    assert "throughput 0.70× the aiohttp peer's (target ≥ 0.8×): **MISS**" in text
    assert "p99 2.00× the aiohttp peer's (target ≤ 1.5×): **MISS**" in text
    assert "start→ready 400.0 ms (target ≤ 600 ms): **PASS**" in text
    assert "idle RSS 50.0 MiB (target ≤ 55 MiB): **PASS**" in text


def test_sync_tree_touches_only_changed_files(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "same.txt").write_text("same")
    (src / "sub" / "gone.txt").write_text("gone")
    assert load.sync_tree(src, dst) == 2
    mtime = (dst / "same.txt").stat().st_mtime_ns
    (src / "sub" / "gone.txt").unlink()
    (src / "new.txt").write_text("new")
    assert load.sync_tree(src, dst) == 2  # one added, one removed
    assert (dst / "same.txt").stat().st_mtime_ns == mtime
    assert not (dst / "sub" / "gone.txt").exists()


def test_pytest_output_is_parsed_into_counts_and_durations() -> None:
    out = """\
============================= slowest durations ==============================
2.08s call     tests/test_render.py::test_set[python-both-['systemd', 'ansible']-True]
0.50s setup    tests/test_render.py::test_set[python-both-['systemd', 'ansible']-True]
0.25s call     tests/test_extensions.py::test_names
3 passed, 2 skipped, 10 deselected in 4.20s
"""
    run = suite.parse_output(out, wall=5.0)
    assert run.counts == {"passed": 3, "skipped": 2, "deselected": 10}
    assert run.ok
    assert suite.by_file(run) == {"tests/test_render.py": 2.58, "tests/test_extensions.py": 0.25}
    assert suite.pytest_command("fast")[-2:] == ["-m", "not slow"]
    with pytest.raises(ValueError, match="unknown tier"):
        suite.pytest_command("medium")


def test_generation_cases_cover_both_flavours_and_answer_sets() -> None:
    assert {(c.flavour, c.answers_name) for c in generation.CASES} == {
        ("python", "default"),
        ("python", "full"),
        ("rust", "default"),
        ("rust", "full"),
    }
    full_rust = generation.Case("rust", "full").answers
    assert full_rust["flavour"] == "rust"
    assert full_rust["opentelemetry"] is True
    with pytest.raises(SystemExit):
        generation.parse_args(["--rounds", "0"])
