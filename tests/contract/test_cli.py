"""Contract §1: the command line, its output and its exit codes."""

from __future__ import annotations

import re

import pytest

from services import Metrics

pytestmark = pytest.mark.slow

VERSION_LINE = re.compile(
    r"^(?P<name>[a-z][a-z0-9-]*) (?P<version>\d+\.\d+\.\d+\S*)(?: \(commit (?P<commit>[0-9A-Za-z._-]+)\))?$"
)


def test_version_prints_one_line_with_name_and_version(spawn):
    svc = spawn()

    proc = svc.cli("--version")

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"--version must print one line, got {proc.stdout!r}"
    match = VERSION_LINE.match(lines[0])
    assert match, f"--version line {lines[0]!r} is not `<svc> <version>[ (commit <sha>)]`"
    assert match["name"] == svc.name


def test_version_agrees_with_build_info(shared_service, service_build):
    svc = shared_service
    version = VERSION_LINE.match(svc.cli("--version").stdout.strip())
    assert version, "unparsable --version line"

    metrics = Metrics.parse(svc.metrics())

    (labels,) = metrics.series(f"{svc.built.metric_prefix}build_info")
    assert labels["version"] == version["version"]
    assert labels["commit"] == (version["commit"] or "unknown")
    assert labels["flavour"] == service_build.flavour


def test_check_config_valid_exits_0_and_ends_with_ok(spawn):
    proc = spawn().cli("check-config")

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "configuration OK"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["frobnicate"], id="unknown-command"),
        pytest.param(["run", "--bogus"], id="unknown-option-run"),
        pytest.param(["check-config", "--verbose-please"], id="unknown-option-check-config"),
        pytest.param(["check-config", "--config"], id="missing-value"),
        pytest.param(["--no-such-flag"], id="unknown-top-option"),
        pytest.param([], id="no-command"),
    ],
)
def test_bad_usage_exits_1_with_usage_on_stderr(spawn, args):
    svc = spawn()
    proc = svc.cli(*args)

    assert proc.returncode == 1, f"{args}: exit {proc.returncode}, stderr {proc.stderr!r}"
    name = svc.name
    what, usage = proc.stderr.splitlines()
    assert what.startswith(f"{name}: error: "), proc.stderr
    assert usage == f"usage: {name} [--version] {{run,check-config,backup,restore}} [--config PATH]", proc.stderr


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["frobnicate"], 'unknown command "frobnicate"; allowed run, check-config, backup, restore'),
        (["run", "--bogus"], 'unknown argument "--bogus"'),
        (["--bogus"], 'unknown argument "--bogus"'),
        (["check-config", "extra"], 'unknown argument "extra"'),
        (["check-config", "--config"], "--config needs a value"),
        ([], "missing command; allowed run, check-config, backup, restore"),
    ],
    ids=["unknown-command", "unknown-option", "unknown-top-option", "extra-argument", "missing-value", "no-command"],
)
def test_bad_usage_says_what_in_the_same_words(spawn, args, what):
    svc = spawn()
    proc = svc.cli(*args)

    assert proc.stderr.splitlines()[0] == f"{svc.name}: error: {what}"


def test_run_with_missing_config_exits_1_naming_the_file(spawn):
    svc = spawn()
    missing = svc.workdir / "cfg" / "nope.toml"

    proc = svc.cli("run", "--config", str(missing), timeout=20)

    assert proc.returncode == 1
    # the C library's words, without Rust's "(os error 2)"
    assert proc.stderr == f"config error: cannot read {missing}: No such file or directory\n"
    assert not svc.pid_file.exists(), "a config error must stop the service before it takes the PID file"


def test_config_option_selects_the_file(spawn):
    svc = spawn()
    other = svc.workdir / "cfg" / "other.toml"
    other.write_text('[http]\nhost = "127.0.0.2"\n')

    proc = svc.cli("check-config", "--config", str(other))

    assert proc.returncode == 0, proc.stderr
    assert 'http.host = "127.0.0.2" (base)' in proc.stdout.splitlines()
