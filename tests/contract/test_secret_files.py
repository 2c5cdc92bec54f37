"""Contract §2, §3: files holding secrets (the secrets file, the TLS key file) must be owned
by the user running the service and not be accessible by group or others.

The suite runs as root on CI: a file owned by `nobody` is someone else's file."""

from __future__ import annotations

import os
import pwd

import pytest
from pki import make_pair

pytestmark = pytest.mark.slow


def someone_else() -> int:
    uid = pwd.getpwnam("nobody").pw_uid
    if uid == os.geteuid():
        pytest.skip("the suite runs as nobody")  # skip-ok: no other user to give a file to
    return uid


def can_chown() -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")  # skip-ok: chown needs root


def test_a_secrets_file_of_another_user_is_refused(spawn):
    can_chown()
    other, me = someone_else(), os.geteuid()
    svc = spawn(fast=False)
    path = svc.write_secrets('[work]\nupstream_token = "s3cr3t-owner"\n')
    os.chown(path, other, -1)

    checked = svc.cli("check-config")

    assert checked.returncode == 1
    assert checked.stderr.splitlines() == [
        f"config error: secrets file {path} is owned by uid {other}; it must be owned by the user "
        f"running the service, uid {me} (chown {me} {path})"
    ]
    assert "s3cr3t-owner" not in checked.stdout + checked.stderr


def test_a_tls_key_of_another_user_open_to_others_gets_both_lines(spawn, tmp_path):
    can_chown()
    other, me = someone_else(), os.geteuid()
    cert, key, _ = make_pair(tmp_path / "pki", "first")
    os.chmod(key, 0o604)
    os.chown(key, other, -1)
    svc = spawn(settings={"HTTP__TLS_CERT_FILE": str(cert), "HTTP__TLS_KEY_FILE": str(key)})

    checked = svc.cli("check-config")
    started = svc.cli("run", timeout=20)

    expected = [
        f"config error: TLS key file {key} has mode 0604; it must not be accessible by group or "
        f"others (chmod 600 {key})",
        f"config error: TLS key file {key} is owned by uid {other}; it must be owned by the user "
        f"running the service, uid {me} (chown {me} {key})",
    ]
    assert (checked.returncode, checked.stderr.splitlines()) == (1, expected)
    assert (started.returncode, started.stderr.splitlines()) == (1, expected)


def test_the_certificate_and_ca_bundle_are_not_secret_files(spawn, tmp_path):
    """The certificate and the CA bundle are public: readable by others, owned by anyone."""
    cert, key, _ = make_pair(tmp_path / "pki", "first")
    os.chmod(cert, 0o644)
    if os.geteuid() == 0:
        os.chown(cert, someone_else(), -1)
    svc = spawn(
        settings={
            "HTTP__TLS_CERT_FILE": str(cert),
            "HTTP__TLS_KEY_FILE": str(key),
            "HTTP__CLIENT_CA_FILE": str(cert),
        }
    )

    checked = svc.cli("check-config")

    assert checked.returncode == 0, checked.stderr
