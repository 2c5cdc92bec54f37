"""The Rust flavour's generated crate renders for every combination, lints, tests, and stays
formatted.

Building tests run what the crate's developers and CI run, `make lint test`, then `make fmt`,
after which git must see no change. Every build shares CARGO_TARGET_DIR (set by `run()`), so
the dependencies compile once per test run.
"""

from __future__ import annotations

import itertools
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
from copier import run_copy

from helpers import TEMPLATE, commit_all, generate, run

CI_PROVIDERS = ["github", "gitlab", "both", "none"]
TARGETS = ["systemd", "ansible", "kubernetes", "container"]
TARGET_SETS = [list(c) for n in range(len(TARGETS) + 1) for c in itertools.combinations(TARGETS, n)]
# The fast tier renders a covering set (every value of every option once); the full tier
# renders every combination.
COVERING = [
    ("github", ["kubernetes"], True),
    ("gitlab", TARGETS, False),
    ("both", ["systemd", "container"], False),
    ("none", [], True),
    ("github", ["ansible"], False),
]
RENDERS = [
    pytest.param(
        {"ci_provider": c, "deploy_targets": t, "opentelemetry": o},
        id=f"{c}-{'+'.join(t) or 'nodeploy'}-otel{int(o)}",
        marks=() if (c, t, o) in COVERING else pytest.mark.slow,
    )
    for c, t, o in itertools.product(CI_PROVIDERS, TARGET_SETS, [False, True])
]
MODULES = [
    "config",
    "logging",
    "metrics",
    "health",
    "pidfile",
    "directories",
    "backup",
    "heartbeat",
    "shutdown",
    "retry",
    "errors",
    "app",
    "main",
]
# The team-owned service part: the platform reaches it through src/service/mod.rs only.
SERVICE_PART = [
    "src/service/mod.rs",
    "src/service/settings.rs",
    "src/service/api.rs",
    "src/service/jobs.rs",
    "tests/service/main.rs",
]

BUILDS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "opentelemetry": {"opentelemetry": True},
    "short-name-high-port": {"project_name": "a1-b2", "http_port": 65535},
}

needs_cargo = pytest.mark.needs_tool("cargo")


@pytest.fixture(scope="module")
def template_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template's working tree without .git or caches: copier renders it without cloning."""
    dst = tmp_path_factory.mktemp("template") / "plumbline"
    shutil.copytree(TEMPLATE, dst, ignore=shutil.ignore_patterns(".git", ".cache", "__pycache__", "bench"))
    return dst


@pytest.mark.parametrize("answers", RENDERS)
def test_every_rust_combination_renders_a_crate(
    tmp_path: Path, template_copy: Path, answers: dict[str, Any]
) -> None:
    data = {
        "project_name": "order-router",
        "description": "Routes orders",
        "author_name": "Ops",
        "author_email": "ops@example.com",
        "flavour": "rust",
        "http_port": 8080,
        "license": "MIT",
        **answers,
    }
    run_copy(str(template_copy), str(tmp_path), data=data, defaults=True, unsafe=True, quiet=True)

    manifest = tomllib.loads((tmp_path / "Cargo.toml").read_text())
    assert manifest["package"]["name"] == "order-router"
    assert manifest["bin"][0]["name"] == "order-router"
    assert ("otel" in manifest["features"]) == answers["opentelemetry"]
    assert (tmp_path / "src" / "telemetry.rs").exists() == answers["opentelemetry"]
    for module in MODULES:
        assert (tmp_path / "src" / f"{module}.rs").is_file(), module
    for part in SERVICE_PART:
        assert (tmp_path / part).is_file(), part
    assert not (tmp_path / "src" / "work.rs").exists()
    lock = tomllib.loads((tmp_path / "Cargo.lock").read_text())
    names = [p["name"] for p in lock["package"]]
    assert "order-router" in names
    assert names == sorted(names), "Cargo.lock must keep cargo's order, or cargo rewrites it"
    assert ("opentelemetry" in names) == answers["opentelemetry"]
    assert not (tmp_path / "pyproject.toml").exists()
    assert "{{" not in (tmp_path / "src" / "main.rs").read_text()


def test_rust_files_carry_one_guard() -> None:
    """Every Rust-only path is guarded by `is_rust` alone (no compound conditions)."""
    template = TEMPLATE / "template"
    guarded = [p for p in template.rglob("*") if "is_rust" in str(p.relative_to(template))]

    assert guarded
    for path in guarded:
        name = str(path.relative_to(template))
        assert " and " not in name and " or " not in name, name


@needs_cargo
@pytest.mark.slow
@pytest.mark.rust
@pytest.mark.parametrize("answers", BUILDS.values(), ids=BUILDS.keys())
def test_generated_crate_lints_tests_and_stays_formatted(tmp_path: Path, answers: dict[str, Any]) -> None:
    project = generate(tmp_path / "service", flavour="rust", **answers)
    commit_all(project, "generated")

    run(["make", "lint", "test"], project, timeout=1800)
    run(["make", "fmt"], project, timeout=900)

    assert run(["git", "status", "--porcelain"], project).stdout == ""


