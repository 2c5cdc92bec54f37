"""`plumbline audit` and `plumbline check-service` (src/plumbline) on generated projects.

The template is a scratch copy with its releases tagged (tests/releases.py): a project rendered
at HEAD under test is in line, one rendered at the release before it is one release behind.
Renders are shared by the module; each test copies the project it changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from helpers import CARGO_TARGET_DIR, DEFAULTS, FULL, TEMPLATE, commit_all, generate, git, run
from plumbline.rules import CONTRACT_KEYS, _flatten
from releases import TemplateRepo, render, tagged_copy
from services import Service, build_service

SRC = TEMPLATE / "src"
ANSWERS = {**DEFAULTS, "project_name": "ledger-feed"}


def plumbline(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command from this working tree, as `python -m plumbline`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "plumbline", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=600, check=False)


def audit_json(*args: str) -> tuple[int, dict]:
    proc = plumbline("audit", "--format", "json", *args)
    assert proc.returncode in (0, 1), f"exit {proc.returncode}: {proc.stderr}"
    return proc.returncode, json.loads(proc.stdout)


def fails(project: dict) -> list[str]:
    """The rules that fail; a warning may only be a contract key that a later release adds."""
    for finding in project["findings"]:
        if finding["level"] == "warn" and finding["rule"] == "config-keys":
            assert finding["message"].endswith("is missing: a later release adds it (copier update brings it)"), finding
    return [f["rule"] for f in project["findings"] if f["level"] == "fail"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> TemplateRepo:
    return tagged_copy(tmp_path_factory.mktemp("audit-template") / "plumbline")


@pytest.fixture(scope="module")
def in_line(repo: TemplateRepo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(repo, tmp_path_factory.mktemp("in-line") / "ledger-feed", repo.head.tag, ANSWERS)


@pytest.fixture(scope="module")
def behind(repo: TemplateRepo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(repo, tmp_path_factory.mktemp("behind") / "ledger-feed", repo.previous.tag, ANSWERS)


@pytest.fixture
def copy_of(tmp_path: Path):
    def make(project: Path) -> Path:
        dst = tmp_path / project.name
        shutil.copytree(project, dst, symlinks=True)
        return dst

    return make


def test_a_project_in_line_passes(in_line: Path, repo: TemplateRepo) -> None:
    code, report = audit_json(str(in_line))

    (project,) = report["projects"]
    assert code == 0 and report["exit_code"] == 0, project["findings"]
    assert project["status"] == "in line"
    assert project["template"]["release"] == repo.head.tag
    assert project["template"]["newest"] == repo.head.tag
    assert project["template"]["behind"] == 0
    assert project["files"] and {f["state"] for f in project["files"]} == {"identical"}
    assert any(f["path"] == "cfg/config.toml" for f in project["files"]), "cfg/config.toml is template-owned"
    assert project["update"] is None and project["findings"] == []
    table = plumbline("audit", str(in_line))
    assert table.returncode == 0
    assert "status: in line" in table.stdout and f"at {repo.head.tag}" in table.stdout


def test_a_project_a_release_behind_fails_and_names_the_release(behind: Path, repo: TemplateRepo) -> None:
    code, report = audit_json(str(behind))

    (project,) = report["projects"]
    assert code == 1 and project["status"] == "fails"
    assert project["template"]["release"] == repo.previous.tag
    assert project["template"]["releases_behind"] == [repo.head.tag]
    assert project["update"]["to"] == repo.head.tag
    assert fails(project) == ["release"], project["findings"]
    # the files of its own release are untouched: being behind is not drift
    assert {f["state"] for f in project["files"]} == {"identical"}


def test_a_commit_recorded_by_git_describe_is_resolved(repo: TemplateRepo, tmp_path: Path) -> None:
    after = git(repo.path, "rev-list", "--reverse", "--ancestry-path", f"{repo.previous.commit}..{repo.head.commit}")
    sha = after.split()[0]
    project = render(repo, tmp_path / "ledger-feed", sha, ANSWERS)
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"]
    assert recorded.startswith(f"{repo.previous.tag}-1-g"), recorded

    code, report = audit_json(str(project))

    template = report["projects"][0]["template"]
    assert (template["release"], template["behind"]) == (repo.previous.tag, 1)
    assert code == 1 and fails(report["projects"][0]) == ["release"]


def test_releases_come_from_the_changelog_when_the_clone_has_no_tags(behind: Path, repo: TemplateRepo,
                                                                   tmp_path: Path) -> None:
    untagged = tmp_path / "untagged"
    git(tmp_path, "clone", "--quiet", "--no-tags", f"file://{repo.path}", str(untagged))
    assert git(untagged, "tag", "--list") == ""

    code, report = audit_json("--template", str(untagged), str(behind))

    (project,) = report["projects"]
    # HEAD under test is no release in the CHANGELOG: the newest named there is the project's
    assert project["template"]["release"] == repo.previous.tag
    assert project["template"]["newest"] == repo.previous.tag
    assert code == 0, project["findings"]


def test_an_edited_template_owned_file_is_drift(in_line: Path, copy_of) -> None:
    project = copy_of(in_line)
    readme = project / "README.md"
    readme.write_text(readme.read_text().replace("\n", "\nA line of our own.\n", 1))
    (project / "Makefile").unlink()

    code, report = audit_json(str(project))

    findings = {(f["rule"], f["path"]): f for f in report["projects"][0]["findings"]}
    assert code == 1
    assert findings[("drift", "README.md")]["message"] == "template-owned file edited: +1/-0 lines"
    assert findings[("drift", "Makefile")]["message"] == "template-owned file is missing"
    states = {f["path"]: f["state"] for f in report["projects"][0]["files"]}
    assert states["README.md"] == "edited" and states["Makefile"] == "missing"
    table = plumbline("audit", str(project))
    assert "FAIL   drift  README.md" in table.stdout, table.stdout
    # an edit tolerated by choice is still reported, as a warning; a missing file still fails
    (project / "Makefile").write_bytes((in_line / "Makefile").read_bytes())
    tolerant = plumbline("audit", "--allow-edits", str(project))
    assert tolerant.returncode == 0, tolerant.stdout
    assert "WARN" in tolerant.stdout and "README.md" in tolerant.stdout


def test_the_services_values_in_its_config_are_a_warning(in_line: Path, copy_of) -> None:
    """Every service sets its values and its sections in cfg/config.toml, as its README says."""
    project = copy_of(in_line)
    config = project / "cfg" / "config.toml"
    config.write_text(config.read_text().replace("port = 8080", "port = 9090", 1))

    code, report = audit_json(str(project))

    (finding,) = report["projects"][0]["findings"]
    assert code == 0 and report["projects"][0]["status"] == "in line"
    assert (finding["rule"], finding["level"], finding["path"]) == ("drift", "warn", "cfg/config.toml")
    assert finding["message"].startswith("the service's values: +1/-1 lines")
    # a contract key removed from it still fails, through config-keys
    config.write_text(config.read_text().replace('\nurl = ""\n', "\n"))
    code, report = audit_json(str(project))
    assert code == 1
    assert ("config-keys", "fail", "contract key apm.url is missing") in {
        (f["rule"], f["level"], f["message"]) for f in report["projects"][0]["findings"]}


def test_edits_in_the_service_part_are_not_drift(in_line: Path, copy_of) -> None:
    project = copy_of(in_line)
    package = ANSWERS["project_name"].replace("-", "_")
    service = project / "src" / package / "service"
    # the service folder, or (releases before it) the work module that _skip_if_exists names
    owned = sorted(service.glob("*.py")) if service.is_dir() else [project / "src" / package / "work.py"]
    assert owned and all(p.is_file() for p in owned), owned
    for path in owned:
        path.write_text(path.read_text() + "\n# our own change\n")
    (project / "tests" / "service").mkdir(parents=True, exist_ok=True)
    (project / "tests" / "service" / "test_orders.py").write_text("def test_orders():\n    assert True\n")

    code, report = audit_json(str(project))

    assert code == 0, report["projects"][0]["findings"]
    paths = {f["path"] for f in report["projects"][0]["files"]}
    assert not any(p.startswith(f"src/{package}/service/") or p.endswith("/work.py") for p in paths)


def test_a_service_not_generated_is_checked_against_the_rules(tmp_path: Path, in_line: Path) -> None:
    project = tmp_path / "handmade"
    (project / "cfg").mkdir(parents=True)
    (project / "cfg" / "config.toml").write_text(
        '[http]\nhost = "0.0.0.0"\nport = 8080\nheader_timeout_secs = 10\nidle_timeout_secs = 60\n'
        'write_timeout_secs = 30\nmax_connections = 1024\n'
        'tls_cert_file = ""\ntls_key_file = ""\nclient_ca_file = ""\n[log]\nfilter = "info"\ntarget = "both"\n'
        '[paths]\nlog_file = "x"\npid_file = "x"\nheartbeat_file = "x"\ndata_dir = "x"\ntmp_dir = "x"\ntmp_max_age_secs = 60\n'
        'audit_file = "x"\n'
        '[heartbeat]\ninterval_secs = 10\n[shutdown]\ntimeout_secs = 30\n[backup]\ndir = "x"\nkeep = 7\n'
        '[db]\nurl = "postgres://app:hunter2@db/app"\napi_token = "abc"\ntls_key_file = "/srv/key/tls.key"\n'
    )
    workflows = project / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "ci.yml").write_text(
        "jobs:\n  test:\n    steps:\n      - uses: actions/checkout@v4\n"
        "      - uses: actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065 # v5.6.0\n"
        "      - uses: ./.github/actions/setup\n"
    )
    (project / "deploy").mkdir()
    (project / "deploy" / "handmade.service").write_text("[Service]\nExecStart=/usr/bin/handmade\n")

    code, report = audit_json(str(project))

    found = sorted((f["rule"], f["path"], f["message"]) for f in report["projects"][0]["findings"])
    assert code == 1
    assert report["projects"][0]["template"] is None
    assert [f[0] for f in found] == ["answers", "ci-pinned", "config-keys", "config-keys", "config-secrets",
                                     "config-secrets", "systemd-exposure"], found
    assert ("config-keys", "cfg/config.toml", "contract key runtime.worker_threads is missing") in found
    assert ("ci-pinned", ".github/workflows/ci.yml:4", "actions/checkout@v4 is not pinned by a full commit SHA") in found
    assert ("config-keys", "cfg/config.toml", "contract key apm.url is missing") in found
    messages = " ".join(f[2] for f in found)
    assert "db.url is a URL with user:password" in messages and "db.api_token holds a value" in messages
    assert "tls_key_file" not in messages, "a path to a secret is not a secret"
    assert "exposure" in messages
    # the generated unit keeps the standard: in line with the same check
    assert audit_json(str(in_line))[0] == 0


def test_the_contract_keys_are_the_platform_keys_of_the_generated_config(in_line: Path) -> None:
    """CONTRACT_KEYS, read by the audit's config-keys rule and by the contract suite, is the list of
    the platform's keys of cfg/config.toml: a key added to one is added to the other."""
    flat = dict(_flatten(tomllib.loads((in_line / "cfg" / "config.toml").read_text())))
    example = {key for key in flat if key.startswith("work.")}  # the example service part's section
    assert example and sorted(set(flat) - example) == sorted(CONTRACT_KEYS)
    assert len(set(CONTRACT_KEYS)) == len(CONTRACT_KEYS)
    # and the generated README's key table states each
    readme = (in_line / "README.md").read_text()
    assert [key for key in CONTRACT_KEYS if f"| `{key}` |" not in readme] == []


