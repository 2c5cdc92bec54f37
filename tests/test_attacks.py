"""Hostile traffic and exhaustion: the service keeps serving, its heartbeat keeps beating.

Each attack runs against a booted service of each flavour, from outside, over raw sockets
(tests/hostile_traffic.py). Each test asserts the answer to the attack (or the close), and
that meanwhile a normal client gets /.well-known/live within a second, the heartbeat file is
never behind by more than two intervals, the log grows by a bounded number of lines, and
memory returns near idle. The limits are short here (a head within 2 s, idle 3 s, writes
2 s) so that the whole file runs in a few minutes per flavour.
"""

from __future__ import annotations

import resource
import socket
import time

import pytest
from hostile_traffic import (
    Flood,
    KeepAlive,
    Watch,
    cpu_seconds,
    exchange,
    fd_limit,
    get_status,
    metric,
    open_fds,
    raise_fd_limit,
    rss_bytes,
    wait_until,
)

from services import Service

pytestmark = pytest.mark.slow

HEARTBEAT_SECS = 0.5
LIMITS = {
    "HTTP__HEADER_TIMEOUT_SECS": "2",
    "HTTP__IDLE_TIMEOUT_SECS": "3",
    "HTTP__WRITE_TIMEOUT_SECS": "2",
    "HEARTBEAT__INTERVAL_SECS": str(HEARTBEAT_SECS),
}
# The heartbeat file holds whole seconds: its age may read one second more than it is.
MAX_HEARTBEAT_LAG = 1 + 2 * HEARTBEAT_SECS
# The warnings' interval (limits.WARN_INTERVAL_SECS, limits::WARN_INTERVAL).
WARN_INTERVAL = 10.0


def boot(spawn, **settings: str) -> Service:
    return spawn(settings={**LIMITS, **settings}).start()


def lines(svc: Service) -> int:
    return len(svc.stderr_text().splitlines())


def messages(svc: Service, message: str) -> list:
    return [rec for rec in svc.log_lines() if rec.message == message]


def scrape(svc: Service, name: str, **labels: str) -> float | None:
    return metric(svc.metrics(), f"{svc.built.metric_prefix}{name}", **labels)


def assert_unharmed(svc: Service, watch: Watch, lines_before: int, max_lines: int) -> None:
    assert svc.proc is not None and svc.proc.poll() is None, svc.failure("died under attack")
    assert watch.asked > 0
    assert not watch.slow, f"/.well-known/live slow or failing (at s, status, took s): {watch.slow}"
    assert watch.heartbeat_lag <= MAX_HEARTBEAT_LAG, f"heartbeat behind by {watch.heartbeat_lag:.1f}s"
    grown = lines(svc) - lines_before
    assert grown <= max_lines, f"{grown} log lines:\n" + "\n".join(svc.stderr_text().splitlines()[-40:])


