"""`TrackLayerMiddleware` on real Starlette and FastAPI apps: snippet injection, never breaking the
host (its exceptions, its pages when the engine fails, websockets, lifespan, streaming), t.js."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import jinja2
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from tests.middleware_support import (
    ASGI_FRAMEWORKS,
    CLIENT_IP,
    NONCE,
    PAGE,
    PAY_HOST,
    TAGGED,
    HostError,
    Rig,
    asgi_client,
    bare_client,
    failing_engine,
    fetch,
    landing_cookies,
    shop_client,
)
from tracklayer_mw import Engine, TrackLayerMiddleware, snippet_tag
from tracklayer_mw.request import INJECTED_KEY
from tracklayer_mw.snippet import install_jinja

HEAD_END = PAGE.index(b"</head>")


def as_sent(response: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    return response.status_code, response.headers.multi_items(), response.content


def injected_tag(body: bytes) -> bytes:
    """What was put into PAGE (asserting nothing else changed)."""
    assert body[:HEAD_END] == PAGE[:HEAD_END]
    assert body.endswith(PAGE[HEAD_END:])
    return body[HEAD_END : len(body) - len(PAGE) + HEAD_END]


# --- injection ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", ASGI_FRAMEWORKS)
def test_snippet_goes_right_before_head_end(rig: Rig, framework: str) -> None:
    response = fetch(shop_client(framework, rig.engine()), "GET", "/")
    tag = injected_tag(response.content)
    assert tag.startswith(b"<script>window.tracklayer=")
    assert b'<script async src="/_tl/t.js?v=' in tag


@pytest.mark.parametrize("framework", ASGI_FRAMEWORKS)
def test_content_length_is_fixed_after_injection(rig: Rig, framework: str) -> None:
    response = fetch(shop_client(framework, rig.engine()), "GET", "/")
    assert int(response.headers["content-length"]) == len(response.content) > len(PAGE)


@pytest.mark.parametrize("framework", ASGI_FRAMEWORKS)
def test_csp_nonce_of_the_response_is_reused(rig: Rig, framework: str) -> None:
    tag = injected_tag(fetch(shop_client(framework, rig.engine()), "GET", "/csp").content)
    assert tag.count(f'nonce="{NONCE}"'.encode()) == 2


@pytest.mark.parametrize(
    ("overrides", "static"),
    [
        pytest.param({"cookie_domain": None}, True, id="no-cookie-domain"),
        pytest.param({"cookie_domain": None, "consent": lambda request: True}, False, id="consent-callable"),
        pytest.param({}, False, id="cookie-domain"),  # the rig's settings have one
    ],
)
def test_the_tag_is_rendered_once_only_when_no_request_can_change_it(
    rig: Rig, overrides: dict[str, Any], static: bool
) -> None:
    engine = rig.engine(**overrides)
    if static:
        assert engine.static_tag == engine.snippet.html().encode()
        assert engine.static_tag in fetch(shop_client("starlette", engine), "GET", "/").content
    else:  # a callable's decision or a linked host's host-only cookie goes into each page's tag
        assert engine.static_tag is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("GET", "/plain", id="not-html"),
        pytest.param("GET", "/gzip", id="compressed"),
        pytest.param("HEAD", "/", id="head-request"),
        pytest.param("GET", "/missing", id="not-2xx"),
        pytest.param("GET", "/tagged", id="already-injected"),
    ],
)
@pytest.mark.parametrize("framework", ASGI_FRAMEWORKS)
def test_snippet_is_not_injected(rig: Rig, framework: str, method: str, path: str) -> None:
    with_tracklayer = fetch(shop_client(framework, rig.engine()), method, path)
    assert as_sent(with_tracklayer) == as_sent(fetch(bare_client(framework), method, path))


def test_template_tag_is_not_doubled(rig: Rig) -> None:
    assert fetch(shop_client("starlette", rig.engine()), "GET", "/tagged").content == TAGGED


def test_page_whose_template_placed_the_tag_is_left_alone(rig: Rig) -> None:
    """What `snippet.install_jinja` documents: the template marks the scope, the middleware adds nothing."""

    async def page(request: Request) -> Response:
        request.scope[INJECTED_KEY] = True
        return HTMLResponse(PAGE)

    app = Starlette(
        routes=[Route("/", page)], middleware=[Middleware(TrackLayerMiddleware, engine=rig.engine())]
    )
    assert fetch(asgi_client(app), "GET", "/").content == PAGE


def test_a_jinja_template_places_the_tag_with_the_default_factory(rig: Rig) -> None:
    """`install_jinja(env)` alone: the template renders the request's tag once, the middleware adds none."""
    env = jinja2.Environment(autoescape=True)
    install_jinja(env)
    template = env.from_string(
        "<html><head>{{ tracklayer_tag(request) }}<title>t</title></head><body></body></html>"
    )

    async def page(request: Request) -> Response:
        return HTMLResponse(template.render(request=request))

    app = Starlette(
        routes=[Route("/", page)], middleware=[Middleware(TrackLayerMiddleware, engine=rig.engine())]
    )
    body = fetch(asgi_client(app), "GET", "/").content
    assert body.count(b"data-tl=") == 1
    assert body.index(b"data-tl=") < body.index(b"<title>")


