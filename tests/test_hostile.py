"""Hostile input: whatever a client sends, never a 5xx, never an exception into the host, no injection.

Property tests (hypothesis) drive both adapters over ingest bodies, headers, cookies, `_tlx` tokens
and query strings, through Starlette's TestClient, httpx's WSGITransport, and raw ASGI scopes and
WSGI environs (bytes no HTTP client would send). Each request is checked the same way: status below
500, nothing logged at ERROR by tracklayer (its guard would hide a bug behind an untouched
response), every Set-Cookie one of ours with a cookie-safe value, every Location we wrote on the
site's own host. Named cases follow: oversized and nested JSON, invalid UTF-8, CR/LF and `;`,
forged/expired/replayed/foreign linker tokens, open redirects, thousands of events in one body,
cross-site ingest and a flood from one client.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import httpx
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Message

from tests.middleware_support import http_scope
from tracklayer_mw import Engine, Settings, TrackLayerMiddleware, TrackLayerWSGIMiddleware, track
from tracklayer_mw.context import ClickContext
from tracklayer_mw.linker import Linker
from tracklayer_mw.sandbox import PinterestSandbox

AnyResponse = httpx.Response | httpx2.Response  # TestClient answers with httpx2's, WSGITransport with httpx's
SHOP_HOST = "www.shop.localhost"
SHOP = f"http://{SHOP_HOST}"
PAY_HOST = "pay.localhost"
CLIENT = ("203.0.113.9", 50000)
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
PAGE = "<!doctype html><html><head><title>Shop</title></head><body><h1>Shop</h1></body></html>"
OUR_COOKIES = ("_epik", "_derived_epik", "_pin_unauth", "_tl")
COOKIE_VALUE = r"[A-Za-z0-9!#$%&'()*+./:<=>?@\[\]^_`{|}~-]+"
ATTRIBUTE = r"(?:Path=/|Max-Age=\d+|Domain=\.shop\.localhost|SameSite=Lax|Secure|HttpOnly)"
SET_COOKIE_RE = re.compile(rf"^(?:{'|'.join(OUR_COOKIES)})={COOKIE_VALUE}(?:; {ATTRIBUTE})*$")
# 60 examples per property keeps the file under 30 s; TL_HOSTILE_EXAMPLES=2000 hunts deeper.
PROPERTY = settings(
    max_examples=int(os.environ.get("TL_HOSTILE_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- the rig: one engine behind both adapters, a host app on each ------------------------------------


class _Errors(logging.Handler):
    """Collects ERROR records of the tracklayer_mw logger: each is a bug the guard swallowed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass(repr=False)
class Rig:
    engine: Engine
    asgi: TrackLayerMiddleware
    wsgi: TrackLayerWSGIMiddleware
    errors: _Errors
    host_calls: list[str] = field(default_factory=list, repr=False)
    tracked: list[str | None] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:  # hypothesis prints the fixtures of a failing example
        return "Rig()"

    def client(self, **kwargs: Any) -> TestClient:
        return TestClient(self.asgi, base_url=SHOP, client=CLIENT, follow_redirects=False, **kwargs)

    def wsgi_client(self) -> httpx.Client:
        transport = httpx.WSGITransport(app=self.wsgi, remote_addr=CLIENT[0])
        return httpx.Client(transport=transport, base_url=SHOP, follow_redirects=False)

    def assert_clean(self) -> None:
        messages = [
            record.getMessage()
            + (f"\n{logging.Formatter().formatException(record.exc_info)}" if record.exc_info else "")
            for record in self.errors.records
        ]
        self.errors.records.clear()
        assert messages == [], f"tracklayer logged errors (a bug its guard hid): {messages}"


