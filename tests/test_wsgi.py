"""`TrackLayerWSGIMiddleware` on real Flask and Django apps and a bare PEP 3333 app, every response
checked by `wsgiref.validate`: injection, streaming, close(), write(), never breaking the host."""

from __future__ import annotations

import sys
import wsgiref.validate
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import flask
import pytest

from tests.middleware_support import (
    CLIENT_IP,
    NONCE,
    PAGE,
    PAY_HOST,
    TAGGED,
    WSGI_FRAMEWORKS,
    HostError,
    Rig,
    bare_client,
    failing_engine,
    fetch,
    set_cookies,
    shop_client,
    wsgi_client,
)
from tracklayer_mw import Engine, TrackLayerWSGIMiddleware
from tracklayer_mw.request import INJECTED_KEY

HEAD_END = PAGE.index(b"</head>")
StartResponse = Callable[..., Any]


def as_sent(response: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    return response.status_code, [(k.lower(), v) for k, v in response.headers.multi_items()], response.content


def injected_tag(body: bytes) -> bytes:
    assert body[:HEAD_END] == PAGE[:HEAD_END]
    assert body.endswith(PAGE[HEAD_END:])
    return body[HEAD_END : len(body) - len(PAGE) + HEAD_END]


def environ_for(path: str = "/", method: str = "GET") -> dict[str, Any]:
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "www.shop.localhost",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": CLIENT_IP,
        "HTTP_HOST": "www.shop.localhost",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
    }


# --- injection ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", WSGI_FRAMEWORKS)
def test_snippet_goes_right_before_head_end(rig: Rig, framework: str) -> None:
    tag = injected_tag(fetch(shop_client(framework, rig.engine()), "GET", "/").content)
    assert tag.startswith(b"<script>window.tracklayer=")
    assert b'<script async src="/_tl/t.js?v=' in tag


@pytest.mark.parametrize("framework", ["flask", "wsgi"])  # Django leaves Content-Length to the server
def test_content_length_is_fixed_after_injection(rig: Rig, framework: str) -> None:
    response = fetch(shop_client(framework, rig.engine()), "GET", "/")
    assert int(response.headers["content-length"]) == len(response.content) > len(PAGE)


def test_django_page_without_content_length_gets_none_added(rig: Rig) -> None:
    response = fetch(shop_client("django", rig.engine()), "GET", "/")
    assert "content-length" not in response.headers
    assert b"data-tl=" in response.content


@pytest.mark.parametrize("framework", WSGI_FRAMEWORKS)
def test_csp_nonce_of_the_response_is_reused(rig: Rig, framework: str) -> None:
    tag = injected_tag(fetch(shop_client(framework, rig.engine()), "GET", "/csp").content)
    assert tag.count(f'nonce="{NONCE}"'.encode()) == 2


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
@pytest.mark.parametrize("framework", WSGI_FRAMEWORKS)
def test_snippet_is_not_injected(rig: Rig, framework: str, method: str, path: str) -> None:
    with_tracklayer = fetch(shop_client(framework, rig.engine()), method, path)
    assert as_sent(with_tracklayer) == as_sent(fetch(bare_client(framework), method, path))


def test_page_whose_template_placed_the_tag_is_left_alone(rig: Rig) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ[INJECTED_KEY] = True
        start_response("200 OK", [("Content-Type", "text/html")])
        return [PAGE]

    assert fetch(wsgi_client(TrackLayerWSGIMiddleware(app, engine=rig.engine())), "GET", "/").content == PAGE


def test_template_tag_is_not_doubled(rig: Rig) -> None:
    assert fetch(shop_client("flask", rig.engine()), "GET", "/tagged").content == TAGGED


def _flask_streaming(engine: Engine, parts: list[bytes]) -> Any:
    app = flask.Flask("streaming")

    @app.get("/")
    def page() -> flask.Response:
        return flask.Response(iter(parts), mimetype="text/html")

    return TrackLayerWSGIMiddleware(app.wsgi_app, engine=engine)


