"""The linker (CONTRACT.md §4): the click carried to a linked host in a signed, host-bound, expiring
`_tlx` token, verified and adopted there; redirects decorated or left alone; `/go`; no open redirect."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.middleware_support import (
    BOT_UA,
    FRAMEWORKS,
    PAY_HOST,
    SHOP,
    FakeClock,
    Rig,
    cookie_re,
    cookie_value,
    fetch,
    landing_cookies,
    set_cookies,
    shop_client,
)
from tracklayer_mw import Engine
from tracklayer_mw.context import ClickContext
from tracklayer_mw.linker import TOKEN_MAX_AGE

EPIK = "dj0yJnU9c2hvcC1jbGljaw"
PAY = f"https://{PAY_HOST}"
OLD_KEY = "old-secret-key-0123456789abcdef"
NEW_KEY = "new-secret-key-0123456789abcdef"


def pay_engine(rig: Rig, **overrides: Any) -> Engine:
    """The linked site: another registrable domain, host-only cookies, linking back to the shop."""
    return rig.engine(**{"cookie_domain": None, "linked_domains": ".shop.localhost", **overrides})


def token_in(location: str) -> str:
    (token,) = parse_qs(urlsplit(location).query)["_tlx"]
    return token


def click(epik: str = EPIK, at: float = 0) -> ClickContext:
    return ClickContext(epik, "url", int(at), f"{SHOP}/?epik={epik}")


def purchase_click_id(rig: Rig) -> str | None:
    events = [event for event in rig.delivered() if event["event_name"] == "checkout"]
    assert len(events) == 1
    click_id: str | None = events[0]["user_data"].get("click_id")
    return click_id


# --- the round trip ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "destination"),
    [
        pytest.param(a, b, id=f"{a}-to-{b}")
        for a, b in zip(FRAMEWORKS, FRAMEWORKS[1:] + FRAMEWORKS[:1], strict=True)
    ],
)
def test_click_travels_between_two_hosts_sharing_the_secret(rig: Rig, origin: str, destination: str) -> None:
    shop = shop_client(origin, rig.engine())
    pay = shop_client(destination, pay_engine(rig), base_url=PAY)
    jar = landing_cookies(fetch(shop, "GET", f"/?epik={EPIK}"))

    hop = fetch(shop, "GET", f"/redirect?to={PAY}/checkout%3Fcart%3D7", cookies=jar)
    assert hop.status_code == 302
    arrival = fetch(pay, "GET", hop.headers["location"])
    assert (arrival.status_code, arrival.headers["location"]) == (302, "/checkout?cart=7")
    assert cookie_re("_epik", EPIK, domain=None, secure=True, http_only=False).fullmatch(
        set_cookies(arrival)["_epik"]
    )
    fetch(pay, "GET", "/buy", cookies=landing_cookies(arrival))
    assert purchase_click_id(rig) == EPIK


def test_arrival_cookies_include_a_signed_httponly_tl_for_the_destination(rig: Rig) -> None:
    token = rig.engine().linker.mint(click(at=rig.clock()), PAY_HOST)
    arrival = fetch(shop_client("starlette", pay_engine(rig), base_url=PAY), "GET", f"/?_tlx={token}")
    assert cookie_re("_tl", domain=None, secure=True, http_only=True).fullmatch(set_cookies(arrival)["_tl"])


def test_adopted_click_remembers_it_came_by_linker(rig: Rig) -> None:
    token = rig.engine().linker.mint(click(at=rig.clock() - 30), PAY_HOST)
    pay = pay_engine(rig)
    arrival = fetch(shop_client("starlette", pay, base_url=PAY), "GET", f"/?_tlx={token}")
    found = pay.cookies.remembered({"_tl": cookie_value(set_cookies(arrival)["_tl"])})
    assert found is not None
    assert found.context == ClickContext(EPIK, "linker", int(rig.clock() - 30), f"{SHOP}/?epik={EPIK}")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_arrival_by_get_redirects_to_the_same_url_without_tlx(rig: Rig, framework: str) -> None:
    token = rig.engine().linker.mint(click(at=rig.clock()), PAY_HOST)
    pay = shop_client(framework, pay_engine(rig), base_url=PAY)
    arrival = fetch(pay, "GET", f"/checkout/step-1?b=2&_tlx={token}&a=%20x")
    assert (arrival.status_code, arrival.headers["location"]) == (302, "/checkout/step-1?b=2&a=%20x")
    assert arrival.headers["cache-control"] == "no-store"


def test_arrival_by_head_redirects_too(rig: Rig) -> None:
    token = rig.engine().linker.mint(click(at=rig.clock()), PAY_HOST)
    arrival = fetch(shop_client("starlette", pay_engine(rig), base_url=PAY), "HEAD", f"/p?_tlx={token}")
    assert (arrival.status_code, arrival.headers["location"]) == (302, "/p")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_arrival_by_post_reaches_the_app_without_tlx_and_sets_cookies(rig: Rig, framework: str) -> None:
    token = rig.engine().linker.mint(click(at=rig.clock()), PAY_HOST)
    pay = shop_client(framework, pay_engine(rig), base_url=PAY)
    response = fetch(pay, "POST", f"/echo?cart=7&_tlx={token}")
    assert (response.status_code, response.text) == (200, "POST cart=7")
    assert cookie_value(set_cookies(response)["_epik"]) == EPIK


# --- tokens that are ignored ------------------------------------------------------------------------


def _tampered(rig: Rig) -> str:
    token = rig.engine().linker.mint(click(at=rig.clock()), PAY_HOST)
    return token[:6] + ("A" if token[6] != "A" else "B") + token[7:]


def _expired(rig: Rig) -> str:
    token = rig.engine().linker.mint(click(at=rig.clock()), PAY_HOST)
    rig.clock.advance(TOKEN_MAX_AGE + 1)
    return token


def _other_host(rig: Rig) -> str:
    return rig.engine(linked_domains="checkout.localhost").linker.mint(
        click(at=rig.clock()), "checkout.localhost"
    )


def _other_secret(rig: Rig) -> str:
    return rig.engine(secret_key="another-secret-0123456789abcdef").linker.mint(
        click(at=rig.clock()), PAY_HOST
    )


def _garbage(rig: Rig) -> str:
    return "not-a-token"


BAD_TOKENS: list[Any] = [
    pytest.param(_tampered, id="tampered"),
    pytest.param(_expired, id="expired"),
    pytest.param(_other_host, id="other-host"),
    pytest.param(_other_secret, id="other-secret"),
    pytest.param(_garbage, id="garbage"),
]


@pytest.mark.parametrize("make_token", BAD_TOKENS)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bad_token_is_ignored_and_stripped_never_an_error(
    rig: Rig, framework: str, make_token: Callable[[Rig], str]
) -> None:
    pay = shop_client(framework, pay_engine(rig), base_url=PAY)
    arrival = fetch(pay, "GET", f"/checkout?cart=7&_tlx={make_token(rig)}")
    assert (arrival.status_code, arrival.headers["location"]) == (302, "/checkout?cart=7")
    assert set_cookies(arrival) == {}


def test_token_just_inside_ten_minutes_is_accepted(rig: Rig) -> None:
    token = rig.engine().linker.mint(click(at=rig.clock()), PAY_HOST)
    rig.clock.advance(TOKEN_MAX_AGE - 1)
    arrival = fetch(shop_client("starlette", pay_engine(rig), base_url=PAY), "GET", f"/?_tlx={token}")
    assert cookie_value(set_cookies(arrival)["_epik"]) == EPIK


def origin_with_clock_ahead(rig: Rig, seconds: float) -> Engine:
    """The shop on another machine, whose clock runs `seconds` ahead of the destination's."""
    engine = Engine(rig.settings(), transport=rig.transport, clock=FakeClock(rig.clock() + seconds))
    rig.engines.append(engine)
    return engine


