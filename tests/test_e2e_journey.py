"""The journey of issue 4, in Debian's Chromium over the example store.

A Pinterest ad click lands on ``www.shop.localhost/?epik=...``; the visitor accepts the cookie
banner, opens a product, adds it to the cart, checks out on ``checkout.shop.localhost``, pays on
``pay.localhost`` (a separate site, reached through the linker) and comes back to the order
confirmation. Checked:

- nothing is sent before consent: no beacon, no tag event, no tracking cookie, nothing at Pinterest;
- ``_epik`` is present and equal on every host, and arrived there in a ``Set-Cookie`` header;
- the (fake) Pinterest tag on the pages received every event, each with an event id;
- the sandbox got exactly one Pinterest event per browser event, with the same ``event_id``
  (the server's own Purchase of the order shares its id: merged, or flagged as a duplicate);
- the Purchase carries the value, currency, order id and the click id.
"""

from __future__ import annotations

import re
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e_support import (  # noqa: F401 - fixtures
    Shopper,
    demo_server_fixture,
    e2e_browser_fixture,
    new_epik,
    sha256,
    shopper_fixture,
)

pytestmark = pytest.mark.e2e


def test_ad_click_to_purchase_across_three_hosts(shopper: Shopper) -> None:
    page = shopper.page
    demo = shopper.demo.demo
    epik = new_epik()
    www, checkout, pay = (urlsplit(shopper.origin(key)).hostname or "" for key in ("www", "checkout", "pay"))

    # 1. The ad click lands. The snippet runs (it minted the PageVisit's id) but holds everything.
    shopper.goto(f"{shopper.origin('www')}/?epik={epik}&utm_source=pinterest&utm_medium=paid")
    page.wait_for_function("window.tracklayer && !window.tracklayer.q && window.tracklayer.eventId")
    assert page.locator("[data-consent-banner]").is_visible()
    assert shopper.ingest_requests == [], "a beacon left before consent"
    assert [call for call in shopper.tag_calls() if call[0] == "track"] == [], "the tag fired before consent"
    early = [c for c in shopper.cookie_sets if c.name in ("_epik", "_tl")]
    assert not early, "a tracking cookie before consent"
    assert "_epik" not in {cookie["name"] for cookie in shopper.context.cookies()}
    demo.engine.deliverer.flush(2.0)
    assert demo.sandbox.received == [], "an event reached Pinterest before consent"

    # 2. Accept: the held PageVisit goes out, and its ingest answer sets `_epik` for the cookie domain.
    with page.expect_response(lambda response: "/_tl/ingest" in response.url) as ingest:
        page.click("[data-consent=accept]")
    assert ingest.value.status == 202
    assert page.locator("[data-consent-banner]").is_hidden()
    shopper.collect("pagevisit")

    # 3. A product, added to the cart (the page stays: the add is a fetch).
    page.click("a.card-link >> nth=0")
    page.wait_for_url(re.compile(r"/p/"))
    shopper.wait_for_tag_events("pagevisit")
    page.click("button:has-text('Add to cart')")
    page.wait_for_selector("[data-added]:not([hidden])")
    shopper.collect("pagevisit", "addtocart")

    # 4. The cart, then checkout on another subdomain.
    page.click("a.cart-link")
    page.wait_for_url(re.compile(r"/cart$"))
    shopper.collect("pagevisit")
    page.click("[data-checkout]")
    page.wait_for_url(f"{shopper.origin('checkout')}/checkout")
    shopper.collect("pagevisit", "initiatecheckout")

    # 5. Details, then the payment partner on a separate site: the redirect carries a `_tlx` token.
    page.fill("input[name=email]", " Ann@Example.COM ")
    page.fill("input[name=first_name]", "Ann")
    page.fill("input[name=last_name]", "Lee")
    page.fill("input[name=city]", "Menlo Park")
    page.fill("input[name=zip]", "94025-1234")
    page.click("button:has-text('Continue to payment')")
    page.wait_for_url(re.compile(rf"^{re.escape(shopper.origin('pay'))}/pay\?"))
    assert "_tlx=" not in page.url, "the middleware strips the linker token after adopting it"
    assert any(urlsplit(url).hostname == pay and "_tlx=" in url for url in shopper.documents)
    order_id = parse_qs(urlsplit(page.url).query)["order"][0]
    page.click("[data-test-card]")
    shopper.collect("pagevisit", "addpaymentinfo")

    # 6. Pay, and back to the order confirmation on the checkout host.
    page.click(".pay-button")
    page.wait_for_url(f"{shopper.origin('checkout')}/confirmation?order={order_id}")
    shopper.collect("pagevisit", "checkout")
    assert page.locator("[data-order-id]").inner_text() == order_id
    assert page.locator("script[data-tl]").count() == 1  # placed by the template, not injected twice

    # --- `_epik`: present and equal on every host, and set there by the server -------------------
    for host in (www, checkout, pay):
        jar = [c for c in shopper.context.cookies(f"http://{host}:{demo.port}/") if c["name"] == "_epik"]
        assert [c["value"] for c in jar] == [epik], host
        assert not jar[0]["httpOnly"], "the Pinterest tag must be able to read _epik"
        assert any(c.name == "_epik" and c.value == epik and c.covers(host) for c in shopper.cookie_sets), (
            f"no Set-Cookie header put _epik on {host}"
        )
    assert {c.value for c in shopper.cookie_sets if c.name == "_epik"} == {epik}
    for url, cookies in shopper.cookies_seen_by_pages.items():
        assert f"_epik={epik}" in cookies.split("; "), url
    # For pay.localhost, it came with the linker's arrival (a redirect on that host).
    assert any(c.name == "_epik" and c.host == pay and c.domain is None for c in shopper.cookie_sets)

    # --- the tag: every event, each with an id ---------------------------------------------------
    names = Counter(event.tag_event for event in shopper.events)
    assert names == Counter(
        {"pagevisit": 6, "addtocart": 1, "initiatecheckout": 1, "addpaymentinfo": 1, "checkout": 1}
    )
    ids = [event.event_id for event in shopper.events]
    assert all(ids), ids
    assert len(set(ids)) == len(ids), ids
    purchase = next(event for event in shopper.events if event.tag_event == "checkout")
    assert purchase.event_id == f"Purchase:{order_id}"
    assert purchase.params["order_id"] == order_id

    # --- the sandbox: one Pinterest event per browser event, same ids ----------------------------
    records = shopper.sandbox_records(set(ids))
    assert {record.event_id for record in records} == set(ids), "events the browser never sent"
    for event in shopper.events:
        same = [record for record in records if record.event_id == event.event_id]
        assert {record.event_name for record in same} == {event.api_event}
        assert [record.status for record in same if not record.duplicate] == ["processed"], event
        if event.tag_event != "checkout":
            assert len(same) == 1, event
        else:  # the server's track() of the same order: merged into one, or folded by Pinterest's dedup
            assert len(same) in (1, 2)
            assert sum(record.duplicate for record in same) == len(same) - 1
        for record in same:
            assert record.event["user_data"]["click_id"] == epik
            assert record.event["action_source"] == "web"
    # Every event in order: nothing older than the consent click reached Pinterest either.
    assert all(record.error is None for record in records)

    # --- the Purchase: value, currency, order id, click id (and the server's hashed email) -------
    counted = next(r for r in records if r.event_id == f"Purchase:{order_id}" and not r.duplicate)
    custom = counted.event["custom_data"]
    order = demo.store.orders.get(order_id)
    assert order is not None
    assert float(custom["value"]) == pytest.approx(order.total_cents / 100)
    assert custom["currency"] == "USD"
    assert custom["order_id"] == order_id
    assert counted.event["user_data"]["click_id"] == epik
    emails = {
        email
        for record in records
        if record.event_id == f"Purchase:{order_id}"
        for email in record.event["user_data"].get("em", [])
    }
    assert emails == {sha256("ann@example.com")}
