"""The smallest Starlette service on uvicorn a user would write instead of the generated one.

The same three routes and a JSON route like the example service's `/v1/value`, a request
counter by route, method and status, and the Prometheus
text of prometheus-client's default registry. uvicorn runs one worker with its production
extras (uvloop, httptools) and stops gracefully on SIGTERM and SIGINT.

Usage: python starlette_peer.py PORT [h11|httptools]
"""

from __future__ import annotations

import json
import sys

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("peer_http_requests_total", "HTTP requests answered.", ["route", "method", "status"])
ROUTES = ("/.well-known/live", "/.well-known/ready", "/metrics", "/v1/value")


class Count:
    """A pure ASGI middleware (Starlette's BaseHTTPMiddleware costs a task per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                path = scope["path"]
                route = path if path in ROUTES else "unknown"
                REQUESTS.labels(route, scope["method"], str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


class ValueResponse(JSONResponse):
    """json.dumps' default separators, as the generated services answer."""

    def render(self, content: object) -> bytes:
        return json.dumps(content).encode()


async def value(request: Request) -> Response:
    return ValueResponse({"value": 42.0, "fetched_at": 1764250000})


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


app = Starlette(
    routes=[
        Route("/.well-known/live", ok),
        Route("/.well-known/ready", ok),
        Route("/metrics", metrics),
        Route("/v1/value", value),
    ],
    middleware=[Middleware(Count)],
)


def main() -> None:
    # An optional second argument picks uvicorn's HTTP parser: `h11` (pure Python) or `httptools`.
    http = sys.argv[2] if len(sys.argv) > 2 else "auto"
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False, http=http)


if __name__ == "__main__":
    main()
