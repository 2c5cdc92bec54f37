"""Contract §2: the secret `work.upstream_token` is used, and never shown anywhere."""

from __future__ import annotations

import pytest

from services import FakeUpstream

pytestmark = [pytest.mark.slow, pytest.mark.example]

FILE_TOKEN = "tok-file-5Jq8vW"
ENV_TOKEN = "tok-env-Zr41xK"


def secrets_file(token: str = FILE_TOKEN) -> str:
    return f'[work]\nupstream_token = "{token}"\n'


def assert_hidden(text: str, where: str) -> None:
    for token in (FILE_TOKEN, ENV_TOKEN):
        assert token not in text, f"the secret {token!r} appears in {where}"
        assert token[4:] not in text, f"part of the secret {token!r} appears in {where}"


@pytest.mark.parametrize(
    "answer", [(401, '{"error": "bad token"}'), (503, "")], ids=["persistent", "transient"]
)
def test_token_reaches_the_upstream_and_nothing_else(spawn, answer):
    with FakeUpstream([answer]) as upstream:
        svc = spawn(
            secrets=secrets_file(),
            settings={
                "WORK__UPSTREAM_URL": upstream.url,
                "WORK__INTERVAL_SECS": "30",  # one run: 1 call, or 6 with the retries
                "WORK__UPSTREAM_TOKEN": ENV_TOKEN,
            },
            env={"RUST_LOG": "trace"},  # the most a log can say
        ).start(wait="listening")
        svc.wait_for_message("work failed, using last good value", timeout=6)
        metrics = svc.metrics()
        check = svc.cli("check-config")
        assert svc.stop() == 0

    assert upstream.calls[0].headers.get("authorization") == f"Bearer {ENV_TOKEN}", (
        "env overrides the secrets file"
    )
    assert 'work.upstream_token = "[redacted]" (env)' in check.stdout.splitlines()
    assert_hidden(svc.stderr_text(), "stderr")
    assert_hidden(svc.stdout_text(), "stdout")
    assert_hidden(svc.log_file.read_text(), "the log file")
    assert_hidden(metrics, "/metrics")
    assert_hidden(check.stdout + check.stderr, "check-config")


def test_token_from_the_secrets_file_is_used(spawn):
    with FakeUpstream([(200, '{"value": 1.5}')]) as upstream:
        svc = spawn(
            secrets=secrets_file(), settings={"WORK__UPSTREAM_URL": upstream.url, "WORK__INTERVAL_SECS": "30"}
        )
        svc.start()
        calls = upstream.wait_calls(1, 5)

    assert calls[0].headers.get("authorization") == f"Bearer {FILE_TOKEN}"


def test_token_is_hidden_in_config_errors(spawn):
    svc = spawn(fast=False, secrets=secrets_file() + "max_concurrency = 0\n")

    proc = svc.cli(
        "check-config",
        env={svc.built.env_var("http.port"): "-5", svc.built.env_var("work.upstream_token"): ENV_TOKEN},
    )

    assert proc.returncode == 1
    assert_hidden(proc.stdout + proc.stderr, "config errors")


def test_bad_token_value_is_reported_without_its_value(spawn):
    svc = spawn(fast=False, secrets="[work]\nupstream_token = 5184093377\n")

    proc = svc.cli("check-config")

    assert proc.returncode == 1
    assert "config error: work.upstream_token (secrets): " in proc.stderr
    assert "5184093377" not in proc.stderr + proc.stdout


def test_token_is_hidden_when_run_fails_on_config(spawn):
    svc = spawn(secrets=secrets_file(), settings={"HTTP__PORT": "99999", "WORK__UPSTREAM_TOKEN": ENV_TOKEN})

    proc = svc.cli("run", timeout=20)

    assert proc.returncode == 1
    assert_hidden(proc.stdout + proc.stderr, "run's config errors")