def test_snippet_tag_outside_the_middleware_renders_nothing() -> None:
    assert snippet_tag({"type": "http"}) == ""


def snippet_config_of(body: bytes) -> dict[str, Any]:
    found = re.search(rb'data-tl="([^"]*)"', body)
    assert found is not None
    config: dict[str, Any] = json.loads(html.unescape(found.group(1).decode()))
    return config


@pytest.mark.parametrize(("granted", "mode"), [(True, "granted"), (False, "denied")])
def test_consent_callable_decision_is_rendered_for_the_snippet(rig: Rig, granted: bool, mode: str) -> None:
    engine = rig.engine(consent=lambda request: granted)
    assert snippet_config_of(fetch(shop_client("starlette", engine), "GET", "/").content)["c"] == mode


def test_consent_cookie_is_handed_to_the_snippet(rig: Rig) -> None:
    engine = rig.engine(consent="tl_consent=granted")
    config = snippet_config_of(fetch(shop_client("starlette", engine), "GET", "/").content)
    assert (config["c"], config["d"]) == ("cookie:tl_consent=granted", ".shop.localhost")


@pytest.mark.parametrize(
    ("base_url", "domain"),
    [
        pytest.param("http://www.shop.localhost", ".shop.localhost", id="inside-cookie-domain"),
        pytest.param(f"https://{PAY_HOST}", "", id="linked-host-outside-it"),
    ],
)
def test_snippet_writes_consent_for_a_domain_the_page_host_is_inside(
    rig: Rig, base_url: str, domain: str
) -> None:
    """Else the browser refuses the consent cookie, and the events it releases are dropped."""
    engine = rig.engine(consent="tl_consent=granted")
    config = snippet_config_of(fetch(shop_client("starlette", engine, base_url=base_url), "GET", "/").content)
    assert config["d"] == domain


def test_snippet_knows_the_linked_domains_and_endpoints(rig: Rig) -> None:
    config = snippet_config_of(fetch(shop_client("starlette", rig.engine()), "GET", "/").content)
    assert (config["i"], config["g"], config["l"]) == ("/_tl/ingest", "/_tl/go", [PAY_HOST])


def test_injection_can_be_turned_off(rig: Rig) -> None:
    assert fetch(shop_client("starlette", rig.engine(inject_snippet=False)), "GET", "/").content == PAGE


