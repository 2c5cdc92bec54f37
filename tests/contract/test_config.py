"""Contract §2 and §3: three configuration layers, validated at once, before anything starts."""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest

from plumbline.rules import CONTRACT_KEYS
from services import Service

pytestmark = pytest.mark.slow

# The sections check-config prints after the service part's (docs/contract-choices.md).
LAST_SECTIONS = ("apm",)
# The example service part's keys, in its order.
EXAMPLE_KEYS = ["work.interval_secs", "work.max_concurrency", "work.upstream_url", "work.upstream_token"]
SETTING_LINE = re.compile(
    r"^(?P<key>[a-z_]+\.[a-z_]+) = (?P<value>.+) \((?P<layer>default|base|secrets|env)\)$"
)
ERROR_LINE = re.compile(
    r"^config error: (?P<key>\S+) \((?P<layer>base|secrets|env)(?: (?P<var>[A-Z0-9_]+))?\): "
    r"(?P<what>.+?); (?P<allowed>.+)$"
)


def effective(proc) -> dict[str, tuple[object, str]]:
    """check-config's stdout as {key: (value, layer)}, checking its shape on the way."""
    assert proc.returncode == 0, f"check-config failed with {proc.returncode}: {proc.stderr}"
    lines = proc.stdout.splitlines()
    assert lines and lines[-1] == "configuration OK", f"last line must be `configuration OK`: {proc.stdout!r}"
    out: dict[str, tuple[object, str]] = {}
    for line in lines[:-1]:
        match = SETTING_LINE.match(line)
        assert match, f"check-config line {line!r} is not `<key> = <value> (<layer>)`"
        value = tomllib.loads(f"v = {match['value']}")["v"]  # each value is a TOML literal
        out[match["key"]] = (value, match["layer"])
    # the platform's keys in the contract's order (CONTRACT_KEYS), the service part's before the last sections
    service = [key for key in out if key not in CONTRACT_KEYS]
    last = [key for key in CONTRACT_KEYS if key.split(".")[0] in LAST_SECTIONS]
    expected = [key for key in CONTRACT_KEYS if key not in last] + service + last
    assert list(out) == expected, f"check-config keys/order differ from the contract: {list(out)}"
    return out


def example_keys(svc: Service, text: str) -> str:
    """`text` when the service part is the template's example, else nothing."""
    return text if svc.built.example else ""


def errors(proc) -> list[re.Match[str]]:
    """The `config error:` lines of a failed run; every stderr line mentioning an error must parse."""
    assert proc.returncode == 1, f"expected exit 1 (config error), got {proc.returncode}: {proc.stderr}"
    found = []
    for line in proc.stderr.splitlines():
        if line.startswith("config error:"):
            match = ERROR_LINE.match(line)
            assert match, (
                f"config error line {line!r} is not `config error: <key> (<layer>): <what>; <allowed>`"
            )
            found.append(match)
    assert found, f"no `config error:` line on stderr: {proc.stderr!r}"
    return found


def check(svc: Service, config: str | None = None, env: dict[str, str] | None = None):
    args = ["check-config"]
    if config is not None:
        path = svc.workdir / "cfg" / "test.toml"
        path.write_text(config)
        args += ["--config", str(path)]
    return svc.cli(*args, env=env)


def test_generated_base_config_is_what_check_config_reports(spawn):
    svc = spawn(fast=False)
    name = svc.name

    got = effective(check(svc))

    expected = {
        "http.host": ("127.0.0.1", "base"),
        "http.port": (svc.built.answers["http_port"], "base"),
        "http.header_timeout_secs": (10, "base"),
        "http.idle_timeout_secs": (60, "base"),
        "http.write_timeout_secs": (30, "base"),
        "http.max_connections": (1024, "base"),
        "http.tls_cert_file": ("", "base"),
        "http.tls_key_file": ("", "base"),
        "http.client_ca_file": ("", "base"),
        "log.filter": ("info", "base"),
        "log.target": ("both", "base"),
        "paths.log_file": (f"./log/{name}.log", "base"),
        "paths.pid_file": (f"{svc.prefix}/run/{name}.pid", "base"),
        "paths.heartbeat_file": (f"./tmp/{name}.heartbeat", "base"),
        "paths.data_dir": (f"{svc.prefix}/data/{name}", "base"),
        "paths.tmp_dir": ("./tmp", "base"),
        "paths.tmp_max_age_secs": (86400, "base"),
        "paths.audit_file": (f"./log/{name}.audit.log", "base"),
        "heartbeat.interval_secs": (10, "base"),
        "shutdown.timeout_secs": (30, "base"),
        "runtime.worker_threads": (0, "base"),
        "backup.dir": (f"{svc.prefix}/backup/{name}", "base"),
        "backup.keep": (7, "base"),
        "apm.url": ("", "base"),
    }
    assert {key: got[key] for key in CONTRACT_KEYS} == expected
    assert isinstance(got["http.port"][0], int)
    if svc.built.example:
        assert {key: got[key] for key in EXAMPLE_KEYS} == {
            "work.interval_secs": (60, "base"),
            "work.max_concurrency": (4, "base"),
            "work.upstream_url": ("", "base"),
            "work.upstream_token": ("", "default"),
        }
        assert list(got) == [*expected][:-1] + EXAMPLE_KEYS + ["apm.url"]
        assert isinstance(got["work.max_concurrency"][0], int)