@pytest.mark.parametrize("seconds", [1, 5, 60])
def test_token_from_a_host_whose_clock_runs_a_little_ahead_is_accepted(rig: Rig, seconds: float) -> None:
    token = origin_with_clock_ahead(rig, seconds).linker.mint(click(at=rig.clock()), PAY_HOST)
    arrival = fetch(shop_client("starlette", pay_engine(rig), base_url=PAY), "GET", f"/?_tlx={token}")
    assert cookie_value(set_cookies(arrival)["_epik"]) == EPIK


def test_token_signed_far_in_the_future_is_ignored(rig: Rig) -> None:
    token = origin_with_clock_ahead(rig, 3600).linker.mint(click(at=rig.clock()), PAY_HOST)
    arrival = fetch(shop_client("starlette", pay_engine(rig), base_url=PAY), "GET", f"/?_tlx={token}")
    assert set_cookies(arrival) == {}


def test_replayed_token_is_ignored(rig: Rig) -> None:
    token = rig.engine().linker.mint(click(at=rig.clock()), PAY_HOST)
    pay = shop_client("starlette", pay_engine(rig), base_url=PAY)
    fetch(pay, "GET", f"/?_tlx={token}")
    assert set_cookies(fetch(pay, "GET", f"/?_tlx={token}")) == {}


