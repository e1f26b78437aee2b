"""Shared helpers for the middleware tests: a fake clock, the checked sandbox, and one small shop
built on every framework the middleware supports (Starlette, FastAPI, Flask, Django, bare WSGI).

The shop is the same on each framework, so one test can be run against all of them:

    ``/``          an HTML page                 ``/plain``    text/plain
    ``/cached``    HTML, Cache-Control public   ``/edge``     HTML, Cache-Control s-maxage
    ``/cached-twice``  HTML, two Cache-Control headers, the second one ``public``
    ``/csp``       HTML with a CSP nonce        ``/gzip``     gzip-encoded HTML
    ``/missing``   a 404 HTML page              ``/tagged``   HTML that already carries the tag
    ``/redirect?to=URL``   302 to URL           ``/echo``     the query string the app saw
    ``/buy``       track(request, "Purchase", ...) and answer {"event_id": ...}
    ``/boom``      raises HostError
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import wsgiref.validate
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import flask
import httpx
from fastapi import FastAPI
from fastapi import Request as FastAPIRequest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.pinterest_schema import validate_request_body
from tracklayer_mw import Engine, Settings, TrackLayerMiddleware, TrackLayerWSGIMiddleware, track
from tracklayer_mw.engine import RequestState
from tracklayer_mw.request import RequestView
from tracklayer_mw.sandbox import PinterestSandbox

SHOP_HOST = "www.shop.localhost"
SHOP = f"http://{SHOP_HOST}"
COOKIE_DOMAIN = ".shop.localhost"
PAY_HOST = "pay.localhost"
CLIENT_IP = "203.0.113.9"
BROWSER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
)
BOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
START = 1_764_322_000.0
NONCE = "r4nd0mN0nce"

ASGI_FRAMEWORKS = ("starlette", "fastapi")
WSGI_FRAMEWORKS = ("flask", "django", "wsgi")
FRAMEWORKS = ASGI_FRAMEWORKS + WSGI_FRAMEWORKS

PAGE = b"<!doctype html><html><head><title>Shop</title></head><body><h1>Shop</h1></body></html>"
TAGGED = (
    b'<html><head><script async src="/_tl/t.js" data-tl="{}"></script></head>'
    b"<body>placed by the template</body></html>"
)
HTML = "text/html; charset=utf-8"


class HostError(Exception):
    """What the host app raises: it must reach the server unchanged."""


class FakeClock:
    """A clock tests move by hand; every engine, signer and the sandbox read it."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CheckedTransport(httpx.BaseTransport):
    """The sandbox's transport behind a check: every Pinterest body is validated against the schema.

    The check runs in the delivery thread, whose loop logs and swallows exceptions, so violations are
    collected here and asserted on by `Rig.delivered()` and at teardown.
    """

    def __init__(self, sandbox: PinterestSandbox) -> None:
        self._inner = sandbox.transport()
        self.bodies: list[dict[str, Any]] = []
        self.invalid: list[str] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.read())
        with self._lock:
            self.bodies.append(body)
            try:
                validate_request_body(body)
            except AssertionError as exc:
                self.invalid.append(str(exc))
        return self._inner.handle_request(request)


