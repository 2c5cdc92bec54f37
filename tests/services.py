"""Build a generated service once, then run it as an operator would, from outside the process.

The contract suite in tests/contract/ uses only what is here, so the same tests run against
both flavours: the one flavour switch is `build_service` (how to build, where the binary is).
Everything else talks to the process through its command line, environment, files, signals,
stderr and HTTP, like an operator or a supervisor would.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from signal import SIGKILL, SIGTERM  # the Service class has a `signal` method
from typing import Any, Self

from helpers import CARGO_TARGET_DIR, generate, run

# Settings that keep a booted service quick to observe: a heartbeat every 0.2 s, no periodic
# work call (the upstream is empty unless a test sets one), a short shutdown timeout.
FAST_SETTINGS: dict[str, str] = {
    "HTTP__PORT": "0",
    "HEARTBEAT__INTERVAL_SECS": "0.2",
    "SHUTDOWN__TIMEOUT_SECS": "5",
    "WORK__INTERVAL_SECS": "0.2",
}

# Variables a developer's shell may hold that would change what the service does.
_AMBIENT = (
    "RUST_LOG",
    "APM_URL",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "PREFIX",
    "BUILD_COMMIT",
    "LISTEN_FDS",
    "LISTEN_PID",
)

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
LEVELS = ("ERROR", "WARN", "INFO", "DEBUG", "TRACE")
# `Nov 05 15:30:45.234 INFO message key=value key="quoted value"`
_VALUE = r'(?:"(?:[^"\\\x00-\x1f]|\\.)*"|[^\s="\x00-\x1f]+)'
LOG_LINE = re.compile(
    rf"^(?P<month>{'|'.join(MONTHS)}) (?P<day>\d\d) (?P<time>\d\d:\d\d:\d\d\.\d{{3}}) "
    rf"(?P<level>{'|'.join(LEVELS)}) (?P<message>[^\s=](?:[^=]*?[^\s=])?)"
    rf"(?P<pairs>(?: [A-Za-z_][A-Za-z0-9_.]*={_VALUE})*)$"
)
_PAIR = re.compile(rf" (?P<key>[A-Za-z_][A-Za-z0-9_.]*)=(?P<value>{_VALUE})")
_UNESCAPE = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}


@dataclass(frozen=True)
class LogLine:
    """One parsed log line: `Mon DD HH:MM:SS.fff LEVEL message k=v...`."""

    raw: str
    month: str
    day: int
    time: str
    level: str
    message: str
    fields: dict[str, str]


def unquote(value: str) -> str:
    """Decode a log value: a quoted one has `\\"`, `\\\\`, `\\n`, `\\t` escapes."""
    if not value.startswith('"'):
        return value
    return re.sub(r"\\(.)", lambda m: _UNESCAPE.get(m.group(1), "\\" + m.group(1)), value[1:-1])


def parse_log_line(line: str) -> LogLine | None:
    """Parse one log line, or None when it does not have the contract's shape."""
    match = LOG_LINE.match(line)
    if match is None:
        return None
    fields = {m.group("key"): unquote(m.group("value")) for m in _PAIR.finditer(match.group("pairs"))}
    return LogLine(
        line,
        match.group("month"),
        int(match.group("day")),
        match.group("time"),
        match.group("level"),
        match.group("message"),
        fields,
    )


