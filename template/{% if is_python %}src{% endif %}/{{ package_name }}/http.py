"""The HTTP server (aiohttp): the platform's routes, the service part's routes, and their rules.

Every request passes one middleware, which applies the platform's rules to every route:

- it is counted in `http_requests_total` under its route's template (`/v1/orders/{id}`,
  aiohttp's `resource.canonical`), `unknown` when no route matches the path;
- a path no route matches is 404 `not found`; a method a route does not answer is 405
  `method not allowed` with `Allow` (routes made with `web.get` answer HEAD too);
- a handler that raises answers 500 `{"error": "internal error"}`, logs one ERROR line and
  counts `errors_total{kind="persistent"}`; the service goes on serving.

Handlers of the service part read JSON bodies with `read_json(request, Model)` (400 for a
body that is not JSON, 422 naming the first invalid field) and answer with `json_response`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiohttp import HttpVersion10, HttpVersion11, web
from pydantic import BaseModel, ValidationError

from . import audit, server
from .errors import Kind
from .health import Health
from .logging import get_logger
from .metrics import CONTENT_TYPE, UNKNOWN_ROUTE, Metrics

log = get_logger(__name__)

M = TypeVar("M", bound=BaseModel)
# The platform's own routes; every other matched route is the service's.
PLATFORM_ROUTES = frozenset({"/.well-known/live", "/.well-known/ready", "/metrics"})
# Answers to the service's routes that are written as audit lines (`access refused`).
REFUSALS = frozenset({401, 403})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HTTP_VERSIONS = (HttpVersion10, HttpVersion11)
# A request body larger than this is refused with 413.
MAX_BODY_BYTES = 1024 * 1024


def json_response(data: object, status: int = 200) -> web.Response:
    """`data` as JSON (`json.dumps`' default separators), `application/json; charset=utf-8`."""
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")


class JsonError(web.HTTPException):
    """An error answer with a JSON body; raised from a handler, answered as it is."""

    def __init__(self, status: int, body: dict[str, str]) -> None:
        self.status_code = status
        super().__init__(text=json.dumps(body), content_type="application/json")


async def read_json(request: web.Request, model: type[M]) -> M:
    """The request's JSON body as `model`: 400 when it is not JSON, 422 naming the first bad field.

    Strict, as the Rust flavour's serde: `"3"` is not a number and `1` is not a string.
    """
    raw = await request.read()
    try:
        json.loads(raw)
    except ValueError:
        raise JsonError(400, {"error": "body is not valid JSON"}) from None
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise JsonError(422, {"error": "invalid value", "field": field}) from None


def platform_routes(health: Health, metrics: Metrics) -> list[web.RouteDef]:
    """`/.well-known/live`, `/.well-known/ready` and `/metrics`."""

    async def live(request: web.Request) -> web.Response:
        status, body = health.live()
        return web.Response(status=status, text=body)

    async def ready(request: web.Request) -> web.Response:
        status, body = health.ready()
        return web.Response(status=status, text=body)

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    return [
        web.get("/.well-known/live", live),
        web.get("/.well-known/ready", ready),
        web.get("/metrics", metrics_page),
    ]


async def _route_of(request: web.Request) -> str:
    """The template of the route answering the request's path (a 405 names the path's route too)."""
    resource = request.match_info.route.resource
    if resource is not None:
        return resource.canonical
    for candidate in request.app.router.resources():
        _, allowed = await candidate.resolve(request)
        if allowed:
            return candidate.canonical
    return UNKNOWN_ROUTE


def _middleware(metrics: Metrics) -> Any:
    count = metrics.count_request

    @web.middleware
    async def platform_rules(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.version not in HTTP_VERSIONS:
            # HTTP/0.9 and HTTP/2 over an HTTP/1 connection: refused, as the Rust flavour's parser does.
            return server.rejected(metrics, 400)
        try:
            response = await handler(request)
        except web.HTTPException as error:
            count(await _route_of(request), request.method, error.status)
            if request.match_info.route.resource is not None:
                _audit_refusal(request, error.status)
                raise  # a handler's own answer (400, 422...)
            if error.status == 405:
                allow = error.headers.get("Allow", "")
                return web.Response(status=405, text="method not allowed", headers={"Allow": allow})
            return web.Response(status=error.status, text="not found" if error.status == 404 else error.text)
        except Exception as error:
            route = await _route_of(request)
            log.error(
                "request failed", route=route, method=request.method, error=f"{type(error).__name__}: {error}"
            )
            metrics.errors.labels(Kind.PERSISTENT.value).inc()
            count(route, request.method, 500)
            return json_response({"error": "internal error"}, 500)
        resource = request.match_info.route.resource
        count(resource.canonical if resource is not None else UNKNOWN_ROUTE, request.method, response.status)
        _audit_refusal(request, response.status)
        return response

    return platform_rules


def _audit_refusal(request: web.Request, status: int) -> None:
    """An audit line for a 401 or 403 answered by one of the service's routes."""
    resource = request.match_info.route.resource
    if status in REFUSALS and resource is not None and resource.canonical not in PLATFORM_ROUTES:
        audit.record(
            "access refused",
            method=request.method,
            route=resource.canonical,
            status=status,
            peer=request.remote or "unknown",
        )


def application(metrics: Metrics, health: Health, routes: Sequence[web.AbstractRouteDef]) -> web.Application:
    """The aiohttp application: the platform's routes, then the service part's, under the rules above."""
    app = web.Application(middlewares=[_middleware(metrics)], client_max_size=MAX_BODY_BYTES)
    app.add_routes(platform_routes(health, metrics))
    app.add_routes(routes)
    return app
