"""Rules of the standard checked on a project's files directly, generated or not.

Each check returns findings; a tool a check needs and cannot find raises AuditError.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from plumbline.errors import AuditError

# SERVICE-CONTRACT §3: the platform's keys, which every service's base configuration states,
# in the order `check-config` prints them (the service part's keys come before the last
# section's, `apm`). The one list: the audit's config-keys rule and the contract suite
# (tests/contract/test_config.py) both read it. One key a line.
CONTRACT_KEYS = (
    "http.host",
    "http.port",
    "http.header_timeout_secs",
    "http.idle_timeout_secs",
    "http.write_timeout_secs",
    "http.max_connections",
    "http.tls_cert_file",
    "http.tls_key_file",
    "http.client_ca_file",
    "log.filter",
    "log.target",
    "paths.log_file",
    "paths.pid_file",
    "paths.heartbeat_file",
    "paths.data_dir",
    "paths.tmp_dir",
    "paths.tmp_max_age_secs",
    "paths.audit_file",
    "heartbeat.interval_secs",
    "shutdown.timeout_secs",
    "runtime.worker_threads",
    "backup.dir",
    "backup.keep",
    "apm.url",
)
SECRET_NAME = re.compile(r"token|password|passwd|secret|key", re.IGNORECASE)
# A key naming where a secret lives is not a secret: http.tls_key_file = "/srv/key/tls.key".
PATH_SUFFIXES = ("_file", "_path", "_dir")
URL_CREDENTIALS = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s:]*:[^/?#@\s]+@")
MAX_EXPOSURE = 1.5
EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")
USES = re.compile(r"""^\s*(?:-\s*)?uses:\s*["']?([^"'\s#]+)""")
FULL_SHA = re.compile(r"@[0-9a-f]{40}$")
SKIP_DIRS = {".git", ".venv", "target", "node_modules", ".tox", "__pycache__"}


@dataclass(frozen=True)
class Finding:
    rule: str
    level: str  # "fail" or "warn"
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "level": self.level, "path": self.path, "message": self.message}


def _walk(root: Path, pattern: str) -> Iterator[Path]:
    for path in sorted(root.rglob(pattern)):
        rel = path.relative_to(root)
        if not SKIP_DIRS.intersection(rel.parts) and path.is_file():
            yield path


def _flatten(table: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


MISSING_KEY = "contract key {} is missing"


def later_keys(findings: list[Finding], release_config: bytes) -> list[Finding]:
    """A contract key missing from the project and from its own release's cfg/config.toml came
    with a later release: a warning (the `release` finding fails, and `copier update` brings it)."""
    try:
        keys = dict(_flatten(tomllib.loads(release_config.decode("utf-8"))))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return findings
    out = []
    for finding in findings:
        key = next((k for k in CONTRACT_KEYS if finding.message == MISSING_KEY.format(k)), None)
        if finding.rule == "config-keys" and key is not None and key not in keys:
            finding = Finding(
                "config-keys", "warn", finding.path, f"{finding.message}: a later release adds it (copier update brings it)"
            )
        out.append(finding)
    return out


def check_config(project: Path) -> list[Finding]:
    """cfg/config.toml parses, states every contract key, and holds no secret."""
    rel = "cfg/config.toml"
    path = project / rel
    if not path.is_file():
        return [Finding("config-keys", "fail", rel, "no base configuration (SERVICE-CONTRACT §3)")]
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return [Finding("config-keys", "fail", rel, f"not valid TOML: {exc}")]
    flat = dict(_flatten(config))
    findings = [Finding("config-keys", "fail", rel, MISSING_KEY.format(key)) for key in CONTRACT_KEYS if key not in flat]
    for key, value in flat.items():
        name = key.rsplit(".", 1)[-1]
        values = value if isinstance(value, list) else [value]
        if SECRET_NAME.search(name) and not name.endswith(PATH_SUFFIXES) and value not in ("", None, [], {}):
            findings.append(
                Finding("config-secrets", "fail", rel, f"{key} holds a value: secrets go in ${{PREFIX}}/key/env.toml")
            )
        elif any(isinstance(v, str) and URL_CREDENTIALS.match(v) for v in values):
            findings.append(Finding("config-secrets", "fail", rel, f"{key} is a URL with user:password in it"))
    return findings


def systemd_units(project: Path) -> list[Path]:
    return list(_walk(project, "*.service"))


def check_systemd(project: Path) -> list[Finding]:
    """Each systemd unit's exposure (`systemd-analyze security --offline=yes`) is at most 1.5."""
    units = systemd_units(project)
    if not units:
        return []
    tool = shutil.which("systemd-analyze")
    if tool is None:
        raise AuditError(
            "systemd-analyze is not installed: it checks the exposure of the systemd units (apt-get install systemd)"
        )
    findings = []
    for unit in units:
        rel = unit.relative_to(project).as_posix()
        proc = subprocess.run([tool, "security", "--offline=yes", str(unit)], capture_output=True, text=True, check=False)
        match = EXPOSURE.search(proc.stdout)
        if match is None:
            last = (proc.stderr.strip().splitlines() or ["no exposure level in its output"])[-1]
            findings.append(Finding("systemd-exposure", "fail", rel, f"systemd-analyze security cannot read the unit: {last}"))
        elif float(match[1]) > MAX_EXPOSURE:
            findings.append(Finding("systemd-exposure", "fail", rel, f"exposure {match[1]} is above {MAX_EXPOSURE}"))
    return findings


def check_ci_pins(project: Path) -> list[Finding]:
    """Every GitHub action a workflow or local action uses is pinned by a full commit SHA."""
    files = (
        [*_walk(project / ".github", "*.yml"), *_walk(project / ".github", "*.yaml")] if (project / ".github").is_dir() else []
    )
    findings = []
    for path in files:
        rel = path.relative_to(project).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            match = USES.match(line)
            if not match:
                continue
            ref = match[1]
            if ref.startswith("./") or (ref.startswith("docker://") and "@sha256:" in ref):
                continue
            if not FULL_SHA.search(ref):
                findings.append(Finding("ci-pinned", "fail", f"{rel}:{number}", f"{ref} is not pinned by a full commit SHA"))
    return findings


ANSWERS = ".copier-answers.yml"
REQUIRED_ANSWERS = ("_src_path", "_commit", "project_name", "flavour")


def read_answers(project: Path) -> tuple[dict[str, Any] | None, list[Finding]]:
    """The answers file, if present and well formed; otherwise the findings that say why not."""
    path = project / ANSWERS
    if not path.is_file():
        return None, [
            Finding("answers", "fail", ANSWERS, "no answers file: not generated from the template, or the file was removed")
        ]
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return None, [Finding("answers", "fail", ANSWERS, f"not valid YAML: {str(exc).splitlines()[0]}")]
    if not isinstance(data, dict):
        return None, [Finding("answers", "fail", ANSWERS, "not a mapping of answers")]
    missing = [key for key in REQUIRED_ANSWERS if data.get(key) in (None, "")]
    if missing:
        return None, [Finding("answers", "fail", ANSWERS, f"missing {', '.join(missing)}")]
    return data, []


def direct_rules(project: Path) -> list[Finding]:
    return [*check_config(project), *check_systemd(project), *check_ci_pins(project)]