def assert_memory_back(svc: Service, idle: int) -> None:
    """RSS returns near idle: within 25 MiB or half the idle size, whichever is more."""
    slack = max(25 * 2**20, idle // 2)
    settled = wait_until(lambda: rss_bytes(svc.pid) <= idle + slack, timeout=10, step=0.5)
    assert settled, f"RSS {rss_bytes(svc.pid) / 2**20:.0f} MiB, idle {idle / 2**20:.0f} MiB"


# --------------------------------------------------------------------------- the parser
LONG = 9000  # past the longest line both flavours accept (8190 bytes)
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
# name: (bytes, statuses allowed; 0 = the connection closed without an answer)
PARSER_CASES = {
    "garbage request line": (b"HELLO\r\n\r\n", {400}),
    "request line without a version (HTTP/0.9)": (b"GET /\r\n\r\n", {400, 0}),
    "HTTP/0.9 version": (b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", {400}),
    "HTTP/1.2 version": (b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", {400}),
    "HTTP/2.0 request line": (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", {400}),
    "HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", {400, 0}),
    "oversized URI": (b"GET /" + b"a" * LONG + b" HTTP/1.1\r\nHost: x\r\n\r\n", {414}),
    "URI past 64 KiB": (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", {414}),
    "oversized header": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * LONG + b"\r\n\r\n", {431}),
    "16 KiB of spaces in a header value": (b"GET / HTTP/1.1\r\nHost: x\r\nX: a" + b" " * 16384 + b"b\r\n\r\n", {431}),
    "too many headers": (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n", {431}),
    "NUL in the path": (b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "control byte in a header value": (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n", {400}),
    "NUL in a header name": (b"GET / HTTP/1.1\r\nHost: x\r\nX\x00Y: 1\r\n\r\n", {400}),
    # Refused (aiohttp), or read as chunked and the connection closed after the answer (hyper,
    # as RFC 9112 §6.1 allows): either way the request behind it is never answered.
    "Content-Length with Transfer-Encoding": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        {400, 404},
    ),
    "two Content-Lengths": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc" + SMUGGLED,
        {400},
    ),
    "Transfer-Encoding: xchunked": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        {400},
    ),
    "bad chunk size": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n" + SMUGGLED, {400, 404}),
}


def test_the_parser_refuses_malformed_and_smuggling_requests_and_closes(spawn):
    svc = boot(spawn)
    before = lines(svc)
    answered: dict[str, list[int]] = {}
    started = time.monotonic()
    with Watch(svc.port, svc.heartbeat_file) as watch:
        for name, (data, allowed) in PARSER_CASES.items():
            got = exchange(svc.port, data, wait=5)
            answered[name] = got.statuses
            assert got.closed, f"{name}: the connection stays open after {got.statuses}"
            assert (got.status or 0) in allowed, f"{name}: answered {got.statuses}, allowed {allowed}"
            assert len(got.statuses) <= 1, f"{name}: a second request was answered: {got.raw[:300]!r}"
    took = time.monotonic() - started

    assert_unharmed(svc, watch, before, max_lines=4 * (2 + int(took / WARN_INTERVAL)))
    refused = [status for statuses in answered.values() for status in statuses if status in (400, 414, 431)]
    for status in (400, 414, 431):
        counted = scrape(svc, "http_requests_total", route="unknown", method="other", status=str(status))
        assert counted == refused.count(status), (status, counted, answered)
    summary = messages(svc, "request rejected")
    assert 1 <= len(summary) <= 1 + int(took / WARN_INTERVAL) + 1
    assert {"status", "suppressed"} <= set(summary[0].fields)


def test_rejected_requests_are_counted_and_summarised_without_flooding_the_log(spawn):
    svc = boot(spawn)
    before = lines(svc)
    with Watch(svc.port, svc.heartbeat_file) as watch:
        for _ in range(300):
            exchange(svc.port, b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * LONG + b"\r\n\r\n", wait=2)

    assert_unharmed(svc, watch, before, max_lines=6)
    assert scrape(svc, "http_requests_total", route="unknown", method="other", status="431") == 300
    summary = messages(svc, "request rejected")
    assert 1 <= len(summary) <= 3
    assert summary[0].fields["status"] == "431"


# --------------------------------------------------------------------------- slow and idle peers
def test_a_header_of_spaces_pipelined_costs_nothing(spawn):
    svc = boot(spawn)
    before = lines(svc)
    request = b"GET /.well-known/live HTTP/1.1\r\nHost: x\r\nX: a" + b" " * 16384 + b"b\r\n\r\n"
    with Watch(svc.port, svc.heartbeat_file) as watch:
        conns = [socket.create_connection(("127.0.0.1", svc.port)) for _ in range(3)]
        for conn in conns:
            conn.sendall(request * 3)
        for conn in conns:
            conn.settimeout(5)
            raw = conn.recv(200)
            assert raw.startswith(b"HTTP/1.") and raw[9:12] == b"431", raw
            conn.close()
        time.sleep(1)

    assert_unharmed(svc, watch, before, max_lines=4)


def test_slowloris_connections_are_closed_at_the_header_deadline(spawn):
    svc = boot(spawn)
    idle = rss_bytes(svc.pid)
    before = lines(svc)
    # The watch starts once the connections are made: the burst of connects is the client's.
    with Flood(svc.port, 300) as flood, Watch(svc.port, svc.heartbeat_file) as watch:
        time.sleep(0.3)
        flood.send_all(b"GET /.well-known/live HTTP/1.1\r\n")
        started = time.monotonic()
        while time.monotonic() - started < 8 and flood.open_count():
            flood.send_all(b"X")  # one more header byte, never the end of the head
            time.sleep(0.5)
        left, took = flood.open_count(), time.monotonic() - started

    assert left == 0, f"{left} slowloris connections still open after {took:.1f}s"
    assert took >= 1.5, "closed before the header deadline of 2 s"
    assert_unharmed(svc, watch, before, max_lines=6)
    closed = messages(svc, "connection closed")
    assert closed and closed[0].fields["reason"] == "header_timeout"
    assert_memory_back(svc, idle)


def test_connections_that_send_nothing_are_closed_at_the_idle_deadline(spawn):
    svc = boot(spawn)
    before = lines(svc)
    with Flood(svc.port, 500) as flood, Watch(svc.port, svc.heartbeat_file) as watch:
        started = time.monotonic()
        time.sleep(1.5)
        assert flood.open_count() == 500, "closed before the idle deadline of 3 s"
        wait_until(lambda: flood.open_count() == 0, timeout=25, step=0.5)
        left, took = flood.open_count(), time.monotonic() - started

    assert left == 0, f"{left} silent connections still open after {took:.1f}s"
    assert_unharmed(svc, watch, before, max_lines=4)


def test_a_client_that_never_reads_is_disconnected_at_the_write_deadline(spawn):
    svc = boot(spawn)
    before = lines(svc)
    with Watch(svc.port, svc.heartbeat_file) as watch:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", svc.port))
        sock.settimeout(20)
        started = time.monotonic()
        with pytest.raises(OSError):
            while time.monotonic() - started < 20:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
        took = time.monotonic() - started
        sock.close()

    assert took < 15, f"held for {took:.1f}s past a write deadline of 2 s"
    assert_unharmed(svc, watch, before, max_lines=4)
    closed = messages(svc, "connection closed")
    assert closed and closed[0].fields["reason"] == "write_timeout"


def test_pipelined_requests_of_a_peer_that_left_are_not_answered(spawn):
    svc = boot(spawn)
    idle = rss_bytes(svc.pid)
    before = lines(svc)
    burst = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 7000
    with Watch(svc.port, svc.heartbeat_file) as watch:
        conns = [socket.create_connection(("127.0.0.1", svc.port)) for _ in range(20)]
        for conn in conns:
            conn.sendall(burst)
        for conn in conns:
            conn.close()
        cpu_at_close = cpu_seconds(svc.pid)
        time.sleep(3)
        cpu_after = cpu_seconds(svc.pid) - cpu_at_close

    assert cpu_after < 1.5, f"{cpu_after:.1f}s of CPU spent on answers for peers that left"
    assert_unharmed(svc, watch, before, max_lines=4)
    assert_memory_back(svc, idle)


# --------------------------------------------------------------------------- exhaustion
def test_connection_cap_fits_the_fd_limit_and_holds_under_a_flood(spawn):
    # Idle connections are kept 30 s here: the flood stays until the test closes it.
    svc = spawn(settings={**LIMITS, "HTTP__IDLE_TIMEOUT_SECS": "30"})
    with fd_limit(320):
        svc.start()
    lowered = svc.wait_for_message("http.max_connections lowered to fit the file descriptor limit")
    assert lowered.level == "WARN"
    assert lowered.fields == {"max_connections": "256", "configured": "1024", "fd_limit": "320"}
    keep = KeepAlive(svc.port)  # a client holding a slot before the flood
    before = lines(svc)
    idle = rss_bytes(svc.pid)
    prefix = svc.built.metric_prefix
    with Watch(svc.port, svc.heartbeat_file, keep_alive=keep) as watch, Flood(svc.port, 400) as flood:
        # The cap reached, accept waits: counted once each time, whatever the machine's speed.
        def waited() -> float:
            return metric(keep.get("/metrics", timeout=5)[1], f"{prefix}exhaustion_total", kind="connections") or 0

        counted = wait_until(waited, timeout=30, step=0.5)
        assert svc.proc is not None and svc.proc.poll() is None
        assert flood.open_count() > 0
    assert counted and counted >= 1, "exhaustion_total{kind=connections} never moved"
    assert get_status(svc.port, timeout=5) == 200, "a new client is served once the flood is gone"
    keep.close()
    assert_unharmed(svc, watch, before, max_lines=6)
    reached = messages(svc, "connection limit reached")
    assert reached and reached[0].fields["kind"] == "connections" and reached[0].fields["max_connections"] == "256"
    assert_memory_back(svc, idle)


def test_running_out_of_file_descriptors_is_survived_and_logged_once_per_interval(spawn):
    svc = boot(spawn)
    before = lines(svc)
    open_now = open_fds(svc.pid)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Below the cap the service computed at start: connections now run into the fd limit.
    resource.prlimit(svc.pid, resource.RLIMIT_NOFILE, (open_now + 40, hard))
    raise_fd_limit(2000)
    with Flood(svc.port, 300) as flood:
        started = time.monotonic()
        time.sleep(2.5)
        assert svc.proc.poll() is None, svc.failure("exited when out of file descriptors")
        flood.close()
        took = time.monotonic() - started
    resource.prlimit(svc.pid, resource.RLIMIT_NOFILE, (4096, hard))

    assert wait_until(lambda: get_status(svc.port, timeout=2) == 200, timeout=15, step=0.5), svc.failure("not live again")
    with Watch(svc.port, svc.heartbeat_file) as watch:
        time.sleep(2)
    assert_unharmed(svc, watch, before, max_lines=8 + 3 * int(took / WARN_INTERVAL))
    assert (scrape(svc, "exhaustion_total", kind="file_descriptors") or 0) >= 1
    out = messages(svc, "out of file descriptors")
    assert 1 <= len(out) <= 1 + int(took / WARN_INTERVAL) + 1
    assert out[0].fields["kind"] == "file_descriptors" and "suppressed" in out[0].fields
    assert not [rec for rec in svc.log_lines() if rec.message.startswith("CRITICAL")]


def test_a_log_file_that_cannot_be_written_is_counted_and_reported_once_per_interval(spawn):
    # /dev/full takes the file open, then refuses every write (ENOSPC), as a full disk does.
    svc = boot(spawn, PATHS__LOG_FILE="/dev/full")
    started = time.monotonic()
    with Watch(svc.port, svc.heartbeat_file) as watch:
        for _ in range(50):
            exchange(svc.port, b"HELLO\r\n\r\n", wait=1)  # each one a WARN line the file refuses
        time.sleep(1)
    took = time.monotonic() - started

    assert_unharmed(svc, watch, 0, max_lines=40)
    assert (scrape(svc, "exhaustion_total", kind="log_write") or 0) >= 1
    reported = messages(svc, "cannot write the log file")
    assert 1 <= len(reported) <= 2 + int(took / WARN_INTERVAL)
    assert reported[0].fields["kind"] == "log_write" and reported[0].fields["path"] == "/dev/full"
