"""Consent on a linked domain (a site outside `cookie_domain`, such as a payment partner).

Found while building the example store, whose payment step lives on ``pay.localhost`` while
``cookie_domain`` is ``.shop.localhost``: the snippet must write the consent cookie host-only
there, and consent given on the store must travel with the linker token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.e2e_support import (  # noqa: F401 - fixtures
    Shopper,
    demo_server_fixture,
    e2e_browser_fixture,
    shopper_fixture,
)
from tracklayer_mw import Settings, TrackLayerMiddleware

EPIK = "dj0yJnU9linkerconsent"


@pytest.mark.e2e
def test_consent_given_on_a_linked_domain_is_kept(shopper: Shopper) -> None:
    """`tracklayer.consent(true)` on a linked host must store the consent cookie there.

    The tag's config (`data-tl`) carries `"d": ".shop.localhost"` on every host, so on
    ``pay.localhost`` the snippet writes ``tl_consent=granted; domain=.shop.localhost``, which the
    browser rejects (a Domain the page's host is not inside). The events the consent releases
    then reach ingest without the cookie and are dropped as "no consent".
    """
    page = shopper.page
    shopper.goto(f"{shopper.origin('pay')}/gift-cards")
    page.wait_for_function("window.tracklayer && !window.tracklayer.q && window.tracklayer.eventId")
    with page.expect_response(lambda response: "/_tl/ingest" in response.url) as ingest:
        page.evaluate("window.tracklayer.consent(true)")
    cookies = page.evaluate("document.cookie").split("; ")
    answer = ingest.value.json()
    assert "tl_consent=granted" in cookies, f"consent not stored on pay.localhost; ingest said {answer}"
    assert answer["accepted"] == 1, answer


@pytest.fixture
def two_sites(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(
        cookie_domain=".shop.localhost",
        linked_domains="pay.localhost",
        consent="tl_consent=granted",
        outbox="memory://",
    )

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse("<html><head><title>x</title></head><body>page</body></html>")

    app = Starlette(
        routes=[Route("/{path:path}", page)], middleware=[Middleware(TrackLayerMiddleware, settings=settings)]
    )
    with TestClient(app, base_url="http://www.shop.localhost", follow_redirects=False) as client:
        yield client


def test_consent_travels_with_the_linker_token_to_the_linked_host(two_sites: TestClient) -> None:
    """Tokens are minted only with consent, by a site of the same operator: the arrival on the linked
    host adopts the click, sets its cookies and remembers the consent there (host-only)."""
    client = two_sites
    client.cookies.set("tl_consent", "granted", domain=".shop.localhost")
    assert client.get(f"/?epik={EPIK}").status_code == 200
    go = client.get("/_tl/go", params={"to": "http://pay.localhost/pay"})
    assert go.status_code == 303
    location = go.headers["location"]
    assert "_tlx=" in location
    arrival = client.get(location)
    assert arrival.status_code == 302
    assert urlsplit(arrival.headers["location"]).query == ""
    set_cookies = arrival.headers.get_list("set-cookie")
    assert any(value.startswith(f"_epik={EPIK};") and "Domain" not in value for value in set_cookies)
    consent = [value for value in set_cookies if value.startswith("tl_consent=")]
    assert consent == ["tl_consent=granted; Path=/; Max-Age=31536000; SameSite=Lax"]
    jar: dict[str, Any] = {
        cookie.name: cookie.value for cookie in client.cookies.jar if cookie.domain == "pay.localhost"
    }
    assert jar.get("_epik") == EPIK, jar
    assert jar.get("tl_consent") == "granted", jar


def test_a_token_without_consent_on_the_source_site_is_never_minted(two_sites: TestClient) -> None:
    client = two_sites
    assert client.get(f"/?epik={EPIK}").status_code == 200
    go = client.get("/_tl/go", params={"to": "http://pay.localhost/pay"})
    assert go.status_code == 303
    assert "_tlx=" not in go.headers["location"]
