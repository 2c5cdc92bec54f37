"""Pure functions that derive names and validate answers.

Every derived name of the template is computed here, once, so that the context
hook and the validators in copier.yml agree, and so that each rule can be unit
tested without rendering anything.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import PurePath

PROJECT_NAME_RULE = (
    "lowercase letters, digits and single hyphens, starting with a letter, "
    "not ending with a hyphen, 2-40 characters (e.g. order-router)"
)
_PROJECT_NAME = re.compile(r"^[a-z](?:[a-z0-9]|-(?=[a-z0-9])){1,39}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

FLAVOURS = ("python", "rust")
CI_PROVIDERS = ("github", "gitlab", "both", "none")
DEPLOY_TARGETS = ("systemd", "ansible", "kubernetes", "container")
LICENSES = ("MIT", "Apache-2.0", "proprietary")
HTTP_PORT_MIN, HTTP_PORT_MAX = 1024, 65535


def project_name_error(name: object) -> str:
    """Return why `name` is not a valid project name, or "" when it is."""
    text = str(name)
    if _PROJECT_NAME.match(text):
        return ""
    return f"'{text}' is not a valid project name: use {PROJECT_NAME_RULE}."


def email_error(email: object) -> str:
    """Return why `email` is not a plausible e-mail address, or ""."""
    text = str(email).strip()
    if _EMAIL.match(text):
        return ""
    return f"'{text}' is not an e-mail address: use the form name@example.com."


def http_port_error(port: object) -> str:
    """Return why `port` cannot be the service's default port, or ""."""
    try:
        value = int(str(port))
    except ValueError:
        return f"'{port}' is not a port number: use a whole number from {HTTP_PORT_MIN} to {HTTP_PORT_MAX}."
    if HTTP_PORT_MIN <= value <= HTTP_PORT_MAX:
        return ""
    return (
        f"{value} is out of range: use {HTTP_PORT_MIN}-{HTTP_PORT_MAX} "
        "(ports below 1024 need root; the service runs unprivileged)."
    )


def non_empty_error(value: object, what: str) -> str:
    """Return an error when a free-text answer is blank, or ""."""
    if str(value).strip():
        return ""
    return f"The {what} must not be empty."


def deploy_targets_error(targets: object) -> str:
    """Return why the deploy targets are not a subset of the known ones, or ""."""
    chosen = list(targets) if isinstance(targets, (list, tuple)) else [targets]
    unknown = [t for t in chosen if t not in DEPLOY_TARGETS]
    if not unknown:
        return ""
    return f"Unknown deploy target(s) {', '.join(map(str, unknown))}: choose among {', '.join(DEPLOY_TARGETS)}."


def snake_case(name: str) -> str:
    """`order-router` -> `order_router`."""
    return name.replace("-", "_")


def upper_snake_case(name: str) -> str:
    """`order-router` -> `ORDER_ROUTER`."""
    return snake_case(name).upper()


def pascal_case(name: str) -> str:
    """`order-router` -> `OrderRouter`."""
    return "".join(part.capitalize() for part in name.split("-"))


def folder_to_project_name(destination: object) -> str:
    """Best-effort default project name from the destination folder's name."""
    folder = PurePath(str(destination)).name
    text = re.sub(r"[^a-z0-9]+", "-", folder.lower()).strip("-")
    text = re.sub(r"^[^a-z]+", "", text)[:40].rstrip("-")
    return text if project_name_error(text) == "" else "my-service"


def derived_names(answers: dict[str, object]) -> dict[str, object]:
    """Every name and flag the template derives from the answers."""
    name = str(answers.get("project_name") or "my-service")
    flavour = answers.get("flavour", "python")
    ci = answers.get("ci_provider", "github")
    raw_targets = answers.get("deploy_targets") or []
    targets = list(raw_targets) if isinstance(raw_targets, (list, tuple)) else [raw_targets]
    return {
        "package_name": snake_case(name),
        "env_prefix": upper_snake_case(name) + "_",
        "metric_prefix": snake_case(name) + "_",
        "class_name": pascal_case(name),
        "copyright_year": date.today().year,
        "is_python": flavour == "python",
        "is_rust": flavour == "rust",
        "ci_github": ci in ("github", "both"),
        "ci_gitlab": ci in ("gitlab", "both"),
        "has_ci": ci != "none",
        "deploy_systemd": "systemd" in targets,
        "deploy_ansible": "ansible" in targets,
        "deploy_kubernetes": "kubernetes" in targets,
        "deploy_container": "container" in targets,
        # the unit file and logrotate rules are what ansible installs on each host
        "needs_unit": "systemd" in targets or "ansible" in targets,
    }
