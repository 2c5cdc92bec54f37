"""Hostile traffic and exhaustion against the generated services and their peers, side by side.

Contenders (built as bench/load.py builds them, run with their default settings):
  python flavour, aiohttp peer, starlette peer (uvicorn with httptools), starlette peer on
  uvicorn's h11 parser, rust flavour, axum peer.

Attacks, each against one fresh process of each contender in turn, from raw sockets
(tests/hostile_traffic.py), while a normal client asks /.well-known/live every 0.2 s:
  spaces     3 connections, each 3 pipelined requests with a header value of 16 KiB of spaces
  pipeline   20 connections × 7,000 pipelined `GET /metrics`, then closed: CPU spent after
  slowloris  300 connections sending a header byte every second: when they are closed
  silent     300 connections sending nothing: when they are closed
  nonreader  1 connection pipelining `GET /metrics` and never reading: when it is cut off
  fds        the fd limit lowered to 1024 while 1,100 connections are opened and held 10 s

    python3 bench/attacks.py                 # every contender: about 10 minutes once built
    python3 bench/attacks.py --only python   # one family
    python3 bench/attacks.py --window 30     # give up on closes after 30 s (default 80)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import load
from common import RunInfo, table, write_section
from hostile_traffic import Background, Flood, cpu_seconds, get_status, raise_fd_limit, rss_bytes


@dataclass
class Live(Background):
    """A normal client asking /.well-known/live every 0.2 s; the worst wait and the failures."""

    port: int
    worst: float = 0.0
    failed: int = 0
    asked: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            status = get_status(self.port, timeout=10)
            took = time.monotonic() - began
            self.asked += 1
            self.worst = max(self.worst, took)
            if status != 200:
                self.failed += 1
            self._stop.wait(0.2)

    def text(self) -> str:
        failed = f", {self.failed}/{self.asked} failed" if self.failed else ""
        return f"{self.worst:.2f} s{failed}"


@dataclass
class Outcome:
    what: str  # the attack's own measure
    live: str  # the worst /live wait during it
    lines: int  # lines of output (log) it caused


def output_lines(proc: load.Running) -> int:
    proc.output.flush()
    return len((proc.workdir / "output.log").read_bytes().splitlines())


def closed_after(flood: Flood, window: float, every: float = 0.5, poke: bytes = b"") -> str:
    """Seconds until every connection of the flood was closed, or `> window`."""
    start = time.monotonic()
    while time.monotonic() - start < window:
        if poke:
            flood.send_all(poke)
        if flood.open_count() == 0:
            return f"closed at {time.monotonic() - start:.1f} s"
        time.sleep(every)
    return f"{flood.open_count()} held > {window:.0f} s"


def attack_spaces(proc: load.Running, window: float) -> str:
    request = b"GET /.well-known/live HTTP/1.1\r\nHost: x\r\nX: a" + b" " * 16384 + b"b\r\n\r\n"
    start = time.monotonic()
    conns = [socket.create_connection(("127.0.0.1", proc.port)) for _ in range(3)]
    statuses = []
    for conn in conns:
        conn.sendall(request * 3)
    for conn in conns:
        conn.settimeout(window)
        try:
            head = conn.recv(64)
            statuses.append(head[9:12].decode() if head else "closed")
        except OSError:
            statuses.append("reset")
        conn.close()
    return f"{'/'.join(sorted(set(statuses)))} in {time.monotonic() - start:.2f} s"


def attack_pipeline(proc: load.Running, window: float) -> str:
    burst = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 7000
    conns = [socket.create_connection(("127.0.0.1", proc.port)) for _ in range(20)]
    for conn in conns:
        with contextlib.suppress(OSError):
            conn.sendall(burst)
    for conn in conns:
        conn.close()
    at_close = cpu_seconds(proc.proc.pid)
    idle = rss_bytes(proc.proc.pid)
    time.sleep(5)
    return f"CPU {cpu_seconds(proc.proc.pid) - at_close:.2f} s after close, RSS {idle / 2**20:.0f} MiB"


def attack_slowloris(proc: load.Running, window: float) -> str:
    with Flood(proc.port, 300, send=b"GET /.well-known/live HTTP/1.1\r\n") as flood:
        return closed_after(flood, window, every=1.0, poke=b"X")


def attack_silent(proc: load.Running, window: float) -> str:
    with Flood(proc.port, 300) as flood:
        return closed_after(flood, window)


def attack_nonreader(proc: load.Running, window: float) -> str:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", proc.port))
    sock.settimeout(window)
    start = time.monotonic()
    try:
        while time.monotonic() - start < window:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
    except TimeoutError:
        return f"held > {window:.0f} s"
    except OSError:
        return f"cut off at {time.monotonic() - start:.1f} s"
    finally:
        sock.close()
    return f"held > {window:.0f} s"


def attack_fds(proc: load.Running, window: float) -> str:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.prlimit(proc.proc.pid, resource.RLIMIT_NOFILE, (1024, hard))
    with Flood(proc.port, 1100):
        time.sleep(10)
        alive = proc.proc.poll() is None
    if not alive:
        return f"exited ({proc.proc.returncode})"
    back = None
    start = time.monotonic()
    while time.monotonic() - start < window:
        if get_status(proc.port, timeout=2) == 200:
            back = time.monotonic() - start
            break
        time.sleep(0.2)
    return "survived, live again at " + (f"{back:.1f} s" if back is not None else f"> {window:.0f} s")


ATTACKS = {
    "spaces": attack_spaces,
    "pipeline": attack_pipeline,
    "slowloris": attack_slowloris,
    "silent": attack_silent,
    "nonreader": attack_nonreader,
    "fds": attack_fds,
}
DESCRIPTIONS = {
    "spaces": "16 KiB of spaces in a header, 3 conns × 3 pipelined",
    "pipeline": "20 conns × 7,000 pipelined `GET /metrics`, then closed",
    "slowloris": "300 conns, a header byte every second",
    "silent": "300 conns sending nothing",
    "nonreader": "1 conn pipelining, never reading",
    "fds": "fd limit 1024, 1,100 conns held 10 s",
}


def contenders(families: list[str]) -> list[load.Server]:
    servers = load.build_all(families)
    out = []
    for server in servers:
        out.append(server)
        if server.name == "starlette peer":
            out.append(load.Server(name="starlette peer (h11)", family="python", argv=[*server.argv, "h11"], cwd=server.cwd))
    return out


def run_one(server: load.Server, attack: str, window: float, scratch: Path, cpu: int) -> Outcome:
    with load.started(server, scratch / server.name.replace(" ", "-") / attack, cpu) as proc:
        proc.wait_ready()
        before = output_lines(proc)
        with Live(proc.port) as live:
            what = ATTACKS[attack](proc, window)
            time.sleep(0.5)
        return Outcome(what, live.text(), output_lines(proc) - before)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["python", "rust"], help="one family of contenders")
    parser.add_argument("--attacks", nargs="+", choices=list(ATTACKS), default=list(ATTACKS))
    parser.add_argument("--window", type=float, default=80.0, help="seconds to wait for a close (default 80)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    raise_fd_limit(4096)
    server_cpu, client_cpu = load.cpus()
    os.sched_setaffinity(0, {client_cpu})
    families = [args.only] if args.only else ["python", "rust"]
    servers = contenders(families)
    info = RunInfo.begin(["bench/attacks.py", *argv])
    results: dict[tuple[str, str], Outcome] = {}
    with tempfile.TemporaryDirectory(prefix="plumbline-bench-attacks-") as tmp:
        for attack in args.attacks:
            for server in servers:
                outcome = run_one(server, attack, args.window, Path(tmp), server_cpu)
                results[(attack, server.name)] = outcome
                print(f"{attack:10} {server.name:22} {outcome.what}; live worst {outcome.live}; {outcome.lines} lines")
    info.end()
    headers = ["attack", *[server.name for server in servers]]
    rows = [[DESCRIPTIONS[attack], *[results[(attack, server.name)].what for server in servers]] for attack in args.attacks]
    live_rows = [
        [attack, *[f"{results[(attack, s.name)].live}, {results[(attack, s.name)].lines} lines" for s in servers]]
        for attack in args.attacks
    ]
    body = "\n".join(
        [
            "## Hostile traffic and exhaustion",
            "",
            info.markdown(),
            "",
            "Each contender with its default settings (the flavours: head 10 s, idle 60 s, writes 30 s, "
            f"cap 1024), a fresh process per attack, closes awaited up to {args.window:.0f} s. "
            "`python3 bench/attacks.py` ([bench/README.md](../bench/README.md#attackspy-hostile-traffic-and-exhaustion)).",
            "",
            table(headers, rows),
            "",
            "The worst wait of a normal client asking `/.well-known/live` every 0.2 s during each attack, "
            "and the lines of output the attack caused:",
            "",
            table(headers, live_rows),
        ]
    )
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('attacks', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
