"""Pure tables for context.py: the client IP by trusted hops, epik validation, host names, bots and
which of two clicks is the fresher one."""

from __future__ import annotations

import pytest

from tracklayer_mw.context import (
    ClickContext,
    click_from_page_url,
    click_from_url,
    client_ip,
    cookie_safe,
    epik_from_params,
    forwarded_value,
    fresher,
    is_bot,
    normalize_host,
    query_params,
    without_emails,
)

# --- the client IP ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "hops", "expected"),
    [
        pytest.param("203.0.113.9", [], 0, "203.0.113.9", id="no-proxy-peer"),
        pytest.param("10.0.0.2", ["198.51.100.7"], 0, "10.0.0.2", id="xff-ignored-without-trusted-hops"),
        pytest.param("10.0.0.2", ["198.51.100.7"], 1, "198.51.100.7", id="one-hop"),
        pytest.param(
            "10.0.0.2", ["6.6.6.6, 198.51.100.7"], 1, "198.51.100.7", id="one-hop-spoofed-left-ignored"
        ),
        pytest.param("10.0.0.2", ["6.6.6.6, 198.51.100.7, 10.0.0.1"], 2, "198.51.100.7", id="two-hops"),
        pytest.param("10.0.0.2", ["6.6.6.6", "198.51.100.7"], 1, "198.51.100.7", id="repeated-header-lines"),
        pytest.param("10.0.0.2", ["198.51.100.7"], 2, "10.0.0.2", id="fewer-entries-than-hops-peer"),
        pytest.param("10.0.0.2", [""], 1, "10.0.0.2", id="empty-xff-peer"),
        pytest.param("10.0.0.2", ["198.51.100.7:51234"], 1, "198.51.100.7", id="ipv4-with-port"),
        pytest.param("10.0.0.2", ["2001:db8::7"], 1, "2001:db8::7", id="ipv6"),
        pytest.param("10.0.0.2", ["[2001:db8::7]:443"], 1, "2001:db8::7", id="ipv6-bracketed-with-port"),
        pytest.param("10.0.0.2", ["2001:DB8:0:0::7"], 1, "2001:db8::7", id="ipv6-normalized"),
        pytest.param("10.0.0.2", ['"198.51.100.7"'], 1, "198.51.100.7", id="quoted"),
        pytest.param("10.0.0.2", ["unknown"], 1, None, id="garbage-from-trusted-proxy"),
        pytest.param("10.0.0.2", ["198.51.100.7, not-an-ip"], 1, None, id="garbage-rightmost"),
        pytest.param("10.0.0.2", ["999.1.1.1"], 1, None, id="out-of-range-octet"),
        pytest.param("::1", [], 0, "::1", id="ipv6-peer"),
        pytest.param("testclient", [], 0, None, id="peer-not-an-ip"),
        pytest.param(None, [], 0, None, id="no-peer"),
    ],
)
def test_client_ip_trusts_only_the_configured_hops(
    peer: str | None, forwarded_for: list[str], hops: int, expected: str | None
) -> None:
    assert client_ip(peer, forwarded_for, hops) == expected


@pytest.mark.parametrize(
    ("values", "hops", "expected"),
    [
        pytest.param(["https"], 1, "https", id="one"),
        pytest.param(["http, https"], 1, "https", id="rightmost"),
        pytest.param(["https, http"], 2, "https", id="second-from-right"),
        pytest.param(["https"], 2, None, id="too-few"),
        pytest.param(["https"], 0, None, id="no-trust"),
        pytest.param([" , https , "], 1, "https", id="blank-entries-skipped"),
    ],
)
def test_forwarded_value_counts_from_the_right(values: list[str], hops: int, expected: str | None) -> None:
    assert forwarded_value(values, hops) == expected


