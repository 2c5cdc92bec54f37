"""Contract §12: audit lines in their own file (`paths.audit_file`), the log's format with
`AUDIT` in place of the level: start, secrets file read, SIGHUP reload, shutdown."""

from __future__ import annotations

import hashlib
import re
import time

import pytest

from services import MONTHS, Service

pytestmark = pytest.mark.slow

SECRET = "tok-audit-Qm7c2R"
AUDIT_LINE = re.compile(
    rf"^(?:{'|'.join(MONTHS)}) \d\d \d\d:\d\d:\d\d\.\d{{3}} AUDIT (?P<message>[a-z][a-z ]*[a-z])"
    r"(?P<pairs>(?: [a-z_0-9]+=(?:\"(?:[^\"\\]|\\.)*\"|[^\s\"=]+))*)$"
)
PAIR = re.compile(r' (?P<key>[a-z_0-9]+)=(?P<value>"(?:[^"\\]|\\.)*"|[^\s"=]+)')


def audit_file(svc: Service):
    return svc.workdir / "log" / f"{svc.name}.audit.log"


def audit_lines(svc: Service) -> list[tuple[str, dict[str, str]]]:
    path = audit_file(svc)
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        match = AUDIT_LINE.match(line)
        assert match, f"not an audit line: {line!r}"
        pairs = {m["key"]: m["value"].strip('"') for m in PAIR.finditer(match["pairs"])}
        out.append((match["message"], pairs))
    return out


def wait_for(svc: Service, message: str, timeout: float = 10) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for found, pairs in audit_lines(svc):
            if found == message:
                return pairs
        time.sleep(0.05)
    raise svc.failure(f"no audit line {message!r} within {timeout}s: {audit_lines(svc)}")


def digest(check_config_stdout: str) -> str:
    """The contract's configuration digest: sha256 of check-config's lines without layers."""
    lines = check_config_stdout.splitlines()[:-1]
    text = "".join(line.rpartition(" (")[0] + "\n" for line in lines)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@pytest.mark.example  # the secret read is the example's work.upstream_token
def test_start_secrets_reload_and_shutdown_are_audited(spawn):
    svc = spawn(secrets=f'[work]\nupstream_token = "{SECRET}"\n')
    checked = svc.cli("check-config")
    svc.start()
    start = wait_for(svc, "start")
    svc.signal(1)  # SIGHUP
    reload = wait_for(svc, "reload")
    assert svc.stop() == 0

    lines = audit_lines(svc)
    assert [message for message, _ in lines] == ["start", "secrets file read", "reload", "shutdown"]
    assert start["pid"] == str(svc.pid)
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", start["version"])
    assert start["config_sha256"] == digest(checked.stdout), "the digest of check-config's values"
    assert lines[1][1] == {"path": str(svc.secrets_file), "mode": "0600"}
    assert reload == {"signal": "SIGHUP"}
    assert lines[3][1] == {"signal": "SIGTERM"}
    text = audit_file(svc).read_text()
    assert SECRET not in text and SECRET[4:] not in text
    assert " AUDIT " not in svc.stderr_text() and " AUDIT " not in svc.log_file_text(), (
        "audit lines go to their own file only"
    )


@pytest.mark.example  # the example's secret and [work] key
def test_the_digest_follows_the_configuration_and_not_the_secret(spawn, tmp_path):
    # One PREFIX for the three: the paths below it are part of the configuration.
    runs = [("one", {}), ("two", {"WORK__MAX_CONCURRENCY": "3"}), ("three", {})]
    digests = []
    for token, settings in runs:
        svc = spawn(prefix=tmp_path / "prefix", settings=settings)
        svc.write_secrets(f'[work]\nupstream_token = "{token}"\n')
        svc.start()
        digests.append(wait_for(svc, "start")["config_sha256"])
        assert svc.stop() == 0
    assert digests[0] != digests[1], "a changed value changes the digest"
    assert digests[0] == digests[2], "a changed secret does not (it is redacted)"


def test_the_audit_file_is_a_key(spawn, tmp_path):
    path = tmp_path / "elsewhere" / "audit.log"
    svc = spawn(settings={"PATHS__AUDIT_FILE": str(path)})
    svc.start()
    assert svc.stop() == 0

    messages = [line.split(" AUDIT ", 1)[1].split(" ")[0] for line in path.read_text().splitlines()]
    assert messages == ["start", "shutdown"]
    assert not audit_file(svc).exists()