def test_the_audit_that_cannot_run_exits_2_with_one_line(tmp_path: Path, in_line: Path, copy_of) -> None:
    missing = plumbline("audit", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [f"plumbline audit: error: {tmp_path / 'nowhere'} is not a directory"]

    project = copy_of(in_line)
    answers = project / ".copier-answers.yml"
    data = yaml.safe_load(answers.read_text())
    answers.write_text(yaml.safe_dump({**data, "_src_path": str(tmp_path / "gone")}))
    unreachable = plumbline("audit", str(project))
    assert unreachable.returncode == 2
    (line,) = unreachable.stderr.splitlines()
    assert line.startswith("plumbline audit: error: cannot reach the template"), line

    no_config = plumbline("check-service", "--command", "audit", "--project", str(tmp_path))
    assert no_config.returncode == 2
    assert no_config.stderr.splitlines() == [
        f"plumbline check-service: error: {tmp_path} has no cfg/config.toml: give the project folder with --project"]
    unbuilt = plumbline("check-service", "--command", ".venv/bin/ledger-feed", "--project", str(in_line), cwd=tmp_path)
    assert unbuilt.returncode == 2
    assert unbuilt.stderr.splitlines() == [f"plumbline check-service: error: --command: .venv/bin/ledger-feed does not "
                                           f"exist (relative to {tmp_path}): build the service first"]


def test_fleet_mode_clones_and_prints_one_row_per_project(in_line: Path, behind: Path, tmp_path: Path) -> None:
    urls = []
    for name, project in [("in-line", in_line), ("behind", behind)]:
        remote = tmp_path / name
        shutil.copytree(project, remote)
        commit_all(remote, "generated")
        urls.append(f"file://{remote}")
    repos = tmp_path / "repos.txt"
    repos.write_text("# the fleet\n" + "\n".join(urls) + "\n\n")

    proc = plumbline("audit", "--repos", str(repos))

    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("file://")]
    assert [r.split()[0] for r in rows] == urls
    assert rows[0].split()[-2:] == ["in", "line"] and rows[1].split()[-1] == "fails" and " release " in rows[1]
    assert "cloned 2/2" in proc.stderr and "2 projects: 1 in line, 1 failing, 0 not audited" in proc.stdout

    repos.write_text(repos.read_text() + f"file://{tmp_path / 'no-such-repo'}\n")
    broken = plumbline("audit", "--repos", str(repos), "--format", "json")
    assert broken.returncode == 2
    report = json.loads(broken.stdout)
    assert [p["status"] for p in report["projects"]] == ["in line", "fails", "error"]
    assert report["projects"][2]["error"].startswith("cannot clone file://")


