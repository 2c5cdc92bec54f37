"""Log lines of the contract, on stderr and in the log file, the same bytes.

    Nov 05 15:30:45.234 INFO listening addr=127.0.0.1:8080

Built on the standard library's logging, so that records of libraries (aiohttp, asyncio)
get the same format and the same filter. The filter has RUST_LOG's syntax, with Python
module paths written with dots: `info`, `debug`, `order_router.work=debug,info`.
"""

from __future__ import annotations

import logging as std_logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from .errors import number

TRACE = 5
OFF = std_logging.CRITICAL + 10
std_logging.addLevelName(TRACE, "TRACE")

LEVELS = {
    "off": OFF,
    "error": std_logging.ERROR,
    "warn": std_logging.WARNING,
    "info": std_logging.INFO,
    "debug": std_logging.DEBUG,
    "trace": TRACE,
}
FILTER_RULE = "a level (off, error, warn, info, debug, trace) and/or module=level pairs, comma separated"
# Events that need a human are logged at ERROR with a message starting "CRITICAL ".
_LEVEL_NAMES = {
    std_logging.CRITICAL: "ERROR",
    std_logging.ERROR: "ERROR",
    std_logging.WARNING: "WARN",
    std_logging.INFO: "INFO",
    std_logging.DEBUG: "DEBUG",
    TRACE: "TRACE",
}
# Month names are spelled out here, not taken from strftime("%b"), which follows the locale.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
# A module of a filter directive: identifiers joined by dots (`::` is read as a dot).
_MODULE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
# `scheme://user:password@` in a value: the credentials never reach a log line or an error.
# The userinfo ends at the authority's last `@`: a password may hold an `@` unescaped.
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]+@")


@dataclass(frozen=True)
class LogFilter:
    """A default level and per-module levels; a module's level covers its submodules."""

    default: int = std_logging.INFO
    modules: tuple[tuple[str, int], ...] = ()


def parse_filter(text: str) -> LogFilter:
    """Parse RUST_LOG syntax (`info`, `pkg.work=debug,info`); ValueError quotes the bad directive.

    The grammar both flavours accept: comma-separated directives, each a level or
    `module=level`, a module being a path of identifiers joined by `.` or `::`.
    """
    default = std_logging.INFO
    modules: list[tuple[str, int]] = []
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError("the filter is empty")
    for part in parts:
        module, sep, level_text = part.rpartition("=")
        level = LEVELS.get(level_text.strip().lower())
        # `pkg::work` is accepted too, so that one RUST_LOG value serves both flavours.
        module = module.strip().replace("::", ".")
        if level is None or (sep and not _MODULE_PATH.fullmatch(module)):
            quoted = part.replace("\\", "\\\\").replace('"', '\\"')
            raise ValueError(f'"{quoted}" is not a valid directive')
        if sep:
            modules.append((module, level))
        else:
            default = level
    return LogFilter(default, tuple(modules))


def redact_urls(text: str) -> str:
    """The text with the `user:password@` of every URL in it replaced by `[redacted]@`."""
    return _URL_CREDENTIALS.sub(r"\1[redacted]@", text) if "@" in text else text


