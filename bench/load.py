"""The generated services under load, side by side with what a user would write instead.

Contenders, each a separate process on loopback:
  python flavour   the generated Python service (`.venv/bin/<svc> run`, as deployed)
  aiohttp peer     bench/peers/aiohttp_peer.py: aiohttp, prometheus-client at the flavour's locked version
  starlette peer   bench/peers/starlette_peer.py on uvicorn (uvloop, httptools)
  rust flavour     the generated Rust service, `cargo build --release`
  axum peer        bench/peers/axum-peer: the flavour's axum, metrics-exporter-prometheus and release profile

For each contender, in turn, round after round (A, B, C, A, B, C, ...):
  - start/stop cycles: start → first 200 on /.well-known/ready (polled every 2 ms), idle RSS
    after a settle time (VmRSS), SIGTERM → exit;
  - one load cycle: wrk on /.well-known/live, then on /metrics, then on the example service's
    /v1/value (a last value is in place, so it answers 200), sampling VmRSS during the load.
Servers are pinned to one CPU and wrk (with this script) to the other, with taskset.

    python3 bench/load.py            # 5 rounds, about 8 minutes (first run builds: +5 min)
    python3 bench/load.py --quick    # 1 round, 1 s per wrk run: under a minute once built
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    RESULTS,
    ROOT,
    RunInfo,
    alternate,
    fmt,
    median,
    ratio,
    require_matplotlib,
    table,
    verdict,
    write_section,
)

from helpers import CARGO_TARGET_DIR, DEFAULTS, generate, run  # tests/helpers.py

BENCH = ROOT / "bench"
PEERS = BENCH / "peers"
BUILD = RESULTS / "build"
WRK_SCRIPT = BENCH / "wrk_report.lua"
ROUTES = ("/.well-known/live", "/metrics", "/v1/value")
VALUE = ROUTES[2]
# What a flavour's /v1/value serves in the load run, written as the last good value before start.
LAST_VALUE = '{"value": 42.0, "fetched_at": 1764250000}'
READY = "/.well-known/ready"
SERVICE_NAME = str(DEFAULTS["project_name"])
ENV_PREFIX = SERVICE_NAME.replace("-", "_").upper() + "_"
# Variables of the developer's shell that would change what a service does.
AMBIENT = ("RUST_LOG", "APM_URL", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "BUILD_COMMIT", "PREFIX")


# ---------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Targets:
    """The figures each flavour must reach; checked and reported by every run."""

    python_live_vs_peer: float = 0.8  # at least this × the aiohttp peer's req/s on /.well-known/live
    rust_live_vs_peer: float = 0.9  # at least this × the axum peer's req/s on /.well-known/live
    live_p99_vs_peer: float = 1.5  # at most this × the peer's p99
    python_metrics_vs_peer: float = 1.0  # /metrics: no slower than the aiohttp peer
    rust_metrics_vs_python: float = 10.0  # /metrics: Rust at least this × the Python flavour
    python_ready_s: float = 0.6
    python_idle_rss_mib: float = 55
    python_exit_s: float = 0.3
    rust_ready_s: float = 0.05
    rust_idle_rss_mib: float = 12
    rust_exit_s: float = 0.1
    rust_binary_mb: float = 10  # 10 × 10^6 bytes


TARGETS = Targets()


# ---------------------------------------------------------------------- contenders
@dataclass
class Server:
    """How to start one contender; `{port}` in argv is replaced by the port."""

    name: str
    family: str  # "python" or "rust": the peers a flavour is compared with
    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    flavour: bool = False  # a generated service (not a peer)
    binary_size: int | None = None
    routes: tuple[str, ...] = ROUTES  # the routes loaded with wrk

    def command(self, port: int) -> list[str]:
        return [part.replace("{port}", str(port)) for part in self.argv]


def file_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def sync_tree(src: Path, dst: Path) -> int:
    """Make dst's rendered files equal src's, touching only files that changed; the count.

    A render into the same directory would give every file a new mtime, and cargo would then
    rebuild the crate: copying only what changed keeps the build cache valid between runs.
    """
    manifest = dst / ".bench-rendered"
    before = set(manifest.read_text().splitlines()) if manifest.exists() else set()
    now = {str(p.relative_to(src)) for p in src.rglob("*") if p.is_file()}
    changed = 0
    for rel in sorted(now):
        source, target = src / rel, dst / rel
        if not target.exists() or target.read_bytes() != source.read_bytes():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            changed += 1
    for rel in before - now:
        (dst / rel).unlink(missing_ok=True)
        changed += 1
    manifest.write_text("\n".join(sorted(now)) + "\n")
    return changed


def render(flavour: str) -> Path:
    """Render the template with default answers into a stable build directory."""
    project = BUILD / flavour / "project"
    with tempfile.TemporaryDirectory(prefix="plumbline-bench-render-") as tmp:
        rendered = generate(Path(tmp) / "project", flavour=flavour)
        changed = sync_tree(rendered, project)
    print(f"  {flavour} flavour rendered: {changed} file(s) changed")
    return project


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def build_python_flavour() -> Server:
    project = render("python")
    run(["uv", "sync", "--locked"], cwd=project)
    return Server(
        name="python flavour",
        family="python",
        argv=[str(project / ".venv" / "bin" / SERVICE_NAME), "run"],
        cwd=project,
        flavour=True,
    )


def service_interpreter(project: Path) -> str:
    """The Python the flavour's venv was made with, so that the peers run on the same one."""
    for line in (project / ".venv" / "pyvenv.cfg").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version_info", "version"):
            return value.strip()
    raise RuntimeError(f"no Python version in {project}/.venv/pyvenv.cfg")