@dataclass(frozen=True)
class BuiltService:
    """A generated project, built, and what the suite needs to know to run it."""

    flavour: str
    project: Path
    binary: Path
    name: str  # kebab case, the binary's and the files' name
    answers: dict[str, Any]
    # The service part is the template's example (its [work] job and GET /v1/value); a team
    # that replaced it has checks marked `example` skipped (tests/external.py).
    example: bool = True

    @property
    def snake(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env_prefix(self) -> str:
        return self.snake.upper() + "_"

    @property
    def metric_prefix(self) -> str:
        return self.snake + "_"

    def env_var(self, key: str) -> str:
        """`http.port` -> `ORDER_ROUTER_HTTP__PORT`."""
        section, name = key.split(".", 1)
        return f"{self.env_prefix}{section.upper()}__{name.upper()}"


def build_service(flavour: str, root: Path, **answers: Any) -> BuiltService:
    """Render the template into `root/project` with `flavour`, and build the service binary."""
    answers = {**answers, "flavour": flavour}
    project = generate(root / "project", **answers)
    name = str(answers.get("project_name", "order-router"))
    if flavour == "python":
        run(["uv", "sync", "--locked"], cwd=project, timeout=900)
        binary = project / ".venv" / "bin" / name
    elif flavour == "rust":
        run(["cargo", "build", "--locked"], cwd=project, timeout=1800)
        # The target directory is shared by every Rust build of the run: copy the binary out
        # so that another test building the same name cannot swap it under a running service.
        binary = root / "bin" / name
        binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(CARGO_TARGET_DIR / "debug" / name, binary)
    else:
        raise ValueError(f"unknown flavour {flavour!r}: use 'python' or 'rust'")
    if not os.access(binary, os.X_OK):
        raise AssertionError(f"the {flavour} build did not produce an executable at {binary}")
    return BuiltService(flavour=flavour, project=project, binary=binary, name=name, answers=answers)


@dataclass
class Response:
    status: int
    body: str
    headers: dict[str, str]


def request(
    port: int, path: str, method: str = "GET", host: str = "127.0.0.1", timeout: float = 5.0
) -> Response:
    """One HTTP request on a fresh connection (http.client allows any method token)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        return Response(resp.status, body, {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


def free_port() -> int:
    """A port that was free a moment ago (for the few tests that cannot use port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Pipe:
    """Collects a pipe's output in a thread, so that a chatty process never blocks on it."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._chunks: list[bytes] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for chunk in iter(lambda: self._stream.readline(), b""):
            with self._cond:
                self._chunks.append(chunk)
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def text(self) -> str:
        with self._cond:
            return b"".join(self._chunks).decode("utf-8", "replace")

    def wait_for(self, predicate: Callable[[str], Any], timeout: float) -> Any:
        """Wait until predicate(text) is truthy; return its value, or None at timeout or EOF."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(b"".join(self._chunks).decode("utf-8", "replace"))
                if value or self._closed:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class ServiceError(AssertionError):
    """The service did not do what the suite waited for; carries its output."""


class Service:
    """The service binary run as an operator would: own working dir, temporary PREFIX.

    The working directory holds a copy of the project's cfg/; PREFIX holds key/, run/, data/.
    Settings are passed the operator's way, as `<SVC>_<SECTION>__<KEY>` variables.
    """

    def __init__(
        self,
        built: BuiltService,
        root: Path,
        *,
        settings: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        secrets: str | None = None,
        prefix: Path | None = None,
        umask: int = 0o022,
        fast: bool = True,
    ) -> None:
        self.built = built
        self.workdir = root / "work"
        self.prefix = prefix or root / "prefix"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prefix.mkdir(parents=True, exist_ok=True)
        if not (self.workdir / "cfg").exists():
            shutil.copytree(built.project / "cfg", self.workdir / "cfg")
        if secrets is not None:
            self.write_secrets(secrets)
        # fast=False leaves every key to the files, for the tests that read the layers back
        self.settings = {**(FAST_SETTINGS if fast else {}), **(settings or {})}
        self.extra_env = env or {}
        self.umask = umask
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self._stdout: _Pipe | None = None
        self._stderr: _Pipe | None = None

    # ------------------------------------------------------------------ files
    @property
    def name(self) -> str:
        return self.built.name

    @property
    def secrets_file(self) -> Path:
        return self.prefix / "key" / "env.toml"

    @property
    def pid_file(self) -> Path:
        return self.prefix / "run" / f"{self.name}.pid"

    @property
    def data_dir(self) -> Path:
        return self.prefix / "data" / self.name

    @property
    def log_file(self) -> Path:
        return self.workdir / "log" / f"{self.name}.log"

    @property
    def heartbeat_file(self) -> Path:
        return self.workdir / "tmp" / f"{self.name}.heartbeat"

    def write_secrets(self, text: str, mode: int = 0o600) -> Path:
        self.secrets_file.parent.mkdir(parents=True, exist_ok=True)
        self.secrets_file.write_text(text)
        os.chmod(self.secrets_file, mode)
        return self.secrets_file

    def log_file_text(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    # ------------------------------------------------------------------ process
    def environ(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The process environment: the test runner's, minus anything that would steer the service."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _AMBIENT and not k.startswith(self.built.env_prefix)
        }
        env["PREFIX"] = str(self.prefix)
        env.update({self.built.env_prefix + k: v for k, v in self.settings.items()})
        env.update(self.extra_env)
        env.update(extra or {})
        return env

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run a one-shot command (check-config, --version...) in the working directory."""
        return subprocess.run(
            [str(self.built.binary), *args],
            cwd=self.workdir,
            env=self.environ(env),
            text=True,
            capture_output=True,
            timeout=timeout,
            umask=self.umask,
            check=False,
        )

    def start(self, *args: str, wait: str = "ready", timeout: float = 20) -> Service:
        """Start `<svc> run`; wait for `ready` (200 on /.well-known/ready), `listening`, or nothing."""
        if self.proc is not None:
            raise RuntimeError("this Service was already started; make a new one")
        self.proc = subprocess.Popen(
            [str(self.built.binary), "run", *args],
            cwd=self.workdir,
            env=self.environ(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            umask=self.umask,
            start_new_session=True,
        )
        self._stdout = _Pipe(self.proc.stdout)
        self._stderr = _Pipe(self.proc.stderr)
        if wait in ("listening", "ready"):
            self.port = self.wait_for_port(timeout)
        if wait == "ready":
            self.wait_ready(timeout)
        return self

    def wait_for_port(self, timeout: float) -> int:
        line = self.wait_for_log(lambda rec: rec.message == "listening", timeout)
        addr = line.fields.get("addr", "")
        _, _, port = addr.rpartition(":")
        if not port.isdigit() or int(port) == 0:
            raise ServiceError(f"`listening` line without a real HOST:PORT: {line.raw!r}")
        return int(port)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise self.failure(f"exited with {self.proc.returncode} before it was ready")
            try:
                resp = self.get("/.well-known/ready", timeout=1)
                if resp.status == 200:
                    return
                last = f"{resp.status} {resp.body!r}"
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.05)
        raise self.failure(f"not ready within {timeout}s (last answer: {last})")

    def get(self, path: str, method: str = "GET", timeout: float = 5.0) -> Response:
        if self.port is None:
            raise RuntimeError("the service's port is unknown: start it with wait='listening' or 'ready'")
        return request(self.port, path, method=method, timeout=timeout)

    def metrics(self) -> str:
        resp = self.get("/metrics")
        if resp.status != 200:
            raise self.failure(f"/metrics answered {resp.status}")
        return resp.body

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; its exit code (fails if it does not exit in time)."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise self.failure(f"still running after {timeout}s") from None
        for pipe in (self._stdout, self._stderr):
            if pipe is not None:
                pipe.join(5)
        return code

    def stop(self, sig: int = SIGTERM, timeout: float = 10) -> int:
        self.signal(sig)
        return self.wait(timeout)

    def kill(self) -> None:
        """Kill the process (and anything it spawned) if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # ------------------------------------------------------------------ output
    def stderr_text(self) -> str:
        return self._stderr.text() if self._stderr else ""

    def stdout_text(self) -> str:
        return self._stdout.text() if self._stdout else ""

    def log_lines(self) -> list[LogLine]:
        """The stderr lines that parse as log lines (a test checks elsewhere that all do)."""
        return [rec for line in self.stderr_text().splitlines() if (rec := parse_log_line(line))]

    def wait_for_log(self, match: Callable[[LogLine], bool], timeout: float = 10) -> LogLine:
        """Wait for a log line on stderr that `match` accepts, and return it."""

        def found(text: str) -> LogLine | None:
            for line in text.splitlines():
                rec = parse_log_line(line)
                if rec is not None and match(rec):
                    return rec
            return None

        assert self._stderr is not None
        rec = self._stderr.wait_for(found, timeout)
        if rec is None:
            raise self.failure(f"no matching log line within {timeout}s")
        return rec

    def wait_for_message(self, message: str, timeout: float = 10) -> LogLine:
        return self.wait_for_log(lambda rec: rec.message == message, timeout)

    def failure(self, what: str) -> ServiceError:
        code = self.proc.poll() if self.proc else None
        return ServiceError(
            f"{self.built.flavour} service {what} (exit code {code})\n"
            f"--- stderr (last 4000 chars)\n{self.stderr_text()[-4000:]}\n"
            f"--- stdout (last 2000 chars)\n{self.stdout_text()[-2000:]}"
        )


# ---------------------------------------------------------------------- metrics text
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)(?: \S+)?$")
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


@dataclass
class Metrics:
    """The Prometheus text exposition, parsed enough to check names, types and values."""

    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Metrics:
        out = cls()
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                out.types[name] = kind
            elif line.startswith("# HELP "):
                parts = line.split(" ", 3)
                out.helps[parts[2]] = parts[3] if len(parts) > 3 else ""
            elif line and not line.startswith("#"):
                match = _SAMPLE.match(line)
                if match is None:
                    raise AssertionError(f"unparsable metrics line: {line!r}")
                labels = {
                    m.group("key"): m.group("value") for m in _LABEL.finditer(match.group("labels") or "")
                }
                out.samples.append((match.group("name"), labels, float(match.group("value"))))
        return out

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample with this name and exactly these labels, or None."""
        for sample, sample_labels, value in self.samples:
            if sample == name and sample_labels == labels:
                return value
        return None

    def series(self, name: str) -> list[dict[str, str]]:
        return [labels for sample, labels, _ in self.samples if sample == name]


# ---------------------------------------------------------------------- fake upstream
@dataclass
class UpstreamCall:
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    headers: dict[str, str]


class FakeUpstream:
    """An HTTP server on 127.0.0.1 that answers the example work's calls from a script.

    `responses` is a list of (status, body) answers given in turn; the last one repeats.
    A status of None holds the request until `release()` (or teardown), then answers 200 with
    `hold_body`, to keep work in flight during a shutdown.
    """

    def __init__(
        self, responses: list[tuple[int | None, str]], hold_body: str = '{"value": 1.0}', delay: float = 0.0
    ) -> None:
        self.responses = list(responses)
        self.hold_body = hold_body
        self.delay = delay
        self.calls: list[UpstreamCall] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._release = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                upstream._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/value"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        self._release.set()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.calls.append(
                UpstreamCall(
                    time.monotonic(),
                    handler.command,
                    handler.path,
                    {k.lower(): v for k, v in handler.headers.items()},
                )
            )
            index = min(len(self.calls) - 1, len(self.responses) - 1)
            status, body = self.responses[index]
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            if status is None:
                self._release.wait(60)
                status, body = 200, self.hold_body
            payload = body.encode()
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            with contextlib.suppress(OSError):
                handler.wfile.write(payload)
        finally:
            with self._lock:
                self.in_flight -= 1

    def wait_calls(self, count: int, timeout: float) -> list[UpstreamCall]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.calls) < count:
            time.sleep(0.02)
        return list(self.calls)


def good(value: float) -> tuple[int, str]:
    return 200, json.dumps({"value": value})


# ---------------------------------------------------------------------- systemd notify
class NotifySocket:
    """A Unix datagram socket standing in for systemd's NOTIFY_SOCKET; collects what it gets."""

    def __init__(self, abstract: bool) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._dir: str | None = None
        if abstract:
            name = f"plumbline-notify-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            # A short directory: socket paths are limited to 107 bytes.
            self._dir = tempfile.mkdtemp(prefix="notify-", dir="/tmp")
            self.address = os.path.join(self._dir, "notify.sock")
            self.sock.bind(self.address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode("utf-8", "replace").splitlines()))

    def assignments(self) -> Iterator[str]:
        for _, lines in list(self.messages):
            yield from lines

    def wait_for(self, assignment: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if assignment in self.assignments():
                return True
            time.sleep(0.02)
        return False
