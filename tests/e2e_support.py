"""Browser tests over the example store: the demo app in a thread, a recording browser context.

- `demo_server` (module scope): ``example_app.demo.start_in_thread`` on 127.0.0.1, port 0, with an
  empty environment (so the embedded defaults: SQLite outbox in tmp, the in-process sandbox).
- `e2e_browser` (module scope): Debian's ``/usr/bin/chromium`` under a Playwright of our own,
  stopped when the module is done (pytest-playwright's session-wide instance would keep an asyncio
  loop "running" in the main thread and break later tests that call ``asyncio.run``/``anyio.run``).
- `Shopper`: one fresh browser context with a fake ``window.pintrk`` that records every call into
  ``window.__pintrk_calls``, and a log of every response's ``Set-Cookie`` headers and every
  ``/_tl/ingest`` request. ``*.localhost`` names resolve to loopback in Chromium without flags.

Test modules import `demo_server_fixture`, `e2e_browser_fixture` and `shopper_fixture` to use
them as `demo_server`, `e2e_browser` and `shopper`. Waiting is on conditions
(``wait_for_function``, the worker's ``flush`` in a deadline loop), never on fixed sleeps.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from example_app.demo import RunningDemo, start_in_thread
from tracklayer_mw.sandbox import ReceivedEvent

# The fake Pinterest tag: the snippet calls `pintrk('track', <tag event>, {event_id, ...})` when a
# `window.pintrk` exists. Arguments are copied, so later mutation by the page cannot change them.
FAKE_PINTRK = """
window.__pintrk_calls = [];
window.pintrk = function () {
  window.__pintrk_calls.push(JSON.parse(JSON.stringify(Array.prototype.slice.call(arguments))));
};
"""

# The snippet's tag event names (pintrk) -> the Conversions API's event_name (CONTRACT.md §5).
TAG_TO_API = {
    "pagevisit": "page_visit",
    "viewcategory": "view_category",
    "search": "search",
    "addtocart": "add_to_cart",
    "addtowishlist": "add_to_wishlist",
    "addpaymentinfo": "add_payment_info",
    "initiatecheckout": "initiate_checkout",
    "checkout": "checkout",
    "lead": "lead",
    "signup": "signup",
}

WAIT_MS = 10_000
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def new_epik() -> str:
    return "dj0yJnU9" + secrets.token_urlsafe(12)


@pytest.fixture(scope="module", name="demo_server")
def demo_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    running = start_in_thread(tmp_path_factory.mktemp("demo"), environ={})
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module", name="e2e_browser")
def e2e_browser_fixture(request: pytest.FixtureRequest) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    own = None
    try:
        own = sync_playwright().start()
        playwright = own
    except Exception:  # another module holds pytest-playwright's session instance: share it
        playwright = request.getfixturevalue("playwright")
    browser = playwright.chromium.launch(executable_path=CHROMIUM)
    try:
        yield browser
    finally:
        browser.close()
        if own is not None:
            own.stop()


@dataclass
class CookieSet:
    """One `Set-Cookie` header a response carried, as Playwright saw it."""

    url: str
    host: str
    status: int
    header: str

    @property
    def name(self) -> str:
        return self.header.split("=", 1)[0].strip()

    @property
    def value(self) -> str:
        return self.header.split("=", 1)[1].split(";", 1)[0].strip()

    @property
    def domain(self) -> str | None:
        for part in self.header.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "domain":
                return value.strip().lower()
        return None

    def covers(self, host: str) -> bool:
        """Whether the browser sends this cookie to `host`."""
        if self.domain is None:
            return host == self.host
        domain = self.domain.lstrip(".")
        return host == domain or host.endswith("." + domain)


@dataclass
class BrowserEvent:
    """One `pintrk('track', ...)` call the snippet made."""

    tag_event: str
    params: dict[str, Any]
    page_url: str

    @property
    def event_id(self) -> str:
        return str(self.params.get("event_id") or "")

    @property
    def api_event(self) -> str:
        return TAG_TO_API[self.tag_event]


@dataclass
class Shopper:
    """A visitor in a fresh browser context, with everything the tests look at recorded."""

    demo: RunningDemo
    context: Any
    page: Any
    cookie_sets: list[CookieSet] = field(default_factory=list)
    ingest_requests: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    events: list[BrowserEvent] = field(default_factory=list)
    cookies_seen_by_pages: dict[str, str] = field(default_factory=dict)

    def origin(self, key: str) -> str:
        return self.demo.demo.origin(key)

    def on_response(self, response: Any) -> None:
        try:
            headers = response.headers_array()
        except Exception:  # the page went away before the headers could be read
            return
        host = urlsplit(response.url).hostname or ""
        for header in headers:
            if header["name"].lower() == "set-cookie":
                for line in header["value"].split("\n"):  # Playwright may join several with newlines
                    if line.strip():
                        self.cookie_sets.append(CookieSet(response.url, host, response.status, line.strip()))

    def on_request(self, request: Any) -> None:
        if "/_tl/ingest" in request.url:
            self.ingest_requests.append(request.url)
        if request.resource_type == "document":
            self.documents.append(request.url)

    # -- the page's tag calls ---------------------------------------------------------------------

    def wait_for_tag_events(self, *names: str) -> None:
        """Until the current page's fake pintrk has received a `track` for each of `names`."""
        self.page.wait_for_function(
            "names => names.every(n => (window.__pintrk_calls || [])"
            ".some(c => c[0] === 'track' && c[1] === n))",
            arg=list(names),
            timeout=WAIT_MS,
        )

    def tag_calls(self) -> list[list[Any]]:
        calls: list[list[Any]] = self.page.evaluate("window.__pintrk_calls || []")
        return calls

    def collect(self, *names: str) -> list[BrowserEvent]:
        """Wait for `names` on this page, then record every `track` the page's pintrk received."""
        self.wait_for_tag_events(*names)
        url = self.page.url
        self.cookies_seen_by_pages[url] = self.page.evaluate("document.cookie")
        found = [BrowserEvent(call[1], dict(call[2]), url) for call in self.tag_calls() if call[0] == "track"]
        self.events.extend(found)
        return found

    def goto(self, url: str) -> None:
        self.page.goto(url, wait_until="domcontentloaded")

    # -- the server side --------------------------------------------------------------------------

    def sandbox_records(self, event_ids: set[str], timeout: float = 15.0) -> list[ReceivedEvent]:
        """The sandbox's records once every one of `event_ids` has arrived (flushing the outbox meanwhile)."""
        demo = self.demo.demo
        deadline = time.monotonic() + timeout
        while True:
            demo.engine.deliverer.flush(2.0)
            records = demo.sandbox.received
            if event_ids <= {record.event_id for record in records}:
                # Anything queued in the same moment (a server-side twin) has left too.
                demo.engine.deliverer.flush(2.0)
                return demo.sandbox.received
            if time.monotonic() > deadline:
                missing = event_ids - {record.event_id for record in records}
                got = len(records)
                raise AssertionError(f"the sandbox never received {sorted(missing)}; got {got} records")
            self.page.wait_for_timeout(50)  # let the browser's beacons go out


@pytest.fixture(name="shopper")
def shopper_fixture(e2e_browser: Any, demo_server: RunningDemo) -> Iterator[Shopper]:
    """A fresh visitor; the sandbox starts empty (earlier tests' events flushed out first)."""
    demo = demo_server.demo
    demo.engine.deliverer.flush(5.0)
    demo.sandbox.reset()
    context = e2e_browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(WAIT_MS)
    context.add_init_script(FAKE_PINTRK)
    page = context.new_page()
    visitor = Shopper(demo_server, context, page)
    context.on("response", visitor.on_response)
    context.on("request", visitor.on_request)
    try:
        yield visitor
    finally:
        context.close()
