"""Contract §5: the HTTP endpoints, their bodies and status codes."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

ROUTES = ["/.well-known/live", "/.well-known/ready", "/metrics"]


def test_live_and_ready_answer_ok(shared_service):
    live = shared_service.get("/.well-known/live")
    ready = shared_service.get("/.well-known/ready")

    assert (live.status, live.body) == (200, "ok")
    assert (ready.status, ready.body) == (200, "ok")


def test_metrics_content_type(shared_service):
    resp = shared_service.get("/metrics")

    assert resp.status == 200
    assert resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"


@pytest.mark.parametrize("route", ROUTES)
def test_head_answers_like_get_without_a_body(shared_service, route):
    resp = shared_service.get(route, method="HEAD")

    assert resp.status == 200
    assert resp.body == ""


# PROPFIND and TRACE are registered methods outside the fixed label set: methods a route does
# not answer.
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "TRACE"])
def test_other_methods_on_a_route_get_405(shared_service, method):
    answers = {route: shared_service.get(route, method=method) for route in ROUTES}

    assert {route: answer.status for route, answer in answers.items()} == {route: 405 for route in ROUTES}
    for answer in answers.values():
        # what a client reads, the same bytes in both flavours
        assert answer.body == ("" if method == "HEAD" else "method not allowed")
        assert answer.headers["content-type"] == "text/plain; charset=utf-8"
        assert answer.headers["allow"] == "GET,HEAD"


@pytest.mark.parametrize("route", ROUTES)
def test_platform_routes_answer_405_with_allow(shared_service, route):
    resp = shared_service.get(route, method="POST")

    allowed = {token.strip() for token in resp.headers.get("allow", "").split(",")}
    assert (resp.status, allowed) == (405, {"GET", "HEAD"}), resp.headers


# BREW is no registered method at all: refused before routing (400) by an HTTP parser that
# knows the registered methods only (aiohttp's llhttp), or 405 (docs/contract-choices.md).
def test_an_unregistered_method_is_refused(shared_service):
    statuses = {route: shared_service.get(route, method="BREW").status for route in ROUTES}

    assert set(statuses.values()) <= {400, 405}, statuses
    assert shared_service.get("/.well-known/live").status == 200, "the service goes on serving"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/nope",
        "/.well-known/",
        "/.well-known/livez",
        "/metrics/extra",
        "/favicon.ico",
        "/.well-known/live/x",
        "/%2e%2e/etc/passwd",
        "/a/b/c/d/e/f/g/h",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_anything_else_gets_404(shared_service, path, method):
    assert shared_service.get(path, method=method).status == 404