# --- hosts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("www.shop.localhost", "www.shop.localhost", id="plain"),
        pytest.param("WWW.Shop.Localhost:8000", "www.shop.localhost", id="case-and-port"),
        pytest.param("shop.localhost.", "shop.localhost", id="trailing-dot"),
        pytest.param("[::1]:8000", None, id="ipv6-literal"),
        pytest.param("evil.example/x", None, id="path-in-host"),
        pytest.param("a b", None, id="space"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_normalize_host(header: str | None, expected: str | None) -> None:
    assert normalize_host(header) == expected


# --- epik -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("epik=dj0yJnU9abc", "dj0yJnU9abc", id="plain"),
        pytest.param("EPIK=abc", "abc", id="name-case-insensitive"),
        pytest.param("epik=first&epik=second", "second", id="last-value"),
        pytest.param("epik=%20abc%20", "abc", id="trimmed"),
        pytest.param("epik=a%3Bb", None, id="semicolon-rejected"),
        pytest.param("epik=a%2Cb", None, id="comma-rejected"),
        pytest.param("epik=a%22b", None, id="quote-rejected"),
        pytest.param("epik=a%5Cb", None, id="backslash-rejected"),
        pytest.param("epik=a+b", None, id="space-rejected"),
        pytest.param("epik=a%0D%0ASet-Cookie:x", None, id="crlf-rejected"),
        pytest.param("epik=%C3%A9", None, id="non-ascii-rejected"),
        pytest.param("epik=" + "a" * 513, None, id="too-long"),
        pytest.param("epik=" + "a" * 512, "a" * 512, id="longest"),
        pytest.param("epik=", None, id="blank"),
        pytest.param("utm_source=pin", None, id="absent"),
    ],
)
def test_epik_from_params_accepts_only_cookie_safe_values(query: str, expected: str | None) -> None:
    assert epik_from_params(query_params(query)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("abc", "abc", id="plain"),
        pytest.param("a=b/c+d", "a=b/c+d", id="base64-ish"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="none"),
        pytest.param("a;Domain=evil", None, id="attribute-injection"),
    ],
)
def test_cookie_safe(value: str | None, expected: str | None) -> None:
    assert cookie_safe(value) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("https://x/p?a=1", "https://x/p?a=1", id="nothing-to-remove"),
        pytest.param("https://x/p?email=ann%40example.com&a=1", "https://x/p?a=1", id="encoded-email"),
        pytest.param("https://x/p?a=1&e=Ann@Example.COM", "https://x/p?a=1", id="raw-email"),
        pytest.param("https://x/p?to=ann%2Bshop%40mail.example.org", "https://x/p", id="plus-address"),
        pytest.param("https://x/p?a=1#email=ann@example.com", "https://x/p?a=1", id="fragment"),
        pytest.param("https://x/p?handle=@ann&a=b%40c", "https://x/p?handle=@ann&a=b%40c", id="not-an-email"),
        pytest.param("https://x/p?flag&sig=a%20b", "https://x/p?flag&sig=a%20b", id="rest-kept-as-written"),
    ],
)
def test_without_emails_drops_the_query_pairs_that_carry_one(url: str, expected: str) -> None:
    assert without_emails(url) == expected


def test_landing_url_is_remembered_without_emails() -> None:
    url = "https://x/?epik=abc&email=ann%40example.com"
    click = click_from_url(url, query_params(url.partition("?")[2]), source="url", now=1)
    assert click is not None
    assert click.landing_url == "https://x/?epik=abc"


def test_query_params_with_too_many_fields_count_as_none() -> None:
    assert query_params("&".join(f"k{i}=v" for i in range(201)) + "&epik=abc") == {}


def test_click_from_url_keeps_landing_url_and_utm() -> None:
    url = "https://www.shop.localhost/p?epik=abc&utm_source=pinterest&utm_campaign=spring&other=1"
    click = click_from_url(url, query_params(url.partition("?")[2]), source="url", now=100.9)
    assert click == ClickContext(
        "abc", "url", 100, url, (("utm_source", "pinterest"), ("utm_campaign", "spring"))
    )


def test_click_from_page_url_is_a_referrer_click() -> None:
    click = click_from_page_url("https://www.shop.localhost/?epik=abc", now=5)
    assert click is not None
    assert (click.epik, click.source, click.clicked_at) == ("abc", "referrer", 5)


def test_click_from_url_without_epik_is_none() -> None:
    assert click_from_url("https://x/?utm_source=a", {"utm_source": ["a"]}, source="url", now=1) is None


def test_click_context_roundtrips_through_its_dict() -> None:
    click = ClickContext("abc", "linker", 42, "https://x/", (("utm_term", "t"),))
    assert ClickContext.from_dict(click.to_dict()) == click


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(None, id="none"),
        pytest.param([], id="list"),
        pytest.param({"e": "abc", "s": "url"}, id="no-time"),
        pytest.param({"e": "abc", "s": "somewhere", "t": 1}, id="unknown-source"),
        pytest.param({"e": "a;b", "s": "url", "t": 1}, id="unsafe-epik"),
        pytest.param({"e": "abc", "s": "url", "t": True}, id="bool-time"),
        pytest.param({"e": "abc", "s": "url", "t": 1.5}, id="float-time"),
        pytest.param({"e": "abc", "s": "url", "t": 1, "l": 5}, id="landing-not-text"),
        pytest.param({"e": "abc", "s": "url", "t": 1, "u": ["x"]}, id="utm-not-object"),
    ],
)
def test_click_context_from_malformed_dict_is_none(data: object) -> None:
    assert ClickContext.from_dict(data) is None


