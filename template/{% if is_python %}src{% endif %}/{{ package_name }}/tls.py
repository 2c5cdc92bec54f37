"""HTTPS: the server's certificate pair, loaded at start and reloaded on SIGHUP.

With `http.tls_cert_file` and `http.tls_key_file` set, the server speaks TLS 1.2 or newer
with the pair. SIGHUP loads the pair again into the same `ssl.SSLContext`: connections
already open keep the certificate they were made with, new ones get the new pair. A pair
that fails to load (unreadable, mismatched, or a key file open to group or others) leaves
the old pair in place and is logged, with its audit line.

The upstream client (`client_context`) verifies certificates against the system's
authorities, plus those of `http.client_ca_file` when set.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path

from . import audit
from .config import PEM_ALLOWED, Http, secret_file_problems
from .logging import get_logger

log = get_logger(__name__)


class TlsError(Exception):
    """A TLS file cannot be used; the message says which and why, one line per problem."""


def _missing(key: str, path: Path) -> str | None:
    if path.is_file():
        return None
    return f"{key}: {json.dumps(str(path))} is not a file; {PEM_ALLOWED}"


def _load(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    missing = [
        line for line in (_missing("http.tls_cert_file", cert), _missing("http.tls_key_file", key)) if line
    ]
    if missing:
        raise TlsError("\n".join(missing))
    problems = secret_file_problems(key, "TLS key file")
    if problems:
        raise TlsError("\n".join(problem.removeprefix("config error: ") for problem in problems))
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise TlsError(f"cannot load the certificate pair {cert} and {key}: {_reason(error)}") from None


def _reason(error: OSError | ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    return error.strerror or str(error)


def _new_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class ServerTls:
    """The server's `ssl.SSLContext` and the files it reloads from."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key
        self.context = _new_context()
        _load(self.context, cert, key)

    def reload(self) -> bool:
        """Load the pair again for new connections; on failure keep the old one. Whether it loaded."""
        try:
            # A scratch context first: a bad pair must not leave the live one half-changed.
            _load(_new_context(), self.cert, self.key)
            _load(self.context, self.cert, self.key)
        except TlsError as error:
            log.error("cannot reload the TLS certificate, keeping the old one", error=str(error))
            audit.record("certificate reload failed", cert=self.cert, error=str(error))
            return False
        log.info("TLS certificate reloaded", cert=self.cert)
        audit.record("certificate reloaded", cert=self.cert, key=self.key)
        return True


def server(http: Http) -> ServerTls | None:
    """The server's TLS, or None when `http.tls_cert_file` and `http.tls_key_file` are empty."""
    if not (http.tls_cert_file and http.tls_key_file):
        return None
    return ServerTls(Path(http.tls_cert_file), Path(http.tls_key_file))


def client_context(http: Http) -> ssl.SSLContext:
    """The upstream client's context: certificates verified, `http.client_ca_file` trusted too."""
    context = ssl.create_default_context()
    if http.client_ca_file:
        missing = _missing("http.client_ca_file", Path(http.client_ca_file))
        if missing:
            raise TlsError(missing)
        try:
            context.load_verify_locations(cafile=http.client_ca_file)
        except (OSError, ssl.SSLError) as error:
            raise TlsError(f"cannot load the CA bundle {http.client_ca_file}: {_reason(error)}") from None
    return context


@dataclass(frozen=True)
class Tls:
    """The server's TLS (None: plain HTTP) and the upstream client's context."""

    server: ServerTls | None
    client: ssl.SSLContext


def load(http: Http) -> Tls:
    """Load both; TlsError says which file cannot be used and why."""
    return Tls(server(http), client_context(http))
