"""`TrackLayerWSGIMiddleware`: the engine as PEP 3333 middleware (Flask, Django WSGI, ...).

The same decisions as the ASGI adapter, in WSGI's shape: `start_response` is wrapped to add
cookies and carry the click through redirects, and the start is held back only while looking for
`</head>` in the first chunks of an HTML body. `close()` is always forwarded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from tracklayer_mw.config import Settings
from tracklayer_mw.endpoints import MAX_BODY, UNAVAILABLE, Answer, Endpoints
from tracklayer_mw.engine import Engine, RequestState, engine_for, guard
from tracklayer_mw.outbox import Outbox
from tracklayer_mw.request import (
    STATE_KEY,
    DeferredState,
    cookies_carry_click,
    tag_placed,
    url_carries_click,
    view_from_environ,
)
from tracklayer_mw.snippet import csp_nonce, inject, is_html_response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger("tracklayer_mw")

STREAM_LOOKAHEAD_BYTES = 32 * 1024
STREAM_LOOKAHEAD_CHUNKS = 8
ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
_STATUS_TEXT = {
    200: "OK",
    202: "Accepted",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    307: "Temporary Redirect",
}


class TrackLayerWSGIMiddleware:
    def __init__(
        self,
        app: WSGIApplication,
        settings: Settings | None = None,
        *,
        engine: Engine | None = None,
        outbox: Outbox | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.engine = engine = engine_for(settings, engine, outbox=outbox, transport=transport, clock=clock)
        self.endpoints = Endpoints(engine)
        self._hops = engine.settings.trusted_proxy_hops

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        state: RequestState | None = None
        route: str | None = None
        answer: Answer | None = None
        light: _Responder | None = None
        with guard("reading the request"):
            self.engine.ensure_started()
            path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
            if (
                not path.startswith(self.endpoints.prefix)
                and not url_carries_click(environ.get("QUERY_STRING", ""))
                and not cookies_carry_click(environ.get("HTTP_COOKIE", ""))
            ):
                # Nothing to set or carry: the state is built only if the app or a template asks.
                # The state reads a copy taken before it is stored in the environ: no reference cycle.
                deferred = DeferredState(self._begin, dict(environ))
                light = _Responder(self, start_response, environ, deferred=deferred)
                environ[STATE_KEY] = deferred
        if light is not None:
            return self._run_app(environ, light)  # outside the guard: the host's exceptions are its own
        with guard("reading the request"):
            view = view_from_environ(dict(environ), self._hops)  # a copy: the environ will hold the state
            route = self.endpoints.route(view.path)
            state = self.engine.begin(view)
            if route is None:
                answer = self.endpoints.arrival(state)
        if route is not None:
            return _respond(start_response, self._endpoint(route, state, environ))
        if answer is not None:
            return _respond(start_response, answer)
        if state is None:
            return self.app(environ, start_response)
        environ[STATE_KEY] = state
        environ["QUERY_STRING"] = state.view.query_string  # without `_tlx`
        return self._run_app(environ, _Responder(self, start_response, environ, state=state))

    def _begin(self, environ: Mapping[str, Any]) -> RequestState:
        return self.engine.begin(view_from_environ(environ, self._hops))

    def _run_app(self, environ: WSGIEnvironment, responder: _Responder) -> Iterable[bytes]:
        result = self.app(environ, responder.start_response)
        if responder.started and not responder.holding:
            return result  # nothing to inject: the app's iterable (and its file_wrapper) goes out as is
        return _ResponseBody(responder, result)

    def _endpoint(self, route: str, state: RequestState | None, environ: WSGIEnvironment) -> Answer:
        if state is None:
            return UNAVAILABLE
        try:
            refused = self.endpoints.precheck(route, state)
            if refused is not None:
                return refused
            body = b""
            if route == "ingest":
                read = _read_body(environ, MAX_BODY)
                if read is None:
                    return self.endpoints.too_large()
                body = read
            return self.endpoints.dispatch(route, state, body)
        except Exception:
            logger.exception("tracklayer: the %s endpoint failed", route)
            return UNAVAILABLE


def _read_body(environ: WSGIEnvironment, limit: int) -> bytes | None:
    """The request body, or None once it passes `limit`; reads at most limit + 1 bytes."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH", "")
    remaining = int(length) if length.isdigit() else limit + 1
    if remaining > limit:
        remaining = limit + 1
    chunks: list[bytes] = []
    size = 0
    while remaining > 0:
        chunk = stream.read(min(remaining, 16384))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        remaining -= len(chunk)
    if size > limit:
        return None
    return b"".join(chunks)


def _status_line(status: int) -> str:
    return f"{status} {_STATUS_TEXT.get(status, 'Error' if status >= 400 else 'OK')}"