@needs_cargo
@pytest.mark.slow
@pytest.mark.rust
@pytest.mark.parametrize("opentelemetry", [False, True], ids=["plain", "opentelemetry"])
def test_committed_lock_resolves_the_manifest(tmp_path: Path, opentelemetry: bool) -> None:
    """A lock that no longer matches Cargo.toml fails here: regenerate it with scripts/lock-rust."""
    project = generate(
        tmp_path / "service", flavour="rust", project_name="zz-last", opentelemetry=opentelemetry
    )
    before = (project / "Cargo.lock").read_text()

    result = run(["cargo", "metadata", "--locked", "--format-version", "1"], project, check=False)

    assert result.returncode == 0, f"Cargo.lock is stale; run scripts/lock-rust\n{result.stderr[-3000:]}"
    assert (project / "Cargo.lock").read_text() == before


def _readme_rust_blocks(project: Path) -> list[str]:
    """The Rust code blocks of the generated README: the smallest service part, then the
    worked example (endpoint, job, settings key, counter)."""
    blocks = re.findall(r"```rust\n(.*?)```", (project / "README.md").read_text(), re.S)
    assert len(blocks) == 2, "the README shows the smallest service part and a worked example"
    return blocks


def _replace_service(project: Path, code: str, old: str, section: str) -> None:
    """Replace the service part by `code` as a team would: its files, its tests, its section."""
    shutil.rmtree(project / "src" / "service")
    if (project / "tests" / "service").exists():
        shutil.rmtree(project / "tests" / "service")
    (project / "src" / "service").mkdir()
    (project / "src" / "service" / "mod.rs").write_text(code)
    config = project / "cfg" / "config.toml"
    text = config.read_text()
    start = text.index(f"\n{old}\n") + 1  # the table's header, not a comment that names it
    end = text.index("\n[", start)
    config.write_text(text[:start] + section + text[end + 1:])


@needs_cargo
@pytest.mark.slow
@pytest.mark.rust
def test_a_team_changes_values_replaces_and_removes_the_example(tmp_path: Path) -> None:
    """The generated tests hold whatever the team does in its own part of the project."""
    project = generate(tmp_path / "service", flavour="rust")
    commit_all(project, "generated")

    # (a) every value of cfg/config.toml changed
    config = project / "cfg" / "config.toml"
    changed = {
        # the keys whose default another key shares come first: each replaces its first match
        "header_timeout_secs = 10": "header_timeout_secs = 5",
        "idle_timeout_secs = 60": "idle_timeout_secs = 20",
        "write_timeout_secs = 30": "write_timeout_secs = 15",
        "max_connections = 1024": "max_connections = 512",
        'target = "both"': 'target = "file"',
        "tmp_max_age_secs = 86400": "tmp_max_age_secs = 3600",
        'audit_file = "./log/order-router.audit.log"': 'audit_file = "./log/svc.audit.log"',
        'dir = "${PREFIX}/backup/order-router"': 'dir = "${PREFIX}/backup/svc"',
        "keep = 7": "keep = 3",
        'host = "127.0.0.1"': 'host = "127.0.0.2"',
        "port = 8080": "port = 9099",
        'filter = "info"': 'filter = "warn"',
        'log_file = "./log/order-router.log"': 'log_file = "./logs/service.log"',
        'pid_file = "${PREFIX}/run/order-router.pid"': 'pid_file = "${PREFIX}/run/svc.pid"',
        'heartbeat_file = "./tmp/order-router.heartbeat"': 'heartbeat_file = "./tmp/svc.beat"',
        'data_dir = "${PREFIX}/data/order-router"': 'data_dir = "${PREFIX}/data/svc"',
        'tmp_dir = "./tmp"': 'tmp_dir = "./scratch"',
        "interval_secs = 10": "interval_secs = 7",
        "timeout_secs = 30": "timeout_secs = 12",
        "worker_threads = 0": "worker_threads = 3",
        "interval_secs = 60": "interval_secs = 45",
        "max_concurrency = 4": "max_concurrency = 2",
        'upstream_url = ""': 'upstream_url = "http://127.0.0.1:9/value"',
        'url = ""': 'url = "http://127.0.0.1:4318"',
    }
    text = config.read_text()
    for old, new in changed.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    config.write_text(text)
    run(["make", "lint", "test"], project, timeout=1800)

    # (b) the example replaced by the team's code, as the README shows it
    smallest, worked = _readme_rust_blocks(project)
    _replace_service(project, worked, "[work]", "[orders]\nmax_items = 20\n")
    run(["make", "lint", "test"], project, timeout=1800)
    check = run(["cargo", "run", "--quiet", "--locked", "--", "check-config"], project,
                env={"PREFIX": str(tmp_path / "prefix")})
    assert "orders.max_items = 20 (base)" in check.stdout

    # (c) the smallest valid service part
    _replace_service(project, smallest, "[orders]", "")
    run(["make", "lint", "test"], project, timeout=1800)
