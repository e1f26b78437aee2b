"""The middleware's own endpoints under `path_prefix`: t.js, ingest, go and diagnostics.

Each returns an `Answer`; the adapters only read bodies (with the size limit) and write answers.
Every untrusted input ends in a 4xx with a clear JSON error, never in an exception.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from tracklayer_mw.context import query_params
from tracklayer_mw.engine import Engine, RequestState, lone_surrogate_at
from tracklayer_mw.events import Event, EventError, parse_event
from tracklayer_mw.linker import TOKEN_PARAM, with_param

logger = logging.getLogger("tracklayer_mw")

MAX_BODY = 64 * 1024
MAX_EVENTS_PER_BODY = 100
BLOCKING_ROUTES = frozenset({"diagnostics"})  # ASGI: to a thread (ingest has its own path, see asgi.py)
_JSON = [("content-type", "application/json"), ("cache-control", "no-store")]
_INGEST_TYPES = ("application/json", "text/plain")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def redirect_answer(status: int, location: str, cookies: list[str]) -> Answer:
    """A redirect tracklayer answers itself: never cached, and typed (PEP 3333 servers may insist)."""
    headers = [("location", location), ("cache-control", "no-store"), ("content-type", "text/plain")]
    return Answer(status, [*headers, *(("set-cookie", value) for value in cookies)])


def json_answer(status: int, payload: dict[str, Any], headers: list[tuple[str, str]] | None = None) -> Answer:
    return Answer(status, [*_JSON, *(headers or [])], json.dumps(payload, separators=(",", ":")).encode())


# When the engine itself failed: not the client's fault, and never the host's page.
UNAVAILABLE = json_answer(503, {"error": "temporarily unavailable"}, [("retry-after", "5")])


class RateLimiter:
    """A token bucket per client, in memory, bounded: the oldest idle clients are forgotten first."""

    def __init__(
        self, per_minute: int, *, clock: Callable[[], float] = time.monotonic, max_clients: int = 10_000
    ):
        self.rate = per_minute / 60.0
        self.burst = max(10.0, per_minute / 10.0)
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max = max_clients
        self._lock = threading.Lock()

    def allow(self, key: str, cost: float = 1.0) -> bool:
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            allowed = tokens >= cost
            self._buckets[key] = (tokens - cost if allowed else tokens, now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
            return allowed


@dataclass(frozen=True, slots=True)
class StagedIngest:
    """An ingest body checked and enriched, its events ready to queue."""

    events: list[Event]
    rejected: list[dict[str, Any]]  # per-event errors, answered beside the accepted ones
    cookies: list[tuple[str, str]]  # the response's Set-Cookie headers


class Endpoints:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.prefix = engine.settings.path_prefix
        # The engine's clock, so a test's fake clock drives the rate as it drives everything else.
        self.limiter = RateLimiter(engine.settings.ingest_rate_per_minute, clock=engine.clock)

    def arrival(self, state: RequestState) -> Answer | None:
        """A GET/HEAD carrying a linker token: cookies set, redirected to the URL without it."""
        clean_url = self.engine.arrival(state)
        if clean_url is None:
            return None
        return redirect_answer(302, clean_url, self.engine.set_cookie_headers(state))

    def precheck(self, route: str, state: RequestState) -> Answer | None:
        """What is answered before reading the body: anything but an ingest that passes its checks."""
        return self.ingest_precheck(state) if route == "ingest" else None

    def dispatch(self, route: str, state: RequestState, body: bytes = b"") -> Answer:
        """An endpoint's answer. Blocking for the routes in BLOCKING_ROUTES (they touch SQLite)."""
        if route == "t.js":
            return self.serve_script(state)
        if route == "go":
            return self.go(state)
        if route == "diagnostics":
            return self.diagnostics(state)
        if route == "ingest":
            return self.ingest(state, body)
        return json_answer(404, {"error": "no such tracklayer endpoint"})

    def route(self, path: str) -> str | None:
        """The endpoint a path names ("t.js", "ingest", "go", "diagnostics", "unknown"); None: not ours."""
        if path != self.prefix and not path.startswith(self.prefix + "/"):
            return None
        name = path[len(self.prefix) + 1 :]
        return name if name in ("t.js", "ingest", "go", "diagnostics") else "unknown"

    # --- the snippet -----------------------------------------------------------------------------

    def serve_script(self, state: RequestState) -> Answer:
        if state.view.method not in ("GET", "HEAD"):
            return json_answer(405, {"error": "use GET"}, [("allow", "GET, HEAD")])
        headers = [("etag", self.engine.snippet.etag), ("cache-control", "public, max-age=3600")]
        if_none_match = state.view.headers.get("if-none-match", "")
        if (
            self.engine.snippet.etag in [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
            or if_none_match == "*"
        ):
            return Answer(304, headers)  # no Content-Type or Content-Length: they would describe no body
        body = b"" if state.view.method == "HEAD" else self.engine.snippet.script
        headers += [
            ("content-type", "application/javascript; charset=utf-8"),
            ("content-length", str(len(self.engine.snippet.script))),
        ]
        return Answer(200, headers, body)

    # --- ingest ----------------------------------------------------------------------------------

    def ingest_precheck(self, state: RequestState) -> Answer | None:
        """Everything decidable before reading the body: method, content type, same-site, rate."""
        view = state.view
        if view.method != "POST":
            return json_answer(405, {"error": "use POST"}, [("allow", "POST")])
        media_type = view.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in _INGEST_TYPES:
            return json_answer(415, {"error": "content-type: send application/json or text/plain"})
        if not self._same_site(state):
            return json_answer(403, {"error": "origin: cross-site requests are not accepted"})
        length = view.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            return self.too_large()
        if not self.limiter.allow(view.client_ip or "unknown"):
            return json_answer(
                429, {"error": "rate: too many requests from this client"}, [("retry-after", "10")]
            )
        return None

    def too_large(self) -> Answer:
        return json_answer(413, {"error": f"body: larger than {MAX_BODY} bytes"})

    def _same_site(self, state: RequestState) -> bool:
        view = state.view
        origin = view.headers.get("origin")
        if origin is not None:
            try:
                host = urlsplit(origin.strip()).hostname
            except ValueError:
                return False
            return host is not None and (
                host == view.host or self.engine.settings.is_cookie_domain_host(host)
            )
        # Without Origin, browsers still say where a request came from; non-browser clients say neither.
        return view.headers.get("sec-fetch-site", "").strip().lower() != "cross-site"

    def ingest(self, state: RequestState, body: bytes) -> Answer:
        """Validate, enrich and durably queue the browser's events. Blocking (SQLite): run off the loop."""
        staged = self.stage_ingest(state, body)
        if isinstance(staged, Answer):
            return staged
        return self.store_ingest(staged)

    def stage_ingest(self, state: RequestState, body: bytes) -> Answer | StagedIngest:
        """Everything before storing (no I/O): the events to queue, or the answer when there are none."""
        try:
            document = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            return json_answer(400, {"error": "body: not UTF-8"})
        except (ValueError, RecursionError):
            return json_answer(400, {"error": "body: not valid JSON"})
        if isinstance(document, dict) and "events" in document:
            if set(document) != {"events"} or not isinstance(document["events"], list):
                return json_answer(400, {"error": "events: must be the only field, and a list"})
            items, prefix = document["events"], "events"
        else:
            items, prefix = [document], ""
        if not 1 <= len(items) <= MAX_EVENTS_PER_BODY:
            return json_answer(400, {"error": f"events: send 1 to {MAX_EVENTS_PER_BODY} events per request"})

        now = self.engine.clock()
        accepted: list[tuple[int, Event]] = []  # with its index in the request, for the rejects list
        rejected: list[dict[str, Any]] = []
        escapes = b"\\ud" in body.lower()  # the only way a lone surrogate gets in
        for index, raw in enumerate(items):
            event = self._parse(raw, f"{prefix}[{index}]." if prefix else "", now, escapes)
            if isinstance(event, str):
                rejected.append({"index": index, "error": event})
                continue
            # The page the beacon reports, else the one the browser says it came from (Referer).
            self.engine.adopt_page_url(state, event.url or state.view.headers.get("referer"))
            accepted.append((index, event))

        cookies = [("set-cookie", value) for value in self.engine.set_cookie_headers(state)]
        reason = self.engine.should_drop(state)
        if reason is not None:
            return json_answer(202, {"accepted": 0, "event_ids": [], "dropped": reason}, cookies)
        final: list[Event] = []
        for index, parsed in accepted:
            event = self.engine.attach(state, parsed)
            if event.has_match_keys:
                final.append(event)
            else:
                where = f"{prefix}[{index}]." if prefix else ""
                error = f"{where}user: needs an email, or the client's IP and user agent"
                rejected.append({"index": index, "error": error})
        rejected.sort(key=lambda reject: int(reject["index"]))
        if not final:
            first = rejected[0]["error"] if rejected else "no events"
            return json_answer(400, {"error": first, "rejected": rejected}, cookies)
        return StagedIngest(final, rejected, cookies)

    def store_ingest(self, staged: StagedIngest) -> Answer:
        """Queue staged events (blocking: off the event loop): the 202, or a 503 if the outbox fails."""
        answer = self._store(staged, wait=True)
        assert answer is not None  # waiting, the outbox always decides
        return answer

    def store_ingest_nowait(self, staged: StagedIngest) -> Answer | None:
        """store_ingest() if the outbox can take the events at once, else None (nothing queued)."""
        return self._store(staged, wait=False)

    def _store(self, staged: StagedIngest, *, wait: bool) -> Answer | None:
        try:
            if not self.engine.queue(staged.events, wait=wait):
                return None
        except Exception:
            logger.exception("tracklayer: the outbox could not store %d events", len(staged.events))
            return json_answer(
                503, {"error": "outbox: temporarily unavailable, retry later"}, [("retry-after", "5")]
            )
        answer: dict[str, Any] = {
            "accepted": len(staged.events),
            "event_ids": [event.event_id for event in staged.events],
        }
        if staged.rejected:
            answer["rejected"] = staged.rejected
        return json_answer(202, answer, staged.cookies)

    def _parse(self, raw: object, where: str, now: float, escapes: bool) -> Event | str:
        """One browser event, or what is wrong with it (with its field path)."""
        try:
            bad = lone_surrogate_at(raw) if escapes else None
        except RecursionError:
            bad = "event"
        if bad is not None:
            return f"{where}{bad}: not valid Unicode (a lone surrogate)"
        try:
            return parse_event(
                raw,
                now=now,
                source="browser",
                default_phone_country=self.engine.settings.default_phone_country,
            )
        except EventError as exc:
            return f"{where}{exc}"

    # --- go: links and forms to linked domains ---------------------------------------------------

    def go(self, state: RequestState, form_fields: list[tuple[str, str]] | None = None) -> Answer:
        """Redirect to a linked domain with a fresh token; only listed hosts, so never an open redirect."""
        params = query_params(state.view.query_string)
        target = (params.get("to") or [""])[-1]
        try:
            parts = urlsplit(target)
            host = parts.hostname
        except ValueError:
            host = None
        if (
            host is None
            or parts.scheme not in ("http", "https")
            or not self.engine.settings.is_linked_host(host)
            or any(ch in target for ch in "\r\n\\")
        ):
            return json_answer(400, {"error": "to: must be an absolute URL on one of the linked_domains"})
        if state.view.method == "GET":
            # A GET form put its fields beside `to`; they belong to the destination.
            extra = [(key, value) for key, values in params.items() if key != "to" for value in values]
            if extra:  # into the query, before any #fragment
                query = f"{parts.query}&{urlencode(extra)}" if parts.query else urlencode(extra)
                target = urlunsplit(parts._replace(query=query))
        if state.context is not None and state.consent and not state.bot:
            target = with_param(target, TOKEN_PARAM, self.engine.linker.mint(state.context, host))
        status = 303 if state.view.method in ("GET", "HEAD") else 307  # 307 re-posts a form's body
        return redirect_answer(status, target, self.engine.set_cookie_headers(state))

    # --- diagnostics -----------------------------------------------------------------------------

    def diagnostics(self, state: RequestState) -> Answer:
        token = self.engine.settings.diagnostics_token
        given = (
            state.view.headers.get("authorization", "").removeprefix("Bearer ").strip()
            or (query_params(state.view.query_string).get("token") or [""])[-1]
        )
        if not token:
            return json_answer(404, {"error": "diagnostics: off (set diagnostics_token to turn the page on)"})
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            return json_answer(401, {"error": "diagnostics: a valid token is required (?token=...)"})
        from tracklayer_mw.diagnostics import build_report, render_html

        now = self.engine.clock()
        report = build_report(
            self.engine.outbox.log_since(now - 24 * 3600),
            self.engine.outbox.counts(now=now),
            now=now,
            has_credentials=self.engine.settings.has_credentials,
            test_mode=self.engine.settings.pinterest_test_mode,
        )
        headers = [("content-type", "text/html; charset=utf-8"), ("cache-control", "no-store")]
        return Answer(200, headers, render_html(report).encode())