@pytest.mark.slow
def test_installs_as_a_uv_tool_from_a_clone(repo: TemplateRepo, in_line: Path, tmp_path: Path) -> None:
    uv = shutil.which("uv")
    assert uv, "uv is needed to install the plumbline command"
    env = {**os.environ, "UV_TOOL_DIR": str(tmp_path / "tools"), "UV_TOOL_BIN_DIR": str(tmp_path / "bin")}
    install = subprocess.run([uv, "tool", "install", "--quiet", "--from", str(repo.path), "plumbline"],
                             env=env, text=True, capture_output=True, timeout=600, check=False)
    assert install.returncode == 0, install.stderr

    proc = subprocess.run([str(tmp_path / "bin" / "plumbline"), "audit", str(in_line)], env=env, text=True,
                          capture_output=True, timeout=300, check=False)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "status: in line" in proc.stdout
    # the wheel carries the contract suite for check-service
    with not_found_server() as url:
        check = subprocess.run([str(tmp_path / "bin" / "plumbline"), "check-service", "--url", url, "--project",
                                str(in_line)], env=env, text=True, capture_output=True, timeout=300, check=False)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "FAIL Contract §5" in check.stdout and "/plumbline/suite/contract" in check.stderr


# ---------------------------------------------------------------------- check-service
@pytest.fixture(scope="module")
def own_python_service(tmp_path_factory: pytest.TempPathFactory):
    """A Python service of its own: the tests below break it on purpose."""
    assert shutil.which("uv"), "building the Python flavour needs uv"
    return build_service("python", tmp_path_factory.mktemp("check-service"), project_name="ledger-feed", http_port=18124)


