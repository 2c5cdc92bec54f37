"""The smallest aiohttp service a user would write instead of the generated one.

The same three routes and a JSON route like the example service's `/v1/value`, a request
counter by route, method and status, and the Prometheus
text of prometheus-client's default registry (with its process, platform and GC
collectors). aiohttp's `run_app` stops gracefully on SIGTERM and SIGINT.

Usage: python aiohttp_peer.py PORT
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

REQUESTS = Counter("peer_http_requests_total", "HTTP requests answered.", ["route", "method", "status"])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unknown"
    REQUESTS.labels(route, request.method, str(response.status)).inc()
    return response


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def value(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps({"value": 42.0, "fetched_at": 1764250000}), content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def main() -> None:
    port = int(sys.argv[1])
    app = web.Application(middlewares=[count])
    app.router.add_get("/.well-known/live", ok)
    app.router.add_get("/.well-known/ready", ok)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/value", value)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