class BlockingTransport(httpx.BaseTransport):
    """Holds every Pinterest request until `release` is set (at most 10 s), to show nothing waits on it."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.entered.set()
        self.release.wait(10)
        return self.inner.handle_request(request)


@dataclass
class Rig:
    """Engines on a fake clock, delivering to one sandbox through the checked transport."""

    make_settings: Callable[..., Settings]
    tmp_path: Path
    clock: FakeClock = field(default_factory=FakeClock)
    engines: list[Engine] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sandbox = PinterestSandbox(clock=self.clock)
        self.transport = CheckedTransport(self.sandbox)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "cookie_domain": COOKIE_DOMAIN,
            "linked_domains": PAY_HOST,
            "outbox": f"sqlite:///{self.tmp_path / f'outbox-{len(self.engines)}.sqlite3'}",
        }
        values.update(overrides)
        return self.make_settings(**values)

    def engine(self, transport: httpx.BaseTransport | None = None, **overrides: Any) -> Engine:
        engine = Engine(self.settings(**overrides), transport=transport or self.transport, clock=self.clock)
        self.engines.append(engine)
        return engine

    def delivered(self) -> list[dict[str, Any]]:
        """Every Pinterest event the sandbox received, once everything queued has been sent."""
        for engine in self.engines:
            assert engine.deliverer.flush(5.0), "delivery did not drain"
        assert self.transport.invalid == []
        return [record.event for record in self.sandbox.received]

    def close(self) -> None:
        """Every test ends with everything it queued delivered (nothing stuck) and every body valid."""
        drained = [engine.deliverer.flush(5.0) for engine in self.engines]
        for engine in self.engines:
            engine.stop(2.0)
        assert self.transport.invalid == []
        assert all(drained), "events were left undeliverable in the outbox"


# --- the shop, framework-neutral -------------------------------------------------------------------


def shop_response(
    path: str, query: str, request: object, method: str = "GET"
) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) of the shop for a path; `request` is what the framework gives `track()`."""
    params = dict(parse_qsl(query))
    if path == "/boom":
        raise HostError("boom from the host")
    if path == "/redirect":
        return 302, [("location", params["to"]), ("content-type", "text/plain")], b""
    if path == "/echo":
        return 200, [("content-type", "text/plain")], f"{method} {query}".encode()
    if path == "/buy":
        event_id = track(
            request,
            "Purchase",
            user={"email": "Ann@Example.com"},
            custom={"value": 49.99, "currency": "USD", "order_id": params.get("order", "A-1001")},
        )
        return 200, [("content-type", "application/json")], json.dumps({"event_id": event_id}).encode()
    pages: dict[str, tuple[int, list[tuple[str, str]], bytes]] = {
        "/": (200, [("content-type", HTML)], PAGE),
        "/plain": (200, [("content-type", "text/plain")], b"<head></head> not html"),
        "/cached": (200, [("content-type", HTML), ("cache-control", "public, max-age=300")], PAGE),
        "/edge": (200, [("content-type", HTML), ("cache-control", "max-age=0, s-maxage=600")], PAGE),
        "/cached-twice": (
            200,
            [("content-type", HTML), ("cache-control", "max-age=300"), ("cache-control", "public")],
            PAGE,
        ),
        "/csp": (
            200,
            [
                ("content-type", HTML),
                ("content-security-policy", f"default-src 'self'; script-src 'nonce-{NONCE}'"),
            ],
            PAGE,
        ),
        "/gzip": (200, [("content-type", HTML), ("content-encoding", "gzip")], gzip.compress(PAGE, mtime=0)),
        "/missing": (404, [("content-type", HTML)], PAGE),
        "/tagged": (200, [("content-type", HTML)], TAGGED),
    }
    return pages.get(path, (404, [("content-type", "text/plain")], b"not found"))


METHODS = ["GET", "HEAD", "POST"]


def _starlette_response(status: int, headers: list[tuple[str, str]], body: bytes) -> Response:
    response = Response(body, status_code=status)
    for name, value in headers:
        response.headers.append(name, value)  # repeated headers stay repeated
    return response


def starlette_shop(middleware: list[Middleware]) -> Starlette:
    async def view(request: Request) -> Response:
        path, query = request.url.path, request.url.query
        target: object = request.scope if "scope" in query else request
        status, headers, body = shop_response(path, query, target, request.method)
        return _starlette_response(status, headers, body)

    return Starlette(routes=[Route("/{path:path}", view, methods=METHODS)], middleware=middleware)


def fastapi_shop(middleware: list[Middleware]) -> Any:
    app = FastAPI(middleware=middleware)

    @app.api_route("/{path:path}", methods=METHODS)
    async def view(request: FastAPIRequest) -> Response:
        status, headers, body = shop_response(request.url.path, request.url.query, request, request.method)
        return _starlette_response(status, headers, body)

    return app


def flask_shop() -> Any:
    app = flask.Flask("shop")
    app.config["PROPAGATE_EXCEPTIONS"] = True  # as under a debugger or test client: let them reach the server

    @app.route("/", defaults={"path": ""}, methods=METHODS)
    @app.route("/<path:path>", methods=METHODS)
    def view(path: str) -> Any:
        query = flask.request.query_string.decode("latin-1")
        status, headers, body = shop_response("/" + path, query, flask.request, flask.request.method)
        return flask.Response(body, status=status, headers=headers)

    return app.wsgi_app