@pytest.mark.slow
def test_check_service_passes_on_a_generated_service(own_python_service) -> None:
    proc = plumbline("check-service", "--command", str(own_python_service.binary),
                     "--project", str(own_python_service.project))

    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "every contract check passed" in proc.stdout
    assert " passed" in proc.stdout and " failed" not in proc.stdout
    assert "SKIP" not in proc.stdout, "the example is in place: its checks run"


@pytest.mark.slow
def test_check_service_fails_naming_the_rule_a_broken_service_breaks(own_python_service) -> None:
    health = own_python_service.project / "src" / own_python_service.snake / "health.py"
    original = health.read_text()
    broken = original.replace('return (200, "ok") if fresh', 'return (500, "broken") if fresh')
    assert broken != original, "the live answer moved: update this test's edit"
    health.write_text(broken)
    try:
        proc = plumbline("check-service", "--command", str(own_python_service.binary),
                         "--project", str(own_python_service.project), "--", "-k", "test_http")
    finally:
        health.write_text(original)

    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "FAIL Contract §5: the HTTP endpoints, their bodies and status codes: " \
           "test_live_and_ready_answer_ok[external]" in proc.stdout, proc.stdout[-4000:]


REPLACED_SERVICE = '''"""The team's own service part: an orders route and its settings; the example is gone."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from {pkg}.config import Section
from {pkg}.context import Context, Part
from {pkg}.http import json_response

__all__ = ["Settings", "build"]


class Orders(Section):
    """`[orders]`: how many orders a batch holds."""

    batch_size: int = Field(default=10, ge=1, le=1000, description="allowed 1-1000")


class Settings(Section):
    orders: Orders = Orders()


def build(ctx: Context[Settings]) -> Part:
    async def orders(request: web.Request) -> web.Response:
        return json_response({{"batch_size": ctx.settings.orders.batch_size}})

    return Part(routes=[web.get("/v1/orders", orders)])
'''


