"""Hostile traffic for tests/test_attacks.py and bench/attacks.py: raw sockets, and watchers.

Everything here talks to a service from outside, over TCP, as an attacker or a broken client
would: bytes the HTTP parser must refuse, connections that never finish their request, never
send anything, or never read their answers, and floods of connections. While an attack runs,
`Watch` checks that the service keeps serving a normal client and keeps its heartbeat.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

HOST = "127.0.0.1"
LIVE = b"GET /.well-known/live HTTP/1.1\r\nHost: x\r\n\r\n"


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@dataclass
class Exchange:
    """What came back for some bytes sent: the answers' status codes, and whether the server closed."""

    statuses: list[int]
    closed: bool
    raw: bytes

    @property
    def status(self) -> int | None:
        return self.statuses[0] if self.statuses else None


def statuses_of(raw: bytes) -> list[int]:
    """The status code of every status line at the start of a line in `raw` (any HTTP version)."""
    found = []
    for line in raw.split(b"\r\n"):
        if line.startswith(b"HTTP/") and len(line) >= 12 and line[9:12].isdigit():
            found.append(int(line[9:12]))
    return found


def exchange(port: int, data: bytes, wait: float = 3.0) -> Exchange:
    """Send `data` on a fresh connection, read until the server closes it or `wait` passes."""
    sock = connect(port)
    chunks: list[bytes] = []
    closed = False
    try:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            chunks.append(chunk)
    finally:
        sock.close()
    raw = b"".join(chunks)
    return Exchange(statuses_of(raw), closed, raw)


def get_status(port: int, path: str = "/.well-known/live", timeout: float = 1.0) -> int | None:
    """The status of one GET on a fresh connection, or None when none came within `timeout`."""
    try:
        with connect(port, timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            raw = b""
            while b"\r\n" not in raw:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                raw += chunk
            found = statuses_of(raw)
            return found[0] if found else None
    except OSError:
        return None


class KeepAlive:
    """One keep-alive connection opened before an attack: a client that already holds a slot."""

    def __init__(self, port: int) -> None:
        self.sock = connect(port)
        self._lock = threading.Lock()  # one request at a time, whichever thread asks

    def get(self, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
        with self._lock:
            return self._get(path, timeout)

    def _get(self, path: str, timeout: float) -> tuple[int, bytes]:
        self.sock.settimeout(timeout)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the keep-alive connection")
            raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the keep-alive connection")
            body += chunk
        return statuses_of(head)[0], body[:length]

    def close(self) -> None:
        self.sock.close()


def metric(text: bytes | str, name: str, **labels: str) -> float | None:
    """The value of one sample of the Prometheus text (label order does not matter)."""
    if isinstance(text, bytes):
        text = text.decode()
    want = {f'{key}="{value}"' for key, value in labels.items()}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        metric_name, _, rest = sample.partition("{")
        if metric_name != name:
            continue
        got = set(rest.rstrip("}").split(",")) if rest else set()
        got.discard("")
        if got == want:
            return float(value)
    return None


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


@contextlib.contextmanager
def fd_limit(soft: int) -> Iterator[None]:
    """Lower this process's soft RLIMIT_NOFILE (a child started inside inherits it), then restore."""
    old_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (old_soft, hard))


def raise_fd_limit(wanted: int) -> None:
    """Let this process open `wanted` sockets (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


class Flood:
    """Many connections to one port, held open; each may send a prefix. Closed on exit."""

    def __init__(self, port: int, count: int, send: bytes = b"", rcvbuf: int | None = None) -> None:
        raise_fd_limit(count + 256)
        self.socks: list[socket.socket] = []
        for _ in range(count):
            sock = socket.socket()
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect((HOST, port))
            self.socks.append(sock)
        if send:
            self.send_all(send)

    def send_all(self, data: bytes) -> int:
        """Send `data` on every connection still open; how many took it."""
        sent = 0
        for sock in self.socks:
            try:
                sock.send(data)
                sent += 1
            except OSError:
                pass
        return sent

    def open_count(self) -> int:
        """Connections the server has not closed (no EOF nor reset seen), answers drained."""
        alive = 0
        for sock in self.socks:
            try:
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        return alive

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.socks.clear()

    def __enter__(self) -> Flood:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until(predicate, timeout: float, step: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll `predicate` until truthy (its value) or `timeout` passes (its last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


class Background:
    """A context manager running `_run` in a daemon thread until the block ends (`_stop` set)."""

    _stop: threading.Event
    _thread: threading.Thread | None

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)


@dataclass
class Watch(Background):
    """While an attack runs: a normal client asks /.well-known/live every `every` seconds on a
    fresh connection (or on `keep_alive`), and the heartbeat file's age is sampled.

    `slow` lists the answers that took longer than `limit` (or never came), `heartbeat_lag` the
    largest age of the heartbeat file seen (it holds whole seconds).
    """

    port: int
    heartbeat_file: Path
    keep_alive: KeepAlive | None = None
    every: float = 0.2
    limit: float = 1.0
    asked: int = 0
    slow: list[tuple[float, int | None, float]] = field(default_factory=list)
    heartbeat_lag: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _ask(self) -> int | None:
        if self.keep_alive is None:
            return get_status(self.port, timeout=self.limit)
        try:
            return self.keep_alive.get("/.well-known/live", timeout=self.limit)[0]
        except OSError:
            return None

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            began = time.monotonic()
            status = self._ask()
            took = time.monotonic() - began
            self.asked += 1
            if status != 200 or took > self.limit:
                self.slow.append((round(began - start, 2), status, round(took, 3)))
            with contextlib.suppress(OSError, ValueError):
                self.heartbeat_lag = max(self.heartbeat_lag, time.time() - int(self.heartbeat_file.read_text()))
            self._stop.wait(self.every)


def is_reset(error: OSError) -> bool:
    return error.errno in (errno.ECONNRESET, errno.EPIPE)


def drain_selector(socks: list[socket.socket], seconds: float) -> None:
    """Read and discard whatever arrives on `socks` for `seconds`."""
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            with contextlib.suppress(ValueError, KeyError):
                sel.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                try:
                    if not key.fileobj.recv(65536):  # type: ignore[union-attr]
                        sel.unregister(key.fileobj)
                except OSError:
                    sel.unregister(key.fileobj)
