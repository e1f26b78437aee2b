"""The apps under test: the same Starlette and Flask apps, bare and behind TrackLayer.

Every factory here is what a server subprocess imports (`uvicorn bench.apps:starlette_wrapped
--factory`, `gunicorn 'bench.apps:flask_wrapped()'`). The wrapped apps use real `Settings`: a SQLite
outbox in the run's temp dir and credentials pointing at a sandbox server, so the background worker
really delivers during the run. The environment carries what differs between runs:

- `BENCH_API_BASE`: the sandbox the worker delivers to (`http://127.0.0.1:PORT/v5`);
- `BENCH_OUTBOX`: the SQLite file of the outbox;
- `BENCH_NAIVE_URL`: the events URL the naive page POSTs to synchronously.

Routes (the same in every app):

- `GET /json`: a small JSON document;
- `GET /page`: a 10 KB HTML page (the wrapped app injects the snippet);
- `GET /landing?epik=...`: the same page as a paid-click landing (the wrapped app sets `_epik`/`_tl`);
- `GET /event`: the page plus one server-side `ViewContent`: `track()` behind TrackLayer, or in the
  bare app the naive plugin's synchronous Conversions API call inside the request.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from flask import Flask, Response, request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracklayer_mw import Settings, TrackLayerMiddleware, TrackLayerWSGIMiddleware, track
from tracklayer_mw.snippet import SnippetTag

SANDBOX_TOKEN = "sandbox-token"
SANDBOX_ACCOUNT = "549755885175"
SECRET_KEY = "bench-secret-key-not-for-production"
EPIK = (
    "dj0yJnU9bXRfT0FzZk5XSzJ0Q3hnTlRzTkdzTF9CbHRTM0M0TnAmbj1kc2x6X1pWZ0t4Tk5LTVFoTm9aMWVnJm09MCZ0PUFBQUFBR1Y"
)
USER_AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)

JSON_DOC: dict[str, Any] = {
    "ok": True,
    "product": {"id": "sku-1", "name": "Linen shirt", "price": "49.99", "currency": "USD", "stock": 12},
    "related": ["sku-2", "sku-3", "sku-4"],
}


PAGE_BYTES = 10 * 1024


def _page() -> bytes:
    """A 10 KB product page: a real <head> (so injection has a place to go) and a product grid."""
    head = (
        "<!doctype html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        "<meta name=viewport content='width=device-width, initial-scale=1'>\n"
        "<title>Linen shirt — Example Shop</title>\n"
        "<style>body{font:16px/1.4 system-ui,sans-serif;margin:0}main{display:grid;"
        "grid-template-columns:repeat(4,1fr);gap:1rem;padding:1rem}.card{border:1px solid #ddd;"
        "border-radius:4px;padding:.5rem}.price{font-weight:600}</style>\n</head>\n"
        "<body>\n<header><a href='/'>Example Shop</a> <nav><a href='/c/shirts'>Shirts</a> "
        "<a href='/c/trousers'>Trousers</a> <a href='/cart'>Cart</a></nav></header>\n<main>\n"
    )
    tail = "</main>\n<footer>© Example Shop</footer>\n</body>\n</html>\n"
    cards: list[str] = []
    size = len(head.encode()) + len(tail.encode())
    index = 0
    while True:
        index += 1
        card = (
            f"<div class=card><a href='/p/sku-{index}'><img src='/img/sku-{index}.jpg' alt='Shirt {index}' "
            f"width=200 height=250></a><h2>Linen shirt no. {index}</h2>"
            f"<p class=price>$49.{index % 100:02d}</p>"
            f"<button data-sku='sku-{index}'>Add to cart</button></div>\n"
        )
        if size + len(card) + 8 > PAGE_BYTES:
            break
        cards.append(card)
        size += len(card)
    padding = "<!--" + "." * (PAGE_BYTES - size - 8) + "-->\n"  # exactly PAGE_BYTES in all
    return (head + "".join(cards) + padding + tail).encode()


PAGE = _page()


def settings() -> Settings:
    """Real settings: SQLite outbox, a sandbox as Pinterest, no throttling of the one client IP here."""
    return Settings(
        secret_key=SECRET_KEY,
        pinterest_ad_account_id=SANDBOX_ACCOUNT,
        pinterest_access_token=SANDBOX_TOKEN,
        pinterest_api_base=os.environ.get("BENCH_API_BASE", "http://127.0.0.1:8765/v5"),
        # test=true, as for any traffic that is not real conversions (the sandbox then keeps no dedup memory).
        pinterest_test_mode=True,
        outbox="sqlite:///" + os.environ.get("BENCH_OUTBOX", "/tmp/tracklayer-bench/outbox.sqlite3"),
        ingest_rate_per_minute=1_000_000_000,
    )


def capi_body(url: str, client_ip: str | None, user_agent: str | None) -> dict[str, Any]:
    """What a naive plugin builds for one ViewContent: a valid Conversions API v5 body."""
    return {
        "data": [
            {
                "event_name": "view_content",
                "action_source": "web",
                "event_time": int(time.time()),
                "event_id": str(uuid.uuid4()),
                "event_source_url": url,
                "user_data": {
                    "client_ip_address": client_ip or "127.0.0.1",
                    "client_user_agent": user_agent or USER_AGENT,
                },
                "custom_data": {"currency": "USD", "value": "49.99", "content_ids": ["sku-1"]},
            }
        ]
    }


def _naive_url() -> str:
    return os.environ.get("BENCH_NAIVE_URL", f"http://127.0.0.1:8766/v5/ad_accounts/{SANDBOX_ACCOUNT}/events")


_NAIVE_HEADERS = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}
_CUSTOM = {"currency": "USD", "value": 49.99, "content_ids": ["sku-1"]}

# --- Starlette -------------------------------------------------------------------------------------


def _starlette(*, tracked: bool) -> Starlette:
    async def json_doc(request: Request) -> JSONResponse:
        return JSONResponse(JSON_DOC)

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    naive_client: list[httpx.AsyncClient] = []

    async def event(request: Request) -> HTMLResponse:
        if tracked:
            track(request, "ViewContent", custom=_CUSTOM)
        else:
            # The naive plugin: call the Conversions API inside the request and wait for its answer.
            if not naive_client:
                naive_client.append(httpx.AsyncClient(timeout=10.0, limits=httpx.Limits(max_connections=200)))
            client = request.client.host if request.client else None
            body = capi_body(str(request.url), client, request.headers.get("user-agent"))
            response = await naive_client[0].post(_naive_url(), json=body, headers=_NAIVE_HEADERS)
            response.raise_for_status()
        return HTMLResponse(PAGE)

    return Starlette(
        routes=[
            Route("/json", json_doc),
            Route("/page", page),
            Route("/landing", page),
            Route("/event", event),
        ]
    )


def starlette_bare() -> ASGIApp:
    return _starlette(tracked=False)


class PassThrough:
    """The floor: a pure ASGI middleware that only wraps `send`, as any injecting middleware must."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: Message) -> None:
            await send(message)

        await self.app(scope, receive, wrapped)


