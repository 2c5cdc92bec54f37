"""Unit tests of the pure functions behind the context hook and the validators."""

from __future__ import annotations

import sys

import pytest

from helpers import TEMPLATE

sys.path.insert(0, str(TEMPLATE / "extensions"))
import names  # noqa: E402


@pytest.mark.parametrize("name", ["ab", "order-router", "a1-b2", "x" * 40, "svc2"])
def test_valid_project_names(name: str) -> None:
    assert names.project_name_error(name) == ""


@pytest.mark.parametrize(
    "name",
    ["a", "x" * 41, "Order-Router", "1svc", "-svc", "svc-", "order--router", "order_router", "ord er", ""],
)
def test_invalid_project_names_say_what_is_allowed(name: str) -> None:
    message = names.project_name_error(name)
    assert f"'{name}'" in message
    assert "lowercase letters, digits and single hyphens" in message
    assert "2-40 characters" in message


@pytest.mark.parametrize("email", ["ops@example.com", "a.b+c@sub.example.org"])
def test_valid_emails(email: str) -> None:
    assert names.email_error(email) == ""


@pytest.mark.parametrize("email", ["", "ops", "ops@", "@example.com", "ops@example", "a b@example.com"])
def test_invalid_emails(email: str) -> None:
    assert "name@example.com" in names.email_error(email)


@pytest.mark.parametrize("port", [1024, 8080, 65535, "9000"])
def test_valid_ports(port: object) -> None:
    assert names.http_port_error(port) == ""


@pytest.mark.parametrize("port", [0, 80, 1023, 65536, -1])
def test_out_of_range_ports(port: int) -> None:
    assert "1024-65535" in names.http_port_error(port)


def test_non_numeric_port() -> None:
    assert "whole number from 1024 to 65535" in names.http_port_error("http")


def test_blank_free_text() -> None:
    assert names.non_empty_error("  ", "description") == "The description must not be empty."
    assert names.non_empty_error("Routes orders", "description") == ""


def test_deploy_targets() -> None:
    assert names.deploy_targets_error(["systemd", "kubernetes"]) == ""
    assert names.deploy_targets_error([]) == ""
    message = names.deploy_targets_error(["systemd", "nomad"])
    assert "nomad" in message and "systemd, ansible, kubernetes, container" in message


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("/tmp/order-router", "order-router"),
        ("/home/me/Order_Router", "order-router"),
        ("/x/2fast", "fast"),
        ("/x/__", "my-service"),
        ("relative/payments  api", "payments-api"),
    ],
)
def test_default_name_from_destination_folder(folder: str, expected: str) -> None:
    assert names.folder_to_project_name(folder) == expected


def test_case_conversions() -> None:
    assert names.snake_case("order-router") == "order_router"
    assert names.upper_snake_case("order-router") == "ORDER_ROUTER"
    assert names.pascal_case("order-router") == "OrderRouter"
    assert names.pascal_case("a1-b2") == "A1B2"


def test_derived_names_for_a_rust_service_on_gitlab_and_kubernetes() -> None:
    derived = names.derived_names(
        {"project_name": "order-router", "flavour": "rust", "ci_provider": "gitlab",
         "deploy_targets": ["kubernetes"]}
    )
    assert derived["package_name"] == "order_router"
    assert derived["env_prefix"] == "ORDER_ROUTER_"
    assert derived["metric_prefix"] == "order_router_"
    assert derived["class_name"] == "OrderRouter"
    assert (derived["is_python"], derived["is_rust"]) == (False, True)
    assert (derived["ci_github"], derived["ci_gitlab"], derived["has_ci"]) == (False, True, True)
    assert derived["deploy_kubernetes"] and not derived["deploy_systemd"]
    assert not derived["needs_unit"]


@pytest.mark.parametrize(
    ("ci", "github", "gitlab"),
    [("github", True, False), ("gitlab", False, True), ("both", True, True), ("none", False, False)],
)
def test_ci_flags(ci: str, github: bool, gitlab: bool) -> None:
    derived = names.derived_names({"project_name": "ab", "ci_provider": ci})
    assert (derived["ci_github"], derived["ci_gitlab"]) == (github, gitlab)


def test_ansible_needs_the_unit_file() -> None:
    assert names.derived_names({"deploy_targets": ["ansible"]})["needs_unit"]
