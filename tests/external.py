"""The contract suite run against a service built elsewhere (`plumbline check-service`).

When PLUMBLINE_SERVICE_COMMAND is set, the suite does not render and build the template: it
runs that command line as the service binary (`<command> run`, `<command> check-config`...),
with a copy of PLUMBLINE_SERVICE_PROJECT's cfg/ as the working configuration, once, under the
parameter id `external`. Tests that compare the two flavours, and the example service's own
tests (unless PLUMBLINE_WITH_EXAMPLE=1), are deselected: they say nothing about a team's service.

    PLUMBLINE_SERVICE_COMMAND  the service's command line (shell syntax)
    PLUMBLINE_SERVICE_PROJECT  the project folder: cfg/config.toml, .copier-answers.yml (default: .)
    PLUMBLINE_SERVICE_NAME     the service's name (default: project_name in the answers file)
    PLUMBLINE_SERVICE_FLAVOUR  python or rust (default: flavour in the answers file)
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

import services
from services import BuiltService

# Modules that test the example service part (`work`), not the platform's contract.
EXAMPLE_MODULES = {"test_work.py"}
# Fixtures that build both flavours from the template.
TEMPLATE_BUILDS = {"python_service", "rust_service"}


class ExternalServiceError(Exception):
    """The external service cannot be described from what was given."""


def _answers(project: Path) -> dict[str, Any]:
    path = project / ".copier-answers.yml"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else {}


def external_build() -> BuiltService | None:
    """The service named by PLUMBLINE_SERVICE_COMMAND, or None when the suite builds the template."""
    command = os.environ.get("PLUMBLINE_SERVICE_COMMAND", "").strip()
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
    answers = {**answers, "http_port": answers.get("http_port", settings.get("http", {}).get("port"))}
    if "work" not in settings:
        # a service part without the example's [work] section: do not set its keys
        for key in [k for k in services.FAST_SETTINGS if k.startswith("WORK__")]:
            del services.FAST_SETTINGS[key]
    # The harness runs one executable: a wrapper that execs the command line keeps the PID.
    wrapper = Path(tempfile.mkdtemp(prefix="plumbline-service-")) / str(name)
    wrapper.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
    wrapper.chmod(0o755)
    return BuiltService(flavour=str(flavour), project=project, binary=wrapper, name=str(name), answers=answers)


def deselect(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out what does not apply to an external service."""
    with_example = os.environ.get("PLUMBLINE_WITH_EXAMPLE") == "1"
    keep, drop = [], []
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        example = item.path.name in EXAMPLE_MODULES and not with_example
        (drop if names & TEMPLATE_BUILDS or example else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