def test_token_from_a_clock_ahead_is_not_accepted_twice_while_it_is_valid(rig: Rig) -> None:
    token = origin_with_clock_ahead(rig, 100).linker.mint(click(at=rig.clock()), PAY_HOST)
    pay = shop_client("starlette", pay_engine(rig), base_url=PAY)
    fetch(pay, "GET", f"/?_tlx={token}")
    rig.clock.advance(TOKEN_MAX_AGE + 50)  # the token is 550 s old by its own date: still valid
    assert set_cookies(fetch(pay, "GET", f"/?_tlx={token}")) == {}


def test_bad_token_on_post_is_stripped_and_the_app_runs(rig: Rig) -> None:
    pay = shop_client("starlette", pay_engine(rig), base_url=PAY)
    response = fetch(pay, "POST", "/echo?cart=7&_tlx=forged")
    assert (response.status_code, response.text) == (200, "POST cart=7")


# --- key rotation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin_keys", "destination_keys", "accepted"),
    [
        pytest.param(OLD_KEY, f"{OLD_KEY},{NEW_KEY}", True, id="old-key-token-after-rotation"),
        pytest.param(f"{OLD_KEY},{NEW_KEY}", f"{OLD_KEY},{NEW_KEY}", True, id="new-key-both-sides"),
        pytest.param(f"{OLD_KEY},{NEW_KEY}", NEW_KEY, True, id="new-key-after-old-retired"),
        pytest.param(OLD_KEY, NEW_KEY, False, id="retired-key-rejected"),
    ],
)
def test_key_rotation(rig: Rig, origin_keys: str, destination_keys: str, accepted: bool) -> None:
    token = rig.engine(secret_key=origin_keys).linker.mint(click(at=rig.clock()), PAY_HOST)
    pay = shop_client("starlette", pay_engine(rig, secret_key=destination_keys), base_url=PAY)
    arrival = fetch(pay, "GET", f"/?_tlx={token}")
    assert ("_epik" in set_cookies(arrival)) is accepted


# --- never an open redirect -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "location"),
    [
        pytest.param("//evil.example/x", "/evil.example/x", id="double-slash"),
        pytest.param("/\\evil.example/x", "/evil.example/x", id="slash-backslash"),
        pytest.param("/%2F%2Fevil.example/x", "/evil.example/x", id="encoded-slashes"),
        pytest.param("/%5C%5Cevil.example/x", "/evil.example/x", id="encoded-backslashes"),
        pytest.param("///evil.example", "/evil.example", id="triple-slash"),
    ],
)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_arrival_redirect_stays_on_the_same_host(rig: Rig, framework: str, path: str, location: str) -> None:
    token = rig.engine().linker.mint(click(at=rig.clock()), PAY_HOST)
    pay = shop_client(framework, pay_engine(rig), base_url=PAY)
    arrival = fetch(pay, "GET", f"{PAY}{path}?_tlx={token}")
    assert (arrival.status_code, arrival.headers["location"]) == (302, location)


@pytest.mark.parametrize(
    ("path", "location"),
    [
        pytest.param("/deals/50%25-off", "/deals/50%25-off", id="percent-sign"),
        pytest.param("/caf%C3%A9", "/caf%C3%A9", id="non-ascii"),
        pytest.param("/a%20b", "/a%20b", id="space"),
        pytest.param("/a%3Fb", "/a%3Fb", id="question-mark"),
    ],
)
@pytest.mark.parametrize("framework", ["starlette", "flask"])
def test_arrival_redirect_keeps_the_path_as_requested(
    rig: Rig, framework: str, path: str, location: str
) -> None:
    pay = shop_client(framework, pay_engine(rig), base_url=PAY)
    arrival = fetch(pay, "GET", f"{PAY}{path}?_tlx=forged")
    assert arrival.headers["location"] == location