def _respond(start_response: StartResponse, answer: Answer) -> list[bytes]:
    headers = list(answer.headers)
    if answer.status != 304 and not any(name == "content-length" for name, _ in headers):
        headers.append(("content-length", str(len(answer.body))))
    start_response(_status_line(answer.status), [(name.title(), value) for name, value in headers])
    return [answer.body]


class _Responder:
    def __init__(
        self,
        middleware: TrackLayerWSGIMiddleware,
        start_response: StartResponse,
        environ: WSGIEnvironment,
        *,
        state: RequestState | None = None,
        deferred: DeferredState | None = None,
    ):
        self.engine = middleware.engine
        self.environ = environ  # the app's: a template marks environ["tracklayer.injected"] there
        self.state = state  # None when deferred: a request without click signals, only the tag may matter
        self.deferred = deferred
        self.method = str(environ.get("REQUEST_METHOD", "GET"))
        self.downstream = start_response
        self.started = False
        self.holding = False
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.tag = b""

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Any:
        self.started = True
        self.holding = False
        if self.state is not None or _is_html(headers):
            with guard("editing the response headers"):
                headers = self._edit(status, list(headers))  # a copy: a failed edit leaves the host's headers
        if exc_info is not None:
            return self.downstream(status, headers, exc_info)  # only pass exc_info when given
        if self.holding:
            self.status, self.headers = status, headers
            return self._write_while_holding
        return self.downstream(status, headers)

    def _edit(self, status: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        code = int(status.split(" ", 1)[0])

        def get(name: str) -> str | None:
            return next((value for key, value in headers if key.lower() == name), None)

        if self.state is not None:
            cache_control = ", ".join(value for key, value in headers if key.lower() == "cache-control")
            cookies = self.engine.set_cookie_headers(self.state, cache_control=cache_control)
            headers.extend(("Set-Cookie", value) for value in cookies)
            location = get("location")
            if 300 <= code < 400 and location:
                rewritten = self.engine.redirect_location(self.state, location)
                if rewritten is not None:
                    headers = [
                        (key, rewritten if key.lower() == "location" else value) for key, value in headers
                    ]
        if (
            self.engine.settings.inject_snippet
            and is_html_response(code, get("content-type"), get("content-encoding"), self.method)
            and not tag_placed(self.environ, self.state or self.deferred)
        ):
            csp = [value for key, value in headers if key.lower() == "content-security-policy"]
            self.tag = self._tag(csp_nonce(csp))
            self.holding = True
        return headers

    def _tag(self, nonce: str | None) -> bytes:
        state = self.state or self.deferred
        assert state is not None
        return self.engine.page_tag(state, nonce)

    def _write_while_holding(self, data: bytes) -> None:
        # The legacy write() callable: the app streams imperatively, so give up on injection.
        write = self.release()
        write(data)

    def release(self, extra_length: int = 0) -> Callable[[bytes], object]:
        self.holding = False
        headers = self.headers
        if extra_length:
            headers = [
                (
                    key,
                    str(int(value) + extra_length)
                    if key.lower() == "content-length" and value.isdigit()
                    else value,
                )
                for key, value in headers
            ]
        return self.downstream(self.status, headers)


class _ResponseBody:
    """The app's body, with the snippet injected when `</head>` shows up early; close() forwarded."""

    def __init__(self, responder: _Responder, result: Iterable[bytes]) -> None:
        self.responder = responder
        self.result = result

    def __iter__(self) -> Iterator[bytes]:
        responder = self.responder
        chunks: list[bytes] = []
        iterator = iter(self.result)
        for chunk in iterator:
            if not responder.holding:
                if chunks:
                    yield b"".join(chunks)
                    chunks = []
                yield chunk
                continue
            chunks.append(chunk)
            body = b"".join(chunks)
            if b"</head" in body.lower():
                yield from self._inject(body)
                chunks = []
            elif len(body) > STREAM_LOOKAHEAD_BYTES or len(chunks) > STREAM_LOOKAHEAD_CHUNKS:
                responder.release()
                yield body
                chunks = []
        if responder.holding:
            yield from self._inject(b"".join(chunks))
        elif chunks:
            yield b"".join(chunks)

    def _inject(self, body: bytes) -> Iterator[bytes]:
        injected = None
        with guard("injecting the snippet"):
            injected = inject(body, self.responder.tag)
        if injected is None:
            self.responder.release()
            if body:
                yield body
            return
        self.responder.release(len(injected) - len(body))
        yield injected

    def close(self) -> None:
        close = getattr(self.result, "close", None)
        if close is not None:
            close()


def _is_html(headers: Iterable[tuple[str, str]]) -> bool:
    """A cheap first look, so that a request without click signals costs nearly nothing on JSON."""
    for name, value in headers:
        if name.lower() == "content-type":
            return value.lstrip()[:9].lower() == "text/html"
    return False