def build_python_peer(name: str, python_version: str) -> Server:
    """A venv per peer (uv venv + uv pip install of the pinned requirements), reused if unchanged."""
    requirements = PEERS / f"{name}.txt"
    venv = RESULTS / "venvs" / name
    stamp = venv / ".bench-stamp"
    wanted = f"{python_version} {file_digest(requirements)} compiled"
    if not (stamp.exists() and stamp.read_text() == wanted):
        shutil.rmtree(venv, ignore_errors=True)
        run(["uv", "venv", "--quiet", "--python", python_version, str(venv)], cwd=PEERS)
        # Bytecode compiled at install, as the flavour's `uv sync` does (compile-bytecode in its pyproject).
        run(
            [
                "uv",
                "pip",
                "install",
                "--quiet",
                "--compile-bytecode",
                "--python",
                str(venv_python(venv)),
                "-r",
                str(requirements),
            ],
            cwd=PEERS,
        )
        stamp.write_text(wanted)
    return Server(
        name=f"{name} peer",
        family="python",
        argv=[str(venv_python(venv)), str(PEERS / f"{name}_peer.py"), "{port}"],
        cwd=PEERS,
    )


def copy_binary(name: str) -> Path:
    """Copy a release binary out of the shared target dir, which other builds may rewrite."""
    target = BUILD / "bin" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(CARGO_TARGET_DIR / "release" / name, target)
    return target


def build_rust_flavour() -> Server:
    project = render("rust")
    run(["cargo", "build", "--release", "--locked"], cwd=project, timeout=3600)
    binary = copy_binary(SERVICE_NAME)
    return Server(
        name="rust flavour",
        family="rust",
        argv=[str(binary), "run"],
        cwd=project,
        flavour=True,
        binary_size=binary.stat().st_size,
    )


def build_axum_peer() -> Server:
    run(["cargo", "build", "--release", "--locked"], cwd=PEERS / "axum-peer", timeout=3600)
    binary = copy_binary("axum-peer")
    return Server(
        name="axum peer",
        family="rust",
        argv=[str(binary), "{port}"],
        cwd=PEERS,
        binary_size=binary.stat().st_size,
    )


def build_all(families: list[str]) -> list[Server]:
    """Build every contender of the chosen families (cheap when nothing changed)."""
    servers: list[Server] = []
    if "python" in families:
        print("building the Python contenders")
        flavour = build_python_flavour()
        version = service_interpreter(flavour.cwd)
        servers += [flavour, build_python_peer("aiohttp", version), build_python_peer("starlette", version)]
    if "rust" in families:
        print("building the Rust contenders (cargo build --release; long the first time)")
        servers += [build_rust_flavour(), build_axum_peer()]
    return servers


