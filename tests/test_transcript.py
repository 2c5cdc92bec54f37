"""The golden transcript: both flavours say the same operator-visible bytes.

One list of scenarios (good run, bad configuration, bad variables, usage errors, port in use,
PID files, every route and method, signals, shutdown overrun, upstream failures, OpenTelemetry
export) is played against each flavour from outside the process. What an operator or a client
sees (stderr, stdout, exit codes, log lines, HTTP status lines, headers and bodies, the
metrics page, the spans sent to a collector) is written down with timestamps, PIDs, ports and
paths masked, and compared line for line with the committed `tests/data/transcript.txt`.

Regenerate it (from the Python flavour; the Rust one must then match):

    PLUMBLINE_UPDATE_TRANSCRIPT=python python3 -m pytest tests/test_transcript.py
"""

from __future__ import annotations

import difflib
import fcntl
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import CONTRACT_ANSWERS, FLAVOUR_MANIFESTS, FLAVOUR_TOOLS

from helpers import TEMPLATE, require_tool
from services import BuiltService, FakeUpstream, Service, good, request

pytestmark = pytest.mark.slow

TRANSCRIPT = TEMPLATE / "tests" / "data" / "transcript.txt"
UPDATE_VARIABLE = "PLUMBLINE_UPDATE_TRANSCRIPT"
ANSWERS = {**CONTRACT_ANSWERS, "opentelemetry": True}

# The routes a client may call, and the methods tried on each.
ROUTES = ("/.well-known/live", "/.well-known/ready", "/metrics", "/v1/value", "/nowhere")
METHODS = ("GET", "HEAD", "POST", "DELETE")
# Headers a client reads; the others (Date, Server, Content-Length) differ by nature.
HEADERS = ("content-type", "allow")


# ---------------------------------------------------------------------- masking
class Masker:
    """Replaces what differs by run (times, PIDs, ports, temporary paths) with placeholders."""

    def __init__(self) -> None:
        self.paths: list[tuple[str, str]] = []
        self.ports: set[int] = set()
        self.pids: set[int] = set()

    def path(self, path: Path | str, name: str) -> None:
        self.paths.append((str(path), name))

    def __call__(self, text: str) -> str:
        for path, name in sorted(self.paths, key=lambda pair: -len(pair[0])):
            text = text.replace(path, name)
        # log line timestamps: `Nov 05 15:30:45.234 `
        text = re.sub(r"^[A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d\.\d{3} ", "<time> ", text, flags=re.M)
        for port in sorted(self.ports, key=lambda p: -len(str(p))):
            text = re.sub(rf"(?<![0-9]){port}(?![0-9])", "<port>", text)
        for pid in sorted(self.pids, key=lambda p: -len(str(p))):
            text = re.sub(rf"(?<![0-9]){pid}(?![0-9])", "<pid>", text)
        return text


class Transcript:
    """The lines of one flavour's transcript, built scenario by scenario."""

    def __init__(self, masker: Masker) -> None:
        self.mask = masker
        self.lines: list[str] = []

    def scenario(self, name: str) -> None:
        self.lines += ["", f"## {name}"]

    def add(self, *lines: str) -> None:
        for line in lines:
            self.lines.extend(self.mask(line).splitlines() or [""])

    def output(self, label: str, text: str) -> None:
        for line in self.mask(text).splitlines():
            self.lines.append(f"{label}| {line}")

    def completed(self, done: Any) -> None:
        self.output("stdout", done.stdout)
        self.output("stderr", done.stderr)
        self.add(f"exit {done.returncode}")

    def stderr(self, svc: Service, keep: Callable[[str], bool] = lambda line: True) -> None:
        self.output("stderr", "\n".join(line for line in svc.stderr_text().splitlines() if keep(line)))


# ---------------------------------------------------------------------- collectors
def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """The (field number, wire type, value) of one protobuf message, enough for OTLP spans."""
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, varint()
        elif wire == 1:
            yield number, wire, data[i : i + 8]
            i += 8
        elif wire == 2:
            size = varint()
            yield number, wire, data[i : i + size]
            i += size
        elif wire == 5:
            yield number, wire, data[i : i + 4]
            i += 4
        else:
            raise ValueError(f"protobuf wire type {wire} not expected in OTLP")