@pytest.mark.slow
def test_check_service_skips_the_examples_checks_of_a_replaced_service_part(repo: TemplateRepo, tmp_path: Path) -> None:
    """A team replaced the example: every platform check runs, each example check is skipped, saying why."""
    assert shutil.which("uv"), "building the Python flavour needs uv"
    project = render(repo, tmp_path / "ledger-feed", repo.head.tag, {**ANSWERS, "http_port": 18126})
    package = project / "src" / "ledger_feed" / "service"
    shutil.rmtree(package)
    package.mkdir()
    (package / "__init__.py").write_text(REPLACED_SERVICE.format(pkg="ledger_feed"))
    shutil.rmtree(project / "tests" / "service")
    config = project / "cfg" / "config.toml"
    text = config.read_text()
    start, end = text.index("# The service's own sections follow"), text.index("[apm]")
    config.write_text(text[:start] + "[orders]\nbatch_size = 10\n\n" + text[end:])
    subprocess.run(["uv", "sync", "--locked", "--quiet"], cwd=project, check=True, timeout=900)

    proc = plumbline("check-service", "--command", str(project / ".venv" / "bin" / "ledger-feed"),
                     "--project", str(project))

    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]
    skips = [line for line in proc.stdout.splitlines() if line.startswith("SKIP ")]
    assert skips and all("which this service replaced" in line for line in skips), skips
    skipped = " ".join(skips)
    for example_check in ("test_good_value_is_saved_and_not_degraded", "test_no_value_yet_is_503_with_a_json_error",
                          "test_token_from_the_secrets_file_is_used", "test_shutdown_overrun_exits_2_with_critical"):
        assert example_check in skipped, example_check
    # the platform's checks ran: config keys, metrics, HTTP, logs, lifecycle
    for platform_check in ("test_generated_base_config_is_what_check_config_reports",
                           "test_exactly_the_documented_metrics_with_types_and_help", "test_live_and_ready_answer_ok",
                           "test_lifecycle_lines_in_order", "test_every_error_is_reported_at_once"):
        assert platform_check not in skipped, platform_check
    counts = re.search(r"^(\d+) passed, (\d+) skipped", proc.stdout, re.MULTILINE)
    assert counts and int(counts[1]) > 100, proc.stdout[-2000:]
    assert re.search(r"every contract check passed, \d+ skipped \(SKIP lines above\)", proc.stdout)
    # forced: the example's checks of a service that has it can be left out too
    forced = plumbline("check-service", "--command", str(project / ".venv" / "bin" / "ledger-feed"),
                       "--project", str(project), "--example", "no", "--", "-k", "test_value")
    assert forced.returncode == 0, forced.stdout[-4000:]
    assert "left out (--example no)" in forced.stdout
    # the audit: the service part replaced is no drift; the config's new section is the service's values
    code, report = audit_json(str(project))
    assert code == 0, report["projects"][0]["findings"]
    assert [(f["rule"], f["level"], f["path"]) for f in report["projects"][0]["findings"]] == [
        ("drift", "warn", "cfg/config.toml")]