def test_keys_missing_from_every_layer_take_their_defaults(spawn):
    svc = spawn(fast=False)

    got = effective(check(svc, "[http]\nport = 9000\n"))

    assert got["http.port"] == (9000, "base")
    assert got["http.host"] == ("127.0.0.1", "default")
    assert got["log.filter"] == ("info", "default")
    assert got["paths.pid_file"] == (f"{svc.prefix}/run/{svc.name}.pid", "default")
    assert got["heartbeat.interval_secs"] == (10, "default")
    if svc.built.example:
        assert got["work.max_concurrency"] == (4, "default")


def test_later_layers_override_key_by_key_and_tables_merge(spawn):
    svc = spawn(fast=False)
    svc.write_secrets('[http]\nport = 2222\n' + example_keys(svc, '[work]\nupstream_token = "s3cr3t-merge"\n'))
    base = '[http]\nhost = "127.0.0.3"\nport = 1111\n[heartbeat]\ninterval_secs = 5\n[shutdown]\ntimeout_secs = 2\n'
    base += example_keys(svc, "[work]\ninterval_secs = 5\nmax_concurrency = 2\n")
    env = {svc.built.env_var("shutdown.timeout_secs"): "8"}
    if svc.built.example:
        env[svc.built.env_var("work.max_concurrency")] = "8"

    got = effective(check(svc, base, env=env))

    assert got["http.host"] == ("127.0.0.3", "base")
    assert got["http.port"] == (2222, "secrets")
    assert got["heartbeat.interval_secs"] == (5, "base")
    assert got["shutdown.timeout_secs"] == (8, "env")
    if svc.built.example:
        assert got["work.interval_secs"] == (5, "base")
        assert got["work.max_concurrency"] == (8, "env")
        assert got["work.upstream_token"] == ("[redacted]", "secrets")


def test_env_overrides_secrets_overrides_base(spawn):
    svc = spawn(fast=False, secrets="[http]\nport = 2222\n")
    base = "[http]\nport = 1111\n"

    got = effective(check(svc, base, env={svc.built.env_var("http.port"): "3333"}))

    assert got["http.port"] == (3333, "env")


def test_fractional_seconds_and_bounds_are_accepted(spawn):
    svc = spawn(fast=False)
    base = (
        "[http]\nport = 0\n[heartbeat]\ninterval_secs = 0.25\n[shutdown]\ntimeout_secs = 0.5\n"
        + example_keys(svc, '[work]\ninterval_secs = 0.1\nmax_concurrency = 1024\nupstream_url = "https://example.com/v"\n')
        + '[apm]\nurl = "http://127.0.0.1:4318"\n'
    )

    got = effective(check(svc, base))

    assert got["http.port"] == (0, "base")
    assert got["heartbeat.interval_secs"] == (0.25, "base")
    assert got["shutdown.timeout_secs"] == (0.5, "base")
    if svc.built.example:
        assert got["work.interval_secs"] == (0.1, "base")
        assert got["work.max_concurrency"] == (1024, "base")
        assert got["work.upstream_url"] == ("https://example.com/v", "base")


def test_prefix_is_expanded_in_every_layer(spawn):
    svc = spawn(fast=False, secrets='[paths]\ndata_dir = "${PREFIX}/from-secrets"\n')

    got = effective(check(svc, env={svc.built.env_var("paths.tmp_dir"): "${PREFIX}/from-env"}))

    assert got["paths.pid_file"] == (f"{svc.prefix}/run/{svc.name}.pid", "base")
    assert got["paths.data_dir"] == (f"{svc.prefix}/from-secrets", "secrets")
    assert got["paths.tmp_dir"] == (f"{svc.prefix}/from-env", "env")


