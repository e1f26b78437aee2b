"""The demo command's app: every page through TestClient, the command itself, and a walk in Chromium.

The browser walk visits every kind of page of the store and finds each page's events at the
sandbox: PageVisit everywhere, ViewCategory, Search, AddToCart, Signup, Lead (the Flask page),
Checkout, AddPaymentInfo and Purchase; declining the banner sends nothing at all.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from wsgiref.validate import validator

import httpx
import pytest
from starlette.testclient import TestClient

from example_app import catalog
from example_app.demo import Demo, build_demo, describe
from example_app.wsgi_bridge import WSGIBridge
from tests.e2e_support import (  # noqa: F401 - fixtures
    Shopper,
    demo_server_fixture,
    e2e_browser_fixture,
    new_epik,
    sha256,
    shopper_fixture,
)

ROOT = Path(__file__).resolve().parent.parent
CONSENTED = {"tl_consent": "granted", "tl_banner": "accepted"}


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    built = build_demo(8000, data_dir=tmp_path / "demo", environ={})
    yield built
    built.engine.stop(2.0)


@pytest.fixture
def client(demo: Demo) -> Iterator[TestClient]:
    with TestClient(demo.app, base_url=demo.origin("www"), follow_redirects=False) as test_client:
        yield test_client


def _set_consent(client: TestClient, demo: Demo) -> None:
    for name, value in CONSENTED.items():
        client.cookies.set(name, value, domain=".shop.localhost")


def _wait_for(demo: Demo, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        demo.engine.deliverer.flush(1.0)
        if time.monotonic() > deadline:
            raise AssertionError("timed out")


# --- every page, without a browser ---------------------------------------------------------------

PAGES = [
    ("www", "/"),
    *[("www", f"/c/{category.slug}") for category in catalog.CATEGORIES],
    ("www", "/search?q=stoneware"),
    ("www", "/search"),
    *[("www", f"/p/{product.sku}") for product in catalog.PRODUCTS],
    ("www", "/cart"),
    ("www", "/signup"),
    ("www", f"/img/{catalog.PRODUCTS[0].sku}.svg"),
    ("www", "/static/store.css"),
    ("www", "/static/store.js"),
    ("checkout", "/checkout"),
    ("pay", "/gift-cards"),
    ("pay", "/static/store.css"),
    ("lead", "/"),
    ("lead", "/static/store.js"),
    ("sandbox", "/_sandbox/"),
    ("sandbox", "/_sandbox/received"),
]


@pytest.mark.parametrize(("host", "path"), PAGES, ids=[f"{host}{path}" for host, path in PAGES])
def test_every_page_answers_200(client: TestClient, demo: Demo, host: str, path: str) -> None:
    response = client.get(demo.origin(host) + path)
    assert response.status_code == 200, response.text[:300]
    if response.headers["content-type"].startswith("text/html") and host != "sandbox":
        # The middleware (or, on the confirmation page, the template) placed exactly one tag.
        assert response.text.count("data-tl=") == 1


def test_library_diagnostics_page_needs_the_token(client: TestClient, demo: Demo) -> None:
    assert client.get(demo.urls()["diagnostics"]).status_code == 200
    assert client.get(demo.origin("www") + "/_tl/diagnostics?token=wrong").status_code == 401


def test_unknown_pages_and_hosts(client: TestClient, demo: Demo) -> None:
    assert client.get(demo.origin("www") + "/p/no-such-thing").status_code == 404
    assert client.get(demo.origin("www") + "/c/no-such-room").status_code == 404
    assert client.get(demo.origin("checkout") + "/confirmation?order=MM-000000").status_code == 404
    assert client.get(demo.origin("pay") + "/pay?order=nope").status_code == 404
    elsewhere = client.get("http://localhost:8000/anything")
    assert elsewhere.status_code == 302
    assert elsewhere.headers["location"] == demo.origin("www") + "/"


def test_a_whole_order_without_a_browser(client: TestClient, demo: Demo) -> None:
    """Consent, cart, checkout, the linker to the payment partner, the server's Purchase, exactly once."""
    epik = new_epik()
    _set_consent(client, demo)
    assert client.get(demo.origin("www") + f"/?epik={epik}").status_code == 200
    assert client.cookies.get("_epik", domain=".shop.localhost") == epik
    added = client.post(
        demo.origin("www") + "/cart/add",
        content="sku=mm-mug-04&quantity=2",
        headers={"content-type": "application/x-www-form-urlencoded", "accept": "application/json"},
    )
    assert added.json() == {"ok": True, "count": 2}
    form = "email=Ann%40Example.com&first_name=Ann&last_name=Lee&city=Menlo+Park&zip=94025"
    to_pay = client.post(
        demo.origin("checkout") + "/checkout",
        content=form,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert to_pay.status_code == 303
    location = urlsplit(to_pay.headers["location"])
    query = parse_qs(location.query)
    assert location.hostname == "pay.localhost"
    assert {"order", "_tlx"} <= set(query), "the middleware's linker token (it carries the consent too)"
    order_id = query["order"][0]

    arrival = client.get(to_pay.headers["location"])
    assert arrival.status_code == 302
    assert "_tlx" not in arrival.headers["location"]
    assert client.cookies.get("_epik", domain="pay.localhost") == epik
    assert client.cookies.get("tl_consent", domain="pay.localhost") == "granted"
    paid = client.post(
        demo.origin("pay") + "/pay",
        content=f"order={order_id}&card_number=4242+4242+4242+4242&expiry=12%2F34&cvc=123",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert paid.status_code == 303
    assert paid.headers["location"] == f"{demo.origin('checkout')}/confirmation?order={order_id}"

    for _ in range(2):  # a reload must not track the order again
        page = client.get(paid.headers["location"])
        assert page.status_code == 200
        assert order_id in page.text
    _wait_for(demo, lambda: any(r.event_id == f"Purchase:{order_id}" for r in demo.sandbox.received))
    demo.engine.deliverer.flush(2.0)
    purchases = [r for r in demo.sandbox.received if r.event_name == "checkout"]
    assert len(purchases) == 1
    event = purchases[0].event
    assert event["event_id"] == f"Purchase:{order_id}"
    assert event["user_data"]["em"] == [sha256("ann@example.com")]
    assert event["user_data"]["click_id"] == epik
    assert event["custom_data"]["order_id"] == order_id
    assert float(event["custom_data"]["value"]) == 36.0
    assert event["custom_data"]["currency"] == "USD"
    assert client.cookies.get("mm_cart", domain=".shop.localhost") is None, "the cart is emptied"


def test_without_consent_the_server_tracks_nothing(client: TestClient, demo: Demo) -> None:
    epik = new_epik()
    client.get(demo.origin("www") + f"/?epik={epik}")
    assert "_epik" not in client.cookies
    client.post(
        demo.origin("www") + "/cart/add",
        content="sku=mm-vase-01",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    to_pay = client.post(
        demo.origin("checkout") + "/checkout",
        content="email=bo%40example.com&first_name=Bo",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    query = parse_qs(urlsplit(to_pay.headers["location"]).query)
    assert "_tlx" not in query
    order_id = query["order"][0]
    client.post(
        demo.origin("pay") + "/pay",
        content=f"order={order_id}&card_number=4242424242424242&expiry=01%2F30&cvc=1",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert client.get(demo.origin("checkout") + f"/confirmation?order={order_id}").status_code == 200
    demo.engine.deliverer.flush(2.0)
    assert demo.sandbox.received == []


def test_the_flask_page_tracks_a_lead_on_the_server(client: TestClient, demo: Demo) -> None:
    _set_consent(client, demo)
    page = client.get(demo.origin("lead") + "/")
    assert page.status_code == 200
    assert "Book a styling session" in page.text
    invalid = client.post(
        demo.origin("lead") + "/",
        content="email=nope",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert invalid.status_code == 400
    sent = client.post(
        demo.origin("lead") + "/",
        content="first_name=Cy&email=cy%40example.com&room=kitchen",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert sent.status_code == 303
    ref = parse_qs(urlsplit(sent.headers["location"]).query)["ref"][0]
    thanks = client.get(demo.origin("lead") + sent.headers["location"])
    assert f"Lead:{ref}" in thanks.text  # the browser's half, with the same id
    _wait_for(demo, lambda: any(r.event_id == f"Lead:{ref}" for r in demo.sandbox.received))
    (lead,) = [r for r in demo.sandbox.received if r.event_name == "lead"]
    assert lead.event["user_data"]["em"] == [sha256("cy@example.com")]


def test_the_wsgi_bridge_speaks_pep_3333() -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Host", environ["HTTP_HOST"])])
        return [b"got ", body]

    bridged = WSGIBridge(validator(app))
    with TestClient(bridged, base_url="http://lead.shop.localhost") as test_client:
        response = test_client.post("/path?x=1", content=b"hello")
    assert response.text == "got hello"
    assert response.headers["x-host"] == "lead.shop.localhost"


# --- the demo's settings and the command ---------------------------------------------------------


def test_embedded_defaults_use_the_sandbox_and_keep_their_secrets(tmp_path: Path) -> None:
    first = build_demo(8123, data_dir=tmp_path, environ={})
    try:
        assert first.uses_sandbox
        assert first.settings.pinterest_api_base == "http://sandbox.localhost:8123/v5"
        assert first.settings.outbox == f"sqlite:///{tmp_path / 'outbox.sqlite3'}"
        assert first.settings.cookie_domain == ".shop.localhost"
        assert first.settings.linked_domains == ("pay.localhost",)
        assert (tmp_path / "secret").stat().st_mode & 0o077 == 0
    finally:
        first.engine.stop(1.0)
    second = build_demo(8123, data_dir=tmp_path, environ={})
    try:
        assert second.settings.secret_keys == first.settings.secret_keys
        assert second.settings.diagnostics_token == first.settings.diagnostics_token
    finally:
        second.engine.stop(1.0)


def test_real_credentials_send_to_pinterest_in_test_mode(tmp_path: Path) -> None:
    environ = {
        "TRACKLAYER_PINTEREST_AD_ACCOUNT_ID": "123456789",
        "TRACKLAYER_PINTEREST_ACCESS_TOKEN": "pina_real-looking-token",
        "TRACKLAYER_SECRET_KEY": "a-secret-from-the-environment",
    }
    demo = build_demo(8000, data_dir=tmp_path, environ=environ)
    try:
        assert not demo.uses_sandbox
        assert demo.settings.pinterest_test_mode is True
        assert demo.settings.pinterest_api_base == "https://api.pinterest.com/v5"
        assert demo.settings.secret_keys == ("a-secret-from-the-environment",)
        text = describe(demo, "127.0.0.1")
        assert "123456789 in TEST mode" in text
        assert "sandbox" not in text.lower()
        assert "pina_real-looking-token" not in text
    finally:
        demo.engine.stop(0.5)


def test_describe_prints_every_url(demo: Demo) -> None:
    text = describe(demo, "127.0.0.1")
    assert "http://www.shop.localhost:8000/\n" in text
    ad_click = r"http://www\.shop\.localhost:8000/\?epik=[\w-]+&utm_source=pinterest&utm_medium=paid"
    assert re.search(ad_click, text)
    assert "http://sandbox.localhost:8000/_sandbox/" in text
    assert "http://lead.shop.localhost:8000/" in text
    assert f"/_tl/diagnostics?token={demo.settings.diagnostics_token}" in text


def test_the_demo_command_prints_its_urls_serves_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRACKLAYER_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "example_app.demo", "--port", "0", "--data-dir", str(tmp_path / "d")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 20
        while not any("Ctrl-C" in line for line in lines):
            assert time.monotonic() < deadline, "".join(lines)
            assert process.poll() is None, "".join(lines)
            lines.append(process.stdout.readline())
        output = "".join(lines)
        port = int(re.search(r"http://www\.shop\.localhost:(\d+)/\n", output).group(1))  # type: ignore[union-attr]
        assert "Simulate a Pinterest ad click" in output
        assert "?epik=" in output
        # Python cannot resolve *.localhost here: talk to 127.0.0.1 with the Host header.
        deadline = time.monotonic() + 10
        while True:
            try:
                host = f"www.shop.localhost:{port}"
                response = httpx.get(f"http://127.0.0.1:{port}/", headers={"host": host})
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
        assert response.status_code == 200
        assert "Maple" in response.text
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
        rest, errors = process.communicate(timeout=5)
        assert "demo: stopped" in rest
        assert "Traceback" not in errors
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- the store in Chromium -----------------------------------------------------------------------


@pytest.mark.e2e
def test_walking_the_store_fires_every_pages_events(shopper: Shopper) -> None:
    page = shopper.page
    demo = shopper.demo.demo
    epik = new_epik()
    shopper.goto(f"{shopper.origin('www')}/?epik={epik}&utm_source=pinterest")
    page.click("[data-consent=accept]")
    shopper.collect("pagevisit")

    page.click("nav.nav a:has-text('Kitchen')")
    page.wait_for_url(re.compile(r"/c/kitchen$"))
    (view,) = [e for e in shopper.collect("pagevisit", "viewcategory") if e.tag_event == "viewcategory"]
    assert view.params["content_ids"] == [p.sku for p in catalog.in_category("kitchen")]

    page.fill("form.search input", "linen")
    page.press("form.search input", "Enter")
    page.wait_for_url(re.compile(r"/search\?q=linen$"))
    (search,) = [e for e in shopper.collect("pagevisit", "search") if e.tag_event == "search"]
    assert search.params["search_query"] == "linen"

    page.click("a.card-link >> nth=0")
    page.wait_for_url(re.compile(r"/p/mm-throw-02$"))
    shopper.wait_for_tag_events("pagevisit")
    page.fill("input[name=quantity]", "2")
    page.click("button:has-text('Add to cart')")
    page.wait_for_selector("[data-added]:not([hidden])")
    assert page.locator("[data-cart-count]").inner_text() == "2"
    (add,) = [e for e in shopper.collect("pagevisit", "addtocart") if e.tag_event == "addtocart"]
    assert add.params["value"] == 158
    assert add.params["order_quantity"] == 2

    page.click("a.header-link:has-text('Join')")
    page.wait_for_url(re.compile(r"/signup$"))
    shopper.wait_for_tag_events("pagevisit")
    page.fill("[data-signup] input[name=first_name]", "Dee")
    page.fill("[data-signup] input[name=email]", "Dee@Example.com")
    page.click("[data-signup] button")
    page.wait_for_selector("[data-welcome]:not([hidden])")
    shopper.collect("pagevisit", "signup")

    # The Flask page (TrackLayerWSGIMiddleware), then its thank-you page with the browser's Lead.
    page.click("nav.nav a:has-text('Styling sessions')")
    page.wait_for_url(f"{shopper.origin('lead')}/")
    shopper.collect("pagevisit")
    page.fill("[data-lead-form] input[name=email]", "dee@example.com")
    page.click("[data-lead-form] button")
    page.wait_for_url(re.compile(r"/thanks\?ref="))
    (lead,) = [e for e in shopper.collect("pagevisit", "lead") if e.tag_event == "lead"]
    assert lead.event_id.startswith("Lead:")

    # A link to the payment partner: the snippet sends it through /_tl/go, which adds the token.
    page.click("footer a:has-text('Gift cards')")
    page.wait_for_url(re.compile(r"^http://pay\.localhost:\d+/gift-cards$"))  # the clean URL after arrival
    shopper.collect("pagevisit")
    assert any("/_tl/go?to=" in url for url in shopper.documents)
    assert any(url.startswith(shopper.origin("pay")) and "_tlx=" in url for url in shopper.documents)
    assert f"_epik={epik}" in page.evaluate("document.cookie").split("; ")

    # Checkout, payment and confirmation (the journey test looks at these in detail).
    shopper.goto(f"{shopper.origin('www')}/cart")
    shopper.collect("pagevisit")
    page.click("[data-checkout]")
    page.wait_for_url(re.compile(r"/checkout$"))
    shopper.collect("pagevisit", "initiatecheckout")
    page.fill("input[name=email]", "dee@example.com")
    page.fill("input[name=first_name]", "Dee")
    page.click("button:has-text('Continue to payment')")
    page.wait_for_url(re.compile(r"/pay\?"))
    page.click("[data-test-card]")
    shopper.collect("pagevisit", "addpaymentinfo")
    page.click(".pay-button")
    page.wait_for_url(re.compile(r"/confirmation\?order="))
    shopper.collect("pagevisit", "checkout")

    expected = {
        "pagevisit": 12,
        "viewcategory": 1,
        "search": 1,
        "addtocart": 1,
        "signup": 1,
        "lead": 1,
        "initiatecheckout": 1,
        "addpaymentinfo": 1,
        "checkout": 1,
    }
    assert Counter(event.tag_event for event in shopper.events) == Counter(expected)
    ids = {event.event_id for event in shopper.events}
    assert len(ids) == len(shopper.events)
    records = shopper.sandbox_records(ids)
    counted = [record for record in records if not record.duplicate]
    assert sorted((r.event_name, r.event_id) for r in counted) == sorted(
        (event.api_event, event.event_id) for event in shopper.events
    )
    assert all(record.status == "processed" for record in records)
    assert all(record.event["user_data"].get("click_id") == epik for record in records)
    signup = next(r for r in records if r.event_name == "signup")
    assert signup.event["user_data"]["em"] == [sha256("dee@example.com")]
    leads = [r for r in records if r.event_name == "lead"]
    lead_emails = {email for r in leads for email in r.event["user_data"].get("em", [])}
    assert lead_emails == {sha256("dee@example.com")}
    assert demo.sandbox.rejected == []


@pytest.mark.e2e
def test_declining_the_banner_sends_nothing_and_sets_no_tracking_cookie(shopper: Shopper) -> None:
    page = shopper.page
    demo = shopper.demo.demo
    shopper.goto(f"{shopper.origin('www')}/?epik={new_epik()}")
    page.wait_for_function("window.tracklayer && !window.tracklayer.q")
    page.click("[data-consent=decline]")
    assert page.locator("[data-consent-banner]").is_hidden()
    shopper.goto(f"{shopper.origin('www')}/p/mm-candle-03")
    page.wait_for_function("window.tracklayer && !window.tracklayer.q && window.tracklayer.eventId")
    assert page.locator("[data-consent-banner]").count() == 0, "the choice is remembered"
    page.click("button:has-text('Add to cart')")
    page.wait_for_selector("[data-added]:not([hidden])")
    demo.engine.deliverer.flush(2.0)
    assert shopper.ingest_requests == []
    assert [call for call in shopper.tag_calls() if call[0] == "track"] == []
    names = {cookie["name"] for cookie in shopper.context.cookies()}
    assert not names & {"_epik", "_tl", "tl_consent"}, names
    assert demo.sandbox.received == []