def test_streamed_page_gets_the_snippet_when_head_ends_in_the_first_chunks(rig: Rig) -> None:
    parts = [b"<html><head><title>s</title>", b"</head><body>", *[b"<p>row</p>"] * 20, b"</body></html>"]
    response = fetch(wsgi_client(_flask_streaming(rig.engine(), parts)), "GET", "/")
    head, _, rest = response.content.partition(b"</head>")
    assert b"data-tl=" in head
    assert rest == b"".join(parts).partition(b"</head>")[2]


def test_streamed_page_whose_head_ends_late_passes_untouched(rig: Rig) -> None:
    parts = [b"<html><head>", *[b"<!-- " + b"x" * 100 + b" -->"] * 10, b"</head><body></body></html>"]
    response = fetch(wsgi_client(_flask_streaming(rig.engine(), parts)), "GET", "/")
    assert response.content == b"".join(parts)


def test_empty_html_body_passes(rig: Rig) -> None:
    response = fetch(wsgi_client(_flask_streaming(rig.engine(), [])), "GET", "/")
    assert (response.status_code, response.content) == (200, b"")


def test_streamed_html_is_never_buffered_whole(rig: Rig) -> None:
    log: list[str] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/html")])
        for index in range(100):
            log.append(f"produced {index}")
            yield b"<p>" * 100

    middleware = TrackLayerWSGIMiddleware(app, engine=rig.engine())
    body = iter(middleware(environ_for(), lambda status, headers, exc_info=None: None))
    next(body)
    assert len(log) <= 10  # the first chunks only: what it takes to give up looking for </head>


def test_close_of_the_app_iterable_is_forwarded(rig: Rig) -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield PAGE

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/html")])
        return Body()

    fetch(wsgi_client(TrackLayerWSGIMiddleware(app, engine=rig.engine())), "GET", "/")
    assert closed == [True]


def test_legacy_write_callable_output_passes_untouched(rig: Rig) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/html")])
        write(b"<html><head></head>")
        return [b"<body></body></html>"]

    middleware = TrackLayerWSGIMiddleware(app, engine=rig.engine())
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return written.append

    body = b"".join(middleware(environ_for(), start_response))
    assert b"".join(written) + body == b"<html><head></head><body></body></html>"


# --- never break the host -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/boom", "/boom?epik=abc"])
@pytest.mark.parametrize("framework", WSGI_FRAMEWORKS)
def test_host_exceptions_propagate_unchanged(rig: Rig, framework: str, path: str) -> None:
    with pytest.raises(HostError, match="boom from the host"):
        fetch(shop_client(framework, rig.engine()), "GET", path)


@pytest.mark.parametrize("query", ["", "epik=abc"], ids=["no-click-signals", "with-epik"])
def test_a_failing_host_app_runs_once(rig: Rig, query: str) -> None:
    calls: list[str] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        calls.append(environ["PATH_INFO"])
        raise HostError("boom")

    middleware = TrackLayerWSGIMiddleware(app, engine=rig.engine())
    with pytest.raises(HostError):
        middleware({**environ_for(), "QUERY_STRING": query}, lambda status, headers, exc_info=None: None)
    assert calls == ["/"]


def test_host_exception_while_streaming_an_html_body_propagates(rig: Rig) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/html")])
        yield b"<html>"
        raise HostError("failed mid-page")

    # Called directly: httpx's WSGI transport does not close() an iterable that raised.
    result = TrackLayerWSGIMiddleware(app, engine=rig.engine())(environ_for(), lambda *args: None)
    with pytest.raises(HostError, match="failed mid-page"):
        list(result)


