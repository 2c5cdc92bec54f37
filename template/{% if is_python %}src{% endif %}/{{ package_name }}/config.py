"""Configuration: three layers, validated as a whole before anything starts.

1. the base file, `cfg/config.toml` (or `--config PATH`): committed, no secrets;
2. the secrets file, `${PREFIX}/key/env.toml`: optional, mode 0600;
3. environment variables `<SVC>_<SECTION>__<KEY>`, e.g. `ORDER_ROUTER_HTTP__PORT=9000`.

The platform's sections are stated here; the service part's sections are the fields of its
`Settings` model (`service/settings.py`), each a `Section`, loaded through the same layers
with the same error lines, variables, `check-config` lines and redaction: a `SecretStr`
field is a secret, and the `user:password@` of any URL value is redacted.

A later layer overrides an earlier one key by key. `RUST_LOG` sets `log.filter` and
`APM_URL` sets `apm.url`, both as the env layer. Every error is collected, then reported
one per line, naming the key, the layer and what is allowed:

    config error: http.port (env ORDER_ROUTER_HTTP__PORT): 70000 is out of range; allowed 1-65535
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from . import about
from .errors import os_reason
from .logging import FILTER_RULE, parse_filter, redact_urls

DEFAULT_CONFIG = Path("cfg/config.toml")
DEFAULT_PREFIX = "/srv"
LAYERS = ("default", "base", "secrets", "env")
_HOST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_URL = TypeAdapter(HttpUrl)


class ConfigError(Exception):
    """The configuration cannot be used; each line names the key, the layer and what is allowed."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOST_NAME.match(value):
            raise ValueError(f"{toml_literal(value)} is not an IP address or host name") from None
    return value


def _filter(value: str) -> str:
    parse_filter(value)
    return value


def _optional_url(value: str) -> str:
    if value:
        try:
            _URL.validate_python(value)
        except ValidationError:
            raise ValueError(f"{toml_literal(value)} is not an http(s) URL") from None
    return value


def _log_target(value: str) -> str:
    if value not in LOG_TARGETS:
        raise ValueError(f"{toml_literal(value)} is not a log target")
    return value


def _path(value: str) -> str:
    if not value.strip():
        raise ValueError("the path is empty")
    return value


def _optional_path(value: str) -> str:
    if value and not value.strip():
        raise ValueError("the path is blank")
    return value


Host = Annotated[str, AfterValidator(_host)]
FilterText = Annotated[str, AfterValidator(_filter)]
# An http(s) URL, or empty for none.
OptionalUrl = Annotated[str, AfterValidator(_optional_url)]
PathText = Annotated[str, AfterValidator(_path)]
LogTarget = Annotated[str, AfterValidator(_log_target)]
# A path, or empty for none.
OptionalPath = Annotated[str, AfterValidator(_optional_path)]
# The `description` of a field is the "allowed ..." part of its error lines.
SECONDS = "allowed a number of seconds > 0 (fractions allowed)"
OPTIONAL_URL = "allowed an http(s) URL, or empty"
_PATH = "allowed a non-empty path (${PREFIX} is expanded)"
LOG_TARGETS = ("file", "stderr", "both")
PEM_ALLOWED = "allowed a path to a PEM file, or empty (${PREFIX} is expanded)"
# The keys holding paths, whose `${PREFIX}` is expanded at load.
_PATH_KEYS = ("http.tls_cert_file", "http.tls_key_file", "http.client_ca_file")