# ---------------------------------------------------------------------- one process
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    """The status of one GET on a fresh connection, or None when nothing answers yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            head = sock.recv(64)
    except OSError:
        return None
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def rss_mib(pid: int) -> float:
    """The process's resident set (VmRSS) in MiB, NaN once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Running:
    """One started contender: pinned to the server CPU, its output in a file of its workdir."""

    def __init__(self, server: Server, workdir: Path, cpu: int) -> None:
        self.server = server
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in AMBIENT and not k.startswith(ENV_PREFIX)}
        if server.flavour:
            # Run as deployed: the project's cfg/ in the working directory, PREFIX for run/, data/, key/.
            if not (workdir / "cfg").exists():
                shutil.copytree(server.cwd / "cfg", workdir / "cfg")
            env["PREFIX"] = str(workdir / "prefix")
            data_dir = workdir / "prefix" / "data" / SERVICE_NAME
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
            (data_dir / "last_value.json").write_text(LAST_VALUE)
            env[ENV_PREFIX + "HTTP__PORT"] = str(self.port)
            cwd = workdir
        else:
            cwd = server.cwd
        env.update(server.env)
        self.output = (workdir / "output.log").open("ab")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), *server.command(self.port)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.output,
            stderr=self.output,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 30) -> float:
        """Seconds from spawn to the first 200 on /.well-known/ready."""
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            if http_status(self.port, READY) == 200:
                return time.perf_counter() - self.started
            if self.proc.poll() is not None:
                raise self.failure(f"exited with {self.proc.returncode} before it was ready")
            time.sleep(0.002)
        raise self.failure(f"not ready within {timeout} s")

    def terminate(self, timeout: float = 40) -> float:
        """Seconds from SIGTERM to the process's exit (a non-zero exit code is a failure)."""
        start = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise self.failure(f"still running {timeout} s after SIGTERM") from None
        elapsed = time.perf_counter() - start
        # The contract wants exit 0; uvicorn re-raises the signal once it has shut down cleanly.
        allowed = (0,) if self.server.flavour else (0, -signal.SIGTERM)
        if code not in allowed:
            raise self.failure(f"exited with {code} after SIGTERM (expected {' or '.join(map(str, allowed))})")
        self.output.close()
        return elapsed

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.output.close()

    def failure(self, what: str) -> RuntimeError:
        if not self.output.closed:
            self.output.flush()
        tail = (self.workdir / "output.log").read_text(errors="replace")[-3000:]
        return RuntimeError(f"{self.server.name} {what}\n--- its output\n{tail}")


@contextlib.contextmanager
def started(server: Server, workdir: Path, cpu: int) -> Iterator[Running]:
    proc = Running(server, workdir, cpu)
    try:
        yield proc
    finally:
        proc.kill()


# ---------------------------------------------------------------------- wrk
@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else float("nan")