def test_prefix_defaults_to_srv(spawn):
    svc = spawn(fast=False)
    env = svc.environ()
    del env["PREFIX"]

    proc = subprocess.run(
        [str(svc.built.binary), "check-config"],
        cwd=svc.workdir,
        env=env,
        text=True,
        capture_output=True,
        timeout=30,
        check=False,
    )

    got = effective(proc)
    assert got["paths.pid_file"] == (f"/srv/run/{svc.name}.pid", "base")
    assert got["paths.data_dir"] == (f"/srv/data/{svc.name}", "base")


def test_missing_secrets_file_is_an_empty_layer(spawn):
    svc = spawn(fast=False)
    assert not svc.secrets_file.exists()

    got = effective(check(svc))

    assert "secrets" not in {layer for _, layer in got.values()}
    if svc.built.example:
        assert got["work.upstream_token"] == ("", "default")


def test_well_known_variables_override_their_keys(spawn):
    svc = spawn(fast=False)

    got = effective(check(svc, env={"APM_URL": "http://127.0.0.1:4318", "RUST_LOG": "debug"}))

    assert got["apm.url"] == ("http://127.0.0.1:4318", "env")
    assert got["log.filter"] == ("debug", "env")


def test_empty_apm_url_variable_does_not_override(spawn):
    svc = spawn(fast=False)

    got = effective(check(svc, '[apm]\nurl = "http://127.0.0.1:4318"\n', env={"APM_URL": ""}))

    assert got["apm.url"] == ("http://127.0.0.1:4318", "base")


def test_variables_without_section_shape_are_ignored(spawn):
    svc = spawn(fast=False)

    got = effective(
        check(svc, env={svc.built.env_prefix + "SOMETHING": "1", svc.built.env_prefix + "X": "y"})
    )

    assert got["http.host"] == ("127.0.0.1", "base")


# (layer, file text, the key the error names) for one error each; an unknown table may be
# named alone or with its key
BAD = {
    "unknown-key-base": ("base", "[http]\nportt = 1\n", "http.portt"),
    "unknown-section-base": ("base", "[htpp]\nport = 1\n", ("htpp", "htpp.port")),
    "unknown-key-secrets": ("secrets", '[work]\ntoken = "abc"\n', "work.token"),
    "wrong-type-base": ("base", '[heartbeat]\ninterval_secs = "fast"\n', "heartbeat.interval_secs"),
    "wrong-type-secrets": ("secrets", '[http]\nport = "eighty"\n', "http.port"),
    "wrong-type-table-base": ("base", 'http = "localhost"\n', "http"),
    "port-out-of-range-base": ("base", "[http]\nport = 65536\n", "http.port"),
    "zero-heartbeat-base": ("base", "[heartbeat]\ninterval_secs = 0\n", "heartbeat.interval_secs"),
    "negative-shutdown-base": ("base", "[shutdown]\ntimeout_secs = -1\n", "shutdown.timeout_secs"),
    "zero-work-interval-secrets": ("secrets", "[work]\ninterval_secs = 0\n", "work.interval_secs"),
    "zero-concurrency-base": ("base", "[work]\nmax_concurrency = 0\n", "work.max_concurrency"),
    "too-much-concurrency-base": ("base", "[work]\nmax_concurrency = 1025\n", "work.max_concurrency"),
    "malformed-url-base": ("base", '[work]\nupstream_url = "not a url"\n', "work.upstream_url"),
    "non-http-url-base": ("base", '[work]\nupstream_url = "ftp://example.com/v"\n', "work.upstream_url"),
    "malformed-apm-url-base": ("base", '[apm]\nurl = "http//127.0.0.1"\n', "apm.url"),
    "negative-worker-threads-base": ("base", "[runtime]\nworker_threads = -1\n", "runtime.worker_threads"),
    "too-many-worker-threads-base": ("base", "[runtime]\nworker_threads = 1025\n", "runtime.worker_threads"),
    "fractional-worker-threads-base": ("base", "[runtime]\nworker_threads = 1.5\n", "runtime.worker_threads"),
    "empty-host-base": ("base", '[http]\nhost = ""\n', "http.host"),
    "bad-log-filter-base": ("base", '[log]\nfilter = "tally=loud"\n', "log.filter"),
    "bad-log-target-base": ("base", '[log]\ntarget = "syslog"\n', "log.target"),
    "zero-tmp-max-age-base": ("base", "[paths]\ntmp_max_age_secs = 0\n", "paths.tmp_max_age_secs"),
    "zero-backup-keep-base": ("base", "[backup]\nkeep = 0\n", "backup.keep"),
    "too-many-backups-secrets": ("secrets", "[backup]\nkeep = 1001\n", "backup.keep"),
    "empty-backup-dir-base": ("base", '[backup]\ndir = ""\n', "backup.dir"),
}
BAD_ENV = {
    "unknown-key-env": ("work.bogus", "1"),
    "port-out-of-range-env": ("http.port", "70000"),
    "wrong-type-env": ("http.port", "eighty"),
    "zero-concurrency-env": ("work.max_concurrency", "0"),
    "malformed-url-env": ("work.upstream_url", "http://"),
    "bad-log-target-env": ("log.target", "journal"),
    "fractional-backup-keep-env": ("backup.keep", "2.5"),
}


