"""`TrackLayerMiddleware`: the engine as pure ASGI 3 middleware (no BaseHTTPMiddleware).

Only protocol work lives here: wrap `send`, edit the start message in place, hold it back while
deciding whether to inject the snippet. Tracking steps run inside `guard`, so a tracklayer bug
is logged and the host's response passes unchanged; the host's own exceptions are never caught.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio.to_thread
import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracklayer_mw.config import Settings
from tracklayer_mw.endpoints import BLOCKING_ROUTES, MAX_BODY, UNAVAILABLE, Answer, Endpoints
from tracklayer_mw.engine import Engine, RequestState, engine_for, guard, report_failure
from tracklayer_mw.outbox import Outbox
from tracklayer_mw.request import (
    STATE_KEY,
    DeferredState,
    scope_cookies_carry_click,
    tag_placed,
    url_carries_click,
    view_from_scope,
)
from tracklayer_mw.snippet import csp_nonce, inject, is_html_response

logger = logging.getLogger("tracklayer_mw")

# A streamed page gets the snippet only if `</head>` shows up this early; otherwise it passes untouched.
STREAM_LOOKAHEAD_BYTES = 32 * 1024
STREAM_LOOKAHEAD_CHUNKS = 8


class TrackLayerMiddleware:
    def __init__(
        self,
        app: ASGIApp,
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
        self.inject_snippet = engine.settings.inject_snippet
        self.prefix = self.endpoints.prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        light = False
        try:  # not `with guard()`: this runs for every request, and a try block costs nothing
            self.engine.ensure_started()
            query = scope.get("query_string")
            light = not scope["path"].startswith(self.prefix) and not (query and url_carries_click(query))
        except Exception:
            report_failure("reading the request")
        if light:
            # Nothing in the URL to act on: most requests. The state is built only when something
            # asks for it: the app (track(), a template) or, at the response's start, click cookies
            # that may be due for re-issue. The app gets a copy of the scope holding the state; the
            # state reads the original (no reference cycle).
            deferred = DeferredState(self._begin, scope)
            app_scope = {**scope, STATE_KEY: deferred}
            responder: _Responder | None = None

            async def light_send(message: Message) -> None:
                nonlocal responder
                if responder is None:
                    if message["type"] == "http.response.start":
                        responder = self._responder_for(message, send, app_scope, deferred)
                    if responder is None:
                        await send(message)
                        return
                await responder.send(message)

            await self.app(app_scope, receive, light_send)  # outside any guard: host errors are its own
            return
        state: RequestState | None = None
        route: str | None = None
        answer: Answer | None = None
        with guard("reading the request"):
            view = view_from_scope(scope, self._hops)
            route = self.endpoints.route(view.path)
            state = self.engine.begin(view)
            if route is None:
                answer = self.endpoints.arrival(state)
        if route is not None:
            await self._send_answer(send, await self._endpoint(route, state, receive))
            return
        if answer is not None:
            await self._send_answer(send, answer)
            return
        if state is not None:
            app_scope = {**scope, STATE_KEY: state}
            if state.view.query_string != scope.get("query_string", b"").decode("latin-1"):
                app_scope["query_string"] = state.view.query_string.encode("latin-1")  # `_tlx` stripped
            await self.app(app_scope, receive, _Responder(self, send, app_scope, state=state).send)
        else:
            await self.app(scope, receive, send)

    def _begin(self, scope: Mapping[str, Any]) -> RequestState:
        return self.engine.begin(view_from_scope(scope, self._hops))

    def _responder_for(
        self, start: Message, send: Send, app_scope: Scope, deferred: DeferredState
    ) -> _Responder | None:
        """The responder for a response, or None to let it pass untouched. With click cookies (or a
        state the app built, track()) cookies may be due on any response: the full responder. Without,
        only an HTML page matters, for the snippet: any other response costs one look at its headers."""
        try:
            if deferred.built is not None or scope_cookies_carry_click(deferred.raw):
                return _Responder(self, send, app_scope, state=deferred.get())
            if self.inject_snippet and _is_html(start):
                return _Responder(self, send, app_scope, deferred=deferred)
            return None
        except Exception:
            report_failure("reading the request")
            return None

    # --- lifespan ------------------------------------------------------------------------------

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                with guard("starting delivery"):
                    self.engine.start()
            elif message["type"] == "lifespan.shutdown":
                with guard("stopping delivery"):
                    await anyio.to_thread.run_sync(self.engine.stop)
            return message

        return wrapped

    # --- endpoints -----------------------------------------------------------------------------

    async def _endpoint(self, route: str, state: RequestState | None, receive: Receive) -> Answer:
        if state is None:
            return UNAVAILABLE
        try:
            refused = self.endpoints.precheck(route, state)
            if refused is not None:
                return refused
            if route == "ingest":
                body = await _read_body(receive, MAX_BODY)
                return self.endpoints.too_large() if body is None else await self._ingest(state, body)
            if route in BLOCKING_ROUTES:  # SQLite: off the event loop
                return await anyio.to_thread.run_sync(self.endpoints.dispatch, route, state)
            return self.endpoints.dispatch(route, state)
        except Exception:
            logger.exception("tracklayer: the %s endpoint failed", route)
            return UNAVAILABLE

    async def _ingest(self, state: RequestState, body: bytes) -> Answer:
        # Checked on the loop: CPU only, and a thread would hold the same GIL. Stored on the loop too
        # when the outbox can commit at once (a few WAL writes, no fsync); only when it would wait
        # (another writer) does the put go to a thread. Each hop to a thread and back waits for the
        # GIL twice, which under load was most of ingest's p99.
        staged = self.endpoints.stage_ingest(state, body)
        if isinstance(staged, Answer):
            return staged
        stored = self.endpoints.store_ingest_nowait(staged)
        if stored is not None:
            return stored
        return await anyio.to_thread.run_sync(self.endpoints.store_ingest, staged)

    @staticmethod
    async def _send_answer(send: Send, answer: Answer) -> None:
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]
        if answer.status != 304 and not any(name == b"content-length" for name, _ in headers):
            headers.append((b"content-length", str(len(answer.body)).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None as soon as it passes `limit` (never buffer an unbounded body)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class _Responder:
    """Adds cookies, carries the click through redirects, injects the snippet.

    One per request with a click in its URL, cookies or a built state, else per HTML page: a response
    that needs none of it never meets one. A whole HTML page (one body message) is injected without
    buffering. Only the held start message is ever copied, never edited."""

    __slots__ = (
        "buffered",
        "deferred",
        "downstream",
        "engine",
        "held",
        "inject",
        "passthrough",
        "scope",
        "state",
        "tag",
    )

    def __init__(
        self,
        middleware: TrackLayerMiddleware,
        send: Send,
        scope: Scope,
        *,
        state: RequestState | None = None,
        deferred: DeferredState | None = None,
    ) -> None:
        self.engine = middleware.engine
        self.inject = middleware.inject_snippet
        self.downstream = send
        self.scope = scope  # the app's copy: a template marks scope["tracklayer.injected"] there
        self.state = state  # None when deferred: no click to carry on, only the tag may matter
        self.deferred = deferred
        self.held: Message | None = None  # the start message, while deciding about injection
        self.buffered: list[bytes] = []  # body chunks seen while holding
        self.tag = b""
        self.passthrough = False

    async def send(self, message: Message) -> None:
        if self.passthrough:
            await self.downstream(message)
            return
        kind = message["type"]
        if kind == "http.response.start":
            if self.state is not None:
                carried = None
                with guard("editing the response headers"):
                    edited = {**message, "headers": list(message.get("headers", ()))}
                    self._carry_click(edited)
                    carried = edited
                if carried is None:  # a tracklayer bug: the host's response goes out as it was, untagged
                    self.passthrough = True
                    await self.downstream(message)
                    return
                message = carried
            if self.inject:
                try:  # hot path: try/except rather than a guard object
                    self._consider_injection(message)
                except Exception:
                    report_failure("deciding about the snippet")
                    self.held = None
            if self.held is None:
                self.passthrough = True
                await self.downstream(message)
            return
        if kind == "http.response.body" and self.held is not None:
            await self._body(message)
            return
        await self._release()
        await self.downstream(message)

    def _carry_click(self, message: Message) -> None:
        """Set the click cookies and carry the click through the app's redirect."""
        assert self.state is not None
        raw: list[tuple[bytes, bytes]] = message["headers"]
        cache_control = ", ".join(value.decode("latin-1") for name, value in raw if name == b"cache-control")
        for cookie in self.engine.set_cookie_headers(self.state, cache_control=cache_control):
            raw.append((b"set-cookie", cookie.encode("latin-1")))
        if 300 <= int(message["status"]) < 400:
            for index, (name, value) in enumerate(raw):
                if name == b"location":
                    rewritten = self.engine.redirect_location(self.state, value.decode("latin-1"))
                    if rewritten is not None:
                        raw[index] = (name, rewritten.encode("latin-1"))
                    break

    def _consider_injection(self, message: Message) -> None:
        """Hold the start back when this response is a page to put the tag into."""
        content_type = content_encoding = None
        policies: list[bytes] = []
        for name, value in message.get("headers", ()):  # lower-case names, as ASGI requires
            if name == b"content-type":
                content_type = value
            elif name == b"content-encoding":
                content_encoding = value
            elif name == b"content-security-policy":
                policies.append(value)
        # A cheap first look, as most responses are no HTML; then the full rules for those that are.
        if content_type is None or content_type.lstrip()[:9].lower() != b"text/html":
            return
        if not is_html_response(
            int(message["status"]),
            content_type.decode("latin-1"),
            None if content_encoding is None else content_encoding.decode("latin-1"),
            str(self.scope.get("method", "GET")),
        ) or tag_placed(self.scope, self.state or self.deferred):
            return
        self.tag = self._tag(policies)
        self.held = message

    def _tag(self, policies: list[bytes]) -> bytes:
        nonce = csp_nonce(value.decode("latin-1") for value in policies) if policies else None
        state = self.state or self.deferred
        assert state is not None
        return self.engine.page_tag(state, nonce)

    async def _body(self, message: Message) -> None:
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        if more or self.buffered:
            await self._stream(chunk, more)
            return
        # The common case, the whole page in one message: a complete body may take the tag before
        # </body> too. Hot path: try/except rather than a guard object.
        injected = None
        try:
            injected = inject(chunk, self.tag)
        except Exception:
            report_failure("injecting the snippet")
        held, self.held, self.passthrough = self.held, None, True
        assert held is not None
        if injected is None:  # declined (already tagged, no </head> or </body>): the page as it was
            await self.downstream(held)
            await self.downstream(message)
            return
        await self.downstream(_grow_content_length(held, len(injected) - len(chunk)))
        await self.downstream({"type": "http.response.body", "body": injected, "more_body": False})

    async def _stream(self, chunk: bytes, more: bool) -> None:
        """A streamed page: look for an early </head> in the first chunks, never buffer it whole."""
        self.buffered.append(chunk)
        body = chunk if len(self.buffered) == 1 else b"".join(self.buffered)
        injected = None
        tried = not more or b"</head" in body.lower()
        if tried:
            with guard("injecting the snippet"):
                injected = inject(body, self.tag)
        if injected is not None:
            await self._send_held(extra_length=len(injected) - len(body))
            await self.downstream({"type": "http.response.body", "body": injected, "more_body": more})
        elif tried or len(body) > STREAM_LOOKAHEAD_BYTES or len(self.buffered) > STREAM_LOOKAHEAD_CHUNKS:
            # Declined (already tagged), or no </head> early enough: what was held goes out untouched.
            await self._send_held()
            await self.downstream({"type": "http.response.body", "body": body, "more_body": more})

    async def _release(self) -> None:
        """Give up on injection before the body ended: send the held start and what was buffered."""
        if self.held is None:
            return
        body = b"".join(self.buffered)
        had_body = bool(self.buffered)
        await self._send_held()
        if had_body:
            await self.downstream({"type": "http.response.body", "body": body, "more_body": True})

    async def _send_held(self, *, extra_length: int = 0) -> None:
        held, self.held = self.held, None
        self.buffered = []
        self.passthrough = True
        if held is not None:
            await self.downstream(_grow_content_length(held, extra_length) if extra_length else held)


def _grow_content_length(start: Message, extra: int) -> Message:
    """A copy of the start message with Content-Length grown by `extra`: the host's is never edited."""
    headers = list(start["headers"])
    for index, (name, value) in enumerate(headers):
        if name == b"content-length" and value.isdigit():
            headers[index] = (name, b"%d" % (int(value) + extra))
    return {**start, "headers": headers}


def _is_html(start: Message) -> bool:
    """A cheap first look at a start message, so that a response that is no page costs nearly nothing."""
    for name, value in start.get("headers", ()):
        if name == b"content-type":
            return bool(value.lstrip()[:9].lower() == b"text/html")
    return False