def format_value(value: object) -> str:
    """A `key=value` value: quoted when empty or holding a space, `=`, `"` or a control character."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = number(value)  # 30.0 -> "30", 0.5 -> "0.5", as in the Rust flavour
    else:
        text = redact_urls(str(value))
    if text and not any(ch in ' ="' or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        return text
    escaped = "".join(_ESCAPES.get(ch) or (f"\\u{{{ord(ch):x}}}" if ord(ch) < 0x20 else ch) for ch in text)
    return f'"{escaped}"'


class LineFormatter(std_logging.Formatter):
    """`Mon DD HH:MM:SS.fff LEVEL message key=value...`, in UTC."""

    def format(self, record: std_logging.LogRecord) -> str:
        level = _LEVEL_NAMES.get(record.levelno) or (
            "ERROR" if record.levelno > std_logging.ERROR else "TRACE"
        )
        fields: dict[str, object] = dict(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[1] is not None:
            # A traceback would break the one-line-per-event rule; the error's text is kept.
            fields.setdefault("error", f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}")
        return format_line(record.created, int(record.msecs), level, record.getMessage(), fields)


def format_line(created: float, msecs: int, level: str, message: str, fields: Mapping[str, object]) -> str:
    """`Mon DD HH:MM:SS.fff LEVEL message key=value...` for a Unix time, in UTC."""
    stamp = datetime.fromtimestamp(created, UTC)
    line = (
        f"{_MONTHS[stamp.month - 1]} {stamp.day:02d} {stamp.hour:02d}:{stamp.minute:02d}:"
        f"{stamp.second:02d}.{msecs:03d} {level} {message}"
    )
    return line + "".join(f" {key}={format_value(value)}" for key, value in fields.items())


class Logger:
    """A logger taking the line's pairs as keyword arguments: `log.info("ready", port=8080)`."""

    def __init__(self, name: str) -> None:
        self._logger = std_logging.getLogger(name)

    def error(self, message: str, **fields: object) -> None:
        self._log(std_logging.ERROR, message, fields)

    def warn(self, message: str, **fields: object) -> None:
        self._log(std_logging.WARNING, message, fields)

    def info(self, message: str, **fields: object) -> None:
        self._log(std_logging.INFO, message, fields)

    def debug(self, message: str, **fields: object) -> None:
        self._log(std_logging.DEBUG, message, fields)

    def trace(self, message: str, **fields: object) -> None:
        self._log(TRACE, message, fields)

    def _log(self, level: int, message: str, fields: dict[str, object]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, message, extra={"fields": fields}, stacklevel=3)


def get_logger(name: str) -> Logger:
    """The logger of a module, named after it so that the filter's module paths apply."""
    return Logger(name)


class ReopeningFileHandler(std_logging.FileHandler):
    """A file handler that logrotate can move away: `reopen()` on SIGHUP starts a new file.

    A line that cannot be written (disk full) is lost, counted as
    `exhaustion_total{kind="log_write"}` and reported on stderr at most once per interval;
    the service goes on.
    """

    _failing = False

    def handleError(self, record: std_logging.LogRecord) -> None:
        if self._failing:
            return
        self._failing = True
        try:
            from . import limits  # noqa: PLC0415 (limits logs through this module)

            limits.exhausted("log_write", path=self.baseFilename)
        finally:
            self._failing = False

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


@dataclass
class LogSink:
    """What `logs()` opened: the log file's path and the handle to reopen it."""

    path: Path | None
    file_handler: ReopeningFileHandler | None

    def reopen(self) -> None:
        if self.file_handler is not None:
            self.file_handler.reopen()


_configured_modules: list[str] = []


def apply_filter(log_filter: LogFilter) -> None:
    """Set the levels of the standard library's loggers from the filter."""
    for name in _configured_modules:
        std_logging.getLogger(name).setLevel(std_logging.NOTSET)
    _configured_modules.clear()
    std_logging.getLogger().setLevel(log_filter.default)
    for name, level in log_filter.modules:
        std_logging.getLogger(name).setLevel(level)
        _configured_modules.append(name)


@contextmanager
def logs(
    log_filter: LogFilter,
    log_file: Path | None = None,
    stream: IO[str] | None = None,
    target: str = "both",
) -> Iterator[LogSink]:
    """Send every log line to `stream` (default stderr) and append it to `log_file`.

    `target` (`log.target`) keeps one of the two: `"file"` or `"stderr"`. The stream is
    injectable so that tests can capture or silence it.
    """
    formatter = LineFormatter()
    handlers: list[std_logging.Handler] = []
    if target != "file":
        handlers.append(std_logging.StreamHandler(stream if stream is not None else sys.stderr))
    if target == "stderr":
        log_file = None
    file_handler = None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = ReopeningFileHandler(log_file, mode="a", encoding="utf-8")
        handlers.append(file_handler)
    for handler in handlers:
        handler.setFormatter(formatter)
    root = std_logging.getLogger()
    saved = root.handlers[:]
    root.handlers = handlers
    apply_filter(log_filter)
    try:
        yield LogSink(log_file, file_handler)
    finally:
        for handler in handlers:
            handler.flush()
            handler.close()
        root.handlers = saved