def cases(table: dict[str, tuple]) -> list:
    """The cases of a table, those naming a key of the example's [work] marked `example`."""
    def example(case: tuple) -> bool:
        return any(str(part).startswith(("work.", "[work]")) for part in case)

    return [pytest.param(name, id=name, marks=[pytest.mark.example] if example(case) else []) for name, case in table.items()]


@pytest.mark.parametrize("case", cases(BAD))
def test_bad_file_value_exits_1_naming_key_and_layer(spawn, case):
    layer, text, key = BAD[case]
    svc = spawn(fast=False)
    if layer == "secrets":
        svc.write_secrets(text)
        proc = check(svc)
    else:
        proc = check(svc, text)

    found = errors(proc)

    assert len(found) == 1, proc.stderr
    assert found[0]["layer"] == layer, proc.stderr
    assert found[0]["key"] in (key if isinstance(key, tuple) else (key,)), proc.stderr


@pytest.mark.parametrize("case", cases(BAD_ENV))
def test_bad_env_value_exits_1_naming_key_and_variable(spawn, case):
    key, value = BAD_ENV[case]
    svc = spawn(fast=False)
    var = svc.built.env_var(key)

    found = errors(check(svc, env={var: value}))

    assert [(m["key"], m["layer"], m["var"]) for m in found] == [(key, "env", var)]


def test_out_of_range_message_is_the_documented_one(spawn):
    svc = spawn(fast=False)
    var = svc.built.env_var("http.port")

    proc = check(svc, env={var: "70000"})

    documented = (
        f"config error: http.port (env {var}): 70000 is out of range; allowed 1-65535 (0 picks a free port)"
    )
    assert documented in proc.stderr.splitlines(), proc.stderr


def test_unknown_key_message_lists_the_allowed_keys(spawn):
    svc = spawn(fast=False)

    proc = check(svc, "[http]\nportt = 1\n")

    assert (
        "config error: http.portt (base): unknown key; allowed keys of [http]: host, port, "
        "header_timeout_secs, idle_timeout_secs, write_timeout_secs, max_connections, "
        "tls_cert_file, tls_key_file, client_ca_file"
        in proc.stderr.splitlines()
    )


def test_bad_rust_log_is_reported_as_env(spawn):
    svc = spawn(fast=False)

    found = errors(check(svc, env={"RUST_LOG": "tally=loud"}))

    assert [(m["key"], m["layer"], m["var"]) for m in found] == [("log.filter", "env", "RUST_LOG")]


def test_every_error_is_reported_at_once(spawn):
    svc = spawn(fast=False)
    svc.write_secrets('[heartbeat]\ntoken = "abc"\n' + example_keys(svc, '[work]\ntoken = "abc"\n'))
    base = '[http]\nportt = 1\nhost = ""\n[shutdown]\ntimeout_secs = -1\n'
    base += example_keys(svc, '[work]\nmax_concurrency = 0\nupstream_url = "nope"\n')
    env = {svc.built.env_var("http.port"): "70000", svc.built.env_var("heartbeat.bogus"): "1"}

    found = errors(check(svc, base, env=env))

    expected = [
        ("http.portt", "base"),
        ("http.host", "base"),
        ("shutdown.timeout_secs", "base"),
        ("heartbeat.token", "secrets"),
        ("http.port", "env"),
        ("heartbeat.bogus", "env"),
    ]
    if svc.built.example:
        expected += [("work.max_concurrency", "base"), ("work.upstream_url", "base"), ("work.token", "secrets")]
    assert sorted((m["key"], m["layer"]) for m in found) == sorted(expected)


