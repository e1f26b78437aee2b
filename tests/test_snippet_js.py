"""static/tracklayer.js in a real Chromium (Debian's), driven by Playwright's sync API.

The harness is a tiny threaded HTTP server: it serves test pages (with the tag rendered by
``tracklayer_mw.snippet.render_tag``), ``/_tl/t.js`` (the file as it is on disk), a fake
``/_tl/ingest`` that records every request, and a fake ``/_tl/go``. Pages live on
``shop.localhost``, which Chromium resolves to loopback and treats as a secure context; a fake
``window.pintrk`` records the pixel calls, and a wrapper around ``sendBeacon``/``fetch`` records
what left the page, so "nothing was sent" can be asserted without sleeping.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tracklayer_mw.events import parse_event
from tracklayer_mw.snippet import render_tag, snippet_config

# Every browser test is marked e2e (`make unit` skips them); the size check below is not.
e2e = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parent.parent / "static" / "tracklayer.js"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

# Recorders installed before the snippet: the pixel calls, and every body that left the tab.
SPIES = """
window.__pin = [];
window.pintrk = function () { __pin.push(JSON.parse(JSON.stringify([].slice.call(arguments)))); };
window.__sent = [];
var __beacon = navigator.sendBeacon.bind(navigator), __fetch = window.fetch.bind(window);
navigator.sendBeacon = function (u, b) { __sent.push(JSON.parse(b)); return __beacon(u, b); };
window.fetch = function (u, o) { if (o && o.body) __sent.push(JSON.parse(o.body)); return __fetch(u, o); };
"""
SPIES_NO_PINTRK = SPIES.replace("window.pintrk = function", "window.__fakePintrk = function")


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Harness:
    port: int = 0
    pages: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    # /_tl/t.js?hold=1 waits for this: lets a test act while the inline stub is still in place
    script_gate: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str, host: str = "shop.localhost") -> str:
        return f"http://{host}:{self.port}{path}"

    def page(
        self,
        name: str,
        *,
        body: str = "",
        head: str = "",
        spies: str = SPIES,
        script_url: str = "/_tl/t.js",
        nonce: str | None = None,
        headers: dict[str, str] | None = None,
        twice: bool = False,
        tag: bool = True,
        **config: Any,
    ) -> str:
        """Register a page and return its URL. ``config`` goes to ``snippet_config``."""
        cfg = snippet_config(ingest_url="/_tl/ingest", go_url="/_tl/go", **config)
        rendered = render_tag(script_url=script_url, config=cfg, nonce=nonce) if tag else ""
        nonce_attr = f' nonce="{nonce}"' if nonce else ""
        html = (
            f'<!doctype html><html><head><meta charset="utf-8"><script{nonce_attr}>{spies}</script>'
            f"{rendered}{rendered if twice else ''}{head}</head><body>{body}</body></html>"
        )
        self.pages[f"/p/{name}"] = (html, headers or {})
        return self.url(f"/p/{name}")

    def record(self, hit: Hit) -> None:
        with self.cond:
            self.hits.append(hit)
            self.cond.notify_all()

    def ingested(self) -> list[Hit]:
        with self.cond:
            return [h for h in self.hits if h.path == "/_tl/ingest"]

    def events(self) -> list[dict[str, Any]]:
        return [e for h in self.ingested() if h.method == "POST" for e in h.body["events"]]

    def wait_for(self, predicate: Any, timeout: float = 10) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), f"timed out; hits: {self.hits}"

    def wait_events(self, n: int) -> list[dict[str, Any]]:
        self.wait_for(
            lambda: len([e for h in self.hits if h.path == "/_tl/ingest" for e in h.body["events"]]) >= n
        )
        return self.events()

    def gone_to(self) -> list[dict[str, list[str]]]:
        with self.cond:
            return [
                urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query)
                for h in self.hits
                if h.path.startswith("/_tl/go")
            ]


def _handler(harness: Harness) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if path == "/_tl/t.js":
                if "hold=1" in self.path:
                    harness.script_gate.wait(10)
                self._send(200, SCRIPT.read_bytes(), "application/javascript")
            elif path in harness.pages:
                html, headers = harness.pages[path]
                self._send(200, html.encode(), "text/html; charset=utf-8", headers)
            elif path.startswith("/_tl/go"):
                harness.record(Hit("GET", self.path, dict(self.headers), None))
                self._send(200, b"<!doctype html><title>go</title>went", "text/html")
            else:
                harness.record(Hit("GET", self.path, dict(self.headers), None))
                self._send(200, b"<!doctype html><title>other</title>other page", "text/html")

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = urllib.parse.urlsplit(self.path).path
            if path == "/_tl/ingest":
                body = json.loads(raw)
                harness.record(Hit("POST", path, dict(self.headers), body))
                reply = json.dumps({"accepted": len(body["events"])}).encode()
                self._send(202, reply, "application/json")
            else:
                harness.record(Hit("POST", self.path, dict(self.headers), raw.decode()))
                self._send(200, b"<!doctype html>posted", "text/html")

        def do_OPTIONS(self) -> None:  # a preflight would be a bug: record it
            harness.record(Hit("OPTIONS", self.path, dict(self.headers), {"events": []}))
            self._send(204, b"", "text/plain")

    return Handler


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(h))
    server.daemon_threads = True
    h.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield h
    h.script_gate.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def chromium(request: pytest.FixtureRequest) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    # Our own Playwright, stopped when this module is done: a live sync Playwright keeps an event
    # loop "running" in this thread, which would break asyncio tests that run after us. When another
    # module already holds pytest-playwright's session instance, a second one cannot start: share it.
    own = None
    try:
        own = sync_playwright().start()
        pw = own
    except Exception:
        pw = request.getfixturevalue("playwright")
    browser = pw.chromium.launch(executable_path=CHROMIUM)
    yield browser
    browser.close()
    if own is not None:
        own.stop()


@pytest.fixture
def tab(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context()
    context.set_default_timeout(10_000)
    pg = context.new_page()
    errors: list[Any] = []
    pg.on("pageerror", lambda exc: errors.append(exc))  # noqa: PLW0108 - Playwright cannot wrap a bound builtin
    yield pg
    context.close()
    assert errors == [], "the snippet must never throw into the page"


def settle(tab: Any) -> None:
    """Let the page finish its current task (and microtasks): a task boundary, not a timed sleep."""
    tab.evaluate("() => new Promise(r => setTimeout(r, 0))")


def pin(tab: Any) -> list[list[Any]]:
    calls: list[list[Any]] = tab.evaluate("window.__pin")
    return calls


def sent(tab: Any) -> list[dict[str, Any]]:
    return [e for body in tab.evaluate("window.__sent") for e in body["events"]]


# ----------------------------------------------------------------------------------------------- size


def test_snippet_is_at_most_2kb_gzipped() -> None:
    # like `gzip -9 tracklayer.js`: the header keeps the file name, so this is the larger count
    buf = io.BytesIO()
    with gzip.GzipFile(filename=SCRIPT.name, mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(SCRIPT.read_bytes())
    size = len(buf.getvalue())
    assert size <= 2000, f"static/tracklayer.js is {size} bytes gzipped"


# ------------------------------------------------------------------------------------------ PageVisit


@e2e
def test_pagevisit_once_with_one_id_on_pixel_and_beacon(tab: Any, harness: Harness) -> None:
    tab.goto(harness.page("pv"))
    [event] = harness.wait_events(1)
    assert event["event"] == "PageVisit"
    assert UUID4.match(event["event_id"])
    assert event["pixel"] is True
    assert event["url"] == harness.url("/p/pv")
    assert isinstance(event["event_time"], int)
    assert event["event_time"] > 1_700_000_000_000  # milliseconds
    assert "user" not in event
    assert pin(tab) == [["track", "pagevisit", {"event_id": event["event_id"]}]]
    assert tab.evaluate("tracklayer.eventId") == event["event_id"]
    hit = harness.ingested()[0]
    assert hit.headers["Content-Type"].startswith("text/plain")
    # the next event proves nothing else was on its way
    tab.evaluate("tracklayer.track('Lead')")
    assert [e["event"] for e in harness.wait_events(2)] == ["PageVisit", "Lead"]
    assert [h.method for h in harness.ingested()] == ["POST", "POST"]  # no CORS preflight


@e2e
def test_snippet_included_twice_sends_one_pagevisit(tab: Any, harness: Harness) -> None:
    tab.goto(harness.page("twice", twice=True))
    tab.wait_for_function("window.__sent.length > 0")
    settle(tab)
    tab.evaluate("tracklayer.track('Lead')")
    events = harness.wait_events(2)
    assert [e["event"] for e in events] == ["PageVisit", "Lead"]
    assert [c[1] for c in pin(tab)] == ["pagevisit", "lead"]


@e2e
def test_pagevisit_off(tab: Any, harness: Harness) -> None:
    tab.goto(harness.page("nopv", page_visit=False))
    tab.wait_for_function("!window.tracklayer.q")
    assert tab.evaluate("tracklayer.eventId") is None
    tab.evaluate("tracklayer.track('Search', {search_string: 'shoes'})")
    [event] = harness.wait_events(1)
    assert event["event"] == "Search"
    assert pin(tab) == [["track", "search", {"event_id": event["event_id"], "search_query": "shoes"}]]


@e2e
def test_random_ids_differ_across_loads_of_the_same_cached_html(tab: Any, harness: Harness) -> None:
    url = harness.page("cached")
    tab.goto(url)
    harness.wait_events(1)
    tab.goto(url)
    events = harness.wait_events(2)
    assert [e["event"] for e in events] == ["PageVisit", "PageVisit"]
    assert events[0]["event_id"] != events[1]["event_id"]
    a, b = tab.evaluate("[tracklayer.track('Lead'), tracklayer.track('Lead')]")
    assert a != b
    assert UUID4.match(a)
    assert UUID4.match(b)


@e2e
def test_uuid_fallback_without_crypto_random_uuid(tab: Any, harness: Harness) -> None:
    tab.add_init_script("delete Crypto.prototype.randomUUID")
    tab.goto(harness.page("nouuid"))
    [event] = harness.wait_events(1)
    ids = tab.evaluate("Array.from({length: 20}, () => tracklayer.track('Lead'))")
    for event_id in [event["event_id"], *ids]:
        assert UUID4.match(event_id), event_id
    assert len(set(ids)) == 20


@e2e
def test_pinterest_tag_loaded_by_the_snippet_shares_the_pagevisit_id(tab: Any, harness: Harness) -> None:
    core = []
    tab.route(
        "https://s.pinimg.com/**", lambda route: (core.append(route.request.url), route.fulfill(body=""))
    )
    tab.goto(harness.page("tag", spies=SPIES_NO_PINTRK, tag_id="2612345678901"))
    [event] = harness.wait_events(1)
    assert event["pixel"] is True
    queue = tab.evaluate("window.pintrk.queue")
    assert queue == [
        ["load", "2612345678901"],
        ["page"],
        ["track", "pagevisit", {"event_id": event["event_id"]}],
    ]
    assert tab.evaluate("window.pintrk.version") == "3.0"
    assert core == ["https://s.pinimg.com/ct/core.js"]


@e2e
def test_a_page_with_its_own_pinterest_tag_is_not_loaded_twice(tab: Any, harness: Harness) -> None:
    tab.goto(harness.page("owntag", tag_id="2612345678901"))
    [event] = harness.wait_events(1)
    assert pin(tab) == [["track", "pagevisit", {"event_id": event["event_id"]}]]
    assert tab.evaluate("document.querySelector('script[src*=\"pinimg\"]')") is None


@e2e
def test_no_pintrk_means_pixel_false(tab: Any, harness: Harness) -> None:
    tab.goto(harness.page("nopin", spies=SPIES_NO_PINTRK))
    [event] = harness.wait_events(1)
    assert event["pixel"] is False
    assert tab.evaluate("typeof window.pintrk") == "undefined"


# ------------------------------------------------------------------------------------------- track()


@e2e
def test_track_maps_custom_data_for_the_pixel(tab: Any, harness: Harness) -> None:
    tab.goto(harness.page("map", page_visit=False))
    tab.wait_for_function("!window.tracklayer.q")
    event_id = tab.evaluate(
        """tracklayer.track('Checkout', {value: 49.99, currency: 'USD', num_items: 2, content_name: 'Shoe',
             contents: [{id: 'sku-1', quantity: 2, item_price: 24.995}]},
           {user: {email: 'ann@example.com'}})"""
    )
    [event] = harness.wait_events(1)
    assert event == {
        "event": "Checkout",
        "event_id": event_id,
        "event_time": event["event_time"],
        "url": harness.url("/p/map"),
        "custom": {
            "value": 49.99,
            "currency": "USD",
            "num_items": 2,
            "content_name": "Shoe",
            "contents": [{"id": "sku-1", "quantity": 2, "item_price": 24.995}],
        },
        "user": {"email": "ann@example.com"},
        "pixel": True,
    }
    assert pin(tab) == [
        [
            "track",
            "initiatecheckout",
            {
                "event_id": event_id,
                "value": 49.99,
                "currency": "USD",
                "order_quantity": 2,
                "content_name": "Shoe",
                "line_items": [{"product_id": "sku-1", "product_price": 24.995, "product_quantity": 2}],
            },
        ]
    ]


@e2e
def test_track_pixel_false_skips_pintrk(tab: Any, harness: Harness) -> None:
    tab.goto(harness.page("nopixel", page_visit=False))
    tab.wait_for_function("!window.tracklayer.q")
    tab.evaluate("tracklayer.track('AddToCart', {value: 1}, {pixel: false, event_id: 'cart-1'})")
    [event] = harness.wait_events(1)
    assert event["event_id"] == "cart-1"
    assert event["pixel"] is False
    assert pin(tab) == []


ORDER_IDS = [
    pytest.param("A-1001", id="plain"),
    pytest.param("order 42", id="space"),
    pytest.param("2024/05/A", id="slash"),
    pytest.param("Bestellung-Größe-€", id="unicode"),
    pytest.param("!'()*", id="quote-marks-encodeURIComponent-keeps"),
    pytest.param("a~b_c.d-e", id="unreserved"),
    pytest.param("x?y=1&z#f+%", id="url-syntax"),
    pytest.param("🛒:1", id="astral-and-colon"),
    pytest.param(1001, id="number"),
]


@e2e
@pytest.mark.parametrize("order_id", ORDER_IDS)
def test_order_id_event_ids_match_python_quote(tab: Any, harness: Harness, order_id: Any) -> None:
    tab.goto(harness.page("order", page_visit=False))
    tab.wait_for_function("!window.tracklayer.q")
    got = tab.evaluate("o => tracklayer.track('Purchase', {order_id: o})", order_id)
    expected = "Purchase:" + urllib.parse.quote(str(order_id), safe="")
    assert got == expected
    [event] = harness.wait_events(1)
    assert event["event_id"] == expected
    assert pin(tab)[0][1:] == ["checkout", {"event_id": expected, "order_id": order_id}]


@e2e
def test_a_padded_order_id_gives_the_id_the_server_gives(tab: Any, harness: Harness) -> None:
    tab.goto(harness.page("order", page_visit=False))
    tab.wait_for_function("!window.tracklayer.q")
    server = parse_event(
        {"event": "Purchase", "custom": {"order_id": "  A 1001 "}}, now=time.time(), source="server"
    )
    assert tab.evaluate("tracklayer.track('Purchase', {order_id: '  A 1001 '})") == server.event_id
    assert server.event_id == "Purchase:A%201001"


@e2e
def test_order_id_too_long_is_an_error_and_nothing_is_sent(tab: Any, harness: Harness) -> None:
    tab.goto(harness.page("long", page_visit=False))
    tab.wait_for_function("!window.tracklayer.q")
    messages: list[Any] = []
    tab.on("console", lambda m: messages.append(m))  # noqa: PLW0108 - see tab()
    # 34 x "é" is 68 UTF-8 bytes, 204 characters once encoded
    assert tab.evaluate("tracklayer.track('Purchase', {order_id: 'é'.repeat(34)})") is None
    assert (
        tab.evaluate("tracklayer.track('Purchase', {order_id: 'x'.repeat(100)})") == "Purchase:" + "x" * 100
    )
    harness.wait_events(1)
    assert [m.type for m in messages] == ["error"]
    assert "order_id" in messages[0].text
    assert [e["event_id"] for e in sent(tab)] == ["Purchase:" + "x" * 100]


@e2e
def test_same_order_is_never_fired_twice_not_even_after_reload(tab: Any, harness: Harness) -> None:
    url = harness.page("thanks")
    tab.goto(url)
    harness.wait_events(1)
    track = "tracklayer.track('Purchase', {order_id: 'A-1001', value: 10, currency: 'USD'})"
    assert tab.evaluate(track) == "Purchase:A-1001"
    assert tab.evaluate(track) is None
    harness.wait_events(2)
    tab.reload()
    harness.wait_events(3)  # the reload's PageVisit
    assert tab.evaluate(track) is None
    # an explicit event id given twice is also fired once
    assert tab.evaluate("tracklayer.track('Lead', {}, {event_id: 'lead-7'})") == "lead-7"
    assert tab.evaluate("tracklayer.track('Lead', {}, {event_id: 'lead-7'})") is None
    events = harness.wait_events(4)
    assert [e["event"] for e in events] == ["PageVisit", "Purchase", "PageVisit", "Lead"]
    assert [c[1] for c in pin(tab)] == ["pagevisit", "lead"]


@e2e
def test_blocked_storage_does_not_break_tracking(tab: Any, harness: Harness) -> None:
    tab.add_init_script(
        "Object.defineProperty(window, 'localStorage', "
        "{get() { throw new DOMException('no', 'SecurityError'); }})"
    )
    tab.goto(harness.page("nostorage", page_visit=False))
    tab.wait_for_function("!window.tracklayer.q")
    assert tab.evaluate("tracklayer.track('Purchase', {order_id: 'B-2'})") == "Purchase:B-2"
    assert tab.evaluate("tracklayer.track('Purchase', {order_id: 'B-2'})") is None
    assert [e["event_id"] for e in harness.wait_events(1)] == ["Purchase:B-2"]


@pytest.mark.parametrize(
    "call",
    [
        pytest.param("tracklayer.track('Bogus')", id="unknown-name"),
        pytest.param("tracklayer.track('purchase')", id="wrong-case"),
        pytest.param("tracklayer.track()", id="no-args"),
        pytest.param("tracklayer.track(null, null, null)", id="nulls"),
        pytest.param("tracklayer.track({toString() { throw new Error('x'); }})", id="hostile-name"),
    ],
)
@e2e
def test_unknown_events_warn_and_send_nothing(tab: Any, harness: Harness, call: str) -> None:
    tab.goto(harness.page("unknown", page_visit=False))
    tab.wait_for_function("!window.tracklayer.q")
    assert tab.evaluate(call) is None
    settle(tab)
    assert sent(tab) == []
    assert pin(tab) == []


@e2e
def test_unknown_event_logs_a_warning(tab: Any, harness: Harness) -> None:
    tab.goto(harness.page("warn", page_visit=False))
    tab.wait_for_function("!window.tracklayer.q")
    with tab.expect_console_message(lambda m: m.type == "warning") as msg:
        tab.evaluate("tracklayer.track('Bogus')")
    assert "Bogus" in msg.value.text


@e2e
def test_odd_arguments_never_throw(tab: Any, harness: Harness) -> None:
    tab.goto(harness.page("odd", page_visit=False))
    tab.wait_for_function("!window.tracklayer.q")
    tab.evaluate(
        """() => {
        const loop = {}; loop.self = loop;
        tracklayer.track('Lead', loop);                       // cannot be serialized
        tracklayer.track('AddToCart', {contents: 'not a list'});
        tracklayer.consent('maybe');
        tracklayer.track('Lead', null, {user: null});
    }"""
    )
    # the last call still went out
    assert [e["event"] for e in harness.wait_events(1)] == ["Lead"]


# ------------------------------------------------------------------------------------------- consent


@e2e
def test_cookie_consent_holds_events_until_granted(tab: Any, harness: Harness) -> None:
    url = harness.page("consent", consent="cookie:cmp=yes")
    tab.goto(url)
    tab.wait_for_function("!window.tracklayer.q")
    held_id = tab.evaluate("tracklayer.track('AddToCart', {value: 5})")
    settle(tab)
    assert sent(tab) == []
    assert pin(tab) == []
    assert harness.ingested() == []
    assert tab.evaluate("document.cookie") == ""

    tab.evaluate("tracklayer.consent(true)")
    events = harness.wait_events(2)
    assert [e["event"] for e in events] == ["PageVisit", "AddToCart"]
    assert events[1]["event_id"] == held_id
    assert len(harness.ingested()) == 1  # released in one body
    assert pin(tab) == [
        ["setconsent", True],
        ["track", "pagevisit", {"event_id": events[0]["event_id"]}],
        ["track", "addtocart", {"event_id": held_id, "value": 5}],
    ]
    [cookie] = tab.context.cookies()
    assert (cookie["name"], cookie["value"], cookie["path"], cookie["sameSite"]) == ("cmp", "yes", "/", "Lax")
    assert cookie["expires"] > 0  # persistent: max-age one year
    assert cookie["domain"] == "shop.localhost"  # host-only without a cookie domain

    # the next page view: the cookie grants consent at once
    tab.goto(url)
    assert harness.wait_events(3)[2]["event"] == "PageVisit"


@e2e
def test_cookie_consent_with_cookie_domain(tab: Any, harness: Harness) -> None:
    tab.goto(harness.page("cdomain", consent="cookie:ok=1", cookie_domain=".shop.localhost"))
    tab.wait_for_function("!window.tracklayer.q")
    tab.evaluate("tracklayer.consent(true)")
    harness.wait_events(1)
    [cookie] = tab.context.cookies()
    assert cookie["domain"] == ".shop.localhost"
    tab.evaluate("tracklayer.consent(false)")
    assert tab.context.cookies() == []


@e2e
def test_consent_false_drops_held_events_and_deletes_the_cookie(tab: Any, harness: Harness) -> None:
    tab.context.add_cookies([{"name": "cmp", "value": "no", "url": harness.url("/")}])
    tab.goto(harness.page("deny", consent="cookie:cmp=yes"))
    tab.wait_for_function("!window.tracklayer.q")
    tab.evaluate("tracklayer.track('Lead')")
    tab.evaluate("tracklayer.consent(false)")
    settle(tab)
    assert sent(tab) == []
    assert pin(tab) == [["setconsent", False]]
    assert tab.evaluate("document.cookie") == ""
    # granting later sends only what is tracked from then on
    tab.evaluate("tracklayer.consent(true)")
    tab.evaluate("tracklayer.track('Signup')")
    events = harness.wait_events(1)
    settle(tab)
    assert [e["event"] for e in harness.events()] == ["Signup"] == [e["event"] for e in events]


@e2e
def test_denied_by_the_server_then_granted(tab: Any, harness: Harness) -> None:
    tab.goto(harness.page("denied", consent="denied"))
    tab.wait_for_function("!window.tracklayer.q")
    tab.evaluate("tracklayer.track('Lead')")
    settle(tab)
    assert sent(tab) == []
    tab.evaluate("tracklayer.consent(true)")
    assert [e["event"] for e in harness.wait_events(2)] == ["PageVisit", "Lead"]
    assert tab.context.cookies() == []  # no consent cookie outside cookie mode


@e2e
def test_held_events_are_bounded(tab: Any, harness: Harness) -> None:
    tab.goto(harness.page("bounded", consent="denied", page_visit=False))
    tab.wait_for_function("!window.tracklayer.q")
    tab.evaluate("for (let i = 0; i < 80; i++) tracklayer.track('Lead')")
    tab.evaluate("tracklayer.consent(true)")
    assert len(harness.wait_events(50)) == 50
    tab.evaluate("tracklayer.track('Signup')")
    assert len(harness.wait_events(51)) == 51


@e2e
def test_pinterest_tag_waits_for_consent(tab: Any, harness: Harness) -> None:
    tab.route("https://s.pinimg.com/**", lambda route: route.fulfill(body=""))
    tab.goto(harness.page("tagconsent", spies=SPIES_NO_PINTRK, tag_id="26123", consent="cookie:c=1"))
    tab.wait_for_function("!window.tracklayer.q")
    settle(tab)
    assert tab.evaluate("typeof window.pintrk") == "undefined"
    tab.evaluate("tracklayer.consent(true)")
    [event] = harness.wait_events(1)
    assert tab.evaluate("window.pintrk.queue") == [
        ["load", "26123"],
        ["page"],
        ["track", "pagevisit", {"event_id": event["event_id"]}],
    ]
    tab.wait_for_function("document.querySelector('script[src*=\"pinimg\"]')")


# -------------------------------------------------------------------------------------- inline stub


@e2e
def test_calls_through_the_inline_stub_are_delivered(tab: Any, harness: Harness) -> None:
    tab.goto(
        harness.page("stub", script_url="/_tl/t.js?hold=1", consent="denied"), wait_until="domcontentloaded"
    )
    # t.js is still held by the server: these calls go through the inline stub's queue
    assert tab.evaluate("Array.isArray(window.tracklayer.q)")
    queued = tab.evaluate(
        """[tracklayer.track('AddToCart', {order_id: 'Q-1'}), tracklayer.consent(true),
            tracklayer.track('Purchase', {order_id: 'Q-1'})]"""
    )
    assert queued == [None, None, None]  # the stub cannot know ids yet
    harness.script_gate.set()
    events = harness.wait_events(3)
    assert sorted(e["event"] for e in events) == ["AddToCart", "PageVisit", "Purchase"]
    assert {e["event_id"] for e in events} >= {"AddToCart:Q-1", "Purchase:Q-1"}
    assert tab.evaluate("typeof window.tracklayer.q") == "undefined"
    assert tab.evaluate("typeof window.tracklayer.track") == "function"


@e2e
def test_config_found_without_current_script(tab: Any, harness: Harness) -> None:
    # a loader that evals the file: document.currentScript is null, the data-tl tag is found by selector
    head = (
        "<script data-tl='"
        + json.dumps(snippet_config(ingest_url="/_tl/ingest", go_url="/_tl/go"))
        + "'></script>"
        "<script>fetch('/_tl/t.js').then(r => r.text()).then(t => (0, eval)(t));</script>"
    )
    tab.goto(harness.page("eval", head=head, tag=False))
    events = harness.wait_events(1)
    assert events[0]["event"] == "PageVisit"


# ------------------------------------------------------------------------------------------ delivery


@e2e
def test_event_fired_right_before_navigation_still_arrives(tab: Any, harness: Harness) -> None:
    body = (
        "<a id=away href='/elsewhere' "
        "onclick=\"tracklayer.track('Lead', {content_name: 'last words'})\">away</a>"
    )
    tab.goto(harness.page("leave", body=body, page_visit=False))
    tab.wait_for_function("!window.tracklayer.q")
    with tab.expect_navigation():
        tab.click("#away")
    [event] = harness.wait_events(1)
    assert event["custom"] == {"content_name": "last words"}
    assert tab.url == harness.url("/elsewhere")


@e2e
def test_event_fired_on_pagehide_still_arrives(tab: Any, harness: Harness) -> None:
    head = (
        "<script>addEventListener('pagehide', "
        "() => tracklayer.track('ViewContent', {content_name: 'bye'}))</script>"
    )
    tab.goto(harness.page("hide", head=head, page_visit=False))
    tab.wait_for_function("!window.tracklayer.q")
    tab.goto(harness.url("/elsewhere"))
    [event] = harness.wait_events(1)
    assert event["custom"] == {"content_name": "bye"}


@e2e
def test_fetch_keepalive_when_sendbeacon_refuses(tab: Any, harness: Harness) -> None:
    tab.add_init_script("navigator.sendBeacon = () => false")
    tab.goto(harness.page("nobeacon", page_visit=False))
    tab.wait_for_function("!window.tracklayer.q")
    tab.evaluate("tracklayer.track('Subscribe')")
    [event] = harness.wait_events(1)
    assert event["event"] == "Subscribe"
    [hit] = harness.ingested()
    assert hit.method == "POST"
    assert hit.headers["Content-Type"].startswith("text/plain")


@e2e
def test_strict_csp_nonce(tab: Any, harness: Harness) -> None:
    csp = "script-src 'nonce-t3st' 'strict-dynamic'; default-src 'self'"
    violations: list[Any] = []
    tab.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    tab.goto(harness.page("csp", nonce="t3st", headers={"Content-Security-Policy": csp}))
    [event] = harness.wait_events(1)
    assert event["event"] == "PageVisit"
    assert violations == []


# -------------------------------------------------------------------------------------------- linker

LINK_CFG: dict[str, Any] = {"linked_domains": ["pay.localhost", ".partner.localhost"], "page_visit": False}


@e2e
def test_click_on_a_linked_domain_link_goes_through_go(tab: Any, harness: Harness) -> None:
    dest = harness.url("/checkout?cart=1#top", host="pay.localhost")
    tab.goto(harness.page("link", body=f"<a id=pay href='{dest}'>pay</a>", **LINK_CFG))
    tab.wait_for_function("!window.tracklayer.q")
    with tab.expect_navigation():
        tab.click("#pay")
    assert tab.url.startswith(harness.url("/_tl/go?to="))
    assert harness.gone_to() == [{"to": [dest]}]


@e2e
def test_linker_rewrites_only_linked_hosts(tab: Any, harness: Harness) -> None:
    links = {
        "exact": "http://pay.localhost/x",
        "suffix-sub": "https://a.b.partner.localhost/x",
        "suffix-bare": "http://partner.localhost:8080/x?q=1",
        "other": "http://evil.localhost/x",
        "lookalike": "http://notpartner.localhost/x",
        "same-host": "/local",
        "mailto": "mailto:pay.localhost",
    }
    body = "".join(f"<a id='{k}' href='{v}'><span>{k}</span></a>" for k, v in links.items())
    tab.goto(harness.page("links", body=body, **LINK_CFG))
    tab.wait_for_function("!window.tracklayer.q")
    # synthetic clicks on a child element, default prevented: the capture handler runs, nothing navigates
    hrefs = tab.evaluate(
        """ids => ids.map(id => {
            document.addEventListener('click', e => e.preventDefault(), {once: true});
            const click = new MouseEvent('click', {bubbles: true, cancelable: true});
            document.querySelector('#' + id + ' span').dispatchEvent(click);
            return document.getElementById(id).href;
        })""",
        list(links),
    )
    go = harness.url("/_tl/go?to=")
    got = dict(zip(links, hrefs, strict=True))
    assert got["exact"] == go + urllib.parse.quote("http://pay.localhost/x", safe="")
    assert got["suffix-sub"] == go + urllib.parse.quote("https://a.b.partner.localhost/x", safe="")
    assert got["suffix-bare"] == go + urllib.parse.quote("http://partner.localhost:8080/x?q=1", safe="")
    assert got["other"] == "http://evil.localhost/x"
    assert got["lookalike"] == "http://notpartner.localhost/x"
    assert got["same-host"] == harness.url("/local")
    assert got["mailto"] == "mailto:pay.localhost"


@e2e
def test_middle_click_auxclick_is_rewritten(tab: Any, harness: Harness) -> None:
    tab.goto(harness.page("aux", body="<a id=pay href='http://pay.localhost/x'>pay</a>", **LINK_CFG))
    tab.wait_for_function("!window.tracklayer.q")
    tab.evaluate(
        """() => {
            document.addEventListener('auxclick', e => e.preventDefault(), {once: true});
            const click = new MouseEvent('auxclick', {bubbles: true, cancelable: true, button: 1});
            document.getElementById('pay').dispatchEvent(click);
        }"""
    )
    href = tab.evaluate("document.getElementById('pay').getAttribute('href')")
    assert href == "/_tl/go?to=" + urllib.parse.quote("http://pay.localhost/x", safe="")


@e2e
def test_get_form_to_a_linked_domain(tab: Any, harness: Harness) -> None:
    action = harness.url("/search?dropped=1", host="pay.localhost")
    body = f"<form id=f action='{action}'><input name=q value='red shoes'><button>go</button></form>"
    tab.goto(harness.page("getform", body=body, **LINK_CFG))
    tab.wait_for_function("!window.tracklayer.q")
    with tab.expect_navigation():
        tab.click("button")
    # the browser replaces an action's query with the fields: "to" carries the action without it
    assert harness.gone_to() == [{"q": ["red shoes"], "to": [harness.url("/search", host="pay.localhost")]}]


@e2e
def test_post_form_to_a_linked_domain(tab: Any, harness: Harness) -> None:
    action = harness.url("/pay?step=2", host="pay.localhost")
    body = (
        f"<form id=f method=POST action='{action}'><input name=card value='4111'><button>pay</button></form>"
    )
    tab.goto(harness.page("postform", body=body, **LINK_CFG))
    tab.wait_for_function("!window.tracklayer.q")
    with tab.expect_navigation():
        tab.click("button")
    [hit] = [h for h in harness.hits if h.method == "POST"]
    assert hit.path == "/_tl/go?to=" + urllib.parse.quote(action, safe="")
    assert hit.body == "card=4111"


@e2e
def test_form_to_an_unlinked_host_is_untouched(tab: Any, harness: Harness) -> None:
    body = "<form id=f action='/local-search'><input name=q value=x><button>go</button></form>"
    tab.goto(harness.page("localform", body=body, **LINK_CFG))
    tab.wait_for_function("!window.tracklayer.q")
    with tab.expect_navigation():
        tab.click("button")
    assert tab.url == harness.url("/local-search?q=x")
    assert harness.gone_to() == []