@pytest.mark.slow
@pytest.mark.rust
def test_check_service_on_a_rust_service_whose_example_was_replaced(tmp_path: Path) -> None:
    """The Rust flavour with the README's worked example in place of the template's: a route,
    a job, a settings key and a counter of the team's own."""
    from test_rust_flavour import _readme_rust_blocks, _replace_service  # noqa: PLC0415

    assert shutil.which("cargo"), "building the Rust flavour needs cargo"
    project = generate(tmp_path / "ledger-feed", **{**ANSWERS, "flavour": "rust", "http_port": 18129})
    _, worked = _readme_rust_blocks(project)
    _replace_service(project, worked, "[work]", "[orders]\nmax_items = 20\n")
    run(["cargo", "build", "--locked"], project, timeout=1800)
    binary = tmp_path / "bin" / "ledger-feed"
    binary.parent.mkdir()
    shutil.copy2(CARGO_TARGET_DIR / "debug" / "ledger-feed", binary)

    proc = plumbline("check-service", "--command", str(binary), "--project", str(project))

    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]
    skips = [line for line in proc.stdout.splitlines() if line.startswith("SKIP ")]
    assert skips and all("which this service replaced" in line for line in skips), skips
    assert "test_exactly_the_documented_metrics_with_types_and_help" not in " ".join(skips)
    assert re.search(r"every contract check passed, \d+ skipped", proc.stdout)


@pytest.mark.slow
@pytest.mark.rust
def test_check_service_passes_on_a_generated_rust_service(tmp_path_factory: pytest.TempPathFactory) -> None:
    assert shutil.which("cargo"), "building the Rust flavour needs cargo"
    built = build_service("rust", tmp_path_factory.mktemp("check-rust"), project_name="ledger-feed", http_port=18127)

    proc = plumbline("check-service", "--command", str(built.binary), "--project", str(built.project))

    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "every contract check passed" in proc.stdout and "SKIP" not in proc.stdout


@pytest.mark.slow
def test_check_service_url_runs_the_http_checks_on_a_running_service(own_python_service, tmp_path: Path) -> None:
    svc = Service(own_python_service, tmp_path).start()
    try:
        proc = plumbline("check-service", "--url", f"http://127.0.0.1:{svc.port}",
                         "--project", str(own_python_service.project))
    finally:
        svc.kill()

    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert re.search(r"^\d+ passed, \d+ deselected", proc.stdout, re.MULTILINE), proc.stdout[-2000:]


def make_contract(project: Path, answers_edit: dict[str, str] | None = None, env: dict[str, str] | None = None,
                  **variables: str) -> subprocess.CompletedProcess[str]:
    """`make contract`, as the generated CI runs it, with `VAR=value` arguments and CI variables in `env`."""
    if answers_edit:
        path = project / ".copier-answers.yml"
        path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **answers_edit}))
    ci = ("PLUMBLINE_TEMPLATE_URL", "GITHUB_ACTIONS")
    env = {**{k: v for k, v in os.environ.items() if k not in ci}, **(env or {})}
    return subprocess.run(["make", "--no-print-directory", "contract", *(f"{k}={v}" for k, v in variables.items())],
                          cwd=project, env=env, text=True, capture_output=True, timeout=900, check=False)