def test_run_with_bad_config_exits_1_before_starting(spawn):
    svc = spawn(fast=False, settings={"HTTP__PORT": "70000"})

    proc = svc.cli("run", timeout=20)

    assert proc.returncode == 1
    assert any(line.startswith("config error: http.port (env") for line in proc.stderr.splitlines()), (
        proc.stderr
    )
    assert not svc.pid_file.exists(), "a config error must stop the service before it takes the PID file"
    assert not svc.data_dir.exists(), "a config error must stop the service before it creates data_dir"


def test_toml_syntax_error_names_the_file(spawn):
    svc = spawn(fast=False)

    proc = check(svc, "[http\nport = 1\n")

    assert proc.returncode == 1
    path = svc.workdir / "cfg" / "test.toml"
    assert proc.stderr == f"config error: {path}: not valid TOML at line 1, column 1\n"


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("[http]\nport = 80 80\n", "line 2, column 1"),
        ('[http]\n  host = "127.0.0.1\n', "line 2, column 3"),
        ("[http]\nport = 80\nport = 81\n", "line 3, column 1"),
    ],
    ids=["two-values", "unclosed-string", "duplicate-key"],
)
def test_toml_syntax_error_is_placed_by_one_rule(spawn, text, position):
    """The parsers word and place errors differently; the line is theirs, the column its start."""
    svc = spawn(fast=False)

    proc = check(svc, text)

    path = svc.workdir / "cfg" / "test.toml"
    assert proc.stderr == f"config error: {path}: not valid TOML at {position}\n"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_secrets_file_open_to_others_is_refused(spawn, mode):
    svc = spawn(fast=False)
    secret = '[work]\nupstream_token = "s3cr3t-mode"\n' if svc.built.example else '[apm]\nurl = "http://s3cr3t-mode"\n'
    path = svc.write_secrets(secret, mode=mode)

    proc = check(svc)

    assert proc.returncode == 1
    expected = (
        f"config error: secrets file {path} has mode {mode:04o}; it must not be accessible "
        f"by group or others (chmod 600 {path})"
    )
    assert expected in proc.stderr.splitlines(), proc.stderr
    assert "s3cr3t-mode" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_secrets_file_private_to_owner_is_read(spawn, mode):
    svc = spawn(fast=False)
    svc.write_secrets(example_keys(svc, '[work]\nupstream_token = "s3cr3t-ok"\n') + "[http]\nport = 2222\n", mode=mode)

    got = effective(check(svc))

    assert got["http.port"] == (2222, "secrets")
    if svc.built.example:
        assert got["work.upstream_token"] == ("[redacted]", "secrets")


@pytest.mark.rust
def test_check_config_is_the_same_in_both_flavours(python_service, rust_service, tmp_path):
    prefix = tmp_path / "prefix"
    env = {"RUST_LOG": "info,tally_keeper=debug"}
    outputs = {}
    for built in (python_service, rust_service):
        svc = Service(
            built,
            tmp_path / built.flavour,
            prefix=prefix,
            fast=False,
            secrets='[work]\nupstream_token = "s3cr3t-both"\ninterval_secs = 2.5\n',
        )
        proc = svc.cli("check-config", env={built.env_var("http.port"): "9000", **env})
        assert proc.returncode == 0, proc.stderr
        outputs[built.flavour] = proc.stdout
    assert outputs["python"] == outputs["rust"]


@pytest.mark.rust
def test_config_errors_are_the_same_in_both_flavours(python_service, rust_service, tmp_path):
    prefix = tmp_path / "prefix"
    base = (
        '[http]\nportt = 1\nhost = ""\n[work]\nmax_concurrency = 0\nupstream_url = "nope"\n[htpp]\nport = 1\n'
        "[backup]\nkeep = 0\n[paths]\ntmp_max_age_secs = -1\n"
    )
    errors_by_flavour = {}
    for built in (python_service, rust_service):
        svc = Service(
            built, tmp_path / built.flavour, prefix=prefix, fast=False, secrets="[log]\nfilter = 7\n"
        )
        (svc.workdir / "cfg" / "bad.toml").write_text(base)
        env = {
            built.env_var("http.port"): "70000",
            built.env_var("heartbeat.interval_secs"): "abc",
            built.env_var("log.target"): "journal",
        }
        proc = svc.cli("check-config", "--config", str(svc.workdir / "cfg" / "bad.toml"), env=env)
        assert proc.returncode == 1, proc.stderr
        errors_by_flavour[built.flavour] = sorted(
            proc.stderr.replace(str(svc.workdir), "<workdir>").splitlines()
        )
    assert errors_by_flavour["python"] == errors_by_flavour["rust"]