def _host_asgi(rig_calls: list[str], tracked: list[str | None]) -> Starlette:
    async def page(request: Request) -> Response:
        rig_calls.append(request.scope["path"])
        return HTMLResponse(PAGE)

    async def echo(request: Request) -> Response:
        rig_calls.append(request.scope["path"])
        return PlainTextResponse(request.scope.get("query_string", b"").decode("latin-1"))

    async def redirect(request: Request) -> Response:
        rig_calls.append(request.scope["path"])
        return RedirectResponse(request.query_params.get("to", "/"), status_code=302)

    async def buy(request: Request) -> Response:
        rig_calls.append(request.scope["path"])
        data = await request.json()
        event_id = track(request, "Purchase", user=data, custom={"value": 10, "currency": "USD"})
        tracked.append(event_id)
        return JSONResponse({"event_id": event_id})

    return Starlette(
        routes=[
            Route("/", page),
            Route("/echo", echo, methods=["GET", "POST"]),
            Route("/redirect", redirect),
            Route("/buy", buy, methods=["POST"]),
            Route("/{rest:path}", page, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
        ]
    )


def _host_wsgi(calls: list[str]) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        calls.append(environ.get("PATH_INFO", ""))
        if environ.get("PATH_INFO") == "/echo":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [environ.get("QUERY_STRING", "").encode("latin-1")]
        if environ.get("PATH_INFO") == "/redirect":
            target = parse_qs(environ.get("QUERY_STRING", "")).get("to", ["/"])[0]
            start_response("302 Found", [("Location", target), ("Content-Length", "0")])
            return [b""]
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [PAGE.encode()]

    return app


@pytest.fixture
def make_rig(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []
    logger = logging.getLogger("tracklayer_mw")

    def factory(**overrides: Any) -> Rig:
        values: dict[str, Any] = {
            "cookie_domain": ".shop.localhost",
            "linked_domains": PAY_HOST,
            "ingest_rate_per_minute": 10**9,
        }
        values.update(overrides)
        sandbox = PinterestSandbox()
        engine = Engine(make_settings(**values), transport=sandbox.transport())
        calls: list[str] = []
        tracked: list[str | None] = []
        errors = _Errors()
        logger.addHandler(errors)
        rig = Rig(
            engine,
            TrackLayerMiddleware(_host_asgi(calls, tracked), engine=engine),
            TrackLayerWSGIMiddleware(_host_wsgi(calls), engine=engine),
            errors,
            calls,
            tracked,
        )
        made.append(rig)
        return rig

    yield factory
    for rig in made:
        logger.removeHandler(rig.errors)
        rig.engine.stop(2.0)


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig()


@pytest.fixture
def proxied_rig(make_rig: Callable[..., Rig]) -> Rig:
    """Behind one trusted proxy: X-Forwarded-For is read (and fuzzed)."""
    return make_rig(trusted_proxy_hops=1)


def check_response(
    rig: Rig, status: int, headers: Iterable[tuple[str, str]], *, request_host: str = SHOP_HOST
) -> None:
    """The checks every hostile request gets."""
    assert status < 500, f"a client's request got a {status}"
    for name, value in headers:
        assert "\r" not in value
        assert "\n" not in value
        if name.lower() == "set-cookie":
            assert SET_COOKIE_RE.match(value), f"unexpected Set-Cookie: {value!r}"
    rig.assert_clean()


# --- strategies ----------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)
EVENT_NAMES = ["PageVisit", "Purchase", "AddToCart", "Search", "Custom", "Nope", "", "pagevisit"]
USER_FIELDS = ["email", "phone", "first_name", "last_name", "gender", "date_of_birth", "city", "state", "zip"]
USER_FIELDS += ["country", "external_id"]
LONE_SURROGATE = "ann\ud800@example.com"  # valid JSON text ("\\ud800") that no UTF-8 encoder takes
hostile_text = st.text(max_size=60) | st.sampled_from(
    [
        "",
        " ",
        "\r\n",
        "a;b",
        "\x00",
        "Ann@Example.com",
        "+1 (650) 555-1234",
        "é" * 30,
        "1" * 400,
        LONE_SURROGATE,
    ]
)
user_values = hostile_text | st.lists(hostile_text, max_size=4) | json_values
events = st.fixed_dictionaries(
    {"event": st.sampled_from(EVENT_NAMES)},
    optional={
        "event_id": hostile_text | json_values,
        "event_time": st.integers() | st.floats() | json_values,
        "url": hostile_text | st.just("https://www.shop.localhost/p?epik=abc") | json_values,
        "user": st.dictionaries(st.sampled_from([*USER_FIELDS, "nope", "e mail"]), user_values, max_size=4)
        | json_values,
        "custom": st.dictionaries(
            st.sampled_from(["value", "currency", "order_id", "num_items", "content_ids", "contents", "x"]),
            json_values | hostile_text,
            max_size=4,
        )
        | json_values,
        "pixel": json_values,
    },
)
bodies = events | st.fixed_dictionaries({"events": st.lists(events | json_values, max_size=6)}) | json_values
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80
)
cookie_values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60) | st.sampled_from(
    ["abc;Domain=evil.example", "x, _tl=y", '"quoted"', '"bad\\', "a=b=c", "AAAA" * 200]
)
query_strings = st.text(max_size=80).map(lambda text: quote(text, safe="=&;%+/?:@")) | st.sampled_from(
    [
        "epik=abc%0d%0aSet-Cookie:%20evil=1",
        "epik=abc;%20Domain=evil.example",
        "epik=%00",
        "epik=" + "a" * 600,
        "EPIK=ok&epik=&epik=second",
        "_tlx=&_tlx=%ff%fe",
        "&".join(f"k{i}=v" for i in range(500)),
        "utm_source=" + "s" * 5000,
        "epik=good&utm_source=%0d%0a",
    ]
)