def test_error_page_started_with_exc_info_passes(rig: Rig) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/html")])
        try:
            raise HostError("handled by the app")
        except HostError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"sorry"]

    started: list[tuple[str, bool]] = []

    def server_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, exc_info is not None))

    # Called directly: httpx's WSGI transport re-raises any exc_info, even before headers were sent.
    body = b"".join(TrackLayerWSGIMiddleware(app, engine=rig.engine())(environ_for(), server_start_response))
    assert (started, body) == ([("500 Internal Server Error", True)], b"sorry")


@pytest.mark.parametrize(
    ("broken", "path"),
    [
        pytest.param("begin", "/?epik=abc", id="begin-page"),
        pytest.param("arrival", "/echo?a=1&_tlx=token", id="arrival"),
        pytest.param("set_cookie_headers", "/?epik=abc", id="cookies-page"),
        pytest.param(
            "redirect_location",
            f"/redirect?epik=abc&to=https://{PAY_HOST}/x",
            id="redirect",
        ),
    ],
)
@pytest.mark.parametrize("framework", WSGI_FRAMEWORKS)
def test_host_response_passes_unchanged_when_the_engine_fails(
    rig: Rig, framework: str, broken: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    response = fetch(shop_client(framework, failing_engine(rig, broken)), "GET", path)
    assert as_sent(response) == as_sent(fetch(bare_client(framework), "GET", path))
    assert f"tracklayer bug in {broken}" in caplog.text


@pytest.mark.parametrize("framework", WSGI_FRAMEWORKS)
def test_first_request_starts_delivery(rig: Rig, framework: str) -> None:
    engine = rig.engine()
    client = shop_client(framework, engine)
    assert not engine.deliverer.is_alive
    fetch(client, "GET", "/plain")
    assert engine.deliverer.is_alive


# --- the middleware's own answers pass wsgiref.validate -----------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/_tl/t.js", 200, id="script"),
        pytest.param("POST", "/_tl/t.js", 405, id="script-405"),
        pytest.param("GET", "/_tl/ingest", 405, id="ingest-405"),
        pytest.param("GET", "/_tl/nope", 404, id="unknown-404"),
        pytest.param("GET", "/_tl/go?to=https://evil.example/", 400, id="go-400"),
        pytest.param("GET", f"/_tl/go?to=https://{PAY_HOST}/x", 303, id="go-303"),
        pytest.param("POST", f"/_tl/go?to=https://{PAY_HOST}/x", 307, id="go-307"),
        pytest.param("GET", "/checkout?_tlx=forged", 302, id="arrival-302"),
        pytest.param("GET", "/_tl/diagnostics", 404, id="diagnostics-off"),
    ],
)
def test_middleware_answers_are_valid_wsgi(rig: Rig, method: str, path: str, status: int) -> None:
    response = fetch(shop_client("wsgi", rig.engine()), method, path)
    assert response.status_code == status


def test_script_304_is_valid_wsgi(rig: Rig) -> None:
    client = shop_client("wsgi", rig.engine())
    etag = fetch(client, "GET", "/_tl/t.js").headers["etag"]
    response = fetch(client, "GET", "/_tl/t.js", headers={"if-none-match": etag})
    assert (response.status_code, response.content) == (304, b"")
    assert "content-length" not in response.headers  # RFC 9110: it would have to be the 200's length


def test_ingest_202_is_valid_wsgi_and_sets_cookies(rig: Rig) -> None:
    response = fetch(
        shop_client("wsgi", rig.engine()),
        "POST",
        "/_tl/ingest",
        json={"event": "PageVisit", "url": "http://www.shop.localhost/?epik=abc"},
    )
    assert response.status_code == 202
    assert set(set_cookies(response)) == {"_epik", "_tl"}


def test_validator_is_really_in_the_way() -> None:
    """The harness itself: a non-conforming app fails, so passing tests mean conforming answers."""

    def sloppy(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response("302 Found", [("Location", "/x")])
        return [b""]

    with pytest.raises(AssertionError, match="Content-Type"):
        fetch(wsgi_client(sloppy), "GET", "/")
    assert wsgiref.validate.validator is not None