def _streaming_app(engine: Engine, parts: list[bytes], media_type: str = "text/html") -> Starlette:
    async def page(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for part in parts:
                yield part

        return StreamingResponse(body(), media_type=media_type)

    return Starlette(routes=[Route("/", page)], middleware=[Middleware(TrackLayerMiddleware, engine=engine)])


def test_streamed_page_gets_the_snippet_when_head_ends_in_the_first_chunks(rig: Rig) -> None:
    parts = [b"<html><head><title>s</title>", b"</head><body>", *[b"<p>row</p>"] * 20, b"</body></html>"]
    response = fetch(asgi_client(_streaming_app(rig.engine(), parts)), "GET", "/")
    head, _, rest = response.content.partition(b"</head>")
    assert b"data-tl=" in head
    assert rest == b"".join(parts).partition(b"</head>")[2]


def test_a_content_type_with_leading_spaces_is_still_html(rig: Rig) -> None:
    app = _streaming_app(rig.engine(), [PAGE], media_type="  text/html")
    response = fetch(asgi_client(app), "GET", "/")
    assert response.headers["content-type"].strip() == "text/html"
    assert b'data-tl="' in response.content


def test_streamed_page_whose_head_ends_late_passes_untouched(rig: Rig) -> None:
    parts = [b"<html><head>", *[b"<!-- " + b"x" * 100 + b" -->"] * 10, b"</head><body></body></html>"]
    response = fetch(asgi_client(_streaming_app(rig.engine(), parts)), "GET", "/")
    assert response.content == b"".join(parts)


def test_streamed_page_larger_than_the_lookahead_passes_untouched(rig: Rig) -> None:
    parts = [b"<html><head>" + b" " * 40_000, b"</head><body></body></html>"]
    response = fetch(asgi_client(_streaming_app(rig.engine(), parts)), "GET", "/")
    assert response.content == b"".join(parts)


def _run_streaming(engine: Engine, media_type: bytes, chunks: int, first: bytes = b"<p>" * 100) -> list[str]:
    """Drive the middleware by hand: the order in which the app produced and the server got chunks."""
    log: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", media_type)]})
        for index in range(chunks):
            log.append(f"produced {index}")
            await send(
                {
                    "type": "http.response.body",
                    "body": first if index == 0 else b"<p>" * 100,
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def server(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            log.append("server got a chunk")

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "headers": [(b"host", b"www.shop.localhost")],
        "client": (CLIENT_IP, 1),
        "scheme": "http",
    }
    anyio.run(TrackLayerMiddleware(app, engine=engine), scope, receive, server)
    return log


def test_streamed_html_is_never_buffered_whole(rig: Rig) -> None:
    log = _run_streaming(rig.engine(), b"text/html", 100)
    assert log.index("server got a chunk") < log.index("produced 10")


def test_streamed_page_whose_template_placed_the_tag_is_not_held_back(rig: Rig) -> None:
    """A streamed template renders its head after the response started, so only the body says so."""
    log = _run_streaming(rig.engine(), b"text/html", 3, first=TAGGED.partition(b"<body>")[0])
    assert log[:2] == ["produced 0", "server got a chunk"]


def test_streamed_non_html_passes_chunk_by_chunk(rig: Rig) -> None:
    log = _run_streaming(rig.engine(), b"application/octet-stream", 3)
    assert log == [
        "produced 0",
        "server got a chunk",
        "produced 1",
        "server got a chunk",
        "produced 2",
        "server got a chunk",
    ]


# --- never break the host -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/boom", "/boom?epik=abc"])
@pytest.mark.parametrize("framework", ASGI_FRAMEWORKS)
def test_host_exceptions_propagate_unchanged(rig: Rig, framework: str, path: str) -> None:
    with pytest.raises(HostError, match="boom from the host"):
        fetch(shop_client(framework, rig.engine()), "GET", path)


@pytest.mark.parametrize("path", ["/", "/?epik=abc"], ids=["no-click-signals", "with-epik"])
def test_a_failing_host_app_runs_once(rig: Rig, path: str) -> None:
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        raise HostError("boom")

    with pytest.raises(HostError):
        fetch(asgi_client(TrackLayerMiddleware(app, engine=rig.engine())), "GET", path)
    assert calls == ["/"]


def test_host_exception_after_an_html_start_propagates(rig: Rig) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]}
        )
        raise HostError("failed mid-page")

    with pytest.raises(HostError, match="failed mid-page"):
        fetch(asgi_client(TrackLayerMiddleware(app, engine=rig.engine())), "GET", "/")


