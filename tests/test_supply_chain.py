"""Keeping generated projects current and safe: Renovate, `make audit`, pinned toolchains,
strict test settings, the files a team expects, and sp-repo-review on the Python flavour.

Each check runs the real tool: Renovate's config validator and Renovate itself (against a
template served by `git daemon` on loopback), cargo-deny, pip-audit (against an advisory
service on loopback), zizmor, yamllint, pre-commit and sp-repo-review.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import shutil
import socket
import subprocess
import threading
import tomllib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from copier import run_copy, run_update

from deploy_renders import tool, validate
from helpers import TEMPLATE, commit_all, generate, git, run

FLAVOURS = ["python", "rust"]
CI_PROVIDERS = ["github", "gitlab", "both", "none"]
DOCS = TEMPLATE / "docs" / "supply-chain.md"


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """One project for each flavour x ci_provider, rendered once for the module."""
    root = tmp_path_factory.mktemp("supply")
    return {
        (flavour, ci): generate(root / f"{flavour}-{ci}" / "order-router", flavour=flavour, ci_provider=ci)
        for flavour in FLAVOURS
        for ci in CI_PROVIDERS
    }


# ---------------------------------------------------------------- Renovate


@pytest.mark.slow
def test_renovate_config_validator_accepts_every_rendered_config(
    renders: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    configs = [root / "renovate.json" for root in renders.values()]
    assert all(path.is_file() for path in configs), "every generated project has renovate.json"
    # The validator is strict: an unknown option fails it (so a pass means something).
    broken = tmp_path / "renovate.json"
    broken.write_text(json.dumps({**json.loads(configs[0].read_text()), "scheduleTypo": ["weekly"]}))
    refused = validate(["renovate-config-validator", "--strict", str(broken)], tmp_path, expect_ok=False)
    assert "scheduleTypo" in refused.stdout + refused.stderr

    proc = validate(["renovate-config-validator", "--strict", *map(str, configs)], tmp_path)

    for path in configs:
        assert f"Validating {path}" in proc.stdout + proc.stderr


def test_renovate_config_asks_for_what_the_projects_need(renders: dict[tuple[str, str], Path]) -> None:
    config = json.loads((renders[("python", "github")] / "renovate.json").read_text())
    assert {"helpers:pinGitHubActionDigests", "docker:pinDigests"} <= set(config["extends"])
    assert config["lockFileMaintenance"]["enabled"] is True
    assert config["schedule"] and config["ignoreScripts"] is False
    (copier_rule,) = [r for r in config["packageRules"] if r.get("matchManagers") == ["copier"]]
    assert copier_rule["schedule"] == ["at any time"] and copier_rule["groupName"]
    # the copier version Renovate installs is the one the project's CI uses
    ci = (TEMPLATE / "template" / "{% if ci_github %}.github{% endif %}" / "workflows" / "template-update.yml").read_text()
    assert f'"copier{config["constraints"]["copier"]}"' in ci
    # every render carries the same template-owned file
    assert len({(root / "renovate.json").read_text() for root in renders.values()}) == 1


@contextlib.contextmanager
def git_daemon(base: Path) -> Iterator[str]:
    """`git daemon` serving the repositories under `base` on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    daemon = subprocess.Popen(
        ["git", "daemon", "--export-all", f"--base-path={base}", "--listen=127.0.0.1", f"--port={port}",
         "--reuseaddr", "--informative-errors", str(base)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        for _ in range(100):
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if daemon.poll() is not None:
                raise AssertionError(f"git daemon exited: {daemon.stderr.read().decode() if daemon.stderr else ''}")
            threading.Event().wait(0.1)
        yield f"git://127.0.0.1:{port}"
    finally:
        daemon.terminate()
        daemon.wait(10)
        if daemon.stderr:
            daemon.stderr.close()


def template_repo(dst: Path) -> Path:
    """The template's working tree as a git repository released as v1.0.0."""
    shutil.copytree(TEMPLATE, dst, ignore=shutil.ignore_patterns(".git", ".cache", "__pycache__", "bench", ".venv"))
    git(dst, "init", "--quiet", "--initial-branch=main")
    git(dst, "add", "--all")
    git(dst, "commit", "--quiet", "-m", "release 1.0.0")
    git(dst, "tag", "v1.0.0")
    return dst


def release(repo: Path, tag: str, change: Any) -> None:
    change(repo)
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", f"release {tag}")
    git(repo, "tag", tag)


def renovate_lookup(project: Path, cache: Path, manager: str = "copier") -> dict[str, Any]:
    """Renovate on the local platform (lookups only, nothing pushed): the updates it would propose."""
    env = {
        "PATH": f"{Path(tool('renovate')).parent}:{Path(tool('git')).parent}:/usr/bin:/bin",
        "HOME": str(cache), "LOG_LEVEL": "debug", "LOG_FORMAT": "json",
        "RENOVATE_PLATFORM": "local", "RENOVATE_BASE_DIR": str(cache),
        "RENOVATE_ENABLED_MANAGERS": json.dumps([manager]), "RENOVATE_ONBOARDING": "false",
    }
    proc = subprocess.run([tool("renovate")], cwd=project, env=env, text=True, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    found: dict[str, Any] = {"branches": None, "deps": []}
    for line in proc.stdout.splitlines():
        entry = json.loads(line) if line.startswith("{") else {}
        if entry.get("msg") == "packageFiles with updates":
            found["deps"] = [{**dep, "packageFile": pkg["packageFile"]}
                             for pkg in entry["config"].get(manager.removeprefix("custom."), []) for dep in pkg["deps"]]
        match = re.fullmatch(r"Returning (\d+) branch\(es\)", entry.get("msg", ""))
        if match:
            found["branches"] = int(match[1])
    assert found["branches"] is not None, "Renovate did not reach branch planning:\n" + proc.stdout[-4000:]
    return found


@pytest.mark.slow
def test_renovate_finds_the_newer_template_release_on_a_local_git_server(tmp_path: Path) -> None:
    # Arrange: the template released as v1.0.0 behind git daemon; a project generated from its URL
    served = tmp_path / "served"
    repo = template_repo(served / "plumbline")
    with git_daemon(served) as base:
        url = f"{base}/plumbline"
        project = tmp_path / "order-router"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_copy(url, str(project), data={"project_name": "order-router"}, defaults=True, unsafe=True,
                     quiet=True, vcs_ref="v1.0.0")
        answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
        assert (answers["_src_path"], answers["_commit"]) == (url, "v1.0.0")
        commit_all(project, "generated")

        # Act / Assert: up to date, no branch; after v1.1.0, one branch with the template update
        # (a cache of its own for each run: Renovate caches the tags it looked up)
        current = renovate_lookup(project, tmp_path / "renovate-before")
        release(repo, "v1.1.0", lambda r: (r / "NEWS").write_text("a newer release\n"))
        outdated = renovate_lookup(project, tmp_path / "renovate-after")

    assert current["branches"] == 0 and all(not dep.get("updates") for dep in current["deps"])
    (dep,) = outdated["deps"]
    assert (dep["depName"], dep["currentValue"], dep["datasource"]) == (url, "v1.0.0", "git-tags")
    (update,) = dep["updates"]
    assert update["newValue"] == "v1.1.0"
    # the project's renovate.json groups it under its own name, in a branch of its own
    assert update["branchName"] == "renovate/plumbline-template"
    assert outdated["branches"] == 1


@pytest.mark.slow
def test_renovate_reads_the_tools_pinned_outside_the_lock_files(tmp_path: Path) -> None:
    crate = generate(tmp_path / "order-router", flavour="rust")
    commit_all(crate, "generated")
    channel = tomllib.loads((crate / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
    makefile = (crate / "Makefile").read_text()

    found = renovate_lookup(crate, tmp_path / "renovate", manager="custom.regex")

    extracted = {(dep["packageFile"], dep["depName"], dep["currentValue"]) for dep in found["deps"]}
    pinned = set(re.findall(r"(?:run|uvx) ([a-z][a-z0-9-]*)@(\d+\.\d+\.\d+)", makefile))
    assert {"yamllint", "zizmor"} <= {name for name, _ in pinned}
    assert extracted == {("rust-toolchain.toml", "rust", channel)} | {("Makefile", n, v) for n, v in pinned}


@pytest.mark.slow
def test_a_teams_renovate_rules_survive_a_template_update(tmp_path: Path) -> None:
    repo = template_repo(tmp_path / "plumbline")
    project = tmp_path / "order-router"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_copy(str(repo), str(project), data={"project_name": "order-router"}, defaults=True, unsafe=True,
                 quiet=True, vcs_ref="v1.0.0")
    config_path = project / "renovate.json"
    config = json.loads(config_path.read_text())
    team_rule = {"description": "the team's rule", "matchPackageNames": ["pydantic"], "automerge": True}
    config["packageRules"].append(team_rule)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    commit_all(project, "generated, and the team's Renovate rule")

    def new_schedule(root: Path) -> None:
        path = root / "template" / "renovate.json"
        path.write_text(path.read_text().replace('"before 6am on monday"', '"before 5am on tuesday"'))

    release(repo, "v1.1.0", new_schedule)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_update(str(project), defaults=True, unsafe=True, quiet=True, overwrite=True, vcs_ref="v1.1.0")

    merged = json.loads(config_path.read_text())
    assert merged["schedule"] == ["before 5am on tuesday"]
    assert merged["packageRules"][-1] == team_rule


# ---------------------------------------------------------------- make audit


@pytest.mark.slow
@pytest.mark.rust
@pytest.mark.parametrize(("opentelemetry", "license_"), [(False, "MIT"), (True, "proprietary")])
def test_cargo_deny_accepts_the_locked_crates(tmp_path: Path, opentelemetry: bool, license_: str) -> None:
    crate = generate(tmp_path / "order-router", flavour="rust", opentelemetry=opentelemetry, license=license_)
    # advisories need the RustSec database from the network: CI's audit job checks them
    validate(["cargo-deny", "--offline", "--locked", "check", "licenses", "bans", "sources"], crate)

    # and it refuses: a license taken off the list fails the check, naming a crate under it
    deny = crate / "deny.toml"
    deny.write_text(deny.read_text().replace('    "ISC",\n', ""))
    refused = validate(["cargo-deny", "--offline", "--locked", "check", "licenses"], crate, expect_ok=False)
    assert "ISC" in refused.stderr and "rustls" in refused.stderr


class Advisories(http.server.BaseHTTPRequestHandler):
    """An OSV query endpoint on loopback: one advisory against every version of `vulnerable`."""

    vulnerable = ""

    def do_POST(self) -> None:
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        name = query["package"]["name"]
        vulns = [{
            "id": "PYSEC-0000-TEST", "summary": "an advisory of the test", "aliases": [],
            "affected": [{"package": {"name": name, "ecosystem": "PyPI"},
                          "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "99999"}]}]}],
        }] if name == self.vulnerable else []
        body = json.dumps({"vulns": vulns} if vulns else {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_python_audit_fails_on_an_advisory_against_a_locked_package(tmp_path: Path) -> None:
    project = generate(tmp_path / "order-router", flavour="python")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Advisories)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    flags = f"PIP_AUDIT_FLAGS=--vulnerability-service osv --osv-url http://127.0.0.1:{server.server_port}/v1/query"
    try:
        Advisories.vulnerable = ""
        clean = run(["make", "audit-deps", flags], project, timeout=300, check=False)
        Advisories.vulnerable = "pydantic"
        flagged = run(["make", "audit-deps", flags], project, timeout=300, check=False)
    finally:
        server.shutdown()
        server.server_close()

    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "No known vulnerabilities found" in clean.stdout + clean.stderr
    assert flagged.returncode != 0
    assert "pydantic" in flagged.stdout and "PYSEC-0000-TEST" in flagged.stdout


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_audit_runs_zizmor_on_the_workflows_and_lint_runs_yamllint(
    renders: dict[tuple[str, str], Path], flavour: str
) -> None:
    for ci in CI_PROVIDERS:
        root = renders[(flavour, ci)]
        proc = run(["make", "audit-ci", "lint-yaml", f"YAMLLINT={tool('yamllint')}"], root, timeout=300)
        if ci in ("github", "both"):
            assert "zizmor" in proc.stdout and "No findings" in proc.stdout + proc.stderr
        else:
            assert "no GitHub workflows" in proc.stdout
        # `make lint` depends on the YAML check, and the same .yamllint.yml serves both
        dry = run(["make", "--dry-run", "lint", f"YAMLLINT={tool('yamllint')}"], root).stdout
        assert f"{tool('yamllint')} --strict ." in dry


def test_ci_runs_the_audit_and_rust_ci_checks_the_declared_rust_version(renders: dict[tuple[str, str], Path]) -> None:
    for (flavour, ci), root in renders.items():
        if ci in ("github", "both"):
            audit = yaml.safe_load((root / ".github" / "workflows" / "audit.yml").read_text())
            assert any("make audit" in step.get("run", "") for step in audit["jobs"]["audit"]["steps"])
            assert (root / ".github" / "workflows" / "msrv.yml").exists() == (flavour == "rust")
        if ci in ("gitlab", "both"):
            gitlab = yaml.safe_load((root / ".gitlab-ci.yml").read_text())
            assert "make audit-deps" in gitlab["audit"]["script"]
            assert ("msrv" in gitlab) == (flavour == "rust")
            if flavour == "rust":
                assert gitlab["msrv"]["script"] == ["make msrv"]


# ---------------------------------------------------------------- toolchains


@pytest.mark.slow
@pytest.mark.rust
def test_rust_toolchain_is_pinned_and_rustup_uses_it(renders: dict[tuple[str, str], Path]) -> None:
    crate = renders[("rust", "github")]
    toolchain = tomllib.loads((crate / "rust-toolchain.toml").read_text())["toolchain"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", toolchain["channel"])
    assert {"clippy", "rustfmt"} <= set(toolchain["components"])
    # rustup picks the file in the project; CI installs what the file names
    version = run(["rustc", "--version"], crate).stdout
    assert version.startswith(f"rustc {toolchain['channel']} ")
    action = (crate / ".github" / "actions" / "setup" / "action.yml").read_text()
    assert "run: rustup toolchain install --no-self-update" in action
    gitlab = yaml.safe_load((renders[("rust", "gitlab")] / ".gitlab-ci.yml").read_text())
    assert "rustup toolchain install --no-self-update" in gitlab[".toolchain"]["before_script"]


@pytest.mark.slow
@pytest.mark.rust
@pytest.mark.parametrize("opentelemetry", [False, True], ids=["plain", "opentelemetry"])
def test_no_locked_crate_needs_a_newer_rust_than_the_declared_rust_version(tmp_path: Path, opentelemetry: bool) -> None:
    crate = generate(tmp_path / "order-router", flavour="rust", opentelemetry=opentelemetry)
    manifest = tomllib.loads((crate / "Cargo.toml").read_text())
    declared = tuple(int(x) for x in manifest["package"]["rust-version"].split("."))
    assert "lints" in manifest and manifest["lints"]["clippy"]

    meta = json.loads(run(["cargo", "metadata", "--offline", "--locked", "--format-version", "1"], crate).stdout)

    too_new = [
        f"{p['name']} {p['version']} needs {p['rust_version']}"
        for p in meta["packages"]
        if p.get("rust_version") and tuple(int(x) for x in p["rust_version"].split(".")[:2]) > declared[:2]
    ]
    assert too_new == [], f"rust-version {manifest['package']['rust-version']} is not honest: {too_new}"


def test_pytest_is_strict_and_ruff_takes_its_target_from_requires_python(renders: dict[tuple[str, str], Path]) -> None:
    pyproject = tomllib.loads((renders[("python", "github")] / "pyproject.toml").read_text())
    pytest_ini = pyproject["tool"]["pytest"]["ini_options"]
    assert {"--strict-config", "--strict-markers"} <= set(pytest_ini["addopts"])
    assert pytest_ini["xfail_strict"] is True and pytest_ini["filterwarnings"][0] == "error"
    assert "target-version" not in pyproject["tool"]["ruff"] and pyproject["project"]["requires-python"]


@pytest.mark.slow
def test_generated_pytest_fails_a_warning_an_unknown_marker_and_a_passing_xfail(tmp_path: Path) -> None:
    project = generate(tmp_path / "order-router", flavour="python")
    run(["make", "setup"], project, timeout=600)
    probes = {
        "warning": "import warnings\n\ndef test_probe():\n    warnings.warn('x', DeprecationWarning)\n",
        "marker": "import pytest\n\n@pytest.mark.not_declared\ndef test_probe():\n    pass\n",
        "xfail": "import pytest\n\n@pytest.mark.xfail(reason='probe')\ndef test_probe():\n    pass\n",
        "plain": "def test_probe():\n    pass\n",
    }
    outcomes = {}
    for name, body in probes.items():
        path = project / "tests" / f"test_probe_{name}.py"
        path.write_text(body)
        outcomes[name] = run(["uv", "run", "--locked", "pytest", "-q", str(path)], project, check=False).returncode
        path.unlink()
    # pytest's exit codes: 1 a test failed, 2 an error stopped collection
    assert outcomes == {"warning": 1, "marker": 2, "xfail": 1, "plain": 0}


# ---------------------------------------------------------------- files a team expects


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_team_files_are_there_and_valid(renders: dict[tuple[str, str], Path], flavour: str, tmp_path: Path) -> None:
    root = generate(tmp_path / "order-router", flavour=flavour, author_email="payments@corp.example",
                    author_name="Payments", ci_provider="both")
    assert (root / "CODEOWNERS").read_text().splitlines()[-1] == "* payments@corp.example"
    assert "payments@corp.example" in (root / "SECURITY.md").read_text()
    editorconfig = (root / ".editorconfig").read_text()
    assert "root = true" in editorconfig and "[Makefile]\nindent_style = tab" in editorconfig
    validate(["pre-commit", "validate-config", ".pre-commit-config.yaml"], root)
    config = yaml.safe_load((root / ".pre-commit-config.yaml").read_text())
    (local,) = [repo for repo in config["repos"] if repo["repo"] == "local"]
    assert [hook["entry"] for hook in local["hooks"]] == ["make lint"]
    # the zizmor hook runs the version the Makefile pins
    (zizmor,) = [repo for repo in config["repos"] if repo["repo"].endswith("/zizmor-pre-commit")]
    assert f"zizmor@{zizmor['rev'].removeprefix('v')}" in (root / "Makefile").read_text()
    for ci in CI_PROVIDERS:
        assert (renders[(flavour, ci)] / ".pre-commit-config.yaml").exists()


@pytest.mark.slow
def test_pre_commit_runs_make_lint_and_fails_with_it(tmp_path: Path) -> None:
    # GitLab CI: the config holds the local hook only (the zizmor hook is cloned from GitHub,
    # which the tests cannot reach; `pre-commit validate-config` checks it above)
    project = generate(tmp_path / "order-router", flavour="python", ci_provider="gitlab")
    run(["make", "setup"], project, timeout=600)
    commit_all(project, "generated")
    env = {"PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}
    hook = [tool("pre-commit"), "run", "--all-files", "--config", ".pre-commit-config.yaml"]

    clean = run(hook, project, env=env, check=False)
    (project / "bad.yaml").write_text("key: value\nkey: again\n")  # a duplicate key: yamllint refuses it
    commit_all(project, "a bad YAML file")
    dirty = run(hook, project, env=env, check=False)

    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "make lint" in clean.stdout and "Passed" in clean.stdout
    assert dirty.returncode == 1 and "bad.yaml" in dirty.stdout and "key-duplicates" in dirty.stdout


MEASURED = re.compile(r"\b(?:measured|about \d|\d+(?:\.\d+)? ?(?:KiB|MiB|GiB|KB|MB|GB)\b|\d+(?:\.\d+)? ?s of CPU)", re.I)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_generated_files_quote_no_figures_measured_on_the_templates_machine(
    renders: dict[tuple[str, str], Path], flavour: str
) -> None:
    root = renders[(flavour, "github")]
    for name in ("README.md", "pyproject.toml", "Cargo.toml", "Makefile"):
        if (root / name).exists():
            found = [line for line in (root / name).read_text().splitlines() if MEASURED.search(line)]
            assert found == [], f"{name} quotes measured figures: {found}"


# ---------------------------------------------------------------- sp-repo-review


def documented_exceptions() -> dict[str, str]:
    """The sp-repo-review checks the docs list as not applying to a service, with the reason."""
    rows = re.findall(r"^\| `([A-Z]+\d+)` \| (.+?) \|$", DOCS.read_text(), re.M)
    return dict(rows)


@pytest.mark.parametrize("ci", CI_PROVIDERS)
def test_sp_repo_review_passes_every_check_that_applies(renders: dict[tuple[str, str], Path], ci: str) -> None:
    root = renders[("python", ci)]
    proc = validate(["sp-repo-review", "--format", "json", "."], root)
    checks = json.loads(proc.stdout)["checks"]
    failed = {name: check["description"] for name, check in checks.items() if check["result"] is False}
    assert failed == {}, failed
    assert sum(check["result"] is True for check in checks.values()) >= 20

    ignored = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["repo-review"]["ignore"]
    documented = documented_exceptions()
    expected = sorted(set(documented) - ({"GH100"} if ci in ("github", "both") else set()))
    assert sorted(ignored) == expected, "pyproject's ignore list and docs/supply-chain.md differ"
    assert all(len(reason) > 20 for reason in documented.values())