# --- which click wins -------------------------------------------------------------------------------


def _click(epik: str, source: str, at: int) -> ClickContext:
    return ClickContext(epik, source, at)


@pytest.mark.parametrize(
    ("current", "candidate", "winner"),
    [
        pytest.param(None, None, None, id="nothing"),
        pytest.param(None, _click("new", "cookie", 1), "new", id="first-click"),
        pytest.param(_click("old", "url", 1), None, "old", id="no-candidate"),
        pytest.param(
            _click("old", "url", 100),
            _click("new", "cookie", 200),
            "new",
            id="fresher-cookie-beats-older-url",
        ),
        pytest.param(_click("old", "cookie", 200), _click("new", "url", 100), "old", id="stale-url-loses"),
        pytest.param(_click("a", "linker", 100), _click("b", "url", 100), "b", id="tie-url-beats-linker"),
        pytest.param(_click("a", "url", 100), _click("b", "linker", 100), "a", id="tie-linker-loses-to-url"),
        pytest.param(
            _click("a", "referrer", 100), _click("b", "linker", 100), "b", id="tie-linker-beats-referrer"
        ),
        pytest.param(
            _click("a", "cookie", 100), _click("b", "referrer", 100), "b", id="tie-referrer-beats-cookie"
        ),
        pytest.param(_click("a", "referrer", 100), _click("b", "cookie", 100), "a", id="tie-cookie-loses"),
        pytest.param(_click("a", "url", 100), _click("b", "url", 100), "b", id="tie-same-source-newcomer"),
    ],
)
def test_fresher_click_wins_then_stronger_provenance(
    current: ClickContext | None, candidate: ClickContext | None, winner: str | None
) -> None:
    result = fresher(current, candidate)
    assert (result.epik if result else None) == winner


def test_fresher_keeps_when_and_where_a_click_was_first_seen() -> None:
    first = ClickContext("abc", "url", 100, "https://x/?epik=abc")
    assert fresher(first, ClickContext("abc", "cookie", 500)) is first


# --- bots -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_agent", "bot"),
    [
        pytest.param(
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", True, id="googlebot"
        ),
        pytest.param("Mozilla/5.0 (compatible; bingbot/2.0)", True, id="bingbot"),
        pytest.param("Pinterest/0.2 (+https://www.pinterest.com/bot.html)", True, id="pinterest-crawler"),
        pytest.param("facebookexternalhit/1.1", True, id="facebook-preview"),
        pytest.param("Scrapy/2.11 (+https://scrapy.org)", True, id="scrapy"),
        pytest.param(
            "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120.0 headless-shell", True, id="headless"
        ),
        pytest.param(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
            False,
            id="chrome",
        ),
        pytest.param(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
            "Version/17.5 Safari/604.1",
            False,
            id="safari-ios",
        ),
        pytest.param(
            "Mozilla/5.0 (Linux; Android 9; CUBOT P30 Build/PPR1.180610.011) AppleWebKit/537.36 "
            "Chrome/120.0 Mobile Safari/537.36",
            False,
            id="cubot-phone-is-a-person",
        ),
        pytest.param(
            "Mozilla/5.0 (Linux; Android 12; Pinterest for Android/12.1) AppleWebKit/537.36 Chrome/120.0",
            False,
            id="pinterest-app-in-app-browser",
        ),
        pytest.param("", False, id="empty"),
        pytest.param(None, False, id="absent"),
    ],
)
def test_is_bot(user_agent: str | None, bot: bool) -> None:
    assert is_bot(user_agent) is bot


@pytest.mark.parametrize(
    ("values", "hops", "expected"),
    [
        pytest.param(["https"], 2, "https", id="set-once-by-the-outer-proxy"),
        pytest.param(["http, https"], 2, "http", id="two-entries-two-hops"),
        pytest.param(["evil, http, https"], 2, "http", id="a-client-entry-beyond-the-trusted-hops"),
        pytest.param([""], 2, None, id="absent"),
    ],
)
def test_headers_set_once_by_a_proxy_are_read_within_the_trusted_hops(
    values: list[str], hops: int, expected: str | None
) -> None:
    assert forwarded_value(values, hops, set_by_one=True) == expected
