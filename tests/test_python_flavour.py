"""The Python flavour's generated project passes its own setup, lint and tests, and stays formatted.

Each combination renders a project, then runs what its developers and CI run: `make setup
lint test`, then `make fmt`, after which git must see no change (the template ships code that
its own formatter leaves alone, for every project name).
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pki import make_pair

from helpers import commit_all, generate, run

pytestmark = pytest.mark.needs_tool("uv")

COMBINATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "opentelemetry": {"opentelemetry": True},
    "short-name-high-port": {"project_name": "a1-b2", "http_port": 65535},
}


@pytest.mark.slow
@pytest.mark.parametrize("answers", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_generated_project_sets_up_lints_tests_and_stays_formatted(tmp_path: Path, answers: dict[str, Any]) -> None:
    project = generate(tmp_path / "service", flavour="python", **answers)
    commit_all(project, "generated")

    run(["make", "setup", "lint", "test"], project, timeout=600)
    run(["make", "fmt"], project)

    assert run(["git", "status", "--porcelain"], project).stdout == ""


@pytest.mark.slow
@pytest.mark.parametrize("opentelemetry", [False, True], ids=["plain", "opentelemetry"])
def test_committed_lock_is_current(tmp_path: Path, opentelemetry: bool) -> None:
    """A stale lock fails here: regenerate it with scripts/lock-python."""
    project = generate(tmp_path / "service", flavour="python", opentelemetry=opentelemetry)

    result = run(["uv", "lock", "--check"], project, check=False)

    assert result.returncode == 0, f"uv.lock is stale; run scripts/lock-python\n{result.stderr}"


def test_python_files_carry_one_guard_and_no_rust_files() -> None:
    """Every Python-only path is guarded by `is_python` alone (no compound conditions)."""
    template = Path(__file__).resolve().parents[1] / "template"
    guarded = [p for p in template.rglob("*") if "is_python" in str(p.relative_to(template))]

    assert guarded
    for path in guarded:
        name = str(path.relative_to(template))
        assert " and " not in name
        assert " or " not in name


# Every key of the generated cfg/config.toml with a value unlike its default.
CHANGED_VALUES: dict[str, dict[str, Any]] = {
    "http": {
        "host": "127.0.0.2",
        "port": 18999,
        "header_timeout_secs": 5,
        "idle_timeout_secs": 20,
        "write_timeout_secs": 15,
        "max_connections": 512,
        # files of the hosts only: the configuration's validation does not open them
        "tls_cert_file": "${PREFIX}/key/tls/changed.crt",
        "tls_key_file": "${PREFIX}/key/tls/changed.key",
        "client_ca_file": "${PREFIX}/key/tls/changed.crt",
    },
    "log": {"filter": "debug", "target": "file"},
    "paths": {
        "log_file": "./log/changed.log",
        "pid_file": "${PREFIX}/run/changed.pid",
        "heartbeat_file": "./tmp/changed.heartbeat",
        "data_dir": "${PREFIX}/data/changed",
        "tmp_dir": "./tmp-changed",
        "tmp_max_age_secs": 3600,
        "audit_file": "./log/changed.audit.log",
    },
    "heartbeat": {"interval_secs": 7},
    "shutdown": {"timeout_secs": 12},
    "runtime": {"worker_threads": 3},
    "backup": {"dir": "${PREFIX}/backup/changed", "keep": 3},
    "work": {
        "interval_secs": 45,
        "max_concurrency": 2,
        "upstream_url": "https://upstream.example.com/value",
    },
    "apm": {"url": "http://127.0.0.1:4318"},
}
# A fenced block of the README whose first line names the file it holds: `# <path>`.
README_BLOCK = re.compile(r"```(?:python|toml)\n# (?P<path>[^\s:]+)[^\n]*\n(?P<body>.*?)```", re.DOTALL)


def toml_value(value: Any) -> str:
    return str(value) if isinstance(value, int) else f'"{value}"'


def readme_files(readme: str, heading: str) -> dict[str, str]:
    """The files shown under `### <heading>` of the README: {path: text}."""
    section = readme.split(f"\n### {heading}\n", 1)[1]
    section = re.split(r"\n##+ ", section, maxsplit=1)[0]
    files = {match["path"]: match["body"] for match in README_BLOCK.finditer(section)}
    assert files, f"no file blocks under `### {heading}` in the generated README"
    return files


def replace_table(config: str, table: str, replacement: str) -> str:
    """cfg/config.toml with `[table]` (up to the next table) replaced by `replacement`."""
    pattern = re.compile(rf"^\[{table}\]\n.*?(?=^\[|\Z)", re.DOTALL | re.MULTILINE)
    assert pattern.search(config), f"no [{table}] table in cfg/config.toml"
    return pattern.sub(lambda _: replacement, config, count=1)


@pytest.mark.slow
def test_a_team_changes_the_config_replaces_the_example_then_empties_it(tmp_path: Path) -> None:
    """Each stage passes `make lint test`: the generated tests pin no committed value and
    need no part of the example; the README's code for a service of one's own is true."""
    project = generate(tmp_path / "service", flavour="python")
    package = project / "src" / "order_router"
    config = project / "cfg" / "config.toml"
    readme = (project / "README.md").read_text(encoding="utf-8")
    run(["make", "setup"], project, timeout=600)

    # (a) every value of cfg/config.toml changed
    committed = tomllib.loads(config.read_text(encoding="utf-8"))
    assert {section: set(keys) for section, keys in committed.items()} == {
        section: set(keys) for section, keys in CHANGED_VALUES.items()
    }, "a key was added to cfg/config.toml: give it a changed value here"
    for section, values in CHANGED_VALUES.items():
        for key, value in values.items():
            assert committed[section][key] != value, f"{section}.{key}"
    text = "".join(
        f"[{section}]\n" + "".join(f"{key} = {toml_value(value)}\n" for key, value in values.items()) + "\n"
        for section, values in CHANGED_VALUES.items()
    )
    config.write_text(text, encoding="utf-8")
    assert tomllib.loads(text) == CHANGED_VALUES
    run(["make", "lint", "test"], project, timeout=600)

    # (b) the example replaced with the README's service: endpoint, job, settings key, counter
    own = readme_files(readme, "Your own service, step by step")
    assert set(own) == {
        "cfg/config.toml",
        "src/order_router/service/settings.py",
        "src/order_router/service/api.py",
        "src/order_router/service/jobs.py",
        "src/order_router/service/__init__.py",
        "tests/service/test_orders.py",
    }
    (project / "tests" / "service" / "test_jobs.py").unlink()
    config.write_text(replace_table(config.read_text(encoding="utf-8"), "work", own.pop("cfg/config.toml")))
    for path, body in own.items():
        (project / path).write_text(body, encoding="utf-8")
    run(["make", "lint", "test"], project, timeout=600)
    assert (
        "tests/service/test_orders.py::test_an_order_is_taken_and_counted PASSED"
        in run(["uv", "run", "--locked", "pytest", "-v", "tests/service"], project).stdout
    )

    # (c) the smallest service part: no settings, routes or jobs
    smallest = readme_files(readme, "The smallest service part")
    assert set(smallest) == {"src/order_router/service/__init__.py"}
    for name in ("settings.py", "api.py", "jobs.py"):
        (package / "service" / name).unlink()
    shutil.rmtree(project / "tests" / "service")
    config.write_text(replace_table(config.read_text(encoding="utf-8"), "orders", ""))
    (package / "service" / "__init__.py").write_text(smallest["src/order_router/service/__init__.py"])
    run(["make", "lint", "test"], project, timeout=600)
    make_pair(tmp_path / "key" / "tls", "changed")  # the files the changed TLS keys name
    checked = run([".venv/bin/order-router", "check-config"], project, env={"PREFIX": str(tmp_path)})
    assert checked.stdout.splitlines()[-2].startswith("apm.url = ")
    assert "work." not in checked.stdout
    assert "orders." not in checked.stdout
