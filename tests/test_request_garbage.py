"""A request through the middleware leaves no reference cycle behind.

A cycle per request (the scope holding the state, the state holding the scope) is freed only by the
cyclic garbage collector: under load its pauses were the middleware's p99 and a fifth of its
throughput. These tests run the adapters directly (no test client, whose own machinery makes cycles)
and look at everything the collector had to free.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from tests.middleware_support import BROWSER_UA, CLIENT_IP, PAGE, SHOP_HOST, Rig, http_scope
from tracklayer_mw import TrackLayerMiddleware, TrackLayerWSGIMiddleware, snippet_tag, track
from tracklayer_mw.engine import Engine

EPIK = "dj0yJnU9bXRfT0FzZk5XSzJ0Q3hnTlRzTkdzTF9CbHRT"
RETURNING = f"_epik={EPIK}"  # a visitor who came from an ad: the state is built at the response's start
REQUESTS = [  # (path, query, Cookie header)
    ("/json", "", ""),  # no click signals, not HTML: the lightest path
    ("/page", "", ""),  # no click signals, the snippet injected
    ("/buy", "", ""),  # no click signals, but track() builds the deferred state
    ("/template", "", ""),  # snippet_tag() places the tag itself
    ("/json", "", RETURNING),
    ("/page", "", RETURNING),
    ("/buy", "", RETURNING),
    ("/page", f"epik={EPIK}", ""),  # a landing: state built up front, cookies set
]


def cyclic_garbage(run_requests: Callable[[], None]) -> list[str]:
    """What the collector had to free after `run_requests`: type names of tracklayer objects and of
    request mappings (a scope or environ)."""
    run_requests()  # warm: caches filled, lazy imports done
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run_requests()
        gc.collect()
        found = [
            type(obj).__qualname__
            for obj in gc.garbage
            if type(obj).__module__.startswith("tracklayer_mw")
            or (isinstance(obj, dict) and (("type" in obj and "headers" in obj) or "REQUEST_METHOD" in obj))
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return found


def starlette_app(engine: Engine) -> TrackLayerMiddleware:
    async def json_doc(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    async def buy(request: Request) -> JSONResponse:
        return JSONResponse({"event_id": track(request, "Purchase", custom={"value": 5, "currency": "USD"})})

    async def template(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE.replace(b"</head>", snippet_tag(request).encode() + b"</head>"))

    routes = [Route("/json", json_doc), Route("/page", page), Route("/buy", buy)]
    routes.append(Route("/template", template))
    return TrackLayerMiddleware(Starlette(routes=routes), engine=engine)


class RawConsent:
    """A consent callable that reads `request.raw` (the README promises it): granted when the
    scope or environ the view was read from says the request is for one of the shop's paths."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, request: Any) -> bool:
        raw = request.raw
        self.seen.append(str(raw.get("path", raw.get("PATH_INFO"))))
        return "tracklayer" not in raw  # never the mapping holding the state (that would be a cycle)


def test_asgi_requests_leave_no_cycles(rig: Rig) -> None:
    consent = RawConsent()
    app = starlette_app(rig.engine(consent=consent))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def requests() -> None:
        for path, query, cookie in REQUESTS:
            headers = http_scope(path)["headers"] + ([(b"cookie", cookie.encode())] if cookie else [])
            await app(http_scope(path, query, headers), receive, send)

    assert cyclic_garbage(lambda: asyncio.run(requests())) == []
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [200] * 2 * len(REQUESTS)
    assert any(name == b"set-cookie" for name, _ in starts[-1]["headers"])  # the landing set cookies
    assert rig.delivered(), "track() queued its events"
    assert {"/buy", "/page"} <= set(consent.seen)


def wsgi_app(engine: Engine) -> TrackLayerWSGIMiddleware:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/json":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"ok": true}']
        if path == "/buy":
            track(environ, "Purchase", custom={"value": 5, "currency": "USD"})
        body = PAGE
        if path == "/template":
            body = PAGE.replace(b"</head>", snippet_tag(environ).encode() + b"</head>")
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body]

    return TrackLayerWSGIMiddleware(app, engine=engine)


def environ(path: str, query: str, cookie: str) -> dict[str, Any]:
    return {
        **({"HTTP_COOKIE": cookie} if cookie else {}),
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": SHOP_HOST,
        "SERVER_PORT": "80",
        "REMOTE_ADDR": CLIENT_IP,
        "HTTP_HOST": SHOP_HOST,
        "HTTP_USER_AGENT": BROWSER_UA,
        "wsgi.url_scheme": "http",
    }


def test_wsgi_requests_leave_no_cycles(rig: Rig) -> None:
    consent = RawConsent()
    app = wsgi_app(rig.engine(consent=consent))
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    def requests() -> None:
        for path, query, cookie in REQUESTS:
            body = app(environ(path, query, cookie), start_response)
            b"".join(body)
            close = getattr(body, "close", None)
            if close is not None:
                close()

    assert cyclic_garbage(requests) == []
    assert statuses == ["200 OK"] * 2 * len(REQUESTS)
    assert rig.delivered(), "track() queued its events"
    assert {"/buy", "/page"} <= set(consent.seen)