# --- property tests ------------------------------------------------------------------------------------


@PROPERTY
@given(body=bodies, content_type=st.sampled_from(["application/json", "text/plain;charset=UTF-8"]))
def test_ingest_bodies_never_5xx_on_either_adapter(rig: Rig, body: Any, content_type: str) -> None:
    raw = json.dumps(body).encode()
    headers = {"content-type": content_type, "user-agent": UA}
    with rig.wsgi_client() as wsgi:
        for client in (rig.client(), wsgi):
            answer = client.post("/_tl/ingest", content=raw, headers=headers)
            check_response(rig, answer.status_code, answer.headers.multi_items())
            assert answer.status_code in (202, 400, 413), answer.text
            data = answer.json()
            if answer.status_code == 202:
                assert data["accepted"] == len(data["event_ids"])
            else:
                assert isinstance(data["error"], str)
                assert data["error"]


@PROPERTY
@given(
    body=st.binary(max_size=300),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded", "", "*/*"]
    ),
)
def test_ingest_raw_bytes_never_5xx(rig: Rig, body: bytes, content_type: str) -> None:
    answer = rig.client().post(
        "/_tl/ingest", content=body, headers={"content-type": content_type, "user-agent": UA}
    )
    check_response(rig, answer.status_code, answer.headers.multi_items())
    assert answer.status_code in (202, 400, 415)


@PROPERTY
@given(
    tag_cookies=st.dictionaries(st.sampled_from(OUR_COOKIES), cookie_values, max_size=4),
    query=query_strings,
    path=st.sampled_from(["/", "/echo", "/_tl/ingest", "/_tl/go", "/_tl/t.js", "/_tl/nope", "/redirect"]),
    origin=st.none() | header_text,
    forwarded=st.none() | header_text,
)
def test_cookies_query_strings_and_headers_never_break_a_page(
    proxied_rig: Rig,
    *,
    tag_cookies: dict[str, str],
    query: str,
    path: str,
    origin: str | None,
    forwarded: str | None,
) -> None:
    rig = proxied_rig
    cookie = "; ".join(f"{name}={value}" for name, value in tag_cookies.items())
    headers = {"cookie": cookie, "user-agent": UA}
    if origin is not None:
        headers["origin"] = origin
    if forwarded is not None:
        headers["x-forwarded-for"] = forwarded
    raw_headers = {
        name.encode(): value.encode("latin-1") for name, value in headers.items()
    }  # as a proxy would
    before = len(rig.host_calls)
    for method in ("GET", "POST"):
        answer = rig.client().request(method, f"{path}?{query}", headers=raw_headers, content=b"{}")
        check_response(rig, answer.status_code, answer.headers.multi_items())
        location = answer.headers.get("location")
        if location is not None and not path.startswith("/_tl/") and path != "/redirect":
            # Our own redirect (a `_tlx` arrival): always back onto this host.
            assert urlsplit(urljoin(f"{SHOP}{path}", location)).hostname == SHOP_HOST
    if not path.startswith("/_tl/"):
        assert len(rig.host_calls) > before, "the host app was not reached"


@PROPERTY
@given(
    token=st.text(max_size=200) | st.binary(max_size=200).map(lambda raw: raw.hex()),
    method=st.sampled_from(["GET", "POST"]),
)
def test_any_linker_token_is_stripped_and_ignored(rig: Rig, token: str, method: str) -> None:
    answer = rig.client().request(
        method, f"/echo?a=1&_tlx={quote(token, safe='')}&b=2", headers={"user-agent": UA}
    )
    check_response(rig, answer.status_code, answer.headers.multi_items())
    assert not any(value.startswith("_epik=") for value in answer.headers.get_list("set-cookie"))
    if method == "GET":
        assert answer.status_code == 302
        assert answer.headers["location"] == "/echo?a=1&b=2"
    else:
        assert answer.status_code == 200
        assert answer.text == "a=1&b=2"  # the app never sees the token


header_names = st.sampled_from(
    [
        *(
            b"host",
            b"cookie",
            b"origin",
            b"referer",
            b"user-agent",
            b"content-type",
            b"content-length",
            b"sec-gpc",
        ),
        *(b"sec-fetch-site", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"if-none-match"),
    ]
) | st.binary(min_size=1, max_size=12).map(bytes.lower)
raw_scopes = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST", "HEAD", "PUT", "OPTIONS"]) | st.text(max_size=8),
        "path": st.sampled_from(
            ["/", "/_tl/ingest", "/_tl/go", "/_tl/t.js", "/_tl", "/_tl/", "//evil.example/"]
        )
        | st.text(max_size=40).map(lambda text: "/" + text),
        "query_string": st.binary(max_size=120),
        "headers": st.lists(st.tuples(header_names, st.binary(max_size=100)), max_size=10),
        "client": st.none() | st.tuples(st.text(max_size=40), st.integers(0, 65535)),
        "scheme": st.sampled_from(["http", "https", "ws", ""]),
    }
)


async def _drive_asgi(
    app: TrackLayerMiddleware, scope: dict[str, Any], chunks: list[bytes]
) -> list[dict[str, Any]]:
    pending = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        await asyncio.sleep(0)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(dict(message))

    await app(scope, receive, send)
    return sent


@PROPERTY
@given(scope=raw_scopes, chunks=st.lists(st.binary(max_size=200), min_size=1, max_size=4))
def test_raw_asgi_requests_never_break(rig: Rig, scope: dict[str, Any], chunks: list[bytes]) -> None:
    full = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "root_path": "", **scope}
    full["raw_path"] = full["path"].encode("utf-8", "surrogateescape")
    sent = asyncio.run(_drive_asgi(rig.asgi, full, chunks))
    start = next(message for message in sent if message["type"] == "http.response.start")
    headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in start["headers"]]
    check_response(rig, start["status"], headers)


raw_environs = st.fixed_dictionaries(
    {
        "REQUEST_METHOD": st.sampled_from(["GET", "POST", "HEAD"]) | st.text(max_size=8),
        "PATH_INFO": st.sampled_from(["/", "/_tl/ingest", "/_tl/go", "/echo", "//evil.example/"])
        | st.text(st.characters(max_codepoint=0xFF), max_size=40).map(lambda text: "/" + text),
        "QUERY_STRING": st.text(st.characters(max_codepoint=0xFF), max_size=120),
        "CONTENT_TYPE": st.sampled_from(["application/json", "text/plain", ""]) | header_text,
        "CONTENT_LENGTH": st.sampled_from(["", "0", "5", "-1", "99999999", "abc"]),
        "REMOTE_ADDR": st.sampled_from(["203.0.113.9", "", "::1", "not-an-ip"]),
    },
    optional={
        "HTTP_HOST": header_text,
        "HTTP_COOKIE": header_text,
        "HTTP_ORIGIN": header_text,
        "HTTP_USER_AGENT": header_text,
        "HTTP_REFERER": header_text,
        "HTTP_X_FORWARDED_FOR": header_text,
        "HTTP_SEC_FETCH_SITE": header_text,
        "SERVER_NAME": header_text,
    },
)


@PROPERTY
@given(environ=raw_environs, body=st.binary(max_size=300))
def test_raw_wsgi_requests_never_break(rig: Rig, environ: dict[str, Any], body: bytes) -> None:
    full = {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SCRIPT_NAME": "",
        **environ,
    }
    full.setdefault("SERVER_NAME", "localhost")
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        started.append((status, headers))
        return lambda data: None

    result = rig.wsgi(full, start_response)
    try:
        b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = started[-1]
    check_response(rig, int(status.split()[0]), headers)


@PROPERTY
@given(
    user=st.dictionaries(
        st.sampled_from(USER_FIELDS), hostile_text | st.lists(hostile_text, max_size=3), max_size=6
    )
)
def test_track_never_raises_for_customer_data(rig: Rig, user: dict[str, Any]) -> None:
    """A customer's garbage email or phone is dropped with a warning, never an exception into the handler."""
    answer = rig.client().post("/buy", content=json.dumps(user).encode(), headers={"user-agent": UA})
    assert answer.status_code == 200
    assert answer.json()["event_id"] is not None  # IP and user agent are enough to queue it
    rig.assert_clean()


# --- named cases: sizes, nesting, encodings -------------------------------------------------------------


def _ingest(
    client: httpx.Client | TestClient, content: bytes | Iterable[bytes], **headers: str
) -> AnyResponse:
    return client.post(
        "/_tl/ingest",
        content=content,
        headers={"content-type": "application/json", "user-agent": UA, **headers},
    )


def _both(rig: Rig) -> Iterator[httpx.Client | TestClient]:
    yield rig.client()
    with rig.wsgi_client() as wsgi:
        yield wsgi


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"event":"PageVisit","url":"' + b"a" * 70_000 + b'"}', id="over-64KiB"),
        pytest.param(b"[" * 65_537, id="over-64KiB-of-brackets"),
    ],
)
def test_an_oversized_body_is_413_on_either_adapter(rig: Rig, content: bytes) -> None:
    for client in _both(rig):
        answer = _ingest(client, content)
        assert answer.status_code == 413
        rig.assert_clean()


def test_an_oversized_body_without_content_length_is_413(rig: Rig) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    answer = _ingest(rig.client(), chunks())
    assert "content-length" not in answer.request.headers
    assert answer.status_code == 413
    rig.assert_clean()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"[" * 60_000 + b"]" * 4, id="60k-open-brackets"),
        pytest.param(b'{"a":' * 10_000 + b"1" + b"}" * 10_000, id="10k-nested-objects"),
        pytest.param(
            b'{"event":"Purchase","custom":{"contents":' + b"[" * 900 + b"]" * 900 + b"}}",
            id="nested-in-contents",
        ),
        pytest.param(
            b'{"event":"Purchase","user":{"email":' + b"[" * 500 + b"]" * 500 + b"}}", id="nested-in-user"
        ),
        pytest.param(b'{"event":"PageVisit","event_time":' + b"9" * 5000 + b"}", id="5000-digit-integer"),
        pytest.param(b'{"event":"Purchase","custom":{"value":1e999}}', id="infinite-value"),
        pytest.param(b'{"event":"Purchase","custom":{"value":NaN}}', id="nan-value"),
        pytest.param(b'{"event":"PageVisit","event_time":-Infinity}', id="minus-infinity-time"),
    ],
)
def test_deeply_nested_and_extreme_json_is_400(rig: Rig, content: bytes) -> None:
    for client in _both(rig):
        answer = _ingest(client, content)
        assert answer.status_code == 400, answer.text
        rig.assert_clean()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"event":"PageVisit","url":"https://www.shop.localhost/\xff"}', id="0xff"),
        pytest.param(
            b'{"event":"PageVisit","url":"https://www.shop.localhost/\xc0\xaf"}', id="overlong-slash"
        ),
        pytest.param(
            b'{"event":"PageVisit","url":"https://www.shop.localhost/\xed\xa0\x80"}', id="utf8-surrogate"
        ),
        pytest.param(b"\xfe\xff\x00{", id="utf16-bom"),
        pytest.param(b'{"event":"PageVisit"}\x80', id="trailing-continuation-byte"),
    ],
)
def test_invalid_utf8_is_400(rig: Rig, content: bytes) -> None:
    for client in _both(rig):
        answer = _ingest(client, content)
        assert answer.status_code == 400
        assert "UTF-8" in answer.json()["error"] or "JSON" in answer.json()["error"]
        rig.assert_clean()


@pytest.mark.parametrize(
    "field_name", ["email", "first_name", "last_name", "external_id", "zip", "city", "phone"]
)
def test_a_lone_surrogate_in_user_data_is_a_400_not_a_503(rig: Rig, field_name: str) -> None:
    """Valid JSON (`"\\ud800"` is legal JSON text) that no UTF-8 encoder accepts."""
    body = json.dumps({"event": "Lead", "user": {field_name: "ann\ud800@example.com"}}).encode()
    for client in _both(rig):
        answer = _ingest(client, body)
        assert answer.status_code in (202, 400), answer.text
        rig.assert_clean()


def test_a_lone_surrogate_in_user_data_never_raises_from_track(rig: Rig) -> None:
    """Found here: UnicodeEncodeError (a ValueError) from hashing went through track() into the host."""
    body = json.dumps({"email": "ann\ud800@example.com"}).encode()
    answer = rig.client().post("/buy", content=body, headers={"user-agent": UA})
    assert answer.status_code == 200
    rig.assert_clean()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("ann@example.com", 202, id="plain"),
        pytest.param("\ud83d\ude00", 202, id="surrogate-pair-escape"),
        pytest.param("\u0000", 202, id="nul"),
    ],
)
def test_escaped_text_in_custom_fields_is_stored_and_sent(rig: Rig, text: str, expected: int) -> None:
    body = json.dumps({"event": "Search", "custom": {"search_string": f"shoes {text}"}}).encode()
    answer = _ingest(rig.client(), body)
    assert answer.status_code == expected, answer.text
    assert rig.engine.deliverer.flush(5.0)
    assert rig.engine.outbox.counts(now=rig.engine.clock()).dead == 0
    rig.assert_clean()


# --- thousands of events, cross-site, floods ------------------------------------------------------------


def test_thousands_of_events_in_one_body_are_refused_as_a_whole(rig: Rig) -> None:
    small = {"events": [{"event": "PageVisit"}] * 2000}  # ~44 KB: under the size limit
    for client in _both(rig):
        answer = _ingest(client, json.dumps(small).encode())
        assert answer.status_code == 400
        assert "1 to 100 events" in answer.json()["error"]
        answer = _ingest(client, json.dumps({"events": [{"event": "PageVisit"}] * 5000}).encode())
        assert answer.status_code == 413
    assert rig.engine.outbox.counts(now=rig.engine.clock()).pending == 0
    rig.assert_clean()


def test_a_hundred_events_in_one_body_are_accepted(rig: Rig) -> None:
    answer = _ingest(rig.client(), json.dumps({"events": [{"event": "PageVisit"}] * 100}).encode())
    assert answer.status_code == 202
    assert answer.json()["accepted"] == 100
    rig.assert_clean()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({"origin": "https://evil.example"}, 403, id="foreign-origin"),
        pytest.param({"origin": "null"}, 403, id="null-origin"),
        pytest.param({"origin": ""}, 403, id="empty-origin"),
        pytest.param({"origin": "https://www.shop.localhost.evil.example"}, 403, id="suffix-trick"),
        pytest.param({"origin": "https://www.shop.localhost@evil.example"}, 403, id="userinfo-trick"),
        pytest.param({"origin": "https://evil.example#@www.shop.localhost"}, 403, id="fragment-trick"),
        pytest.param({"origin": "https://[::1"}, 403, id="broken-ipv6"),
        pytest.param({"sec-fetch-site": "cross-site"}, 403, id="sec-fetch-cross-site"),
        pytest.param({"sec-fetch-site": "CROSS-SITE "}, 403, id="sec-fetch-cross-site-odd-case"),
        pytest.param(
            {"origin": "https://www.shop.localhost", "sec-fetch-site": "cross-site"}, 202, id="origin-wins"
        ),
        pytest.param({"origin": "https://m.shop.localhost"}, 202, id="cookie-domain-sibling"),
        pytest.param({"origin": "https://shop.localhost"}, 202, id="cookie-domain-apex"),
        pytest.param({"sec-fetch-site": "same-origin"}, 202, id="same-origin"),
        pytest.param({}, 202, id="non-browser-client"),
    ],
)
def test_cross_site_ingest_is_403(rig: Rig, headers: dict[str, str], status: int) -> None:
    body = json.dumps({"event": "PageVisit"}).encode()
    for client in _both(rig):
        answer = _ingest(client, body, **headers)
        assert answer.status_code == status, answer.text
        # Counted from the answer: the delivery thread may already have emptied the outbox.
        assert answer.json().get("accepted", 0) == (1 if status == 202 else 0)
    rig.assert_clean()


def test_a_flood_from_one_client_is_429_and_nobody_else_notices(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(ingest_rate_per_minute=600)  # the default: 10/s, bursts of 60
    body = json.dumps({"event": "PageVisit"}).encode()
    flooder = rig.client()
    began = time.monotonic()
    statuses = [
        _ingest(flooder, body, **{"x-forwarded-for": f"198.51.100.{i % 250}"}).status_code for i in range(300)
    ]
    refilled = (time.monotonic() - began) * 10
    # The burst, plus what refilled meanwhile: X-Forwarded-For is not trusted (trusted_proxy_hops=0).
    assert 60 <= statuses.count(202) <= 60 + refilled + 1
    assert statuses.count(429) == 300 - statuses.count(202)
    refused = _ingest(flooder, body)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "10"
    # Another client, and the flooder's own pages, are unaffected.
    other = TestClient(rig.asgi, base_url=SHOP, client=("198.51.100.7", 40000))
    assert _ingest(other, body).status_code == 202
    assert flooder.get("/").status_code == 200
    rig.assert_clean()


def test_the_rate_limiter_stays_bounded_under_a_flood_of_addresses(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(ingest_rate_per_minute=600, trusted_proxy_hops=1)
    limiter = rig.asgi.endpoints.limiter
    limiter._max = 500  # a smaller bound, so the test stays fast
    body = json.dumps({"event": "PageVisit"}).encode()
    client = rig.client()
    for i in range(1200):
        _ingest(client, body, **{"x-forwarded-for": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"})
    assert len(limiter._buckets) <= 500
    rig.assert_clean()


# --- CR/LF and `;` in values meant for headers and cookies ----------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("epik=abc%0D%0ASet-Cookie:%20evil=1", id="crlf"),
        pytest.param("epik=abc%0ASet-Cookie:%20evil=1", id="lf"),
        pytest.param("epik=abc;%20Domain=evil.example", id="semicolon"),
        pytest.param("epik=abc,%20evil=1", id="comma"),
        pytest.param("epik=abc%20def", id="space"),
        pytest.param("epik=%22abc%22", id="quotes"),
        pytest.param("epik=abc%00def", id="nul"),
        pytest.param("epik=" + "a" * 513, id="too-long"),
    ],
)
def test_a_crafted_epik_never_reaches_a_header(rig: Rig, query: str) -> None:
    for client in _both(rig):
        answer = client.get(f"/?{query}", headers={"user-agent": UA})
        assert answer.status_code == 200
        assert not any(value.startswith("_epik=") for value in answer.headers.get_list("set-cookie"))
        check_response(rig, answer.status_code, answer.headers.multi_items())
        # And a redirect of the app's own does not carry it on either.
        answer = client.get(f"/redirect?to=/next&{query}", headers={"user-agent": UA})
        assert answer.headers["location"] == "/next"


@pytest.mark.parametrize(
    ("name", "value", "reissued"),
    [
        pytest.param("_pin_unauth", "abc\r\nSet-Cookie: evil=1", None, id="crlf-in-tag-cookie"),
        # A Cookie header cannot carry ";" in a value: this is _pin_unauth=abc and a cookie named Domain.
        pytest.param("_pin_unauth", "abc; Domain=evil.example", "abc", id="attribute-in-tag-cookie"),
        pytest.param("_pin_unauth", '"abc; Domain=evil.example"', None, id="quoted-attribute-in-tag-cookie"),
        pytest.param("_derived_epik", "a b", None, id="space-in-tag-cookie"),
        pytest.param("_epik", "abc\nx", None, id="lf-in-epik-cookie"),
        pytest.param("_epik", "abc\x00x", None, id="nul-in-epik-cookie"),
        pytest.param("_tl", "forged.value.sig", None, id="forged-context-cookie"),
    ],
)
def test_crafted_cookies_are_never_reissued(rig: Rig, name: str, value: str, reissued: str | None) -> None:
    """Raw ASGI: no HTTP client lets CR/LF into a Cookie header, but a proxy might pass them."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", SHOP_HOST.encode()),
            (b"user-agent", UA.encode()),
            (b"cookie", f"{name}={value}".encode("latin-1")),
        ],
        "client": CLIENT,
    }
    sent = asyncio.run(_drive_asgi(rig.asgi, scope, [b""]))
    start = sent[0]
    cookies = [value.decode("latin-1") for key, value in start["headers"] if key == b"set-cookie"]
    issued = {
        cookie.split(";")[0].partition("=")[0]: cookie.split(";")[0].partition("=")[2] for cookie in cookies
    }
    if name != "_tl":
        assert issued.get(name) == reissued
    assert not any("evil" in cookie for cookie in cookies)
    check_response(rig, start["status"], [("set-cookie", cookie) for cookie in cookies])


# --- the linker: forged, expired, replayed, foreign; open redirects -------------------------------------


def _context(epik: str = "click-1") -> ClickContext:
    return ClickContext(epik, "url", 1_764_322_000, "https://www.shop.localhost/?epik=click-1")


def _arrive(rig: Rig, token: str, *, host: str = SHOP_HOST) -> AnyResponse:
    client = TestClient(rig.asgi, base_url=f"http://{host}", client=CLIENT, follow_redirects=False)
    return client.get(f"/echo?x=1&_tlx={quote(token, safe='')}", headers={"user-agent": UA})


def _epik_set(answer: AnyResponse) -> str | None:
    for value in answer.headers.get_list("set-cookie"):
        if value.startswith("_epik="):
            return value.split(";")[0].removeprefix("_epik=")
    return None


def test_a_valid_token_is_adopted_once_and_a_replay_is_ignored(rig: Rig) -> None:
    token = rig.engine.linker.mint(_context(), SHOP_HOST)
    first = _arrive(rig, token)
    assert first.status_code == 302
    assert first.headers["location"] == "/echo?x=1"
    assert _epik_set(first) == "click-1"
    replay = _arrive(rig, token)
    assert replay.status_code == 302
    assert replay.headers["location"] == "/echo?x=1"
    assert _epik_set(replay) is None
    rig.assert_clean()


def test_a_token_signed_with_another_key_is_ignored(rig: Rig) -> None:
    forged = Linker(["another-secret-key-0123456789abcdef"]).mint(_context("forged"), SHOP_HOST)
    answer = _arrive(rig, forged)
    assert answer.status_code == 302
    assert answer.headers["location"] == "/echo?x=1"
    assert _epik_set(answer) is None
    rig.assert_clean()


def test_a_tampered_token_is_ignored(rig: Rig) -> None:
    token = rig.engine.linker.mint(_context(), SHOP_HOST)
    payload, _, signature = token.rpartition(".")
    tampered = payload.replace(payload[5], "A" if payload[5] != "A" else "B", 1) + "." + signature
    assert _epik_set(_arrive(rig, tampered)) is None
    rig.assert_clean()


def test_an_expired_token_is_ignored(rig: Rig) -> None:
    old = Linker(rig.engine.settings.secret_keys, clock=lambda: rig.engine.clock() - 601)
    answer = _arrive(rig, old.mint(_context(), SHOP_HOST))
    assert answer.status_code == 302
    assert _epik_set(answer) is None
    rig.assert_clean()


def test_a_token_for_another_host_is_ignored(rig: Rig) -> None:
    token = rig.engine.linker.mint(_context(), PAY_HOST)
    assert _epik_set(_arrive(rig, token)) is None  # minted for pay.localhost, presented on the shop
    rig.assert_clean()


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "https://pay.localhost@evil.example/",
        "https://evil.example\\@pay.localhost/",
        "https://evil.example/\\pay.localhost",
        "https://pay.localhost.evil.example/",
        "https://evil.example#pay.localhost",
        "https://evil.example?pay.localhost",
        "javascript:alert(1)//pay.localhost",
        "data:text/html,pay.localhost",
        "https://pay.localhost%2f@evil.example/",
        "https://pay.localhost\r\nLocation: https://evil.example/",
        "https://pay.localhost\nx",
        "http://[::1]/",
        "https://PAY.LOCALHOST.evil.example/",
        "",
    ],
)
def test_go_is_never_an_open_redirect(rig: Rig, target: str) -> None:
    for client in _both(rig):
        answer = client.get("/_tl/go", params={"to": target}, headers={"user-agent": UA})
        assert answer.status_code == 400, (
            f"{target!r} -> {answer.status_code} {answer.headers.get('location')}"
        )
        assert "location" not in answer.headers
    rig.assert_clean()


@pytest.mark.parametrize(
    "target", ["https://pay.localhost/checkout", "http://pay.localhost/", "https://PAY.localhost/x"]
)
def test_go_redirects_only_to_linked_hosts(rig: Rig, target: str) -> None:
    answer = rig.client().get(f"/_tl/go?epik=click-9&to={quote(target, safe='')}", headers={"user-agent": UA})
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert urlsplit(location).hostname == PAY_HOST
    rig.assert_clean()


@pytest.mark.parametrize(
    "path",
    ["//evil.example/", "/\\evil.example/", "///evil.example/", "/%2F%2Fevil.example/", "/\t/evil.example/"],
)
def test_the_linker_arrival_redirect_stays_on_the_host(rig: Rig, path: str) -> None:
    """The clean-URL redirect after a `_tlx` arrival must not become protocol-relative."""
    scope = http_scope(path, "_tlx=whatever", [(b"host", SHOP_HOST.encode()), (b"user-agent", UA.encode())])
    start = asyncio.run(_drive_asgi(rig.asgi, scope, [b""]))[0]
    assert start["status"] == 302
    location = dict(start["headers"])[b"location"].decode("latin-1")
    assert urlsplit(urljoin(f"{SHOP}/", location)).hostname == SHOP_HOST, location
    assert not location.startswith(("//", "/\\"))
    rig.assert_clean()


def test_the_engine_survives_concurrent_hostile_traffic(rig: Rig) -> None:
    """Both adapters, several threads, garbage and good events mixed: no error, every good event queued."""
    good = json.dumps({"event": "PageVisit"}).encode()
    garbage = [
        b"",
        b"{",
        b"[" * 5000,
        b'{"events":[1,2,3]}',
        b"\xff\xfe",
        json.dumps({"event": "Nope"}).encode(),
    ]
    accepted: list[int] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        with rig.wsgi_client() as wsgi:
            client = rig.client()
            for i in range(30):
                target = client if (i + offset) % 2 else wsgi
                body = good if i % 3 == 0 else garbage[(i + offset) % len(garbage)]
                answer = _ingest(target, body)
                assert answer.status_code < 500
                if answer.status_code == 202:
                    with lock:
                        accepted.append(answer.json()["accepted"])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(accepted) == 4 * 10
    assert rig.engine.deliverer.flush(10.0)
    rig.assert_clean()
