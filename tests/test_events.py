"""parse_event(): every rule of the event schema (CONTRACT.md §5), and merge_payloads().

Expected digests are recomputed here with hashlib from the normalized strings the contract's table
gives, never copied from the code under test.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any
from urllib.parse import quote

import pytest

from tracklayer_mw.events import (
    EVENT_ID_RE,
    EVENT_NAMES,
    MAX_AGE_SECONDS,
    MAX_FUTURE_SECONDS,
    Event,
    EventError,
    event_id_for_order,
    merge_payloads,
    parse_event,
)

NOW = 1_764_322_000.0  # a fixed "now": 2025-11-28
DAY = 24 * 3600


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse(raw: Any, *, now: float = NOW, source: str = "server", **kwargs: Any) -> Event:
    return parse_event(raw, now=now, source=source, **kwargs)  # type: ignore[arg-type]


def error_of(raw: Any, **kwargs: Any) -> EventError:
    with pytest.raises(EventError) as caught:
        parse(raw, **kwargs)
    return caught.value


# --- event names ---------------------------------------------------------------------------------

CONTRACT_NAMES = [
    ("PageVisit", "page_visit", "pagevisit"),
    ("ViewCategory", "view_category", "viewcategory"),
    ("Search", "search", "search"),
    ("AddToCart", "add_to_cart", "addtocart"),
    ("AddToWishlist", "add_to_wishlist", "addtowishlist"),
    ("AddPaymentInfo", "add_payment_info", "addpaymentinfo"),
    ("Checkout", "initiate_checkout", "initiatecheckout"),
    ("Purchase", "checkout", "checkout"),
    ("Lead", "lead", "lead"),
    ("Signup", "signup", "signup"),
    ("WatchVideo", "watch_video", "watchvideo"),
    ("ViewContent", "view_content", "viewcontent"),
    ("Subscribe", "subscribe", "subscribe"),
    ("Custom", "custom", "custom"),
]


def test_event_names_table_is_exactly_the_contracts() -> None:
    assert {name: (api, tag) for name, api, tag in CONTRACT_NAMES} == EVENT_NAMES


@pytest.mark.parametrize(("name", "api", "tag"), CONTRACT_NAMES, ids=[row[0] for row in CONTRACT_NAMES])
def test_every_contract_event_name_parses(name: str, api: str, tag: str) -> None:
    assert parse({"event": name}).event == name


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("purchase", id="wrong-case"),
        pytest.param("checkout", id="pinterest-api-name"),
        pytest.param("AddToWishList", id="tag-docs-spelling"),
        pytest.param("", id="empty"),
        pytest.param(None, id="null"),
        pytest.param(7, id="number"),
        pytest.param(["Lead"], id="list"),
    ],
)
def test_unknown_event_name_is_rejected_with_the_list_of_names(name: object) -> None:
    error = error_of({"event": name})
    assert error.path == "event"
    for known in EVENT_NAMES:
        assert known in str(error)


def test_missing_event_name_is_rejected() -> None:
    assert error_of({"event_id": "abc"}).path == "event"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param([{"event": "Lead"}], id="list"),
        pytest.param("Lead", id="string"),
        pytest.param(None, id="null"),
        pytest.param(42, id="number"),
    ],
)
def test_an_event_that_is_not_an_object_is_rejected(raw: object) -> None:
    assert error_of(raw).path == "event"


def test_event_error_is_a_value_error_carrying_the_path() -> None:
    error = error_of({"event": "Lead", "custom": {"num_items": -1}})
    assert isinstance(error, ValueError)
    assert str(error).startswith("custom.num_items: ")


# --- unknown fields ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        pytest.param({"event": "Lead", "colour": "red"}, "colour", id="top-level"),
        pytest.param({"event": "Lead", "zeta": 1, "alpha": 2}, "alpha", id="top-level-first-sorted"),
        pytest.param({"event": "Lead", "event_name": "lead"}, "event_name", id="pinterest-key-at-top"),
        pytest.param({"event": "Lead", "custom": {"colour": "red"}}, "custom.colour", id="custom"),
        pytest.param(
            {"event": "Lead", "custom": {"predicted_ltv": "1"}}, "custom.predicted_ltv", id="custom-spec-only"
        ),
        pytest.param(
            {"event": "Lead", "custom": {"contents": [{"id": "a"}, {"id": "b", "size": "L"}]}},
            "custom.contents[1].size",
            id="contents-item",
        ),
        pytest.param({"event": "Lead", "user": {"mail": "a@b.c"}}, "user.mail", id="user"),
        pytest.param({"event": "Lead", "user": {"em": ["x"]}}, "user.em", id="user-pinterest-key"),
    ],
)
def test_unknown_fields_are_rejected_with_their_path(raw: dict[str, Any], path: str) -> None:
    error = error_of(raw)
    assert error.path == path
    assert "unknown field" in str(error)


# --- event_id ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_id",
    [
        pytest.param("a", id="one-char"),
        pytest.param("x" * 128, id="128-chars"),
        pytest.param("Purchase:A-1001", id="order-style"),
        pytest.param("AZaz09._~:%-", id="every-allowed-symbol"),
        pytest.param(str(uuid.uuid4()), id="uuid"),
    ],
)
def test_valid_event_ids_are_kept_as_given(event_id: str) -> None:
    assert parse({"event": "Lead", "event_id": event_id}).event_id == event_id


@pytest.mark.parametrize(
    "event_id",
    [
        pytest.param("x" * 129, id="129-chars"),
        pytest.param("has space", id="space"),
        pytest.param("a/b", id="slash"),
        pytest.param("a+b", id="plus"),
        pytest.param("café", id="non-ascii"),
        pytest.param("abc\n", id="trailing-newline"),
        pytest.param("\nabc", id="leading-newline"),
        pytest.param("a\x00b", id="nul"),
        pytest.param(12345, id="number"),
        pytest.param(["a"], id="list"),
        pytest.param(True, id="bool"),
    ],
)
def test_invalid_event_ids_are_rejected(event_id: object) -> None:
    assert error_of({"event": "Lead", "event_id": event_id}).path == "event_id"


@pytest.mark.parametrize("given", [pytest.param(None, id="null"), pytest.param("", id="empty")])
def test_missing_event_id_without_order_id_is_a_fresh_uuid_each_time(given: object) -> None:
    raw = {"event": "Lead", "event_id": given}
    first, second = parse(raw).event_id, parse(raw).event_id
    assert uuid.UUID(first).version == 4
    assert first != second


def test_absent_event_id_is_minted() -> None:
    assert uuid.UUID(parse({"event": "PageVisit"}).event_id).version == 4


# --- order_id -> event_id ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order_id", "expected"),
    [
        pytest.param("A-1001", "Purchase:A-1001", id="contract-example"),
        pytest.param(1001, "Purchase:1001", id="integer-order-id"),
        pytest.param("  A-1001  ", "Purchase:A-1001", id="trimmed"),
        pytest.param("a.b_c~d-e", "Purchase:a.b_c~d-e", id="unreserved-kept"),
        pytest.param("a b/c", "Purchase:a%20b%2Fc", id="space-and-slash"),
        pytest.param("#1:2%", "Purchase:%231%3A2%25", id="colon-and-percent-encoded"),
        pytest.param("Bestellung-ü", "Purchase:Bestellung-%C3%BC", id="latin-utf8-bytes"),
        pytest.param("注文42", "Purchase:%E6%B3%A8%E6%96%8742", id="cjk"),
        pytest.param("🛒", "Purchase:%F0%9F%9B%92", id="emoji-four-bytes"),
    ],
)
def test_order_id_becomes_event_name_colon_percent_encoded_order_id(order_id: object, expected: str) -> None:
    event = parse({"event": "Purchase", "custom": {"order_id": order_id}})
    assert event.event_id == expected
    assert EVENT_ID_RE.match(event.event_id)
    assert event.custom["order_id"] == str(order_id).strip()  # the order id itself is sent unencoded


def test_order_id_encoding_is_pythons_quote_with_nothing_safe() -> None:
    for order_id in ["A-1001", "x y", "ä/ö", "~._-", "a+b=c&d", "\u00a0", "𝔘"]:
        assert event_id_for_order("Purchase", order_id) == f"Purchase:{quote(order_id, safe='')}"


def test_order_id_rule_uses_the_tracklayer_event_name() -> None:
    assert parse({"event": "AddToCart", "custom": {"order_id": "7"}}).event_id == "AddToCart:7"
    assert parse({"event": "Checkout", "custom": {"order_id": "7"}}).event_id == "Checkout:7"


def test_empty_event_id_with_order_id_uses_the_order_rule() -> None:
    assert (
        parse({"event": "Purchase", "event_id": "", "custom": {"order_id": "A-1"}}).event_id == "Purchase:A-1"
    )


def test_explicit_event_id_wins_over_order_id() -> None:
    raw = {"event": "Purchase", "event_id": "mine-1", "custom": {"order_id": "A-1001"}}
    assert parse(raw).event_id == "mine-1"


def test_order_id_of_100_encoded_characters_is_accepted() -> None:
    order_id = "x" * 100
    assert parse({"event": "AddPaymentInfo", "custom": {"order_id": order_id}}).event_id == (
        f"AddPaymentInfo:{order_id}"
    )


def test_order_id_longer_than_100_characters_is_rejected() -> None:
    error = error_of({"event": "Purchase", "custom": {"order_id": "x" * 101}})
    assert error.path == "custom.order_id"
    assert "event_id" in str(error)  # tells the developer what to do instead


def test_unicode_order_id_counts_its_encoded_length() -> None:
    # 17 characters, but 17 * 6 = 102 once each UTF-8 byte is written %XX.
    assert error_of({"event": "Purchase", "custom": {"order_id": "é" * 17}}).path == "custom.order_id"
    # 16 characters -> 96 encoded: fine.
    assert (
        parse({"event": "Purchase", "custom": {"order_id": "é" * 16}}).event_id == "Purchase:" + "%C3%A9" * 16
    )


def test_long_order_id_is_fine_when_an_event_id_is_given() -> None:
    raw = {"event": "Purchase", "event_id": "p-1", "custom": {"order_id": "x" * 300}}
    assert parse(raw).custom["order_id"] == "x" * 300


def test_event_id_for_order_raises_event_error_naming_custom_order_id() -> None:
    with pytest.raises(EventError) as caught:
        event_id_for_order("Purchase", "/" * 34)  # 34 * 3 = 102
    assert caught.value.path == "custom.order_id"


# --- event_time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(None, int(NOW), id="absent-means-now"),
        pytest.param(int(NOW) - 60, int(NOW) - 60, id="seconds"),
        pytest.param(NOW - 60.9, int(NOW - 60.9), id="fractional-seconds-truncated"),
        pytest.param(int(NOW * 1000) - 60_000, int(NOW) - 60, id="milliseconds"),
        pytest.param(NOW * 1000 - 60_000.5, int(NOW - 60.0005), id="fractional-milliseconds"),
        pytest.param(int(NOW) - MAX_AGE_SECONDS, int(NOW) - MAX_AGE_SECONDS, id="exactly-7-days-old"),
        pytest.param(
            int(NOW) + MAX_FUTURE_SECONDS, int(NOW) + MAX_FUTURE_SECONDS, id="exactly-5-minutes-ahead"
        ),
        pytest.param(
            (int(NOW) - MAX_AGE_SECONDS) * 1000, int(NOW) - MAX_AGE_SECONDS, id="7-days-old-in-milliseconds"
        ),
        pytest.param(
            (int(NOW) + MAX_FUTURE_SECONDS) * 1000, int(NOW) + MAX_FUTURE_SECONDS, id="5-minutes-ahead-in-ms"
        ),
    ],
)
def test_event_time_is_unix_seconds(given: object, expected: int) -> None:
    event = parse({"event": "Lead", "event_time": given})
    assert event.event_time == expected
    assert type(event.event_time) is int


@pytest.mark.parametrize(
    ("given", "words"),
    [
        pytest.param(int(NOW) - MAX_AGE_SECONDS - 1, "7 days", id="7-days-and-a-second-old"),
        pytest.param((int(NOW) - MAX_AGE_SECONDS - 1) * 1000, "7 days", id="too-old-in-milliseconds"),
        pytest.param(0, "7 days", id="epoch"),
        pytest.param(-5, "7 days", id="negative"),
        pytest.param(int(NOW) + MAX_FUTURE_SECONDS + 1, "future", id="5-minutes-and-a-second-ahead"),
        pytest.param(
            (int(NOW) + MAX_FUTURE_SECONDS + 1) * 1000, "future", id="too-far-ahead-in-milliseconds"
        ),
        pytest.param(int(NOW) * 1_000_000, "future", id="microseconds"),
        pytest.param(10**400, "Unix time", id="huge-json-integer"),
        pytest.param(-(10**400), "Unix time", id="huge-negative-json-integer"),
        pytest.param(float("nan"), "Unix time", id="nan"),
        pytest.param(float("inf"), "Unix time", id="infinity"),
        pytest.param(str(int(NOW)), "Unix time", id="string"),
        pytest.param(True, "Unix time", id="bool"),
        pytest.param([int(NOW)], "Unix time", id="list"),
    ],
)
def test_bad_event_time_is_rejected(given: object, words: str) -> None:
    error = error_of({"event": "Lead", "event_time": given})
    assert error.path == "event_time"
    assert words in str(error)


def test_event_time_limits_are_measured_from_the_given_now() -> None:
    raw = {"event": "Lead", "event_time": int(NOW)}
    assert parse(raw, now=int(NOW) + 7 * DAY).event_time == int(NOW)
    assert error_of(raw, now=int(NOW) + 7 * DAY + 1).path == "event_time"


# --- url -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.example/p/sku-1",
        "http://localhost:8000/cart?x=1#top",
        "https://[2001:db8::1]/checkout",
        "https://xn--bcher-kva.example/",
        "https://shop.example/" + "a" * 2000,
    ],
)
def test_absolute_http_urls_are_kept(url: str) -> None:
    assert parse({"event": "PageVisit", "url": url}).url == url


@pytest.mark.parametrize("url", [pytest.param(None, id="null"), pytest.param("", id="empty")])
def test_missing_url_is_none(url: object) -> None:
    assert parse({"event": "PageVisit", "url": url}).url is None


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("/p/sku-1", id="relative"),
        pytest.param("shop.example/p", id="no-scheme"),
        pytest.param("ftp://shop.example/file", id="ftp"),
        pytest.param("javascript:alert(1)", id="javascript"),
        pytest.param("https://", id="no-host"),
        pytest.param("https://shop.example/a b", id="space"),
        pytest.param("https://shop.example/\r\nSet-Cookie: x", id="crlf"),
        pytest.param("https://shop.example/" + "a" * 2100, id="over-2048"),
        pytest.param("http://[::1/x", id="unbalanced-ipv6-bracket"),
        pytest.param(42, id="number"),
        pytest.param(["https://shop.example/"], id="list"),
    ],
)
def test_bad_url_is_rejected(url: object) -> None:
    assert error_of({"event": "PageVisit", "url": url}).path == "url"


# --- custom --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(49.99, "49.99", id="float"),
        pytest.param(12, "12", id="int"),
        pytest.param(0, "0", id="zero"),
        pytest.param("12.50", "12.5", id="string-trailing-zero"),
        pytest.param(" 7 ", "7", id="string-with-spaces"),
        pytest.param(100.0, "100", id="no-exponent-for-round-hundreds"),
        pytest.param(1.5e3, "1500", id="float-exponent-form"),
        pytest.param("2E+2", "200", id="string-exponent-form"),
        pytest.param(1e-7, "0.0000001", id="tiny-float-not-exponent"),
        pytest.param(0.1 + 0.2, "0.3", id="binary-float-noise-rounded"),
        pytest.param("1e-999999", "0", id="huge-negative-exponent-no-blowup"),
        pytest.param(999_999_999_999.99, "999999999999.99", id="just-below-10-to-12"),
        pytest.param(-5.25, "-5.25", id="negative"),
    ],
)
def test_money_is_a_plain_decimal_string(value: object, expected: str) -> None:
    event = parse({"event": "Purchase", "custom": {"value": value, "contents": [{"item_price": value}]}})
    assert event.custom["value"] == expected
    assert event.custom["contents"][0]["item_price"] == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("abc", id="text"),
        pytest.param("", id="empty"),
        pytest.param("NaN", id="nan-string"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="infinity"),
        pytest.param("-Infinity", id="negative-infinity-string"),
        pytest.param(10**12, id="10-to-12"),
        pytest.param("1e400", id="huge-exponent"),
        pytest.param(True, id="bool"),
        pytest.param([1], id="list"),
        pytest.param({"amount": 1}, id="object"),
    ],
)
def test_bad_money_is_rejected_with_its_path(value: object) -> None:
    assert error_of({"event": "Purchase", "custom": {"value": value}}).path == "custom.value"
    raw = {"event": "Purchase", "custom": {"contents": [{"id": "a"}, {"item_price": value}]}}
    assert error_of(raw).path == "custom.contents[1].item_price"


def test_money_parsing_stays_fast_for_hostile_exponents() -> None:
    started = time.perf_counter()
    for text in ("1e-999999", "-1e-999999", "9.99e-999990", "1e-999999999"):
        assert parse({"event": "Purchase", "custom": {"value": text}}).custom["value"] in ("0", "-0")
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("currency", "expected"),
    [pytest.param("USD", "USD", id="upper"), pytest.param(" eur ", "EUR", id="lower-with-spaces")],
)
def test_currency_is_upper_case_iso_4217(currency: str, expected: str) -> None:
    assert parse({"event": "Purchase", "custom": {"currency": currency}}).custom["currency"] == expected


@pytest.mark.parametrize("currency", ["US", "USDX", "U$D", "", 840, "US D"])
def test_bad_currency_is_rejected(currency: object) -> None:
    assert error_of({"event": "Purchase", "custom": {"currency": currency}}).path == "custom.currency"


@pytest.mark.parametrize("count", [0, 1, 1_000_000])
def test_num_items_and_quantity_take_whole_numbers(count: int) -> None:
    event = parse({"event": "AddToCart", "custom": {"num_items": count, "contents": [{"quantity": count}]}})
    assert event.custom["num_items"] == count
    assert event.custom["contents"][0]["quantity"] == count


@pytest.mark.parametrize(
    "count",
    [
        pytest.param(-1, id="negative"),
        pytest.param(1_000_001, id="over-a-million"),
        pytest.param(1.5, id="fraction"),
        pytest.param(2.0, id="float-two"),
        pytest.param("3", id="string"),
        pytest.param(True, id="bool"),
    ],
)
def test_bad_counts_are_rejected_with_their_path(count: object) -> None:
    assert error_of({"event": "AddToCart", "custom": {"num_items": count}}).path == "custom.num_items"
    raw = {"event": "AddToCart", "custom": {"contents": [{"quantity": count}]}}
    assert error_of(raw).path == "custom.contents[0].quantity"


@pytest.mark.parametrize(
    "key", ["order_id", "search_string", "content_name", "content_category", "content_brand"]
)
def test_text_fields_are_trimmed_strings_of_at_most_500_characters(key: str) -> None:
    value = "x" * 500 if key != "order_id" else "x" * 90
    assert parse({"event": "Search", "event_id": "s1", "custom": {key: f"  {value} "}}).custom[key] == value
    for bad in ("", "   ", "x" * 501, True, 1.5, ["x"], {"x": 1}):
        assert error_of({"event": "Search", "event_id": "s1", "custom": {key: bad}}).path == f"custom.{key}"


def test_content_ids_are_a_list_of_strings() -> None:
    event = parse({"event": "ViewContent", "custom": {"content_ids": ["sku-1", 42, " sku-3 "]}})
    assert event.custom["content_ids"] == ["sku-1", "42", "sku-3"]


@pytest.mark.parametrize(
    ("content_ids", "path"),
    [
        pytest.param("sku-1", "custom.content_ids", id="string-not-list"),
        pytest.param(["x"] * 101, "custom.content_ids", id="over-100"),
        pytest.param(["a", ""], "custom.content_ids[1]", id="empty-item"),
        pytest.param(["a", None], "custom.content_ids[1]", id="null-item"),
        pytest.param([{"id": "a"}], "custom.content_ids[0]", id="object-item"),
    ],
)
def test_bad_content_ids_are_rejected_with_the_item_path(content_ids: object, path: str) -> None:
    assert error_of({"event": "ViewContent", "custom": {"content_ids": content_ids}}).path == path


def test_contents_keep_every_known_field() -> None:
    item = {
        "id": "sku-1",
        "quantity": 2,
        "item_price": 24.995,
        "item_name": " Shirt ",
        "item_category": "shirts",
        "item_brand": "ACME",
    }
    event = parse({"event": "AddToCart", "custom": {"contents": [item, {}]}})
    assert event.custom["contents"] == [
        {
            "id": "sku-1",
            "quantity": 2,
            "item_price": "24.995",
            "item_name": "Shirt",
            "item_category": "shirts",
            "item_brand": "ACME",
        },
        {},
    ]


@pytest.mark.parametrize(
    ("contents", "path"),
    [
        pytest.param({"id": "a"}, "custom.contents", id="object-not-list"),
        pytest.param([{}] * 101, "custom.contents", id="over-100"),
        pytest.param([{"id": "a"}, "sku-2"], "custom.contents[1]", id="string-item"),
        pytest.param([{"id": ""}], "custom.contents[0].id", id="empty-id"),
        pytest.param([{"item_name": "x" * 501}], "custom.contents[0].item_name", id="long-name"),
    ],
)
def test_bad_contents_are_rejected_with_the_item_path(contents: object, path: str) -> None:
    assert error_of({"event": "AddToCart", "custom": {"contents": contents}}).path == path


def test_null_custom_values_are_dropped() -> None:
    assert (
        parse({"event": "Lead", "custom": {"value": None, "currency": None, "order_id": None}}).custom == {}
    )


@pytest.mark.parametrize("custom", [pytest.param([], id="list"), pytest.param("x", id="string")])
def test_custom_must_be_an_object(custom: object) -> None:
    assert error_of({"event": "Lead", "custom": custom}).path == "custom"


# --- user data -----------------------------------------------------------------------------------

RAW_USER = {
    "email": " Ann@Example.COM ",
    "phone": "+1 (650) 555-1234",
    "first_name": " José ",
    "last_name": "Müller",
    "gender": "Female",
    "date_of_birth": "1990-07-04",
    "city": "Menlo Park",
    "state": "California",
    "zip": "94025-1234",
    "country": "United States",
    "external_id": " cust-42 ",
}
NORMALIZED = {
    "email": "ann@example.com",
    "phone": "16505551234",
    "first_name": "josé",
    "last_name": "müller",
    "gender": "f",
    "date_of_birth": "19900704",
    "city": "menlopark",
    "state": "ca",
    "zip": "94025",
    "country": "us",
    "external_id": "cust-42",
}


def test_user_data_is_normalized_and_hashed_at_parse_time() -> None:
    event = parse({"event": "Purchase", "user": RAW_USER})
    assert event.user == {field: [_sha(value)] for field, value in NORMALIZED.items()}


def test_no_raw_or_normalized_personal_data_survives_in_the_payload() -> None:
    event = parse({"event": "Purchase", "user": RAW_USER, "custom": {"order_id": "A-1"}})
    stored = json.dumps(event.to_payload(), ensure_ascii=False)
    for text in [*RAW_USER.values(), *NORMALIZED.values(), "Ann@Example", "650", "555-1234", "Menlo"]:
        if text.strip() in ("f", "ca", "us"):
            continue  # too short to mean anything inside hex digests and field names
        assert text.strip() not in stored, text
    for values in event.to_payload()["user"].values():
        assert all(len(value) == 64 and int(value, 16) >= 0 for value in values)


def test_user_fields_take_lists_and_drop_duplicates_after_normalizing() -> None:
    event = parse({"event": "Lead", "user": {"email": ["a@x.io", " A@X.IO", "b@x.io", None, ""]}})
    assert event.user == {"email": [_sha("a@x.io"), _sha("b@x.io")]}


def test_prehashed_values_pass_through_lower_cased() -> None:
    digest = _sha("ann@example.com")
    event = parse({"event": "Lead", "user": {"email": digest.upper()}})
    assert event.user == {"email": [digest]}


def test_default_phone_country_supplies_a_missing_calling_code() -> None:
    event = parse({"event": "Lead", "user": {"phone": "(650) 555-1234"}}, default_phone_country="US")
    assert event.user == {"phone": [_sha("16505551234")]}


@pytest.mark.parametrize(
    ("user", "path"),
    [
        pytest.param({"email": "ann-at-example.com"}, "user.email", id="bad-email"),
        pytest.param({"email": ["a@x.io", "nope"]}, "user.email[1]", id="bad-email-in-list"),
        pytest.param({"phone": "call me"}, "user.phone", id="phone-without-digits"),
        pytest.param({"gender": "sometimes"}, "user.gender", id="bad-gender"),
        pytest.param({"email": 42}, "user.email", id="number"),
    ],
)
def test_bad_user_values_are_rejected_without_echoing_the_value(user: dict[str, Any], path: str) -> None:
    error = error_of({"event": "Lead", "user": user})
    assert error.path == path
    for value in user.values():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                assert text not in str(error)


def test_user_must_be_an_object() -> None:
    assert error_of({"event": "Lead", "user": ["ann@example.com"]}).path == "user"


# --- the rest of the Event -----------------------------------------------------------------------


def test_pixel_flag_and_source_are_recorded() -> None:
    assert parse({"event": "Lead", "pixel": True}, source="browser").pixel is True
    assert parse({"event": "Lead"}, source="browser").source == "browser"
    assert parse({"event": "Lead"}).pixel is False
    assert error_of({"event": "Lead", "pixel": "yes"}).path == "pixel"


def test_payload_round_trips_through_json() -> None:
    event = parse(
        {
            "event": "Purchase",
            "url": "https://shop.example/thanks",
            "user": {"email": "ann@example.com"},
            "custom": {"value": 49.99, "currency": "USD", "order_id": "A-1001", "contents": [{"id": "a"}]},
        }
    ).with_context(click_id="dj0yJnU9", client_ip="203.0.113.9", user_agent="Mozilla/5.0", opt_out=True)
    again = Event.from_payload(json.loads(json.dumps(event.to_payload())))
    assert again == event


def test_from_payload_ignores_keys_it_does_not_know() -> None:
    payload = {**Event(event="Lead", event_id="e1", event_time=1).to_payload(), "added_in_a_later_version": 1}
    assert Event.from_payload(payload) == Event(event="Lead", event_id="e1", event_time=1)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({}, False, id="nothing"),
        pytest.param({"user": {"phone": ["x" * 64]}}, False, id="phone-only"),
        pytest.param({"client_ip": "203.0.113.9"}, False, id="ip-without-user-agent"),
        pytest.param({"user_agent": "Mozilla/5.0"}, False, id="user-agent-without-ip"),
        pytest.param({"client_ip": "203.0.113.9", "user_agent": "Mozilla/5.0"}, True, id="ip-and-user-agent"),
        pytest.param({"user": {"email": ["x" * 64]}}, True, id="email"),
    ],
)
def test_has_match_keys_mirrors_pinterests_user_data_rule(changes: dict[str, Any], expected: bool) -> None:
    assert Event(event="Lead", event_id="e1", event_time=1).with_context(**changes).has_match_keys is expected


# --- merge_payloads ------------------------------------------------------------------------------


def _browser() -> dict[str, Any]:
    return (
        parse(
            {
                "event": "Purchase",
                "event_time": int(NOW) - 5,
                "url": "https://shop.example/thanks",
                "custom": {"order_id": "A-1001", "value": "49.99"},
                "pixel": True,
            },
            source="browser",
        )
        .with_context(click_id="dj0yJnU9", client_ip="203.0.113.9", user_agent="Mozilla/5.0 (browser)")
        .to_payload()
    )


def _server() -> dict[str, Any]:
    return (
        parse(
            {
                "event": "Purchase",
                "event_time": int(NOW),
                "user": {"email": "ann@example.com", "phone": "+16505551234"},
                "custom": {"order_id": "A-1001", "value": 49.99, "currency": "USD", "num_items": 2},
            }
        )
        .with_context(client_ip="203.0.113.9", user_agent="python-requests")
        .to_payload()
    )


def test_merge_of_browser_and_server_reports_keeps_every_signal_once() -> None:
    browser, server = _browser(), _server()
    merged = Event.from_payload(merge_payloads(browser, server))
    assert merged.event_id == "Purchase:A-1001"
    assert merged.click_id == "dj0yJnU9"  # from the browser
    # from the server:
    assert merged.user == {"email": [_sha("ann@example.com")], "phone": [_sha("16505551234")]}
    assert merged.pixel is True
    assert merged.source == "browser+server"
    assert merged.url == "https://shop.example/thanks"
    assert merged.event_time == int(NOW) - 5  # the first report's time
    assert merged.user_agent == "Mozilla/5.0 (browser)"  # the first non-empty value stays
    assert merged.custom == {"order_id": "A-1001", "value": "49.99", "currency": "USD", "num_items": 2}


def test_merge_in_the_other_order_keeps_the_same_signals() -> None:
    merged = Event.from_payload(merge_payloads(_server(), _browser()))
    assert merged.click_id == "dj0yJnU9"
    assert merged.user["email"] == [_sha("ann@example.com")]
    assert merged.pixel is True
    assert merged.source == "browser+server"
    assert merged.url == "https://shop.example/thanks"


def test_merge_unions_user_values_without_duplicates() -> None:
    old = {"user": {"email": ["a", "b"]}}
    new = {"user": {"email": ["b", "c"], "phone": ["p"]}}
    assert merge_payloads(old, new)["user"] == {"email": ["a", "b", "c"], "phone": ["p"]}


def test_merge_is_idempotent_and_leaves_its_inputs_alone() -> None:
    browser, server = _browser(), _server()
    before = json.dumps([browser, server], sort_keys=True)
    once = merge_payloads(browser, server)
    assert json.dumps([browser, server], sort_keys=True) == before
    assert merge_payloads(once, server) == once
    assert merge_payloads(once, browser) == once


def test_merge_opt_out_is_sticky() -> None:
    assert merge_payloads({"opt_out": True}, {"opt_out": False})["opt_out"] is True
    assert merge_payloads({"opt_out": False}, {"opt_out": True})["opt_out"] is True


def test_merged_payload_is_still_valid_json_for_the_outbox() -> None:
    merged = merge_payloads(_browser(), _server())
    assert json.loads(json.dumps(merged, allow_nan=False)) == merged