def test_make_contract_installs_plumbline_from_the_recorded_template(in_line: Path, copy_of, tmp_path: Path) -> None:
    """Where `make contract` (the generated CI's contract step) takes plumbline from: `_src_path`
    at `_commit`, or PLUMBLINE_TEMPLATE_URL; a local path out of reach says so and stops."""
    project = copy_of(in_line)
    cases = [
        ("gh:acme/plumbline", "v1.2.0", "git+https://github.com/acme/plumbline@v1.2.0"),
        ("gl:acme/plumbline", "v1.2.0-3-g1a2b3c4", "git+https://gitlab.com/acme/plumbline@1a2b3c4"),
        ("https://git.acme.example/ops/plumbline.git", "v1.2.0", "git+https://git.acme.example/ops/plumbline.git@v1.2.0"),
        ("git@github.com:acme/plumbline.git", "v1.2.0", "git+ssh://git@github.com/acme/plumbline.git@v1.2.0"),
    ]
    for src, commit, spec in cases:
        proc = make_contract(project, {"_src_path": src, "_commit": commit}, UVX="echo")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == [
            f"make contract: plumbline from {spec}",
            f"--from {spec} plumbline check-service --command .venv/bin/ledger-feed --project .",
        ], proc.stdout

    gone = make_contract(project, {"_src_path": str(tmp_path / "gone"), "_commit": "v1.2.0"}, UVX="false")
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.splitlines() == [
        f"make contract: not run: _src_path is the local path '{tmp_path / 'gone'}', out of reach here; "
        "set PLUMBLINE_TEMPLATE_URL to the template's URL"]
    on_github = make_contract(project, env={"GITHUB_ACTIONS": "true"}, UVX="false")
    assert on_github.returncode == 0 and on_github.stdout.splitlines()[1] == (
        f"::warning title=Contract check not run::{gone.stdout.strip()}")
    override = make_contract(project, env={"PLUMBLINE_TEMPLATE_URL": "https://mirror.example/plumbline"}, UVX="echo")
    assert override.stdout.splitlines()[0] == "make contract: plumbline from git+https://mirror.example/plumbline@v1.2.0"


@pytest.mark.slow
def test_make_contract_checks_the_built_service(repo: TemplateRepo, tmp_path: Path) -> None:
    """The generated CI's contract step, run here: plumbline installed by uv from the template the
    project records, its contract suite against the service `make setup` built."""
    project = render(repo, tmp_path / "ledger-feed", repo.head.tag, {**ANSWERS, "http_port": 18128})
    subprocess.run(["make", "setup"], cwd=project, check=True, capture_output=True, timeout=900)

    proc = make_contract(project, CHECK_SERVICE_FLAGS="-- -k 'test_http or test_cli'")

    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.stdout.splitlines()[0] == f"make contract: plumbline from git+file://{repo.path}@{repo.head.tag}"
    assert "plumbline check-service: every contract check passed" in proc.stdout
    assert "/plumbline/suite/contract" in proc.stderr, "the suite of the plumbline installed from the template"
    # a service broken on purpose fails the step, naming the rule
    health = project / "src" / "ledger_feed" / "health.py"
    health.write_text(health.read_text().replace('return (200, "ok") if fresh', 'return (500, "broken") if fresh'))
    broken = make_contract(project, CHECK_SERVICE_FLAGS="-- -k test_http")
    assert broken.returncode != 0
    assert "FAIL Contract §5: the HTTP endpoints" in broken.stdout, broken.stdout[-3000:]


