"""Contract §3: HTTPS with `http.tls_cert_file` and `http.tls_key_file`, reloaded on SIGHUP.

Every certificate is made here, at test time, with the `cryptography` package: a
self-signed certificate for 127.0.0.1, which the test's client trusts explicitly.
"""

from __future__ import annotations

import http.client
import os
import shutil
import ssl
import time
import warnings
from pathlib import Path

import pytest
from pki import make_pair

from services import Service, ServiceError

pytestmark = pytest.mark.slow

def client(*trusted: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for cert in trusted:
        context.load_verify_locations(cafile=cert)
    return context


def https(svc: Service, context: ssl.SSLContext, timeout: float = 5) -> http.client.HTTPSConnection:
    assert svc.port is not None
    return http.client.HTTPSConnection("127.0.0.1", svc.port, context=context, timeout=timeout)


def get(conn: http.client.HTTPSConnection, path: str) -> tuple[int, str]:
    conn.request("GET", path)
    answer = conn.getresponse()
    return answer.status, answer.read().decode()


def peer_der(conn: http.client.HTTPSConnection) -> bytes:
    assert conn.sock is not None
    der = conn.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    assert der is not None
    return bytes(der)


def wait_ready_https(svc: Service, context: ssl.SSLContext, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        conn = https(svc, context, timeout=1)
        try:
            status, body = get(conn, "/.well-known/ready")
            if status == 200:
                return
            last = f"{status} {body!r}"
        except OSError as error:
            last = repr(error)
        finally:
            conn.close()
        time.sleep(0.05)
    raise svc.failure(f"not ready over HTTPS within {timeout}s (last answer: {last})")


def start_https(spawn, pair_dir: Path) -> tuple[Service, Path, Path, bytes]:
    cert, key, der = make_pair(pair_dir, "first")
    svc = spawn(settings={"HTTP__TLS_CERT_FILE": str(cert), "HTTP__TLS_KEY_FILE": str(key)})
    svc.start(wait="listening")
    wait_ready_https(svc, client(cert))
    return svc, cert, key, der


def audit_messages(svc: Service) -> list[str]:
    path = svc.workdir / "log" / f"{svc.name}.audit.log"
    return [line.split(" AUDIT ", 1)[1] for line in path.read_text().splitlines()] if path.exists() else []


def wait_audit(svc: Service, start: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in audit_messages(svc) if m.startswith(start)]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise svc.failure(f"no audit line starting {start!r} within {timeout}s: {audit_messages(svc)}")


def test_https_serves_the_pair_with_tls_1_2_or_newer(spawn, tmp_path):
    svc, cert, _, der = start_https(spawn, tmp_path / "pki")

    conn = https(svc, client(cert))
    assert get(conn, "/.well-known/live") == (200, "ok")
    assert peer_der(conn) == der
    assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[union-attr]
    conn.close()
    old = client(cert)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, OSError)):
        get(https(svc, old), "/.well-known/live")
    with pytest.raises((http.client.HTTPException, OSError)):
        svc.get("/.well-known/live", timeout=2)  # plain HTTP is not served
    assert svc.stop() == 0


def test_sighup_serves_the_new_pair_while_an_open_connection_stays(spawn, tmp_path):
    svc, cert, key, first = start_https(spawn, tmp_path / "pki")
    new_cert, new_key, second = make_pair(tmp_path / "next", "second")
    trusted = client(cert, new_cert)
    kept = https(svc, trusted)
    assert get(kept, "/.well-known/live") == (200, "ok")

    shutil.copyfile(new_cert, cert)
    shutil.copyfile(new_key, key)
    svc.signal(1)  # SIGHUP
    assert wait_audit(svc, "certificate reloaded").startswith(f"certificate reloaded cert={cert}")

    fresh = https(svc, trusted)
    assert get(fresh, "/.well-known/live") == (200, "ok")
    assert peer_der(fresh) == second
    assert get(kept, "/.well-known/ready") == (200, "ok"), "the open connection keeps being served"
    assert peer_der(kept) == first
    fresh.close()
    kept.close()
    assert svc.stop() == 0


def test_a_failed_reload_keeps_the_old_pair(spawn, tmp_path):
    svc, cert, key, first = start_https(spawn, tmp_path / "pki")
    os.chmod(key, 0o644)

    svc.signal(1)  # SIGHUP
    line = svc.wait_for_message("cannot reload the TLS certificate, keeping the old one")
    wait_audit(svc, "certificate reload failed")

    expected = (
        f"TLS key file {key} has mode 0644; it must not be accessible by group or others (chmod 600 {key})"
    )
    assert line.level == "ERROR"
    assert line.fields["error"] == expected
    conn = https(svc, client(cert))
    assert get(conn, "/.well-known/live") == (200, "ok")
    assert peer_der(conn) == first
    conn.close()
    assert svc.stop() == 0


@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_a_key_file_open_to_others_is_refused(spawn, tmp_path, mode):
    cert, key, _ = make_pair(tmp_path / "pki", "first")
    os.chmod(key, mode)
    svc = spawn(settings={"HTTP__TLS_CERT_FILE": str(cert), "HTTP__TLS_KEY_FILE": str(key)})

    checked = svc.cli("check-config")
    with pytest.raises(ServiceError):
        svc.start(wait="listening", timeout=5)

    expected = (
        f"config error: TLS key file {key} has mode {mode:04o}; it must not be accessible "
        f"by group or others (chmod 600 {key})"
    )
    assert checked.returncode == 1
    assert checked.stderr.splitlines() == [expected]
    assert svc.wait(10) == 1
    assert expected in svc.stderr_text().splitlines()


def test_one_tls_file_without_the_other_is_an_error(spawn, tmp_path):
    cert, _, _ = make_pair(tmp_path / "pki", "first")
    svc = spawn(settings={"HTTP__TLS_CERT_FILE": str(cert)})

    checked = svc.cli("check-config")

    assert checked.returncode == 1
    assert checked.stderr.splitlines() == [
        "config error: http.tls_key_file (base): empty while the other TLS file is set; "
        "allowed both http.tls_cert_file and http.tls_key_file set, or neither"
    ]


def test_a_tls_file_that_does_not_exist_is_an_error(spawn, tmp_path):
    cert, _, _ = make_pair(tmp_path / "pki", "first")
    missing = tmp_path / "pki" / "missing.key"
    svc = spawn(settings={"HTTP__TLS_CERT_FILE": str(cert), "HTTP__TLS_KEY_FILE": str(missing)})

    checked = svc.cli("check-config")

    assert checked.returncode == 1
    assert checked.stderr.splitlines() == [
        f'config error: http.tls_key_file: "{missing}" is not a file; '
        "allowed a path to a PEM file, or empty (${PREFIX} is expanded)"
    ]


def test_prefix_is_expanded_in_the_tls_files(spawn, tmp_path):
    svc = spawn()
    cert, key, _ = make_pair(svc.prefix / "key" / "tls", "first")
    svc.settings.update(
        {"HTTP__TLS_CERT_FILE": "${PREFIX}/key/tls/first.crt", "HTTP__TLS_KEY_FILE": "${PREFIX}/key/tls/first.key"}
    )

    checked = svc.cli("check-config")

    assert checked.returncode == 0, checked.stderr
    assert f'http.tls_cert_file = "{cert}" (env)' in checked.stdout.splitlines()
    assert f'http.tls_key_file = "{key}" (env)' in checked.stdout.splitlines()