# --- the app's own redirects ------------------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_redirect_to_a_linked_host_carries_a_token_bound_to_that_host(rig: Rig, framework: str) -> None:
    shop = shop_client(framework, rig.engine())
    response = fetch(shop, "GET", f"/redirect?to={PAY}/checkout", cookies={"_epik": EPIK})
    location = response.headers["location"]
    assert location.startswith(f"{PAY}/checkout?_tlx=")
    linker = pay_engine(rig).linker
    assert linker.verify(token_in(location), "checkout.localhost") is None
    carried = linker.verify(token_in(location), PAY_HOST)
    assert carried is not None
    assert carried.epik == EPIK


def test_redirect_to_a_suffix_linked_domain_carries_a_token(rig: Rig) -> None:
    shop = shop_client("starlette", rig.engine(linked_domains=".pay.localhost"))
    response = fetch(shop, "GET", "/redirect?to=https://eu.pay.localhost/x", cookies={"_epik": EPIK})
    assert response.headers["location"].startswith("https://eu.pay.localhost/x?_tlx=")


def test_redirect_token_keeps_the_destination_query_and_fragment(rig: Rig) -> None:
    shop = shop_client("starlette", rig.engine())
    response = fetch(shop, "GET", f"/redirect?to={PAY}/c%3Fa%3D1%23top", cookies={"_epik": EPIK})
    parts = urlsplit(response.headers["location"])
    assert (parts.path, parse_qs(parts.query)["a"], parts.fragment) == ("/c", ["1"], "top")


def test_redirect_token_leaves_the_rest_of_the_query_as_the_app_wrote_it(rig: Rig) -> None:
    """A hosted checkout may sign its query byte for byte: only `&_tlx=...` is added."""
    shop = shop_client("starlette", rig.engine())
    to = f"{PAY}/c?sig=a%20b%2Fc&flag&x=1+2"
    response = fetch(shop, "GET", "/redirect", params={"to": to}, cookies={"_epik": EPIK})
    location = response.headers["location"]
    assert location == f"{to}&_tlx={token_in(location)}"


def test_own_redirect_leaves_the_rest_of_the_query_as_the_app_wrote_it(rig: Rig) -> None:
    shop = shop_client("starlette", rig.engine())
    response = fetch(shop, "GET", "/redirect", params={"epik": EPIK, "to": "/search?q=a%20b&flag"})
    assert response.headers["location"] == f"/search?q=a%20b&flag&epik={EPIK}"


def test_own_redirect_encodes_an_epik_with_query_characters(rig: Rig) -> None:
    shop = shop_client("starlette", rig.engine())
    response = fetch(shop, "GET", "/redirect", params={"epik": "a&b=c+d", "to": "/cart"})
    location = response.headers["location"]
    assert parse_qs(urlsplit(location).query)["epik"] == ["a&b=c+d"]


def test_protocol_relative_redirect_to_a_linked_host_carries_a_token(rig: Rig) -> None:
    shop = shop_client("starlette", rig.engine())
    response = fetch(shop, "GET", f"/redirect?to=//{PAY_HOST}/checkout", cookies={"_epik": EPIK})
    assert response.headers["location"].startswith(f"//{PAY_HOST}/checkout?_tlx=")


@pytest.mark.parametrize(
    "cookies_and_headers",
    [
        pytest.param(({}, {}), id="no-click"),
        pytest.param(({"_epik": EPIK}, {"user-agent": BOT_UA}), id="bot"),
    ],
)
def test_redirect_to_a_linked_host_without_a_click_or_for_a_bot_is_untouched(
    rig: Rig, cookies_and_headers: tuple[dict[str, str], dict[str, str]]
) -> None:
    cookies, headers = cookies_and_headers
    shop = shop_client("starlette", rig.engine())
    response = fetch(shop, "GET", f"/redirect?to={PAY}/checkout", cookies=cookies, headers=headers)
    assert response.headers["location"] == f"{PAY}/checkout"


def test_redirect_to_a_linked_host_without_consent_is_untouched(rig: Rig) -> None:
    shop = shop_client("starlette", rig.engine(consent="ok=1", on_no_consent="opt_out"))
    response = fetch(shop, "GET", f"/redirect?to={PAY}/checkout", cookies={"_epik": EPIK})
    assert response.headers["location"] == f"{PAY}/checkout"


