"""The contract suite run against a service built elsewhere (`plumbline check-service`).

When PLUMBLINE_SERVICE_COMMAND is set, the suite does not render and build the template: it
runs that command line as the service binary (`<command> run`, `<command> check-config`...),
with a copy of PLUMBLINE_SERVICE_PROJECT's cfg/ as the working configuration, once, under the
parameter id `external`. Tests that compare the two flavours are deselected: they say nothing
about a team's service. Tests marked `example` check the template's example service part (its
[work] job, GET /v1/value, the upstream): they run when the service still has it, and are
skipped, each with a line saying why, when the team replaced it.

    PLUMBLINE_SERVICE_COMMAND  the service's command line (shell syntax)
    PLUMBLINE_SERVICE_PROJECT  the project folder: cfg/config.toml, .copier-answers.yml (default: .)
    PLUMBLINE_SERVICE_NAME     the service's name (default: project_name in the answers file)
    PLUMBLINE_SERVICE_FLAVOUR  python or rust (default: flavour in the answers file)
    PLUMBLINE_WITH_EXAMPLE     auto (default: the example is there when cfg/config.toml has its
                               [work] keys), yes or no

With PLUMBLINE_SERVICE_URL instead of a command, the service is one already running (a
staging host): only the read-only HTTP checks that hold for a service in use run against it
(REMOTE_TESTS), through `shared_service`; every other test needs to start the service itself.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

import services
from services import BuiltService, Response, request

# The example service part's [work] keys: a base configuration with all of them has the example.
EXAMPLE_KEYS = {"interval_secs", "max_concurrency", "upstream_url"}
EXAMPLE_CHOICES = ("auto", "yes", "no")
# Fixtures that build both flavours from the template.
TEMPLATE_BUILDS = {"python_service", "rust_service"}
# The checks that hold for a running service whatever it did before: module -> tests (None: all).
REMOTE_TESTS: dict[str, set[str] | None] = {
    "test_http.py": None,
    "test_metrics.py": {"test_promtool_accepts_the_exposition", "test_exactly_the_documented_metrics_with_types_and_help"},
}


class ExternalServiceError(Exception):
    """The external service cannot be described from what was given."""


def _answers(project: Path) -> dict[str, Any]:
    path = project / ".copier-answers.yml"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else {}


def external_build() -> BuiltService | None:
    """The service named by PLUMBLINE_SERVICE_COMMAND (or _URL), or None when the suite builds the template."""
    command = os.environ.get("PLUMBLINE_SERVICE_COMMAND", "").strip()
    if not command and os.environ.get("PLUMBLINE_SERVICE_URL"):
        command = "false"  # a running service: nothing to start
    if not command:
        return None
    project = Path(os.environ.get("PLUMBLINE_SERVICE_PROJECT", ".")).resolve()
    config = project / "cfg" / "config.toml"
    if not config.is_file():
        raise ExternalServiceError(f"{config} is missing: the suite runs the service with the project's cfg/")
    answers = _answers(project)
    name = os.environ.get("PLUMBLINE_SERVICE_NAME") or answers.get("project_name")
    flavour = os.environ.get("PLUMBLINE_SERVICE_FLAVOUR") or answers.get("flavour")
    if not name or not flavour:
        raise ExternalServiceError("give the service's name and flavour: no .copier-answers.yml to read them from")
    settings = tomllib.loads(config.read_text())
    example = has_example(settings)
    answers = {**answers, "http_port": answers.get("http_port", settings.get("http", {}).get("port"))}
    if "work" not in settings:
        # a service part without the example's [work] section: do not set its keys
        for key in [k for k in services.FAST_SETTINGS if k.startswith("WORK__")]:
            del services.FAST_SETTINGS[key]
    # The harness runs one executable: a wrapper that execs the command line keeps the PID.
    wrapper = Path(tempfile.mkdtemp(prefix="plumbline-service-")) / str(name)
    wrapper.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
    wrapper.chmod(0o755)
    return BuiltService(
        flavour=str(flavour), project=project, binary=wrapper, name=str(name), answers=answers, example=example
    )


def has_example(settings: dict[str, Any]) -> bool:
    """Whether the service part is still the template's example, as PLUMBLINE_WITH_EXAMPLE says."""
    choice = os.environ.get("PLUMBLINE_WITH_EXAMPLE", "auto").strip().lower() or "auto"
    if choice not in EXAMPLE_CHOICES:
        raise ExternalServiceError(f"PLUMBLINE_WITH_EXAMPLE={choice!r}: allowed {', '.join(EXAMPLE_CHOICES)}")
    if choice != "auto":
        return choice == "yes"
    work = settings.get("work")
    return isinstance(work, dict) and EXAMPLE_KEYS <= set(work)


def example_skip_reason() -> str:
    if os.environ.get("PLUMBLINE_WITH_EXAMPLE", "auto").strip().lower() == "no":
        return "checks the example service part, left out (--example no)"
    return "checks the example service part, which this service replaced (no [work] section with its keys in cfg/config.toml)"


class RemoteService:
    """A service already running at a URL, seen only through HTTP (stands in for `shared_service`)."""

    def __init__(self, built: BuiltService, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ExternalServiceError(f"{url!r}: give the service as http://HOST:PORT")
        self.built, self.host, self.port = built, parts.hostname, parts.port

    @property
    def name(self) -> str:
        return self.built.name

    def get(self, path: str, method: str = "GET", timeout: float = 5.0) -> Response:
        return request(self.port, path, method=method, host=self.host, timeout=timeout)

    def metrics(self) -> str:
        resp = self.get("/metrics")
        if resp.status != 200:
            raise AssertionError(f"/metrics answered {resp.status}")
        return resp.body


def remote_service(built: BuiltService | None) -> RemoteService | None:
    url = os.environ.get("PLUMBLINE_SERVICE_URL", "").strip()
    return RemoteService(built, url) if url and built is not None else None


def _remote_check(item: pytest.Item) -> bool:
    wanted = REMOTE_TESTS.get(item.path.name, set())
    name = getattr(item, "originalname", item.name)
    return wanted is None or name in wanted


def deselect(config: pytest.Config, items: list[pytest.Item], built: BuiltService) -> None:
    """Leave out what does not apply to an external service; skip, saying why, the example's checks
    when the service has no example."""
    remote = bool(os.environ.get("PLUMBLINE_SERVICE_URL"))
    skip_example = pytest.mark.skip(reason=example_skip_reason())  # skip-ok: the service part has no example
    keep, drop = [], []
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        unfit = remote and not _remote_check(item)
        (drop if names & TEMPLATE_BUILDS or unfit else keep).append(item)
        if not built.example and item.get_closest_marker("example") is not None:
            item.add_marker(skip_example)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