SPAN_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def otlp_spans(body: bytes) -> list[tuple[str, str, tuple[str, ...]]]:
    """(name, kind, attribute keys) of every span of an ExportTraceServiceRequest."""
    spans = []
    for n1, _, resource_spans in _fields(body):
        if n1 != 1:
            continue
        for n2, _, scope_spans in _fields(resource_spans):
            if n2 != 2:
                continue
            for n3, _, span in _fields(scope_spans):
                if n3 != 2:
                    continue
                name, kind, keys = "", 0, []
                for n4, _, value in _fields(span):
                    if n4 == 5:
                        name = value.decode()
                    elif n4 == 6:
                        kind = value
                    elif n4 == 9:
                        keys += [v.decode() for n5, _, v in _fields(value) if n5 == 1]
                spans.append((name, SPAN_KINDS.get(kind, str(kind)), tuple(sorted(keys))))
    return spans


class Collector:
    """An OTLP/HTTP collector on loopback: keeps each POST to /v1/traces."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, bytes]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                collector.posts.append((self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Collector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------- scenarios
class Scenarios:
    """Every scenario, in order, against one built flavour."""

    def __init__(self, built: BuiltService, root: Path) -> None:
        self.built = built
        self.root = root
        self.masker = Masker()
        self.masker.path(root, "<root>")
        self.t = Transcript(self.masker)
        self.count = 0

    def service(self, **kwargs: Any) -> Service:
        self.count += 1
        svc = Service(self.built, self.root / f"s{self.count}", **kwargs)
        self.masker.path(svc.workdir, "<work>")
        self.masker.path(svc.prefix, "<prefix>")
        return svc

    def started(self, svc: Service, **kwargs: Any) -> Service:
        svc.start(**kwargs)
        self.masker.pids.add(svc.pid)
        if svc.port:
            self.masker.ports.add(svc.port)
        return svc

    def stopped(self, svc: Service, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        code = svc.stop(sig, timeout)
        self.t.stderr(svc, keep=_not_transient)
        self.t.add(f"exit {code}")

    def cli(self, *args: str, svc: Service | None = None, env: dict[str, str] | None = None) -> None:
        svc = svc or self.service()
        self.t.add("$ " + " ".join(["<svc>", *args]))
        self.t.completed(svc.cli(*args, env=env))

    def http(self, svc: Service, method: str, path: str) -> None:
        resp = request(svc.port or 0, path, method=method)
        self.t.add(f"> {method} {path}", f"< {resp.status}")
        for name in HEADERS:
            if name in resp.headers:
                self.t.add(f"< {name}: {resp.headers[name]}")
        if resp.body and not (path == "/metrics" and resp.status == 200):
            self.t.output("body", re.sub(r"\b1[0-9]{9}\b", "<unix>", resp.body))

    # ------------------------------------------------------------------ the list
    def run(self) -> list[str]:
        for name, play in [
            ("version and usage", self.usage),
            ("check-config", self.check_config),
            ("bad configuration files", self.bad_files),
            ("bad values in the base file", self.bad_values),
            ("bad environment variables", self.bad_env),
            ("secrets file", self.secrets),
            ("good run: routes, methods, metrics, SIGHUP, SIGTERM", self.good_run),
            ("SIGINT", self.sigint),
            ("port in use", self.port_in_use),
            ("PID file held by a live process", self.pid_held),
            ("stale PID file", self.pid_stale),
            ("PID file in a folder that cannot be made", self.pid_unusable),
            ("data folder that cannot be made", self.data_dir_unusable),
            ("upstream transient failure", self.upstream_transient),
            ("upstream persistent failure", self.upstream_persistent),
            ("upstream unreachable", self.upstream_unreachable),
            ("shutdown overrun", self.shutdown_overrun),
            ("OpenTelemetry export", self.opentelemetry),
        ]:
            self.t.scenario(name)
            play()
        return self.t.lines

    def usage(self) -> None:
        svc = self.service()
        for args in [
            (),
            ("serve",),
            ("--bogus",),
            ("run", "--bogus"),
            ("run", "--config"),
            ("check-config", "extra"),
        ]:
            self.cli(*args, svc=svc)

    def check_config(self) -> None:
        self.cli("check-config")
        self.cli("check-config", svc=self.service(settings={"HTTP__PORT": "9000"}, fast=False))

    def write(self, svc: Service, name: str, text: str) -> str:
        path = svc.workdir / "cfg" / name
        path.write_text(text)
        return f"cfg/{name}"

    def bad_files(self) -> None:
        svc = self.service()
        self.cli("check-config", "--config", "cfg/missing.toml", svc=svc)
        self.cli("run", "--config", "cfg/missing.toml", svc=svc)
        for name, text in [
            ("two-values.toml", "[http]\nport = 80 80\n"),
            ("unclosed.toml", '[http]\nhost = "127.0.0.1\n'),
            ("bad-table.toml", "[http\nport = 80\n"),
            ("duplicate.toml", "[http]\nport = 80\nport = 81\n"),
        ]:
            self.cli("check-config", "--config", self.write(svc, name, text), svc=svc)
        (svc.workdir / "cfg" / "dir.toml").mkdir()
        self.cli("check-config", "--config", "cfg/dir.toml", svc=svc)

    def bad_values(self) -> None:
        svc = self.service(fast=False)
        for name, text in [
            ("range.toml", "[http]\nport = 70000\n"),
            ("type.toml", '[http]\nport = "eighty"\n'),
            ("unknown.toml", "[http]\nportt = 80\n[nope]\nx = 1\n"),
            ("float.toml", "[heartbeat]\ninterval_secs = 0\n[shutdown]\ntimeout_secs = -1\n"),
            ("filter.toml", '[log]\nfilter = "=bad=filter="\n'),
            ("level.toml", '[log]\nfilter = "loud"\n'),
            ("url.toml", '[work]\nupstream_url = "ftp://ops:pw@example.com/v"\n'),
            ("apm.toml", '[apm]\nurl = "not a url"\n'),
        ]:
            self.cli("check-config", "--config", self.write(svc, name, text), svc=svc)

    def bad_env(self) -> None:
        svc = self.service(fast=False)
        p = self.built.env_prefix
        for env in [
            {p + "HTTP__PORT": "eighty"},
            {p + "HTTP__PORT": "-1"},
            {p + "HTTP__PORTT": "80"},
            {p + "WORK__MAX_CONCURRENCY": "0"},
            {"RUST_LOG": "=bad=filter="},
            {"RUST_LOG": "info,tally_keeper=loud"},
            {"APM_URL": "collector:4318"},
        ]:
            self.t.add("env " + " ".join(f"{k}={v}" for k, v in env.items()))
            self.cli("check-config", svc=svc, env=env)

    def secrets(self) -> None:
        svc = self.service()
        svc.write_secrets('[work]\nupstream_token = "s3cret"\n', mode=0o644)
        self.cli("check-config", svc=svc)
        svc.write_secrets('[work]\nupstream_token = "s3cret"\n[http]\nport = 1\n', mode=0o600)
        self.cli("check-config", svc=svc)

    def good_run(self) -> None:
        svc = self.started(self.service())
        for path in ROUTES:
            for method in METHODS:
                self.http(svc, method, path)
        self.metrics(svc)
        svc.signal(signal.SIGHUP)
        svc.wait_for_message("log file reopened")
        self.stopped(svc)
        self.t.add("log file, the same lines:")
        self.t.output("log", "\n".join(line for line in svc.log_file_text().splitlines() if _not_transient(line)))

    def metrics(self, svc: Service) -> None:
        resp = svc.get("/metrics")
        self.t.add("> GET /metrics", f"< {resp.status}", f"< content-type: {resp.headers.get('content-type')}")
        for line in resp.body.splitlines():
            self.t.output("metrics", _metric_line(line, self.built.metric_prefix))

    def sigint(self) -> None:
        self.stopped(self.started(self.service()), signal.SIGINT)

    def port_in_use(self) -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            self.masker.ports.add(port)
            svc = self.service(settings={"HTTP__PORT": str(port)})
            self.started(svc, wait="none")
            code = svc.wait(15)
        self.t.stderr(svc)
        self.t.add(f"exit {code}")

    def pid_held(self) -> None:
        svc = self.service()
        svc.pid_file.parent.mkdir(parents=True)
        with open(svc.pid_file, "w") as holder:
            holder.write(f"{os.getpid()}\n")
            holder.flush()
            fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.masker.pids.add(os.getpid())
            self.started(svc, wait="none")
            code = svc.wait(15)
        self.t.stderr(svc)
        self.t.add(f"exit {code}")

    def pid_stale(self) -> None:
        svc = self.service()
        svc.pid_file.parent.mkdir(parents=True)
        svc.pid_file.write_text("999999\n")
        self.stopped(self.started(svc))

    def pid_unusable(self) -> None:
        svc = self.service()
        svc.prefix.joinpath("run").write_text("a file where the PID file's folder should be\n")
        self.started(svc, wait="none")
        code = svc.wait(15)
        self.t.stderr(svc)
        self.t.add(f"exit {code}")

    def data_dir_unusable(self) -> None:
        svc = self.service(settings={"PATHS__DATA_DIR": "${PREFIX}/blocked/data"})
        svc.prefix.joinpath("blocked").write_text("a file where a folder should be\n")
        self.started(svc, wait="none")
        code = svc.wait(15)
        self.t.stderr(svc)
        self.t.add(f"exit {code}")

    def upstream_transient(self) -> None:
        with FakeUpstream([(503, "")]) as upstream:
            self.masker.ports.add(upstream.server.server_address[1])
            svc = self.started(self.service(settings=_work(upstream.url)), wait="listening")
            upstream.wait_calls(6, 10)
            svc.wait_for_message("work failed, using last good value")
            self.http(svc, "GET", "/v1/value")
            self.stopped(svc)

    def upstream_persistent(self) -> None:
        answers = [good(42), (404, ""), (200, "not json"), (200, '{"value": "high"}'), (200, '{"other": 1}')]
        with FakeUpstream(answers) as upstream:
            self.masker.ports.add(upstream.server.server_address[1])
            svc = self.started(self.service(settings=_work(upstream.url, "0.3")), wait="listening")
            upstream.wait_calls(5, 10)
            deadline = time.monotonic() + 10
            while svc.stderr_text().count("work failed") < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            self.http(svc, "GET", "/v1/value")
            svc.signal(signal.SIGTERM)
            svc.wait(15)
            # Only the first of each failure: the later runs repeat them at a rate set by timing.
            seen: set[str] = set()
            lines = []
            for line in svc.stderr_text().splitlines():
                key = re.sub(r"^.{20}", "", line)
                if key not in seen and _not_transient(line):
                    seen.add(key)
                    lines.append(line)
            self.t.output("stderr", "\n".join(lines))
            self.t.add(f"exit {svc.proc.returncode if svc.proc else None}")
            self.t.output("last_value.json", (svc.data_dir / "last_value.json").read_text()
                          .replace(str(_fetched_at(svc)), "<unix>"))

    def upstream_unreachable(self) -> None:
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
            port = closed.getsockname()[1]
            self.masker.ports.add(port)
            svc = self.started(self.service(settings=_work(f"http://127.0.0.1:{port}/value")), wait="listening")
            svc.wait_for_message("work failed, using last good value", timeout=15)
            self.stopped(svc)

    def shutdown_overrun(self) -> None:
        with FakeUpstream([(None, "")]) as upstream:
            self.masker.ports.add(upstream.server.server_address[1])
            settings = {**_work(upstream.url, "30"), "SHUTDOWN__TIMEOUT_SECS": "1"}
            svc = self.started(self.service(settings=settings))
            upstream.wait_calls(1, 10)
            self.stopped(svc)

    def opentelemetry(self) -> None:
        with Collector() as collector, FakeUpstream([good(7)]) as upstream:
            self.masker.ports.update([collector.server.server_address[1], upstream.server.server_address[1]])
            svc = self.started(self.service(settings=_work(upstream.url, "0.5"), env={"APM_URL": collector.url}))
            upstream.wait_calls(2, 10)
            self.stopped(svc)
        seen: dict[tuple[str, str, tuple[str, ...]], None] = {}
        for path, content_type, body in collector.posts:
            self.t.add(f"collector got POST {path} {content_type}")
            for span in otlp_spans(body):
                seen.setdefault(span, None)
            break
        for name, kind, keys in sorted(seen):
            self.t.add(f"span {name} kind={kind} attributes={','.join(keys)}")
        biggest = max((len(body) for _, _, body in collector.posts), default=0)
        self.t.add(f"largest batch under 4 KiB: {biggest < 4096}")


def _work(url: str, interval: str = "30") -> dict[str, str]:
    return {"WORK__UPSTREAM_URL": url, "WORK__INTERVAL_SECS": interval}


def _fetched_at(svc: Service) -> int:
    import json

    return int(json.loads((svc.data_dir / "last_value.json").read_text())["fetched_at"])


def _not_transient(line: str) -> bool:
    """Lines whose count or presence depends on timing are left out."""
    return " DEBUG " not in line and " TRACE " not in line


def _metric_line(line: str, prefix: str) -> str:
    """A metrics page line with the values that differ by run masked, the others kept."""
    match = re.match(r"^(?P<series>[a-zA-Z_:][^ ]*(?:\{.*\})?) (?P<value>\S+)$", line)
    if line.startswith("#") or match is None:
        return line
    series, value = match.group("series"), match.group("value")
    if series.startswith("process_"):
        return f"{series} <n>"
    if series.startswith(f"{prefix}heartbeat_timestamp_seconds"):
        whole = re.fullmatch(r"\d+", value) is not None
        return f"{series} {'<unix seconds>' if whole else '<not whole seconds>'}"
    if series.startswith(f"{prefix}build_info"):
        series = re.sub(r'commit="[^"]*"', 'commit="<commit>"', series)
        series = re.sub(r'flavour="[^"]*"', 'flavour="<flavour>"', series)
    if 'route="/.well-known/ready"' in series:
        return ""  # the boot polls ready a number of times that depends on timing
    return f"{series} {value}"


# ---------------------------------------------------------------------- the test
def _build(flavour: str, tmp_path_factory: pytest.TempPathFactory) -> BuiltService:
    from services import build_service

    assert FLAVOUR_MANIFESTS[flavour].exists()
    require_tool(FLAVOUR_TOOLS[flavour])
    return build_service(flavour, tmp_path_factory.mktemp(f"transcript-{flavour}-build"), **ANSWERS)


def transcript_of(built: BuiltService, root: Path) -> list[str]:
    lines = Scenarios(built, root).run()
    return [line for line in lines if line != "metrics| "] + [""]


@pytest.mark.parametrize(
    "flavour", ["python", pytest.param("rust", marks=pytest.mark.rust)]
)
def test_transcript(flavour: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    built = _build(flavour, tmp_path_factory)
    got = transcript_of(built, tmp_path_factory.mktemp(f"transcript-{flavour}"))
    text = "# The golden transcript (tests/test_transcript.py); regenerate with\n" \
        f"# {UPDATE_VARIABLE}=python python3 -m pytest tests/test_transcript.py\n" + "\n".join(got)
    if os.environ.get(UPDATE_VARIABLE) == flavour:
        TRANSCRIPT.parent.mkdir(parents=True, exist_ok=True)
        TRANSCRIPT.write_text(text)
        return
    assert TRANSCRIPT.exists(), f"no {TRANSCRIPT}: write it with {UPDATE_VARIABLE}=python"
    want = TRANSCRIPT.read_text()
    if want != text:
        diff = difflib.unified_diff(
            want.splitlines(), text.splitlines(), "tests/data/transcript.txt", f"{flavour} flavour", lineterm="", n=1
        )
        pytest.fail(f"the {flavour} flavour drifts from the golden transcript:\n" + "\n".join(diff), pytrace=False)