@pytest.mark.parametrize(
    "location",
    [
        pytest.param("https://elsewhere.example/a?b=1&c&d=%2F", id="unlisted-host"),
        pytest.param("https://pay.localhost.evil.example/", id="linked-host-as-prefix"),
        pytest.param("https://evilpay.localhost/", id="linked-host-as-suffix"),
    ],
)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_redirect_to_any_other_host_is_untouched(rig: Rig, framework: str, location: str) -> None:
    shop = shop_client(framework, rig.engine())
    url = f"/redirect?epik={EPIK}&to={location.replace('%', '%25').replace('&', '%26').replace('?', '%3F')}"
    response = fetch(shop, "GET", url, cookies={"_epik": EPIK})
    assert response.headers["location"] == location


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        pytest.param("/cart", f"/cart?epik={EPIK}", id="relative"),
        pytest.param("/cart%3Fsize%3Dm", f"/cart?size=m&epik={EPIK}", id="relative-with-query"),
        pytest.param(
            "https://checkout.shop.localhost/cart",
            f"https://checkout.shop.localhost/cart?epik={EPIK}",
            id="sibling-in-cookie-domain",
        ),
        pytest.param("/cart%3Fepik%3Dkept", "/cart?epik=kept", id="epik-already-there"),
    ],
)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_own_redirect_inside_cookie_domain_keeps_epik(
    rig: Rig, framework: str, to: str, expected: str
) -> None:
    shop = shop_client(framework, rig.engine())
    response = fetch(shop, "GET", f"/redirect?epik={EPIK}&to={to}")
    assert response.headers["location"] == expected


@pytest.mark.parametrize("location", ["mailto:ann@example.com", "tel:+16505551234", "shopapp:cart"])
@pytest.mark.parametrize("framework", ["starlette", "fastapi"])  # httpx's WSGI client cannot read these
def test_redirect_to_a_url_without_a_host_is_not_taken_for_this_host(
    rig: Rig, framework: str, location: str
) -> None:
    shop = shop_client(framework, rig.engine())
    response = fetch(shop, "GET", f"/redirect?epik={EPIK}&to={location.replace('+', '%2B')}")
    assert response.headers["location"] == location


def test_backslash_location_is_left_to_the_browser_untouched(rig: Rig) -> None:
    """Browsers read `/\\host` as `//host`: it is never treated as this site's own path."""
    shop = shop_client("starlette", rig.engine())
    response = fetch(shop, "GET", f"/redirect?epik={EPIK}&to=/%5Cevil.example/x", cookies={"_epik": EPIK})
    assert response.headers["location"] == "/\\evil.example/x"


def test_own_redirect_without_epik_on_the_request_url_is_untouched(rig: Rig) -> None:
    shop = shop_client("starlette", rig.engine())
    response = fetch(shop, "GET", "/redirect?to=/cart", cookies={"_epik": EPIK})
    assert response.headers["location"] == "/cart"


# --- which click wins at arrival --------------------------------------------------------------------


def test_url_click_beats_the_token_on_the_same_request(rig: Rig) -> None:
    token = rig.engine().linker.mint(click("from-token", at=rig.clock()), PAY_HOST)
    pay = shop_client("starlette", pay_engine(rig), base_url=PAY)
    arrival = fetch(pay, "GET", f"/?epik=from-url&_tlx={token}")
    assert cookie_value(set_cookies(arrival)["_epik"]) == "from-url"


def test_destination_keeps_its_own_fresher_click(rig: Rig) -> None:
    token = rig.engine().linker.mint(click("older", at=rig.clock() - 300), PAY_HOST)
    pay_app = shop_client("starlette", pay_engine(rig), base_url=PAY)
    jar = landing_cookies(fetch(pay_app, "GET", "/?epik=newer"))
    arrival = fetch(pay_app, "GET", f"/?_tlx={token}", cookies=jar)
    fetch(pay_app, "GET", "/buy", cookies={**jar, **landing_cookies(arrival)})
    assert purchase_click_id(rig) == "newer"