class Section(BaseModel):
    """A `[section]` of the configuration: unknown keys are errors, values are frozen.

    Each field is a key, stated once: its default, its rule (pydantic constraints or an
    `AfterValidator`) and, in `description`, what is allowed (`"allowed 1-1024"`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class Http(Section):
    host: Host = Field(default="127.0.0.1", description="allowed an IP address or host name")
    port: int = Field(
        default=about.DEFAULT_PORT, ge=0, le=65535, description="allowed 1-65535 (0 picks a free port)"
    )
    header_timeout_secs: float = Field(default=10.0, gt=0, allow_inf_nan=False, description=SECONDS)
    idle_timeout_secs: float = Field(default=60.0, gt=0, allow_inf_nan=False, description=SECONDS)
    write_timeout_secs: float = Field(default=30.0, gt=0, allow_inf_nan=False, description=SECONDS)
    max_connections: int = Field(default=1024, ge=1, le=1_000_000, description="allowed 1-1000000")

    tls_cert_file: OptionalPath = Field(default="", description=PEM_ALLOWED)
    tls_key_file: OptionalPath = Field(default="", description=PEM_ALLOWED)
    client_ca_file: OptionalPath = Field(default="", description=PEM_ALLOWED)


class Log(Section):
    filter: FilterText = Field(default="info", description=f"allowed {FILTER_RULE}")
    # Where lines go: the log file, stderr, or both (deploy files that collect stderr pick "stderr").
    target: LogTarget = Field(default="both", description='allowed "file", "stderr" or "both"')


class Paths(Section):
    log_file: PathText = Field(default=f"./log/{about.NAME}.log", description=_PATH)
    pid_file: PathText = Field(default=f"${{PREFIX}}/run/{about.NAME}.pid", description=_PATH)
    heartbeat_file: PathText = Field(default=f"./tmp/{about.NAME}.heartbeat", description=_PATH)
    data_dir: PathText = Field(default=f"${{PREFIX}}/data/{about.NAME}", description=_PATH)
    tmp_dir: PathText = Field(default="./tmp", description=_PATH)
    # Files in tmp_dir older than this are removed at start.
    tmp_max_age_secs: float = Field(default=86400.0, gt=0, allow_inf_nan=False, description=SECONDS)

    audit_file: PathText = Field(default=f"./log/{about.NAME}.audit.log", description=_PATH)


class Heartbeat(Section):
    interval_secs: float = Field(default=10.0, gt=0, allow_inf_nan=False, description=SECONDS)


class Shutdown(Section):
    timeout_secs: float = Field(default=30.0, gt=0, allow_inf_nan=False, description=SECONDS)


class Runtime(Section):
    worker_threads: int = Field(
        default=0, ge=0, le=1024, description="allowed 0-1024 (0 = the available cores)"
    )


class Backup(Section):
    """Where `backup` writes snapshots of `paths.data_dir`, and how many it keeps."""

    dir: PathText = Field(default=f"${{PREFIX}}/backup/{about.NAME}", description=_PATH)
    keep: int = Field(default=7, ge=1, le=1000, description="allowed 1-1000")


class Apm(Section):
    url: OptionalUrl = Field(default="", description=OPTIONAL_URL)


class Settings(BaseSettings):
    """The platform's keys; `settings_model` adds the service part's sections to them."""

    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, env_prefix=about.ENV_PREFIX, env_nested_delimiter="__"
    )

    http: Http = Http()
    log: Log = Log()
    paths: Paths = Paths()
    heartbeat: Heartbeat = Heartbeat()
    shutdown: Shutdown = Shutdown()
    runtime: Runtime = Runtime()
    backup: Backup = Backup()
    apm: Apm = Apm()


_S = TypeVar("_S", bound=Section)

# The platform's sections printed after the service part's.
_LAST_SECTIONS = ("apm",)


def service_sections() -> type[BaseModel]:
    """The service part's settings model: its fields are its sections."""
    from .service import Settings as ServiceSettings  # noqa: PLC0415 (the service part imports config)

    return ServiceSettings


@cache
def settings_model(sections: type[BaseModel]) -> type[Settings]:
    """The platform's `Settings` with the service part's sections added, each a `Section`."""
    fields: dict[str, Any] = {}
    for name, info in sections.model_fields.items():
        if name in Settings.model_fields:
            raise TypeError(f"the service's section [{name}] is a platform section; rename it")
        if not (isinstance(info.annotation, type) and issubclass(info.annotation, Section)):
            raise TypeError(f"the service's section [{name}] must be a config.Section model")
        fields[name] = (info.annotation, info)
    return create_model("Settings", __base__=Settings, **fields)


