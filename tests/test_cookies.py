"""Cookies set from the server (CONTRACT.md §4) and the click context behind them, on real apps.

Attributes are matched exactly; the once-a-day refresh runs on the fake clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.middleware_support import (
    BOT_UA,
    BROWSER_UA,
    COOKIE_DOMAIN,
    FRAMEWORKS,
    SHOP,
    SHOP_HOST,
    FakeClock,
    Rig,
    cookie_re,
    cookie_value,
    fetch,
    landing_cookies,
    set_cookies,
    shop_client,
)
from tracklayer_mw import Engine, Settings
from tracklayer_mw.context import ClickContext
from tracklayer_mw.cookies import MAX_AGE, CookieJar

EPIK = "dj0yJnU9cGluLWNsaWNr"
DAY = 86_400


def remembered(rig: Rig, response: Any) -> ClickContext | None:
    """The click context a response's `_tl` cookie holds (verified with the engine's own jar)."""
    found = rig.engines[0].cookies.remembered({"_tl": cookie_value(set_cookies(response)["_tl"])})
    assert found is not None
    return found.context


def click_id_of_purchase(rig: Rig) -> str | None:
    (event,) = rig.delivered()
    click_id: str | None = event["user_data"].get("click_id")
    return click_id


# --- the landing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_landing_with_epik_sets_epik_on_that_response_with_exactly_the_contract_attributes(
    rig: Rig, framework: str
) -> None:
    response = fetch(shop_client(framework, rig.engine()), "GET", f"/?epik={EPIK}")
    assert response.status_code == 200
    assert cookie_re("_epik", EPIK, http_only=False).fullmatch(set_cookies(response)["_epik"])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_landing_sets_tl_as_epik_plus_httponly(rig: Rig, framework: str) -> None:
    response = fetch(shop_client(framework, rig.engine()), "GET", f"/?epik={EPIK}")
    assert cookie_re("_tl", http_only=True).fullmatch(set_cookies(response)["_tl"])


def test_landing_sets_only_epik_and_tl(rig: Rig) -> None:
    response = fetch(shop_client("starlette", rig.engine()), "GET", f"/?epik={EPIK}")
    assert set(set_cookies(response)) == {"_epik", "_tl"}


def test_tl_remembers_the_click_its_provenance_time_landing_url_and_utm(rig: Rig) -> None:
    url = f"/p/sku-1?epik={EPIK}&utm_source=pinterest&utm_campaign=spring&color=red"
    response = fetch(shop_client("starlette", rig.engine()), "GET", url)
    assert remembered(rig, response) == ClickContext(
        EPIK,
        "url",
        int(rig.clock()),
        f"{SHOP}{url}",
        (("utm_source", "pinterest"), ("utm_campaign", "spring")),
    )


def test_page_without_any_click_sets_no_cookie(rig: Rig) -> None:
    response = fetch(shop_client("starlette", rig.engine()), "GET", "/?utm_source=pinterest")
    assert set_cookies(response) == {}


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("epik=a%3BDomain%3Devil.example", id="attribute-injection"),
        pytest.param("epik=a%0D%0ASet-Cookie%3A%20x%3Dy", id="header-injection"),
        pytest.param("epik=" + "a" * 600, id="too-long"),
    ],
)
def test_unsafe_epik_in_url_sets_no_cookie(rig: Rig, query: str) -> None:
    response = fetch(shop_client("starlette", rig.engine()), "GET", f"/?{query}")
    assert set_cookies(response) == {}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_landing_on_https_sets_secure_cookies(rig: Rig, framework: str) -> None:
    client = shop_client(framework, rig.engine(), base_url="https://www.shop.localhost")
    response = fetch(client, "GET", f"/?epik={EPIK}")
    assert cookie_re("_epik", EPIK, secure=True, http_only=False).fullmatch(set_cookies(response)["_epik"])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_secure_follows_forwarded_proto_from_a_trusted_proxy(rig: Rig, framework: str) -> None:
    client = shop_client(framework, rig.engine(trusted_proxy_hops=1))
    headers = {"x-forwarded-proto": "https", "x-forwarded-for": "198.51.100.7"}
    response = fetch(client, "GET", f"/?epik={EPIK}", headers=headers)
    assert cookie_re("_epik", EPIK, secure=True, http_only=False).fullmatch(set_cookies(response)["_epik"])


@pytest.mark.parametrize("framework", ["starlette", "flask"])
def test_the_tag_of_a_page_behind_a_trusted_proxy_takes_the_forwarded_host(rig: Rig, framework: str) -> None:
    # The snippet writes the consent cookie with the tag's domain: a page on www.shop.localhost, seen by
    # the app as backend.internal behind the proxy, still gets the cookie domain (no click signals).
    client = shop_client(framework, rig.engine(trusted_proxy_hops=1), base_url="http://backend.internal")
    page = fetch(client, "GET", "/", headers={"x-forwarded-host": SHOP_HOST}).content
    assert b"&#34;d&#34;:&#34;.shop.localhost&#34;" in page


def test_forwarded_proto_is_ignored_without_trusted_proxies(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine(trusted_proxy_hops=0))
    response = fetch(client, "GET", f"/?epik={EPIK}", headers={"x-forwarded-proto": "https"})
    assert cookie_re("_epik", EPIK, secure=False, http_only=False).fullmatch(set_cookies(response)["_epik"])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_cookies_are_host_only_without_cookie_domain(rig: Rig, framework: str) -> None:
    response = fetch(shop_client(framework, rig.engine(cookie_domain=None)), "GET", f"/?epik={EPIK}")
    assert cookie_re("_epik", EPIK, domain=None, http_only=False).fullmatch(set_cookies(response)["_epik"])
    assert cookie_re("_tl", domain=None, http_only=True).fullmatch(set_cookies(response)["_tl"])


def test_cookies_are_host_only_on_a_host_outside_cookie_domain(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine(), base_url="http://shop.elsewhere.localhost")
    response = fetch(client, "GET", f"/?epik={EPIK}")
    assert cookie_re("_epik", EPIK, domain=None, http_only=False).fullmatch(set_cookies(response)["_epik"])


def test_cookie_domain_applies_to_the_bare_parent_host(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine(), base_url="http://shop.localhost")
    response = fetch(client, "GET", f"/?epik={EPIK}")
    assert cookie_re("_epik", EPIK, domain=COOKIE_DOMAIN, http_only=False).fullmatch(
        set_cookies(response)["_epik"]
    )


# --- cookies the Pinterest tag wrote ----------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_tag_written_epik_is_reissued_from_the_server(rig: Rig, framework: str) -> None:
    response = fetch(shop_client(framework, rig.engine()), "GET", "/", cookies={"_epik": "tag-written-1"})
    assert cookie_re("_epik", "tag-written-1", http_only=False).fullmatch(set_cookies(response)["_epik"])


@pytest.mark.parametrize("name", ["_derived_epik", "_pin_unauth"])
def test_tag_own_cookies_are_reissued_unchanged_as_epik(rig: Rig, name: str) -> None:
    value = "dWlkPU1qQTRaVFUwTXpJ"
    response = fetch(shop_client("starlette", rig.engine()), "GET", "/", cookies={name: value})
    assert cookie_re(name, value, http_only=False).fullmatch(set_cookies(response)[name])


def test_tag_cookie_with_unsafe_value_is_not_reissued(rig: Rig) -> None:
    response = fetch(
        shop_client("starlette", rig.engine()), "GET", "/", cookies={"_pin_unauth": '"a,b"', "_epik": "ok1"}
    )
    assert set(set_cookies(response)) == {"_epik", "_tl"}


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
def test_cookies_split_over_several_headers_as_http2_sends_them_are_all_read(
    rig: Rig, framework: str
) -> None:
    client = shop_client(framework, rig.engine())
    client.cookies.clear()
    headers = [("cookie", "session=abc"), ("cookie", "_epik=tag-written-1"), ("user-agent", BROWSER_UA)]
    response = client.request("GET", "/", headers=headers)
    assert cookie_value(set_cookies(response)["_epik"]) == "tag-written-1"


def test_a_cookie_cut_by_the_header_size_limit_is_ignored_not_reissued_short(rig: Rig) -> None:
    padding = "x" * (8192 - len("pad=; _epik=") - 5)  # the limit falls inside _epik's value
    cookies = {"pad": padding, "_epik": "dj0yJnU9the-whole-click-id"}
    response = fetch(shop_client("starlette", rig.engine()), "GET", "/", cookies=cookies)
    assert set_cookies(response) == {}


# --- which responses carry them ---------------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_any_answer_reissues_a_returning_visitors_cookies_not_only_a_page(rig: Rig, framework: str) -> None:
    client = shop_client(framework, rig.engine())
    response = fetch(client, "GET", "/plain", cookies={"_epik": "tag-written-1"})
    assert b"data-tl" not in response.content
    assert cookie_value(set_cookies(response)["_epik"]) == "tag-written-1"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_page_reissues_the_cookies_even_when_no_snippet_is_injected(rig: Rig, framework: str) -> None:
    client = shop_client(framework, rig.engine(inject_snippet=False))
    response = fetch(client, "GET", "/", cookies={"_epik": "tag-written-1"})
    assert b"data-tl" not in response.content
    assert cookie_value(set_cookies(response)["_epik"]) == "tag-written-1"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_any_answer_to_a_tracked_request_reissues_the_cookies(rig: Rig, framework: str) -> None:
    response = fetch(shop_client(framework, rig.engine()), "GET", "/buy", cookies={"_epik": "tag-written-1"})
    assert response.headers["content-type"].startswith("application/json")
    assert cookie_value(set_cookies(response)["_epik"]) == "tag-written-1"
    assert click_id_of_purchase(rig) == "tag-written-1"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_redirect_reissues_the_cookies_of_a_returning_visitor(rig: Rig, framework: str) -> None:
    client = shop_client(framework, rig.engine())
    response = fetch(client, "GET", "/redirect?to=/next", cookies={"_epik": "tag-written-1"})
    assert response.status_code == 302
    assert cookie_value(set_cookies(response)["_epik"]) == "tag-written-1"


# --- at most once a day -----------------------------------------------------------------------------


def first_visit(rig: Rig, client: Any) -> dict[str, str]:
    """The cookies a browser holds after landing from a Pinterest ad."""
    return landing_cookies(fetch(client, "GET", f"/?epik={EPIK}"))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_unchanged_values_are_not_reissued_within_a_day(rig: Rig, framework: str) -> None:
    client = shop_client(framework, rig.engine())
    jar = first_visit(rig, client)
    rig.clock.advance(DAY - 60)
    assert set_cookies(fetch(client, "GET", "/", cookies=jar)) == {}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_unchanged_values_are_reissued_once_a_day_has_passed(rig: Rig, framework: str) -> None:
    client = shop_client(framework, rig.engine())
    jar = first_visit(rig, client)
    rig.clock.advance(DAY + 1)
    response = fetch(client, "GET", "/", cookies=jar)
    assert cookie_re("_epik", EPIK, http_only=False).fullmatch(set_cookies(response)["_epik"])


def test_refreshed_cookies_are_not_reissued_again_the_same_day(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine())
    jar = first_visit(rig, client)
    rig.clock.advance(DAY + 1)
    jar = landing_cookies(fetch(client, "GET", "/", cookies=jar))
    rig.clock.advance(3600)
    assert set_cookies(fetch(client, "GET", "/", cookies=jar)) == {}


def test_new_click_in_url_is_set_at_once_within_the_day(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine())
    jar = first_visit(rig, client)
    rig.clock.advance(60)
    response = fetch(client, "GET", "/?epik=second-click", cookies=jar)
    assert cookie_value(set_cookies(response)["_epik"]) == "second-click"


def test_new_tag_cookie_value_is_reissued_at_once_within_the_day(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine())
    jar = first_visit(rig, client)
    rig.clock.advance(60)
    response = fetch(client, "GET", "/", cookies={**jar, "_pin_unauth": "new-tag-value"})
    assert cookie_value(set_cookies(response)["_pin_unauth"]) == "new-tag-value"


# --- never on a response a shared cache may store ---------------------------------------------------


@pytest.mark.parametrize("path", [pytest.param("/cached", id="public"), pytest.param("/edge", id="s-maxage")])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_no_cookie_on_a_response_a_shared_cache_may_store(rig: Rig, framework: str, path: str) -> None:
    response = fetch(shop_client(framework, rig.engine()), "GET", f"{path}?epik={EPIK}")
    assert response.status_code == 200
    assert response.headers.get_list("set-cookie") == []


@pytest.mark.parametrize("framework", ["starlette", "fastapi", "flask", "wsgi"])  # Django merges repeats
def test_no_cookie_when_public_is_in_a_second_cache_control_header(rig: Rig, framework: str) -> None:
    response = fetch(shop_client(framework, rig.engine()), "GET", f"/cached-twice?epik={EPIK}")
    assert response.headers.get_list("cache-control") == ["max-age=300", "public"]
    assert response.headers.get_list("set-cookie") == []


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_cookies_held_back_from_a_cached_page_ride_on_the_next_ingest_response(
    rig: Rig, framework: str
) -> None:
    client = shop_client(framework, rig.engine())
    assert set_cookies(fetch(client, "GET", f"/cached?epik={EPIK}")) == {}
    beacon = {"event": "PageVisit", "url": f"{SHOP}/cached?epik={EPIK}"}
    response = fetch(client, "POST", "/_tl/ingest", json=beacon, headers={"origin": SHOP})
    assert response.status_code == 202
    assert cookie_re("_epik", EPIK, http_only=False).fullmatch(set_cookies(response)["_epik"])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_beacon_without_a_url_adopts_the_click_of_its_referer(rig: Rig, framework: str) -> None:
    client = shop_client(framework, rig.engine())
    assert set_cookies(fetch(client, "GET", f"/cached?epik={EPIK}")) == {}
    headers = {"origin": SHOP, "referer": f"{SHOP}/cached?epik={EPIK}"}
    response = fetch(client, "POST", "/_tl/ingest", json={"event": "PageVisit"}, headers=headers)
    assert response.status_code == 202
    assert cookie_re("_epik", EPIK, http_only=False).fullmatch(set_cookies(response)["_epik"])


# --- the signed context cookie ----------------------------------------------------------------------


def test_valid_tl_alone_carries_the_click_to_server_events(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine())
    jar = first_visit(rig, client)
    fetch(client, "GET", "/buy", cookies={"_tl": jar["_tl"]})
    assert click_id_of_purchase(rig) == EPIK


def test_tl_from_a_server_whose_clock_runs_a_little_ahead_is_read(rig: Rig) -> None:
    """Two servers behind one load balancer: the one that set _tl has a clock 2 s ahead."""
    ahead = Engine(rig.settings(), transport=rig.transport, clock=FakeClock(rig.clock() + 2))
    rig.engines.append(ahead)
    jar = first_visit(rig, shop_client("starlette", ahead))
    fetch(shop_client("starlette", rig.engine()), "GET", "/buy", cookies={"_tl": jar["_tl"]})
    assert click_id_of_purchase(rig) == EPIK


def tampered(token: str) -> str:
    """The same token with one character of its signed payload changed."""
    index = 5
    return token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1 :]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_tampered_tl_is_ignored(rig: Rig, framework: str) -> None:
    client = shop_client(framework, rig.engine())
    jar = first_visit(rig, client)
    response = fetch(client, "GET", "/buy", cookies={"_tl": tampered(jar["_tl"])})
    assert response.status_code == 200
    assert click_id_of_purchase(rig) is None


def test_tl_signed_with_another_secret_is_ignored(rig: Rig) -> None:
    forger = rig.engine(secret_key="another-secret-0123456789abcdef")
    forged = forger.cookies.set_cookie_headers(
        ClickContext("forged-click", "url", int(rig.clock())), {}, host="www.shop.localhost", secure=False
    )[-1]
    fetch(shop_client("starlette", rig.engine()), "GET", "/buy", cookies={"_tl": cookie_value(forged)})
    assert click_id_of_purchase(rig) is None


def test_garbage_tl_is_ignored_and_the_page_still_served(rig: Rig) -> None:
    response = fetch(shop_client("starlette", rig.engine()), "GET", "/", cookies={"_tl": "%%%not-a-token"})
    assert response.status_code == 200
    assert set_cookies(response) == {}


# --- which click the cookies carry ------------------------------------------------------------------


def test_fresh_url_click_replaces_the_remembered_one(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine())
    jar = first_visit(rig, client)
    rig.clock.advance(3 * DAY)
    response = fetch(client, "GET", "/?epik=newer-click", cookies=jar)
    assert remembered(rig, response) == ClickContext(
        "newer-click", "url", int(rig.clock()), f"{SHOP}/?epik=newer-click"
    )


def test_tag_cookie_written_after_tl_replaces_the_remembered_click(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine())
    jar = first_visit(rig, client)
    rig.clock.advance(60)
    response = fetch(client, "GET", "/", cookies={**jar, "_epik": "written-by-the-tag"})
    assert cookie_value(set_cookies(response)["_epik"]) == "written-by-the-tag"


def test_stale_tag_cookie_never_overrides_a_fresh_url_value(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine())
    response = fetch(client, "GET", "/?epik=from-url", cookies={"_epik": "old-tag-value"})
    assert cookie_value(set_cookies(response)["_epik"]) == "from-url"


def test_page_url_a_same_site_beacon_reports_beats_the_tag_cookie(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine())
    beacon = {"event": "PageVisit", "url": f"{SHOP}/?epik=from-page"}
    response = fetch(client, "POST", "/_tl/ingest", json=beacon, cookies={"_epik": "old-tag-value"})
    assert cookie_value(set_cookies(response)["_epik"]) == "from-page"


def test_page_url_on_a_subdomain_of_cookie_domain_is_adopted(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine())
    beacon = {"event": "PageVisit", "url": "https://blog.shop.localhost/post?epik=from-blog"}
    response = fetch(client, "POST", "/_tl/ingest", json=beacon)
    assert cookie_value(set_cookies(response)["_epik"]) == "from-blog"


def test_page_url_on_another_site_is_not_adopted(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine())
    beacon = {"event": "PageVisit", "url": "https://evil.example/?epik=planted"}
    response = fetch(client, "POST", "/_tl/ingest", json=beacon)
    assert response.status_code == 202
    assert set_cookies(response) == {}


# --- consent and bots -------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_no_tracking_cookie_without_the_consent_cookie(rig: Rig, framework: str) -> None:
    client = shop_client(framework, rig.engine(consent="tl_consent=granted"))
    response = fetch(client, "GET", f"/?epik={EPIK}", cookies={"tl_consent": "denied"})
    assert set_cookies(response) == {}


def test_tracking_cookies_with_the_consent_cookie(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine(consent="tl_consent=granted"))
    response = fetch(client, "GET", f"/?epik={EPIK}", cookies={"tl_consent": "granted"})
    assert set(set_cookies(response)) == {"_epik", "_tl"}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_withdrawn_consent_takes_back_the_cookies_tracklayer_set(rig: Rig, framework: str) -> None:
    client = shop_client(framework, rig.engine(consent="tl_consent=granted"))
    landing = fetch(client, "GET", f"/?epik={EPIK}", cookies={"tl_consent": "granted"})
    issued = landing_cookies(landing)
    withdrawn = fetch(
        client, "GET", "/", cookies={**issued, "_pin_unauth": "dWlkPU1", "tl_consent": "denied"}
    )
    expired = set_cookies(withdrawn)
    assert set(expired) == {"_epik", "_pin_unauth", "_tl"}
    for name, header in expired.items():
        assert header == f"{name}=; Path=/; Max-Age=0; Domain={COOKIE_DOMAIN}; SameSite=Lax"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_withdrawn_consent_takes_back_the_cookies_on_an_answer_that_is_no_page(
    rig: Rig, framework: str
) -> None:
    """A single-page app may only call its API once consent is withdrawn: `_tl` is HttpOnly, so
    only the server can take it back, on whatever answer comes next."""
    client = shop_client(framework, rig.engine(consent="tl_consent=granted"))
    issued = landing_cookies(fetch(client, "GET", f"/?epik={EPIK}", cookies={"tl_consent": "granted"}))
    withdrawn = fetch(client, "GET", "/plain", cookies={**issued, "tl_consent": "denied"})
    assert set(set_cookies(withdrawn)) == {"_epik", "_tl"}
    assert all("Max-Age=0" in header for header in set_cookies(withdrawn).values())


def test_without_consent_cookies_tracklayer_never_set_are_left_alone(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine(consent="tl_consent=granted"))
    response = fetch(client, "GET", "/", cookies={"_epik": EPIK, "_pin_unauth": "dWlkPU1"})
    assert set_cookies(response) == {}


@pytest.mark.parametrize("on_no_consent", ["drop", "opt_out"])
def test_no_tracking_cookie_when_the_consent_callable_says_no(rig: Rig, on_no_consent: str) -> None:
    client = shop_client("starlette", rig.engine(consent=lambda request: False, on_no_consent=on_no_consent))
    assert set_cookies(fetch(client, "GET", f"/?epik={EPIK}")) == {}


def test_consent_callable_sees_the_request_cookies(rig: Rig) -> None:
    engine = rig.engine(consent=lambda request: request.cookies.get("banner") == "yes")
    response = fetch(shop_client("starlette", engine), "GET", f"/?epik={EPIK}", cookies={"banner": "yes"})
    assert set(set_cookies(response)) == {"_epik", "_tl"}


def test_failing_consent_callable_counts_as_no_consent_and_the_page_is_served(rig: Rig) -> None:
    def broken(request: object) -> bool:
        raise RuntimeError("consent service down")

    response = fetch(shop_client("starlette", rig.engine(consent=broken)), "GET", f"/?epik={EPIK}")
    assert response.status_code == 200
    assert set_cookies(response) == {}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bots_get_no_tracking_cookie(rig: Rig, framework: str) -> None:
    response = fetch(
        shop_client(framework, rig.engine()), "GET", f"/?epik={EPIK}", headers={"user-agent": BOT_UA}
    )
    assert set_cookies(response) == {}


def test_a_remembered_context_cookie_is_checked_for_age_on_every_request(
    make_settings: Callable[..., Settings],
) -> None:
    # Verified once per token (a visitor sends the same _tl on every request): the age still counts.
    clock = FakeClock()
    jar = CookieJar(make_settings(), clock=clock)
    context = ClickContext(EPIK, "url", int(clock.now))
    header = jar.set_cookie_headers(context, {}, host=None, secure=False)[-1]
    token = header.split(";", 1)[0].removeprefix("_tl=")
    first = jar.remembered({"_tl": token})
    assert first is not None
    assert first.context == context
    assert jar.remembered({"_tl": token}) == first
    clock.now += MAX_AGE + 1
    assert jar.remembered({"_tl": token}) is None  # expired, though verified before
    assert jar.remembered({"_tl": token[:-2] + "xx"}) is None  # tampered