def bare_wsgi_shop(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    status, headers, body = shop_response(path, query, environ, environ["REQUEST_METHOD"])
    reason = {200: "OK", 302: "Found", 404: "Not Found"}[status]
    start_response(f"{status} {reason}", [*headers, ("content-length", str(len(body)))])
    return [body]


# Django: configured once per process; its URLconf is this module's `urlpatterns`.
urlpatterns: list[Any] = []
_django_lock = threading.Lock()


def _django_view(request: Any) -> Any:
    from django.http import HttpResponse

    status, headers, body = shop_response(
        request.path, request.META.get("QUERY_STRING", ""), request, request.method
    )
    response = HttpResponse(body, status=status)
    for name, value in headers:
        response[name] = value
    return response


def configure_django() -> None:
    with _django_lock:
        from django.conf import settings

        if settings.configured:
            return
        settings.configure(
            DEBUG=False,
            DEBUG_PROPAGATE_EXCEPTIONS=True,  # the host's exceptions reach the server, as they should here
            SECRET_KEY="django-test-secret-key-0123456789",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        import django
        from django.urls import re_path

        django.setup()
        urlpatterns.append(re_path(r"^.*$", _django_view))


def django_wsgi_shop() -> Any:
    configure_django()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def django_asgi_shop() -> Any:
    configure_django()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


# --- clients ---------------------------------------------------------------------------------------


def asgi_client(app: Any, base_url: str = SHOP) -> TestClient:
    return TestClient(app, base_url=base_url, client=(CLIENT_IP, 50000), follow_redirects=False)


def wsgi_client(app: Any, base_url: str = SHOP) -> httpx.Client:
    transport = httpx.WSGITransport(app=wsgiref.validate.validator(app), remote_addr=CLIENT_IP)
    return httpx.Client(transport=transport, base_url=base_url, follow_redirects=False)


def shop_client(framework: str, engine: Engine, base_url: str = SHOP) -> Any:
    """An HTTP client for the shop on `framework`, behind the middleware driven by `engine`."""
    if framework in ASGI_FRAMEWORKS:
        middleware = [Middleware(TrackLayerMiddleware, engine=engine)]
        app = starlette_shop(middleware) if framework == "starlette" else fastapi_shop(middleware)
        return asgi_client(app, base_url)
    wsgi_app = {"flask": flask_shop, "django": django_wsgi_shop}.get(framework, lambda: bare_wsgi_shop)()
    return wsgi_client(TrackLayerWSGIMiddleware(wsgi_app, engine=engine), base_url)


def bare_client(framework: str, base_url: str = SHOP) -> Any:
    """The same shop without the middleware: what the host answers on its own."""
    if framework in ASGI_FRAMEWORKS:
        return asgi_client(starlette_shop([]) if framework == "starlette" else fastapi_shop([]), base_url)
    wsgi_app = {"flask": flask_shop, "django": django_wsgi_shop}.get(framework, lambda: bare_wsgi_shop)()
    return wsgi_client(wsgi_app, base_url)


def http_scope(
    path: str, query: str = "", headers: list[tuple[bytes, bytes]] | None = None, method: str = "GET"
) -> dict[str, Any]:
    """An ASGI HTTP scope for the shop, for tests that drive an adapter without a test client."""
    default = [(b"host", SHOP_HOST.encode()), (b"user-agent", BROWSER_UA.encode()), (b"accept", b"text/html")]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": default if headers is None else headers,
        "client": (CLIENT_IP, 50000),
        "server": (SHOP_HOST, 80),
    }


# --- requests and cookies --------------------------------------------------------------------------


def fetch(
    client: Any,
    method: str,
    url: str,
    *,
    cookies: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> Any:
    """One request with exactly these cookies (the client's own jar is emptied first)."""
    client.cookies.clear()
    sent = {"user-agent": BROWSER_UA, **(headers or {})}
    if cookies:
        sent["cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
    return client.request(method, url, headers=sent, **kwargs)


def set_cookies(response: Any) -> dict[str, str]:
    """Set-Cookie headers of a response by cookie name (each name at most once)."""
    found: dict[str, str] = {}
    for header in response.headers.get_list("set-cookie"):
        name = header.partition("=")[0]
        assert name not in found, f"{name} set twice"
        found[name] = header
    return found


def cookie_value(header: str) -> str:
    return header.partition("=")[2].partition(";")[0]


def cookie_re(
    name: str,
    value: str | None = None,
    *,
    domain: str | None = COOKIE_DOMAIN,
    secure: bool = False,
    http_only: bool,
) -> re.Pattern[str]:
    """The exact Set-Cookie the contract (§4) prescribes for `name`: nothing more, nothing less."""
    parts = [
        f"{re.escape(name)}={re.escape(value) if value is not None else '[^;]+'}",
        "Path=/",
        "Max-Age=31536000",
    ]
    if domain:
        parts.append(f"Domain={re.escape(domain)}")
    parts.append("SameSite=Lax")
    if secure:
        parts.append("Secure")
    if http_only:
        parts.append("HttpOnly")
    return re.compile("; ".join(parts))


def landing_cookies(response: Any) -> dict[str, str]:
    """name -> value for what a response set."""
    return {name: cookie_value(header) for name, header in set_cookies(response).items()}


def chunks(parts: Iterable[bytes]) -> Iterator[bytes]:
    yield from parts


# --- an engine with one step broken -----------------------------------------------------------------


class _FailingEngine(Engine):
    """An engine with one step broken, to show the host's response goes out untouched."""

    def __init__(self, *args: Any, broken: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.broken = broken

    def _fail(self, step: str) -> None:
        if step == self.broken:
            raise RuntimeError(f"tracklayer bug in {step}")

    def begin(self, view: RequestView) -> RequestState:
        self._fail("begin")
        return super().begin(view)

    def set_cookie_headers(self, state: RequestState, *, cache_control: str | None = None) -> list[str]:
        self._fail("set_cookie_headers")
        return super().set_cookie_headers(state, cache_control=cache_control)

    def redirect_location(self, state: RequestState, location: str) -> str | None:
        self._fail("redirect_location")
        return super().redirect_location(state, location)

    def arrival(self, state: RequestState) -> str | None:
        self._fail("arrival")
        return super().arrival(state)


def failing_engine(rig: Rig, broken: str) -> Engine:
    engine = _FailingEngine(rig.settings(), transport=rig.transport, clock=rig.clock, broken=broken)
    rig.engines.append(engine)
    return engine