def parse_wrk(stdout: str) -> WrkResult:
    """The JSON line that bench/wrk_report.lua prints at the end of wrk's output."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            data = json.loads(line)
            errors = sum(data[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
            return WrkResult(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                errors=int(errors),
            )
    raise ValueError(f"no JSON summary in wrk's output (is {WRK_SCRIPT.name} loaded?):\n{stdout[-2000:]}")


def wrk_command(port: int, path: str, seconds: int, connections: int, cpu: int) -> list[str]:
    return [
        "taskset",
        "-c",
        str(cpu),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(WRK_SCRIPT),
        f"http://127.0.0.1:{port}{path}",
    ]


def load(proc: Running, path: str, seconds: int, connections: int, cpu: int) -> tuple[WrkResult, float]:
    """Run wrk against one route; its result and the peak VmRSS sampled every 100 ms meanwhile."""
    peak = [float("nan")]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            value = rss_mib(proc.proc.pid)
            if not math.isnan(value) and not (peak[0] >= value):
                peak[0] = value

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out = subprocess.run(
            wrk_command(proc.port, path, seconds, connections, cpu),
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
    finally:
        done.set()
        sampler.join()
    return parse_wrk(out.stdout), peak[0]


# ---------------------------------------------------------------------- the run
@dataclass
class Samples:
    ready_s: list[float] = field(default_factory=list)
    idle_rss: list[float] = field(default_factory=list)
    exit_idle_s: list[float] = field(default_factory=list)
    exit_after_load_s: list[float] = field(default_factory=list)
    load_rss: list[float] = field(default_factory=list)
    wrk: dict[str, list[WrkResult]] = field(default_factory=dict)


@dataclass
class Settings:
    rounds: int
    cycles: int  # start/stop cycles per contender per round
    seconds: int  # wrk duration per route
    warmup: int  # wrk seconds before the measured runs, not recorded
    connections: int
    settle: float  # seconds between ready and the idle RSS reading
    server_cpu: int
    client_cpu: int


def measure(servers: list[Server], settings: Settings, scratch: Path) -> dict[str, Samples]:
    results = {server.name: Samples() for server in servers}
    total = settings.rounds * len(servers)
    for step, (index, server) in enumerate(alternate(servers, settings.rounds), start=1):
        samples = results[server.name]
        for cycle in range(settings.cycles):
            with started(server, scratch / f"{server.name}-r{index}-c{cycle}", settings.server_cpu) as proc:
                samples.ready_s.append(proc.wait_ready())
                time.sleep(settings.settle)
                samples.idle_rss.append(rss_mib(proc.proc.pid))
                samples.exit_idle_s.append(proc.terminate())
        with started(server, scratch / f"{server.name}-r{index}-load", settings.server_cpu) as proc:
            samples.ready_s.append(proc.wait_ready())
            time.sleep(settings.settle)
            samples.idle_rss.append(rss_mib(proc.proc.pid))
            peak = float("nan")
            for path in server.routes:
                if settings.warmup:
                    load(proc, path, settings.warmup, settings.connections, settings.client_cpu)
                result, route_peak = load(proc, path, settings.seconds, settings.connections, settings.client_cpu)
                samples.wrk.setdefault(path, []).append(result)
                peak = route_peak if math.isnan(peak) else max(peak, route_peak)
            samples.load_rss.append(peak)
            time.sleep(0.5)  # wrk has closed its connections: this stop is idle again, after load
            samples.exit_after_load_s.append(proc.terminate())
        live = samples.wrk[ROUTES[0]][-1]
        metrics = samples.wrk[ROUTES[1]][-1]
        value = f"value {samples.wrk[VALUE][-1].rps:8.0f} req/s  " if VALUE in samples.wrk else ""
        print(
            f"  [{step}/{total}] {server.name:15} ready {samples.ready_s[-1] * 1000:7.1f} ms  "
            f"live {live.rps:9.0f} req/s p99 {live.p99_ms:6.2f} ms  "
            f"metrics {metrics.rps:8.0f} req/s  {value}rss {samples.idle_rss[-1]:5.1f}/{peak:5.1f} MiB",
            flush=True,
        )
    return results


# ---------------------------------------------------------------------- report
@dataclass
class Summary:
    """Medians of one contender."""

    rps: dict[str, float]
    p50: dict[str, float]
    p99: dict[str, float]
    p99_range: dict[str, tuple[float, float]]  # lowest and highest round: how noisy the run was
    errors: dict[str, int]
    ready_s: float
    idle_rss: float
    load_rss: float
    exit_idle_s: float
    exit_after_load_s: float
    n_cycles: int
    n_load: int

    @classmethod
    def of(cls, samples: Samples) -> Summary:
        return cls(
            rps={p: median(r.rps for r in runs) for p, runs in samples.wrk.items()},
            p50={p: median(r.p50_ms for r in runs) for p, runs in samples.wrk.items()},
            p99={p: median(r.p99_ms for r in runs) for p, runs in samples.wrk.items()},
            p99_range={p: (min(r.p99_ms for r in runs), max(r.p99_ms for r in runs)) for p, runs in samples.wrk.items()},
            errors={p: sum(r.errors for r in runs) for p, runs in samples.wrk.items()},
            ready_s=median(samples.ready_s),
            idle_rss=median(samples.idle_rss),
            load_rss=median(samples.load_rss),
            exit_idle_s=median(samples.exit_idle_s),
            exit_after_load_s=median(samples.exit_after_load_s),
            n_cycles=len(samples.ready_s),
            n_load=len(samples.load_rss),
        )


PEER_OF = {"python flavour": "aiohttp peer", "rust flavour": "axum peer"}


def nan_get(mapping: dict[str, float], key: str) -> float:
    return mapping.get(key, float("nan"))


def throughput_table(servers: list[Server], summary: dict[str, Summary]) -> str:
    rows = []
    for path in ROUTES:
        for server in servers:
            if path not in server.routes:
                continue
            s = summary[server.name]
            peer = summary.get(PEER_OF.get(server.name, ""))
            rows.append(
                [
                    f"`{path}`",
                    server.name,
                    fmt(nan_get(s.rps, path), 0),
                    fmt(nan_get(s.p50, path), 3),
                    fmt(nan_get(s.p99, path), 3),
                    "–".join(fmt(v, 1) for v in s.p99_range.get(path, (float("nan"),) * 2)),
                    str(s.errors.get(path, 0)),
                    fmt(ratio(nan_get(s.rps, path), nan_get(peer.rps, path))) + "×" if peer else "",
                    fmt(ratio(nan_get(s.p99, path), nan_get(peer.p99, path))) + "×" if peer else "",
                ]
            )
    headers = [
        "route",
        "server",
        "req/s",
        "p50 (ms)",
        "p99 (ms)",
        "p99 rounds (ms)",
        "errors",
        "req/s vs peer",
        "p99 vs peer",
    ]
    return table(headers, rows, right=[False, False, *[True] * 7])


def lifecycle_table(servers: list[Server], summary: dict[str, Summary]) -> str:
    rows = []
    for server in servers:
        s = summary[server.name]
        rows.append(
            [
                server.name,
                fmt(s.ready_s * 1000, 1),
                fmt(s.idle_rss, 1),
                fmt(s.load_rss, 1),
                fmt(s.exit_idle_s * 1000, 1),
                fmt(s.exit_after_load_s * 1000, 1),
                fmt(server.binary_size / 1e6, 2) if server.binary_size else "",
                f"{s.n_cycles} / {s.n_load}",
            ]
        )
    headers = [
        "server",
        "start→ready (ms)",
        "idle RSS (MiB)",
        "RSS under load (MiB)",
        "SIGTERM→exit idle (ms)",
        "after load (ms)",
        "binary (MB)",
        "n starts / loads",
    ]
    return table(headers, rows, right=[False] + [True] * 7)


def check(value: float, limit: float, at_least: bool) -> str:
    if math.isnan(value):
        return verdict(None)
    return verdict(value >= limit if at_least else value <= limit)


def target_lines(servers: list[Server], summary: dict[str, Summary], t: Targets = TARGETS) -> list[str]:
    """One line per target: the measured figure, the target and PASS / MISS."""
    lines = []
    live, metrics, value = ROUTES
    by_name = {server.name: server for server in servers}
    for flavour, peer in PEER_OF.items():
        if flavour not in summary or peer not in summary:
            continue
        s, p = summary[flavour], summary[peer]
        rps = ratio(nan_get(s.rps, live), nan_get(p.rps, live))
        p99 = ratio(nan_get(s.p99, live), nan_get(p.p99, live))
        least = t.rust_live_vs_peer if flavour == "rust flavour" else t.python_live_vs_peer
        lines.append(
            f"- {flavour} `{live}` throughput {fmt(rps)}× the {peer}'s "
            f"(target ≥ {least}×): **{check(rps, least, True)}**"
        )
        lines.append(
            f"- {flavour} `{live}` p99 {fmt(p99)}× the {peer}'s "
            f"(target ≤ {t.live_p99_vs_peer}×): **{check(p99, t.live_p99_vs_peer, False)}**"
        )
    if "python flavour" in summary and "aiohttp peer" in summary:
        m = ratio(nan_get(summary["python flavour"].rps, metrics), nan_get(summary["aiohttp peer"].rps, metrics))
        lines.append(
            f"- python flavour `{metrics}` throughput {fmt(m)}× the aiohttp peer's plain "
            f"prometheus-client exposition (target ≥ {t.python_metrics_vs_peer}×): "
            f"**{check(m, t.python_metrics_vs_peer, True)}**"
        )
    if "python flavour" in summary and "aiohttp peer" in summary:
        v = ratio(nan_get(summary["python flavour"].rps, value), nan_get(summary["aiohttp peer"].rps, value))
        lines.append(
            f"- python flavour `{value}` throughput {fmt(v)}× the aiohttp peer's JSON route "
            "(no target: the example service's route through the platform's rules)"
        )
    if "rust flavour" in summary and "axum peer" in summary:
        v = ratio(nan_get(summary["rust flavour"].rps, value), nan_get(summary["axum peer"].rps, value))
        lines.append(
            f"- rust flavour `{value}` throughput {fmt(v)}× the axum peer's JSON route "
            "(no target: the example service's route through the platform's rules)"
        )
    if "python flavour" in summary and "rust flavour" in summary:
        m = ratio(nan_get(summary["rust flavour"].rps, metrics), nan_get(summary["python flavour"].rps, metrics))
        lines.append(
            f"- rust flavour `{metrics}` throughput {fmt(m, 1)}× the python flavour's "
            f"(target ≥ {t.rust_metrics_vs_python:g}×): **{check(m, t.rust_metrics_vs_python, True)}**"
        )
    limits = {
        "python flavour": (t.python_ready_s, t.python_idle_rss_mib, t.python_exit_s),
        "rust flavour": (t.rust_ready_s, t.rust_idle_rss_mib, t.rust_exit_s),
    }
    for flavour, (ready, rss, exit_s) in limits.items():
        if flavour not in summary:
            continue
        s = summary[flavour]
        lines.append(
            f"- {flavour} start→ready {fmt(s.ready_s * 1000, 1)} ms (target ≤ {ready * 1000:g} ms): "
            f"**{check(s.ready_s, ready, False)}**"
        )
        lines.append(f"- {flavour} idle RSS {fmt(s.idle_rss, 1)} MiB (target ≤ {rss:g} MiB): **{check(s.idle_rss, rss, False)}**")
        lines.append(
            f"- {flavour} SIGTERM→exit, idle, {fmt(s.exit_idle_s * 1000, 1)} ms "
            f"(target ≤ {exit_s * 1000:g} ms): **{check(s.exit_idle_s, exit_s, False)}**"
        )
    rust = by_name.get("rust flavour")
    if rust is not None and rust.binary_size:
        mb = rust.binary_size / 1e6
        lines.append(
            f"- rust flavour release binary {fmt(mb)} MB (target ≤ {t.rust_binary_mb:g} MB): "
            f"**{check(mb, t.rust_binary_mb, False)}**"
        )
    return lines


def plot(servers: list[Server], summary: dict[str, Summary], path: Path) -> None:
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))  # type: ignore[attr-defined]
    names = [server.name for server in servers]
    width = 0.27
    for ax, key, label in (
        (axes[0], "rps", "requests/s, median"),
        (axes[1], "p99", "p99 latency (ms), median"),
    ):
        for offset, route in zip((-width, 0.0, width), ROUTES, strict=True):
            values = [nan_get(getattr(summary[n], key), route) for n in names]
            bars = ax.bar([i + offset for i in range(len(names))], values, width, label=route)
            ax.bar_label(bars, fmt="%.0f" if key == "rps" else "%.2f", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle("Generated services and their peers under wrk (server on one CPU, wrk on the other)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)  # type: ignore[attr-defined]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 round, 1 start/stop cycle, 1 s per wrk run, no warm-up",
    )
    parser.add_argument("--rounds", type=int, help="rounds of every contender (default 5; 1 with --quick)")
    parser.add_argument("--cycles", type=int, help="start/stop cycles per round (default 3; 1 with --quick)")
    parser.add_argument("--seconds", type=int, help="wrk duration per route (default 5; 1 with --quick)")
    parser.add_argument("--warmup", type=int, help="unrecorded wrk seconds before each route (default 1; 0 with --quick)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--only", choices=("python", "rust"), help="only this family of contenders")
    parser.add_argument("--no-plot", action="store_true", help="skip docs/benchmarks-load.png")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "rounds": 1 if quick else 5,
        "cycles": 1 if quick else 3,
        "seconds": 1 if quick else 5,
        "warmup": 0 if quick else 1,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key, low in (("rounds", 1), ("cycles", 0), ("seconds", 1), ("warmup", 0), ("connections", 1)):
        if getattr(args, key) < low:
            parser.error(f"--{key} must be at least {low}, got {getattr(args, key)}")
    return args


def cpus() -> tuple[int, int]:
    """(server CPU, client CPU): the last two CPUs this process may use."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        raise SystemExit(f"load.py pins the server and wrk to two different CPUs; only {allowed} available")
    return allowed[-1], allowed[-2]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "taskset", "uv") + (("cargo",) if args.only != "python" else ()):
        if shutil.which(tool) is None:
            raise SystemExit(f"`{tool}` is not on PATH; load.py needs it")
    server_cpu, client_cpu = cpus()
    # This script polls and samples; keep it off the server's CPU too.
    os.sched_setaffinity(0, {client_cpu})
    families = [args.only] if args.only else ["python", "rust"]
    servers = build_all(families)
    settings = Settings(
        args.rounds,
        args.cycles,
        args.seconds,
        args.warmup,
        args.connections,
        settle=0.5 if args.quick else 1.0,
        server_cpu=server_cpu,
        client_cpu=client_cpu,
    )
    info = RunInfo.begin(["bench/load.py", *argv])
    print(
        f"load average {info.load_before}; servers on CPU {server_cpu}, wrk on CPU {client_cpu}; "
        f"{settings.rounds} round(s) × {len(servers)} contenders"
    )
    with tempfile.TemporaryDirectory(prefix="plumbline-bench-load-") as tmp:
        results = measure(servers, settings, Path(tmp))
    info.end()
    summary = {name: Summary.of(samples) for name, samples in results.items()}
    throughput = throughput_table(servers, summary)
    lifecycle = lifecycle_table(servers, summary)
    targets = target_lines(servers, summary)
    body = "\n".join(
        [
            "## The generated services under load, and their peers",
            "",
            info.markdown(),
            "",
            (
                f"Each server pinned to CPU {server_cpu} and wrk (`-t1 -c{settings.connections} -d{settings.seconds}s`, "
                f"after {settings.warmup} s of unrecorded warm-up) to CPU {client_cpu} with `taskset`, on loopback; "
                f"{settings.rounds} round(s), contenders in turn; medians. The generated services run with their "
                "default configuration (log level `info`, heartbeat every 10 s) as deployed: Python as "
                "`.venv/bin/<svc> run`, Rust as the `cargo build --release` binary. Peers: aiohttp and "
                "Starlette on uvicorn (uvloop, httptools) with prometheus-client's default registry, axum "
                "with metrics-exporter-prometheus; each counts requests by route, method and status. "
                "*vs peer*: the Python flavour against the aiohttp peer, the Rust flavour against the axum peer."
            ),
            "",
            throughput,
            "",
            (
                "Start→ready: from spawning the process to the first 200 on `/.well-known/ready`, polled every "
                "2 ms. Idle RSS: VmRSS after "
                f"{settings.settle:g} s idle; under load: the peak VmRSS sampled every 100 ms during wrk. "
                "SIGTERM→exit: until the process has exited (code 0), idle, and 0.5 s after the load."
            ),
            "",
            lifecycle,
            "",
            "Targets:",
            "",
            *targets,
        ]
    )
    if not (args.no_plot or args.no_write):
        image = ROOT / "docs" / "benchmarks-load.png"
        plot(servers, summary, image)
        body += "\n\n![requests/s and p99 latency per server and route](benchmarks-load.png)"
    print()
    print(throughput)
    print()
    print(lifecycle)
    print()
    print("\n".join(targets))
    if not args.no_write:
        print(f"wrote {write_section('load', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