def _sections(model: type[Settings]) -> list[str]:
    """The sections in the contract's order: the platform's, the service part's, then `apm`."""
    names = list(model.model_fields)
    return [name for name in names if name not in _LAST_SECTIONS] + [
        name for name in names if name in _LAST_SECTIONS
    ]


def keys(sections: type[BaseModel] | None = None) -> list[str]:
    """Every key, `section.name`, in the contract's order."""
    model = settings_model(sections or service_sections())
    return [
        f"{section}.{name}"
        for section in _sections(model)
        for name in _section_model(model, section).model_fields
    ]


def secret_keys(model: type[Settings]) -> frozenset[str]:
    """The keys whose values are secrets: the fields typed `SecretStr`."""
    return frozenset(
        f"{section}.{name}"
        for section in model.model_fields
        for name, info in _section_model(model, section).model_fields.items()
        if info.annotation is SecretStr
    )


def _section_model(model: type[Settings], section: str) -> type[BaseModel]:
    annotation = model.model_fields[section].annotation
    assert isinstance(annotation, type)
    assert issubclass(annotation, BaseModel)
    return annotation


class _SectionVariables(EnvSettingsSource):
    """pydantic-settings' env source, reading `<SVC>_<SECTION>__<KEY>` variables of `environ`.

    Variables of another shape are ignored (pydantic-settings would parse `<SVC>_HTTP` as a
    JSON table), and the mapping is given rather than read from os.environ so that tests
    need not change the process's environment.
    """

    def __init__(self, model: type[Settings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(model, case_sensitive=False)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        prefix = about.ENV_PREFIX.lower()
        return {
            name.lower(): value
            for name, value in self._environ.items()
            if name.lower().startswith(prefix) and "__" in name[len(prefix) :]
        }


@dataclass
class Loaded:
    """The validated settings and, for each key (in the contract's order), the layer of its value.

    `settings` holds every section; `service` the service part's own `Settings` model.
    """

    settings: Settings
    service: BaseModel
    layers: dict[str, str] = field(default_factory=dict)
    # The secrets file read, and its mode (for the audit line; never its content).
    secrets_read: tuple[Path, int] | None = None

    def check_config_lines(self) -> list[str]:
        """`<key> = <TOML literal> (<layer>)` per key, secrets redacted, then `configuration OK`."""
        lines = []
        for key, layer in self.layers.items():
            section, name = key.split(".")
            value = getattr(getattr(self.settings, section), name)
            lines.append(f"{key} = {toml_literal(value)} ({layer})")
        return [*lines, "configuration OK"]

    def digest(self) -> str:
        """A short sha256 of the effective configuration, secrets redacted (the start's audit line).

        Computed over the `<key> = <value>` lines of `check-config` without their layers, one
        per line, so that both flavours give the same digest for the same configuration.
        """
        text = "".join(line.rpartition(" (")[0] + "\n" for line in self.check_config_lines()[:-1])
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class _Layers:
    values: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, str] = field(default_factory=dict)
    env_names: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def merge(self, data: Mapping[str, Any], layer: str) -> None:
        for section, table in data.items():
            if isinstance(table, Mapping) and isinstance(self.values.get(section, {}), dict):
                target = self.values.setdefault(section, {})
                for name, value in table.items():
                    target[name] = value
                    self.layers[f"{section}.{name}"] = layer
            else:
                self.values[section] = table
                self.layers[section] = layer

    def where(self, key: str) -> str:
        """The layer that set `key` (for a whole table: the last layer that set a key in it)."""
        layer = self.layers.get(key) or next(
            (found for name, found in reversed(self.layers.items()) if name.startswith(f"{key}.")),
            "default",
        )
        if layer == "env" and key in self.env_names:
            return f"env {self.env_names[key]}"
        return layer


def load(
    path: Path = DEFAULT_CONFIG,
    environ: Mapping[str, str] | None = None,
    sections: type[BaseModel] | None = None,
) -> Loaded:
    """Read the three layers, merge them key by key, validate; ConfigError lists every problem.

    `sections` is the service part's settings model (default: the one of `service/`).
    """
    sections = sections or service_sections()
    model = settings_model(sections)
    env = dict(os.environ if environ is None else environ)
    prefix = env.get("PREFIX") or DEFAULT_PREFIX
    merged = _Layers()
    base = _read_toml(model, path, merged.errors)
    if base is not None:
        merged.merge(base, "base")
    secrets_path = Path(prefix) / "key" / "env.toml"
    secrets_read: tuple[Path, int] | None = None
    if secrets_path.exists():
        problems = secret_file_problems(secrets_path, "secrets file")
        if problems:
            merged.errors.extend(problems)
        else:
            secrets = _read_toml(model, secrets_path, merged.errors)
            if secrets is not None:
                merged.merge(secrets, "secrets")
                secrets_read = (secrets_path, stat.S_IMODE(secrets_path.stat().st_mode))
    merged.merge(_environment(model, env, merged), "env")
    merged.errors.extend(_unknown_sections(model, env))

    try:
        settings = model.model_validate(merged.values)
    except ValidationError as error:
        merged.errors.extend(_describe(model, problem, merged) for problem in error.errors())
        raise ConfigError(merged.errors) from None
    if merged.errors:
        raise ConfigError(merged.errors)
    http = {
        name: value.replace("${PREFIX}", prefix) if f"http.{name}" in _PATH_KEYS else value
        for name, value in settings.http.model_dump().items()
    }
    settings = settings.model_copy(
        update={
            "paths": _expanded(settings.paths, prefix),
            "backup": _expanded(settings.backup, prefix),
            "http": Http(**http),
        }
    )
    _check_tls(settings.http, merged)
    if merged.errors:
        raise ConfigError(merged.errors)
    service = sections.model_validate({name: getattr(settings, name) for name in sections.model_fields})
    layers = {key: merged.layers.get(key, "default") for key in keys(sections)}
    return Loaded(settings, service, layers, secrets_read)


def secret_file_problems(path: Path, what: str) -> list[str]:
    """What is wrong with a file holding a secret (`what`: "secrets file", "TLS key file").

    It must be owned by the user the service runs as (root included: a root service reads
    only root's files), and not be accessible by group or others. Each problem is one
    `config error:` line with the command that fixes it; a missing file is no problem here.
    """
    try:
        info = path.stat()
    except OSError:
        return []
    problems = []
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        problems.append(
            f"config error: {what} {path} has mode {mode:04o}; it must not be "
            f"accessible by group or others (chmod 600 {path})"
        )
    uid = os.geteuid()
    if info.st_uid != uid:
        problems.append(
            f"config error: {what} {path} is owned by uid {info.st_uid}; it must be owned by "
            f"the user running the service, uid {uid} (chown {uid} {path})"
        )
    return problems


def _check_tls(http: Http, merged: _Layers) -> None:
    """Both TLS files or neither. The files themselves are checked when the service loads them
    (`tls.load`, at start and by check-config), so that a committed path need not exist here."""
    cert, key = http.tls_cert_file, http.tls_key_file
    if bool(cert) != bool(key):
        empty = "http.tls_key_file" if cert else "http.tls_cert_file"
        merged.errors.append(
            f"config error: {empty} ({merged.where(empty)}): empty while the other TLS file is set; "
            "allowed both http.tls_cert_file and http.tls_key_file set, or neither"
        )


def _expanded(section: _S, prefix: str) -> _S:
    """The section with `${PREFIX}` expanded in each of its string values."""
    return section.model_copy(
        update={
            name: value.replace("${PREFIX}", prefix)
            for name, value in section.model_dump().items()
            if isinstance(value, str)
        }
    )


def _read_toml(model: type[Settings], path: Path, errors: list[str]) -> dict[str, Any] | None:
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError as error:
        errors.append(f"config error: cannot read {path}: {os_reason(error)}")
        return None
    try:
        return TomlConfigSettingsSource(model, toml_file=path)()
    except tomllib.TOMLDecodeError as error:
        errors.append(f"config error: {path}: not valid TOML at {toml_position(text, str(error))}")
        return None


def toml_position(text: str, message: str) -> str:
    """`line L, column C` of a TOML syntax error, placed as both flavours can: L is the line where
    the parser stopped (the last line at the end of the document), C where that line's text starts.
    """
    lines = text.splitlines() or [""]
    found = re.search(r"at line (\d+)", message)
    number = min(int(found.group(1)), len(lines)) if found else len(lines)
    line = lines[number - 1]
    return f"line {number}, column {len(line) - len(line.lstrip()) + 1}"


def _environment(model: type[Settings], env: Mapping[str, str], merged: _Layers) -> dict[str, Any]:
    """The env layer: `<SVC>_SECTION__KEY` variables, then RUST_LOG and APM_URL."""
    data = _SectionVariables(model, env)()
    for name in env:
        section, _, key = name[len(about.ENV_PREFIX) :].lower().partition("__")
        if name.upper().startswith(about.ENV_PREFIX) and key:
            merged.env_names[f"{section}.{key}"] = name
    if "RUST_LOG" in env:
        data.setdefault("log", {})["filter"] = env["RUST_LOG"]
        merged.env_names["log.filter"] = "RUST_LOG"
    if env.get("APM_URL"):
        data.setdefault("apm", {})["url"] = env["APM_URL"]
        merged.env_names["apm.url"] = "APM_URL"
    return data


def _unknown_sections(model: type[Settings], env: Mapping[str, str]) -> list[str]:
    """Variables shaped `<SVC>_SECTION__KEY` whose section does not exist (the env source skips them)."""
    errors = []
    for name in sorted(env):
        section, _, key = name[len(about.ENV_PREFIX) :].lower().partition("__")
        if name.upper().startswith(about.ENV_PREFIX) and key and section not in model.model_fields:
            errors.append(
                f"config error: {section}.{key} (env {name}): unknown key; "
                f"allowed tables: {', '.join(_sections(model))}"
            )
    return errors


def _describe(model: type[Settings], problem: Mapping[str, Any], merged: _Layers) -> str:
    """One pydantic error as `config error: <key> (<layer>): <what is wrong>; <what is allowed>`."""
    loc = [str(part) for part in problem["loc"]]
    key = ".".join(loc)
    kind = problem["type"]
    value = "[redacted]" if key in secret_keys(model) else toml_literal(problem.get("input"))
    where = f"config error: {key} ({merged.where(key)})"
    if kind == "extra_forbidden" and len(loc) == 1:
        return f"{where}: unknown key; allowed tables: {', '.join(_sections(model))}"
    section_keys = ", ".join(_section_model(model, loc[0]).model_fields)
    if kind == "extra_forbidden":
        return f"{where}: unknown key; allowed keys of [{loc[0]}]: {section_keys}"
    if len(loc) == 1:
        return f"{where}: {value} is not a table; allowed keys of [{key}]: {section_keys}"
    info = _section_model(model, loc[0]).model_fields.get(loc[1])
    allowed = info.description if info is not None and info.description else "see cfg/config.toml"
    if kind == "value_error":
        wrong = str(problem.get("ctx", {}).get("error", problem["msg"]))
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"):
        # A number from the env layer is still the variable's text: shown as written.
        shown = problem.get("input")
        secret = key in secret_keys(model)
        wrong = f"{redact_urls(shown) if isinstance(shown, str) and not secret else value} is out of range"
    elif kind in ("int_parsing", "int_type", "int_from_float"):
        wrong = f"{value} is not a whole number"
    elif kind in ("float_parsing", "float_type"):
        wrong = f"{value} is not a number"
    elif kind in ("string_type", "string_sub_type"):
        wrong = f"{value} is not a string"
    else:
        wrong = f"{value}: {problem['msg']}"
    return f"{where}: {wrong}; {allowed}"


def toml_literal(value: object) -> str:
    """A value as a TOML literal (`9000`, `"127.0.0.1"`, `10.0`), secrets redacted."""
    if isinstance(value, SecretStr):
        return '"[redacted]"' if value.get_secret_value() else '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(redact_urls(value), ensure_ascii=False)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{name} = {toml_literal(item)}" for name, item in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(item) for item in value) + "]"
    return json.dumps(str(value))