@pytest.mark.parametrize(
    ("broken", "path"),
    [
        pytest.param("begin", "/?epik=abc", id="begin-page"),
        pytest.param("begin", f"/redirect?epik=abc&to=https://{PAY_HOST}/x", id="begin-redirect"),
        pytest.param("arrival", "/echo?a=1&_tlx=token", id="arrival"),
        pytest.param("set_cookie_headers", "/?epik=abc", id="cookies-page"),
        pytest.param(
            "redirect_location",
            f"/redirect?epik=abc&to=https://{PAY_HOST}/x",
            id="redirect",
        ),
    ],
)
@pytest.mark.parametrize("framework", ASGI_FRAMEWORKS)
def test_host_response_passes_unchanged_when_the_engine_fails(
    rig: Rig, framework: str, broken: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    response = fetch(shop_client(framework, failing_engine(rig, broken)), "GET", path)
    assert as_sent(response) == as_sent(fetch(bare_client(framework), "GET", path))
    assert f"tracklayer bug in {broken}" in caplog.text


@pytest.mark.parametrize(
    ("broken", "path"),
    [
        pytest.param("begin", "/", id="begin-page"),
        pytest.param("begin", "/plain", id="begin-not-a-page"),
        pytest.param("set_cookie_headers", "/plain", id="cookies-not-a-page"),
        pytest.param("redirect_location", f"/redirect?to=https://{PAY_HOST}/x", id="redirect"),
    ],
)
@pytest.mark.parametrize("framework", ASGI_FRAMEWORKS)
def test_a_returning_visitors_response_passes_unchanged_when_the_engine_fails(
    rig: Rig, framework: str, broken: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Click cookies are looked at when the response starts: a failure there leaves it as the host sent it.
    cookies = {"_epik": "tag-written-1"}
    response = fetch(shop_client(framework, failing_engine(rig, broken)), "GET", path, cookies=cookies)
    assert as_sent(response) == as_sent(fetch(bare_client(framework), "GET", path, cookies=cookies))
    assert f"tracklayer bug in {broken}" in caplog.text


def test_websockets_pass_through(rig: Rig) -> None:
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("echo: " + await websocket.receive_text())
        await websocket.close()

    app = Starlette(
        routes=[WebSocketRoute("/ws", echo)],
        middleware=[Middleware(TrackLayerMiddleware, engine=rig.engine())],
    )
    with asgi_client(app).websocket_connect("/ws?epik=abc") as websocket:
        websocket.send_text("hi")
        assert websocket.receive_text() == "echo: hi"


def _app_with_lifespan(engine: Engine, events: list[str]) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("host startup")
        yield
        events.append("host shutdown")

    async def home(request: Request) -> Response:
        return HTMLResponse(PAGE)

    return Starlette(
        routes=[Route("/", home)],
        lifespan=lifespan,
        middleware=[Middleware(TrackLayerMiddleware, engine=engine)],
    )


def test_lifespan_starts_delivery_and_the_host_lifespan_still_runs(rig: Rig) -> None:
    engine, events = rig.engine(), []
    with asgi_client(_app_with_lifespan(engine, events)):
        assert engine.deliverer.is_alive
        assert events == ["host startup"]


def test_lifespan_shutdown_stops_delivery_after_sending_what_is_queued(rig: Rig) -> None:
    engine, events = rig.engine(), []
    with asgi_client(_app_with_lifespan(engine, events)) as client:
        fetch(client, "POST", "/_tl/ingest", json={"event": "PageVisit"})
    assert not engine.deliverer.is_alive
    assert events == ["host startup", "host shutdown"]
    assert len(rig.sandbox.received) == 1


def test_first_request_starts_delivery_without_a_lifespan(rig: Rig) -> None:
    engine = rig.engine()
    client = shop_client("starlette", engine)
    assert not engine.deliverer.is_alive
    fetch(client, "GET", "/plain")
    assert engine.deliverer.is_alive


def test_middleware_built_from_settings_and_transport_works_end_to_end(rig: Rig) -> None:
    """The form the README shows: Middleware(TrackLayerMiddleware, settings=..., transport=...)."""

    async def home(request: Request) -> Response:
        return HTMLResponse(PAGE)

    settings = rig.settings()
    app = Starlette(
        routes=[Route("/", home)],
        middleware=[
            Middleware(TrackLayerMiddleware, settings=settings, transport=rig.transport, clock=rig.clock)
        ],
    )
    with asgi_client(app) as client:
        jar = landing_cookies(fetch(client, "GET", "/?epik=abc"))
        assert set(jar) == {"_epik", "_tl"}
        assert (
            fetch(client, "POST", "/_tl/ingest", json={"event": "PageVisit"}, cookies=jar).status_code == 202
        )
    (event,) = [record.event for record in rig.sandbox.received]
    assert event["user_data"]["click_id"] == "abc"
    assert rig.transport.invalid == []


# --- t.js -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", ASGI_FRAMEWORKS)
def test_script_is_served_with_etag_and_cache_control(rig: Rig, framework: str) -> None:
    response = fetch(shop_client(framework, rig.engine()), "GET", "/_tl/t.js")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert response.headers["etag"].startswith('"')
    assert response.content.startswith(b"/*")


def test_script_answers_304_to_a_matching_if_none_match(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine())
    etag = fetch(client, "GET", "/_tl/t.js").headers["etag"]
    response = fetch(client, "GET", "/_tl/t.js", headers={"if-none-match": f"W/{etag}"})
    assert (response.status_code, response.content) == (304, b"")
    assert response.headers["etag"] == etag
    assert "content-length" not in response.headers  # RFC 9110: it would have to be the 200's length


def test_script_refuses_post(rig: Rig) -> None:
    response = fetch(shop_client("starlette", rig.engine()), "POST", "/_tl/t.js")
    assert (response.status_code, response.headers["allow"]) == (405, "GET, HEAD")