class _NotFound(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def not_found_server():
    """An HTTP server that answers 404 to everything: no route of the contract."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_check_service_url_fails_on_a_server_without_the_endpoints(in_line: Path) -> None:
    with not_found_server() as url:
        proc = plumbline("check-service", "--url", url, "--project", str(in_line))

    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "FAIL Contract §5: the HTTP endpoints, their bodies and status codes: " \
           "test_live_and_ready_answer_ok[external]" in proc.stdout, proc.stdout[-4000:]
    assert "test_exactly_the_documented_metrics_with_types_and_help[external]" in proc.stdout


def test_renders_with_the_speedups_are_copier_s_own(repo: TemplateRepo, tmp_path: Path) -> None:
    """The audit's renders reuse compiled Jinja code and parsed copier.yml across renders: the
    bytes must be those of a plain `run_copy`. Both run in processes of their own, so that
    the speedups never touch this test session's Copier."""
    tree = tmp_path / "tree"
    tree.mkdir()
    git(repo.path, "archive", "-o", str(tmp_path / "tree.tar"), repo.head.commit)
    subprocess.run(["tar", "-xf", str(tmp_path / "tree.tar"), "-C", str(tree)], check=True)
    ours_script = (
        "import json, sys\nfrom pathlib import Path\nfrom plumbline.render import render_tree\n"
        "answers = json.loads(sys.argv[3])\nrender_tree(sys.argv[1], {**answers, 'project_name': 'warm-up'})\n"
        "for path, data in render_tree(sys.argv[1], answers).items():\n"
        "    (Path(sys.argv[2]) / path).parent.mkdir(parents=True, exist_ok=True)\n"
        "    (Path(sys.argv[2]) / path).write_bytes(data)\n"
    )
    plain_script = (
        "import json, sys, warnings\nfrom copier import run_copy\nwarnings.simplefilter('ignore')\n"
        "run_copy(sys.argv[1], sys.argv[2], data=json.loads(sys.argv[3]), defaults=True, unsafe=True, quiet=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    for index, answers in enumerate([FULL, {**FULL, "flavour": "rust", "project_name": "abc-def"}]):
        trees = []
        for kind, script in (("ours", ours_script), ("plain", plain_script)):
            dst = tmp_path / f"{kind}{index}"
            subprocess.run([sys.executable, "-c", script, str(tree), str(dst), json.dumps(answers)], env=env, check=True)
            trees.append({p.relative_to(dst).as_posix(): p.read_bytes() for p in sorted(dst.rglob("*")) if p.is_file()})
        ours, plain = trees
        assert ours.keys() == plain.keys()
        assert [p for p in ours if ours[p] != plain[p]] == []


def test_the_fleet_workflow_is_valid_and_opt_in() -> None:
    workflow = TEMPLATE / ".github" / "workflows" / "fleet-audit.yml"
    for cmd in (["check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(workflow)],
                ["zizmor", "--offline", "--min-severity", "medium", "--format", "plain", str(workflow)]):
        assert shutil.which(cmd[0]), f"{cmd[0]} is needed to check the fleet workflow"
        proc = subprocess.run(cmd, cwd=TEMPLATE, text=True, capture_output=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    data = yaml.safe_load(workflow.read_text())
    assert set(data[True]) == {"workflow_dispatch", "schedule"}  # YAML 1.1 reads `on` as True
    steps = data["jobs"]["audit"]["steps"]
    audit = next(s for s in steps if s.get("name") == "Audit")
    assert "--repos .github/fleet-repos.txt" in audit["run"] and "GITHUB_STEP_SUMMARY" in audit["run"]
    assert audit["if"] == "steps.list.outputs.present == 'true'"


def test_the_gitlab_fleet_job_is_valid_and_opt_in(tmp_path: Path) -> None:
    ci = TEMPLATE / ".gitlab-ci.yml"
    for cmd in (["check-jsonschema", "--builtin-schema", "vendor.gitlab-ci", str(ci)],
                ["yamllint", "--strict", "-d", "{extends: default, rules: {line-length: {max: 130}, document-start: disable}}",
                 str(ci)]):
        assert shutil.which(cmd[0]), f"{cmd[0]} is needed to check the fleet job"
        proc = subprocess.run(cmd, cwd=TEMPLATE, text=True, capture_output=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = yaml.safe_load(ci.read_text())
    jobs = {name: job for name, job in doc.items() if isinstance(job, dict) and "script" in job}
    assert list(jobs) == ["fleet-audit"], "the template repository runs nothing else on GitLab"
    job = jobs["fleet-audit"]
    assert job["rules"] == [{"if": '$FLEET_AUDIT == "true" && ($CI_PIPELINE_SOURCE == "schedule" || '
                                   '$CI_PIPELINE_SOURCE == "web")'}]
    script = "\n".join(job["script"])
    assert "plumbline audit --repos .gitlab/fleet-repos.txt --template . --format markdown > audit.md" in script
    assert job["artifacts"]["paths"] == ["audit.md"] and job["artifacts"]["when"] == "always"
    assert shutil.which("shellcheck"), "shellcheck is needed to check the fleet job's script"
    (tmp_path / "job.sh").write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + script + "\n")
    proc = subprocess.run(["shellcheck", str(tmp_path / "job.sh")], text=True, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.slow
def test_the_fleet_bench_runs(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(TEMPLATE / "bench" / "fleet_audit.py"), "--quick"],
                          text=True, capture_output=True, timeout=600, check=False)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^\|\s+10 \|", proc.stdout, re.MULTILINE), proc.stdout
    assert "`plumbline audit --repos` over 10 projects:" in proc.stdout