def starlette_passthrough() -> ASGIApp:
    return PassThrough(_starlette(tracked=False))


# The tag TrackLayer puts into this page, so that the injection floor sends the very same bytes.
FLOOR_TAG = SnippetTag(prefix="/_tl").html().encode()


class MinimalInjection:
    """The HTML floor: the least any middleware that injects a tag must do, and nothing else.

    Hold the start message of an HTML response, put the tag before `</head>` of its one body message,
    correct Content-Length. No click context, no cookies, no error handling, no streaming: what is
    left of a middleware's overhead once its own work is gone."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                content_type = dict(message["headers"]).get(b"content-type", b"")
                if content_type.startswith(b"text/html"):
                    held.append(message)
                    return
            elif held:
                body = _inject_floor(message["body"])
                start = held.pop()
                headers = [
                    (name, b"%d" % len(body) if name == b"content-length" else value)
                    for name, value in start["headers"]
                ]
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, wrapped)


def _inject_floor(body: bytes) -> bytes:
    at = body.find(b"</head>")
    return body[:at] + FLOOR_TAG + body[at:]


def starlette_injecting() -> ASGIApp:
    return MinimalInjection(_starlette(tracked=False))


def starlette_wrapped() -> ASGIApp:
    return TrackLayerMiddleware(_starlette(tracked=True), settings=settings())


# --- Flask -----------------------------------------------------------------------------------------


def _flask(*, tracked: bool) -> Flask:
    app = Flask("bench")
    naive_client = httpx.Client(timeout=10.0) if not tracked else None

    @app.get("/json")
    def json_doc() -> dict[str, Any]:
        return JSON_DOC

    @app.get("/page")
    @app.get("/landing")
    def page() -> Response:
        return Response(PAGE, content_type="text/html; charset=utf-8")

    @app.get("/event")
    def event() -> Response:
        if tracked:
            track(request, "ViewContent", custom=_CUSTOM)
        else:
            assert naive_client is not None
            body = capi_body(request.url, request.remote_addr, request.headers.get("user-agent"))
            naive_client.post(_naive_url(), json=body, headers=_NAIVE_HEADERS).raise_for_status()
        return Response(PAGE, content_type="text/html; charset=utf-8")

    return app


def flask_bare() -> Any:
    return _flask(tracked=False)


def flask_passthrough() -> Any:
    """The WSGI floor: a middleware that only wraps `start_response`."""
    app = _flask(tracked=False)
    inner = app.wsgi_app

    def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def wrapped(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if exc_info is not None:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        return inner(environ, wrapped)

    app.wsgi_app = middleware  # type: ignore[method-assign]
    return app


def flask_injecting() -> Any:
    """The WSGI HTML floor: the least a tag-injecting middleware does (see `MinimalInjection`)."""
    app = _flask(tracked=False)
    inner = app.wsgi_app

    def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def hold(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started.append((status, headers))
            return lambda data: None

        result = inner(environ, hold)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = started[0]
        content_type = {name.lower(): value for name, value in headers}.get("content-type", "")
        if content_type.startswith("text/html"):
            body = _inject_floor(body)
            headers = [
                (name, str(len(body)) if name.lower() == "content-length" else value)
                for name, value in headers
            ]
        start_response(status, headers)
        return [body]

    app.wsgi_app = middleware  # type: ignore[method-assign]
    return app


def flask_wrapped() -> Any:
    app = _flask(tracked=True)
    app.wsgi_app = TrackLayerWSGIMiddleware(app.wsgi_app, settings=settings())  # type: ignore[method-assign]
    return app