def test_token_with_a_fresher_click_replaces_the_destination_click(rig: Rig) -> None:
    pay_app = shop_client("starlette", pay_engine(rig), base_url=PAY)
    jar = landing_cookies(fetch(pay_app, "GET", "/?epik=older"))
    rig.clock.advance(3600)
    token = rig.engine().linker.mint(click("newer", at=rig.clock() - 10), PAY_HOST)
    arrival = fetch(pay_app, "GET", f"/?_tlx={token}", cookies=jar)
    assert cookie_value(set_cookies(arrival)["_epik"]) == "newer"


def test_token_beats_a_tag_cookie_of_unknown_age(rig: Rig) -> None:
    token = rig.engine().linker.mint(click("from-token", at=rig.clock() - 60), PAY_HOST)
    pay = shop_client("starlette", pay_engine(rig), base_url=PAY)
    arrival = fetch(pay, "GET", f"/?_tlx={token}", cookies={"_epik": "left-by-the-tag-long-ago"})
    assert cookie_value(set_cookies(arrival)["_epik"]) == "from-token"


def test_tag_cookie_written_after_the_last_issue_beats_an_older_token(rig: Rig) -> None:
    pay_app = shop_client("starlette", pay_engine(rig), base_url=PAY)
    token = rig.engine().linker.mint(click("from-token", at=rig.clock()), PAY_HOST)
    rig.clock.advance(600 - 5)
    jar = landing_cookies(fetch(pay_app, "GET", "/?epik=first"))
    rig.clock.advance(2)
    arrival = fetch(pay_app, "GET", f"/?_tlx={token}", cookies={**jar, "_epik": "tag-wrote-later"})
    fetch(pay_app, "GET", "/buy", cookies={**jar, "_epik": "tag-wrote-later", **landing_cookies(arrival)})
    assert purchase_click_id(rig) == "tag-wrote-later"


# --- /go: links and forms to linked domains ---------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_go_by_get_answers_303_with_the_token_and_the_form_fields(rig: Rig, framework: str) -> None:
    shop = shop_client(framework, rig.engine())
    response = fetch(shop, "GET", f"/_tl/go?to={PAY}/search%3Fq%3Dvase&size=m", cookies={"_epik": EPIK})
    assert response.status_code == 303
    location = response.headers["location"]
    query = parse_qs(urlsplit(location).query)
    assert location.startswith(f"{PAY}/search?")
    assert (query["q"], query["size"]) == (["vase"], ["m"])
    assert pay_engine(rig).linker.verify(query["_tlx"][0], PAY_HOST) is not None


def test_go_puts_get_form_fields_in_the_query_before_a_fragment(rig: Rig) -> None:
    shop = shop_client("starlette", rig.engine())
    response = fetch(shop, "GET", "/_tl/go", params={"to": f"{PAY}/search#results", "q": "vase"})
    assert response.headers["location"] == f"{PAY}/search?q=vase#results"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_go_by_post_answers_307_so_the_form_is_posted_again(rig: Rig, framework: str) -> None:
    shop = shop_client(framework, rig.engine())
    response = fetch(shop, "POST", f"/_tl/go?to={PAY}/pay", data={"card": "4242"}, cookies={"_epik": EPIK})
    assert response.status_code == 307
    assert response.headers["location"].startswith(f"{PAY}/pay?_tlx=")


def test_go_without_a_click_redirects_without_a_token(rig: Rig) -> None:
    response = fetch(shop_client("starlette", rig.engine()), "GET", f"/_tl/go?to={PAY}/pay")
    assert (response.status_code, response.headers["location"]) == (303, f"{PAY}/pay")


@pytest.mark.parametrize(
    "to",
    [
        pytest.param("https://evil.example/", id="unlisted-host"),
        pytest.param("https://pay.localhost@evil.example/", id="userinfo-trick"),
        pytest.param("https://evil.example%5C@pay.localhost/", id="backslash-trick"),
        pytest.param("javascript:alert(1)//pay.localhost", id="javascript"),
        pytest.param("/relative", id="relative"),
        pytest.param("//pay.localhost/x", id="no-scheme"),
        pytest.param("", id="missing"),
    ],
)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_go_to_an_unlisted_host_is_400(rig: Rig, framework: str, to: str) -> None:
    shop = shop_client(framework, rig.engine())
    response = fetch(shop, "GET", f"/_tl/go?to={to}", cookies={"_epik": EPIK})
    assert response.status_code == 400
    assert "location" not in response.headers
