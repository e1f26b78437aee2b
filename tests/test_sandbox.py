"""The Pinterest sandbox (tracklayer_mw.sandbox): schema, auth, per-event rules, dedup, faults, front ends.

Everything runs on a fake clock and in-process transports, except one test that drives a real
uvicorn server for what only a socket shows (a dropped connection, a held answer).
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.pinterest_schema import errors_of, validate_request_body, validate_response_body
from tracklayer_mw.sandbox import (
    AnswerTimedOut,
    ConnectionDropped,
    Fault,
    PinterestSandbox,
    ReceivedEvent,
)
from tracklayer_mw.sandbox import schema as mini
from tracklayer_mw.sandbox.app import build_server
from tracklayer_mw.sandbox.diagnostics import summarize

NOW = 1_764_322_000
TOKEN = "sandbox-token"
ACCOUNT = "549755885175"
EVENTS = f"/ad_accounts/{ACCOUNT}/events"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOUR = 3600
DAY = 24 * HOUR
SHARED = Path(__file__).resolve().parents[2] / "shared" / "pinterest"
PACKAGE = Path(__file__).resolve().parents[1] / "tracklayer_mw" / "sandbox"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": NOW - 60,
        "event_id": "order-1",
        "event_source_url": "https://shop.example/thanks",
        "user_data": {
            "em": [sha("ann@example.com")],
            "client_ip_address": "203.0.113.7",
            "client_user_agent": "Mozilla/5.0",
            "click_id": "dj0yJnU9b2JDcFFH",
        },
        "custom_data": {"currency": "USD", "value": "49.99", "order_id": "A-1001"},
    }
    event.update(overrides)
    return event


def body_of(*events: dict[str, Any]) -> dict[str, Any]:
    return {"data": list(events) or [make_event()]}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox(clock: FakeClock) -> PinterestSandbox:
    return PinterestSandbox(clock=clock)


@pytest.fixture
def client(sandbox: PinterestSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(
        transport=sandbox.transport(), base_url="https://api.pinterest.com/v5", headers=AUTH, timeout=2.0
    ) as http:
        yield http


def post(client: httpx.Client, body: Any, **kwargs: Any) -> httpx.Response:
    response = client.post(EVENTS, json=body, **kwargs)
    if response.headers.get("content-type") == "application/json":
        validate_response_body(response.status_code, response.json())
    return response


# -- the schema file ------------------------------------------------------------------------------


def test_packaged_schema_is_byte_identical_to_the_shared_extract() -> None:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present (e.g. on CI)")
    assert (PACKAGE / "conversions-v5.openapi.json").read_bytes() == (
        SHARED / "conversions-v5.openapi.json"
    ).read_bytes()
    assert (PACKAGE / "SCHEMA_SOURCE.md").read_bytes() == (SHARED / "SOURCE.md").read_bytes()


def test_packaged_schema_loads_through_importlib_resources() -> None:
    document = mini.load_document()
    assert document["info"]["version"] == "5.23.0"
    assert "ConversionEvents" in document["components"]["schemas"]


# -- valid bodies ---------------------------------------------------------------------------------


def test_valid_body_is_processed(client: httpx.Client, sandbox: PinterestSandbox) -> None:
    second = make_event(event_name="page_visit", event_id="pv-1", custom_data=None)
    del second["custom_data"]
    response = post(client, body_of(make_event(), second))
    assert response.status_code == 200
    assert response.json() == {
        "num_events_received": 2,
        "num_events_processed": 2,
        "events": [
            {"status": "processed", "error_message": "", "warning_message": ""},
            {"status": "processed", "error_message": "", "warning_message": ""},
        ],
    }
    records = sandbox.received
    assert [(r.event_name, r.status, r.test, r.duplicate) for r in records] == [
        ("checkout", "processed", False, False),
        ("page_visit", "processed", False, False),
    ]
    assert records[0].time == NOW
    assert records[0].event == make_event()
    assert sandbox.requests == {200: 1}


def test_the_api_base_may_omit_v5_and_account_ids_are_configurable(clock: FakeClock) -> None:
    sandbox = PinterestSandbox("other-token", ["1", "22"], clock=clock)
    status, headers, body = sandbox.handle(
        "POST",
        "/ad_accounts/22/events",
        "",
        {"authorization": "Bearer other-token"},
        json.dumps(body_of()).encode(),
    )
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["num_events_processed"] == 1


# -- schema violations ----------------------------------------------------------------------------


def _mutate(change: Callable[[dict[str, Any]], Any]) -> Callable[[], Any]:
    def build() -> Any:
        body = body_of()
        result = change(body)
        return body if result is None else result

    return build


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        node: Any = body
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return change


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        node: Any = body
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return change


# (id, body builder, a path the 400 message must name). One per kind of schema violation.
INVALID_BODIES: list[tuple[str, Callable[[], Any], str]] = [
    ("body-not-object", lambda: [make_event()], "body"),
    ("data-missing", lambda: {}, "body"),
    ("data-not-array", lambda: {"data": make_event()}, "data"),
    ("data-empty-minItems", lambda: {"data": []}, "data"),
    ("data-1001-maxItems", lambda: {"data": [make_event(event_id=str(i)) for i in range(1001)]}, "data"),
    ("root-additional-property", _mutate(_set("test", True)), "body"),
    ("event-additional-property", _mutate(_set("data.0.advertiser_tracking_enabled", True)), "data[0]"),
    ("event-required-event-id", _mutate(_delete("data.0.event_id")), "data[0]"),
    ("event-required-user-data", _mutate(_delete("data.0.user_data")), "data[0]"),
    ("event-id-not-nullable", _mutate(_set("data.0.event_id", None)), "data[0].event_id"),
    ("event-time-string", _mutate(_set("data.0.event_time", "1764322000")), "data[0].event_time"),
    ("event-time-float", _mutate(_set("data.0.event_time", float(NOW))), "data[0].event_time"),
    ("event-time-boolean", _mutate(_set("data.0.event_time", True)), "data[0].event_time"),
    ("event-time-over-int64", _mutate(_set("data.0.event_time", 2**63)), "data[0].event_time"),
    ("opt-out-string", _mutate(_set("data.0.opt_out", "false")), "data[0].opt_out"),
    ("user-data-not-object", _mutate(_set("data.0.user_data", [])), "data[0].user_data"),
    (
        "user-data-no-identifier-anyOf",
        _mutate(_set("data.0.user_data", {"ph": [sha("1")]})),
        "data[0].user_data",
    ),
    (
        "user-data-ip-without-ua-anyOf",
        _mutate(_set("data.0.user_data", {"client_ip_address": "203.0.113.7"})),
        "data[0].user_data",
    ),
    ("em-not-array", _mutate(_set("data.0.user_data.em", sha("a"))), "data[0].user_data"),
    ("em-item-not-string", _mutate(_set("data.0.user_data.em", [1])), "data[0].user_data"),
    ("click-id-integer", _mutate(_set("data.0.user_data.click_id", 5)), "data[0].user_data"),
    ("custom-data-additional", _mutate(_set("data.0.custom_data.category_name", "x")), "data[0].custom_data"),
    (
        "value-number-not-string",
        _mutate(_set("data.0.custom_data.value", 49.99)),
        "data[0].custom_data.value",
    ),
    (
        "contents-item-additional",
        _mutate(_set("data.0.custom_data.contents", [{"id": "sku-1", "price": "1"}])),
        "data[0].custom_data.contents[0]",
    ),
    (
        "contents-quantity-string",
        _mutate(_set("data.0.custom_data.contents", [{"id": "sku-1", "quantity": "2"}])),
        "data[0].custom_data.contents[0].quantity",
    ),
    (
        "content-ids-not-strings",
        _mutate(_set("data.0.custom_data.content_ids", [1, 2])),
        "data[0].custom_data.content_ids[0]",
    ),
    (
        "app-info-maxLength",
        _mutate(_set("data.0.app_info", {"app_id": "x" * 201})),
        "data[0].app_info.app_id",
    ),
    (
        "app-info-minimum",
        _mutate(_set("data.0.app_info", {"window_width": -1})),
        "data[0].app_info.window_width",
    ),
    (
        "app-info-maximum",
        _mutate(_set("data.0.app_info", {"window_height": 30721})),
        "data[0].app_info.window_height",
    ),
    ("app-info-additional", _mutate(_set("data.0.app_info", {"store": "x"})), "data[0].app_info"),
    (
        "device-info-enum",
        _mutate(_set("data.0.device_info", {"form_factor": "phone"})),
        "data[0].device_info.form_factor",
    ),
    (
        "device-info-maxItems",
        _mutate(_set("data.0.device_info", {"languages": ["en"] * 101})),
        "data[0].device_info.languages",
    ),
    (
        "device-info-enum-not-nullable",
        _mutate(_set("data.0.device_info", {"os_family": None})),
        "data[0].device_info.os_family",
    ),
]

VALID_BODIES: list[tuple[str, Callable[[], Any]]] = [
    ("minimal-em", lambda: body_of(make_event(user_data={"em": [sha("a")]}, custom_data={}))),
    ("hashed-maids-only", lambda: body_of(make_event(user_data={"hashed_maids": [sha("idfa")]}))),
    (
        "ip-and-ua-only",
        lambda: body_of(make_event(user_data={"client_ip_address": "::1", "client_user_agent": "UA"})),
    ),
    ("nullable-fields-null", _mutate(_set("data.0.event_source_url", None))),
    ("nullable-custom-null", _mutate(_set("data.0.custom_data.currency", None))),
    ("nullable-click-id-null", _mutate(_set("data.0.user_data.click_id", None))),
    ("user-data-extra-key-allowed", _mutate(_set("data.0.user_data.unknown", "x"))),
    ("1000-events", lambda: {"data": [make_event(event_id=str(i)) for i in range(1000)]}),
    (
        "full-app-and-device-info",
        _mutate(
            _set(
                "data.0",
                make_event(
                    action_source="app_ios",
                    app_info={"app_id": "429047995", "window_width": 0, "install_time": 0},
                    device_info={"form_factor": "cellphone", "languages": [], "battery_level": 100},
                    opt_out=False,
                    wifi=True,
                    partner_name="ss-tracklayer",
                    language="en",
                ),
            )
        ),
    ),
    (
        "contents",
        _mutate(
            _set(
                "data.0.custom_data.contents",
                [{"id": "sku-1", "item_price": "24.995", "quantity": 2, "item_name": "Mug"}],
            )
        ),
    ),
    ("event-time-int64-max", _mutate(_set("data.0.event_time", 2**63 - 1))),
]


@pytest.mark.parametrize(
    ("build", "where"), [c[1:] for c in INVALID_BODIES], ids=[c[0] for c in INVALID_BODIES]
)
def test_schema_violations_are_400_with_the_path(
    client: httpx.Client, sandbox: PinterestSandbox, build: Callable[[], Any], where: str
) -> None:
    response = post(client, build())
    assert response.status_code == 400
    message = response.json()["message"]
    assert response.json()["code"] == 4196
    assert message.startswith("The request was invalid. ")
    assert message.removeprefix("The request was invalid. ").startswith(f"{where}:"), message
    assert sandbox.received == []  # nothing of an invalid request is processed
    assert sandbox.requests == {400: 1}


@pytest.mark.parametrize("build", [c[1] for c in VALID_BODIES], ids=[c[0] for c in VALID_BODIES])
def test_schema_valid_bodies_are_accepted(client: httpx.Client, build: Callable[[], Any]) -> None:
    body = build()
    validate_request_body(body)
    assert post(client, body).status_code in (200, 422)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "body is not valid JSON"),
        (b"{not json", "body is not valid JSON"),
        (b'{"data": NaN}', "NaN is not JSON"),
        (b"\xff\xfe", "body is not valid JSON"),
    ],
)
def test_a_body_that_is_not_json_is_400(client: httpx.Client, raw: bytes, fragment: str) -> None:
    response = client.post(EVENTS, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["code"] == 4196
    assert fragment in response.json()["message"]


def test_the_400_message_names_the_first_error_and_counts_the_rest(client: httpx.Client) -> None:
    body = body_of(make_event(event_time="x", opt_out="y"))
    message = post(client, body).json()["message"]
    assert message == "The request was invalid. data[0].event_time: expected integer, got string (and 1 more)"


# -- the mini validator agrees with jsonschema ----------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [c[1] for c in INVALID_BODIES] + [c[1] for c in VALID_BODIES],
    ids=[f"invalid-{c[0]}" for c in INVALID_BODIES] + [f"valid-{c[0]}" for c in VALID_BODIES],
)
def test_mini_validator_agrees_with_jsonschema_on_the_corpus(build: Callable[[], Any]) -> None:
    body = build()
    assert bool(mini.validate_request_body(body)) == bool(errors_of(body))


def test_the_corpus_means_what_its_names_say() -> None:
    assert all(errors_of(build()) for _, build, _ in INVALID_BODIES)
    assert not any(errors_of(build()) for _, build in VALID_BODIES)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=2) | st.dictionaries(st.text(max_size=5), children, max_size=2)
    ),
    max_leaves=4,
)
# Every place in the valid example body a mutation can hit.
BODY_PATHS = [
    ("data", 0),
    ("data", 0, "user_data"),
    ("data", 0, "custom_data"),
    ("data", 0, "custom_data", "contents"),
]
KEYS = st.sampled_from(
    [
        "event_name",
        "event_time",
        "event_id",
        "user_data",
        "em",
        "hashed_maids",
        "client_ip_address",
        "client_user_agent",
        "click_id",
        "value",
        "currency",
        "contents",
        "quantity",
        "opt_out",
        "app_info",
        "device_info",
        "extra",
    ]
)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(where=st.sampled_from(BODY_PATHS), key=KEYS, value=JSON_VALUES, delete=st.booleans())
def test_mini_validator_agrees_with_jsonschema_on_mutations(
    where: tuple[Any, ...], key: str, value: Any, delete: bool
) -> None:
    body = body_of(make_event(custom_data={"currency": "USD", "contents": [{"id": "sku", "quantity": 1}]}))
    node: Any = body
    for step in where:
        node = node[step]
    if isinstance(node, list):
        node = node[0]
    if delete:
        node.pop(key, None)
    else:
        node[key] = value
    assert bool(mini.validate_request_body(body)) == bool(errors_of(body)), (
        mini.validate_request_body(body),
        errors_of(body),
    )


def test_jsonschema_helper_raises_assertion_error_listing_every_violation() -> None:
    validate_request_body(body_of())
    with pytest.raises(AssertionError) as caught:
        validate_request_body(body_of(make_event(event_time="x", opt_out="y")))
    assert "event_time" in str(caught.value)
    assert "opt_out" in str(caught.value)


def test_mini_validator_paths_and_messages() -> None:
    errors = mini.validate_request_body(body_of(make_event(user_data={"ph": ["x"]}, extra=1)))
    assert errors == [  # in the order of the body's keys
        "data[0].user_data: must match one of: em | hashed_maids | client_ip_address + client_user_agent "
        "('em' is required; 'hashed_maids' is required; 'client_ip_address' is required)",
        "data[0]: unexpected property 'extra'",
    ]
    assert mini.format_path(()) == "body"
    assert mini.format_path(("a b", 0)) == '["a b"][0]'


# -- auth and request-level errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "path", "status", "code"),
    [
        ({}, EVENTS, 401, 2),
        ({"Authorization": "Bearer wrong"}, EVENTS, 401, 2),
        ({"Authorization": f"Basic {TOKEN}"}, EVENTS, 401, 2),
        ({"Authorization": TOKEN}, EVENTS, 401, 2),
        (AUTH, "/ad_accounts/123/events", 403, 29),
        (AUTH, "/ad_accounts/act_123/events", 400, 4196),
        (AUTH, "/ad_accounts/1234567890123456789/events", 400, 4196),
    ],
    ids=[
        "missing",
        "wrong-token",
        "basic-scheme",
        "no-scheme",
        "foreign-account",
        "non-digit-id",
        "id-too-long",
    ],
)
def test_auth_and_account_errors(
    sandbox: PinterestSandbox, headers: dict[str, str], path: str, status: int, code: int
) -> None:
    with httpx.Client(transport=sandbox.transport(), base_url="https://api.pinterest.com/v5") as http:
        response = http.post(path, json=body_of(), headers=headers)
    assert response.status_code == status
    validate_response_body(status, response.json())
    assert response.json()["code"] == code
    if status == 401:
        assert response.json() == {"code": 2, "message": "Authentication failed."}
    if status == 403:
        assert response.json() == {"code": 29, "message": "You are not permitted to access that resource."}
    assert sandbox.received == []
    assert [r.status for r in sandbox.rejected] == [status]


def test_token_is_checked_before_the_body(client: httpx.Client) -> None:
    response = client.post(EVENTS, content=b"junk", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


def test_wrong_method_and_unknown_path(client: httpx.Client) -> None:
    response = client.get(EVENTS)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert client.post("/ad_accounts/1/conversions", json={}).status_code == 404


# -- per-event rules ------------------------------------------------------------------------------


def results(response: httpx.Response) -> list[dict[str, str]]:
    payload = response.json()
    events: list[dict[str, str]] = (payload["details"] if response.status_code == 422 else payload)["events"]
    return events


def test_events_older_than_7_days_fail_like_pinterest(
    client: httpx.Client, sandbox: PinterestSandbox
) -> None:
    response = post(client, body_of(make_event(event_time=NOW - 7 * DAY - 1)))
    assert response.status_code == 422
    assert response.json()["code"] == 953
    assert response.json()["message"] == (
        "The action could not be processed properly due to some or all data provided being invalid."
    )
    assert response.json()["details"]["num_events_processed"] == 0
    [result] = results(response)
    assert result["status"] == "failed"
    assert result["error_message"].startswith(
        "Invalid event_timestamp parameter. Given timestamp is in the past."
    )
    assert sandbox.received[0].status == "failed"
    assert sandbox.received[0].error == result["error_message"]


def test_events_within_7_days_pass_but_late_ones_are_offline(client: httpx.Client) -> None:
    response = post(client, body_of(make_event(event_time=NOW - 7 * DAY + 1)))
    assert response.status_code == 200
    [result] = results(response)
    assert result["status"] == "processed"
    assert "offline" in result["warning_message"]
    fresh = post(client, body_of(make_event(event_id="fresh", event_time=NOW - HOUR + 1)))
    assert results(fresh)[0]["warning_message"] == ""


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        (make_event(event_time=NOW + HOUR + 1), "Given timestamp is in the future."),
        (make_event(event_time=NOW * 1000), "Given timestamp is in the future."),
        (make_event(event_name="purchase"), "Invalid event_name parameter."),
        (make_event(event_name="PageVisit"), "Invalid event_name parameter."),
        (make_event(action_source="website"), "Invalid action_source parameter."),
        (
            make_event(user_data={"em": ["ann@example.com"]}),
            "user_data.em parameter. Values must be SHA-256 hashed",
        ),
        (
            make_event(user_data={"em": [sha("a")], "ph": [sha("1")[:63]]}),
            "user_data.ph parameter. Values must be SHA-256 hashed",
        ),
        (
            make_event(user_data={"em": [sha("a") + "\n"]}),  # "$" in a regex would have let it pass
            "user_data.em parameter. Values must be SHA-256 hashed",
        ),
        (make_event(custom_data={"currency": "USD", "value": "12,50"}), "custom_data.value parameter."),
        (
            make_event(custom_data={"contents": [{"id": "a", "item_price": "abc"}]}),
            "custom_data.contents[0].item_price parameter.",
        ),
    ],
    ids=[
        "future",
        "milliseconds",
        "unknown-name",
        "tag-style-name",
        "action-source",
        "unhashed-em",
        "short-hash",
        "hash-with-newline",
        "value-not-decimal",
        "item-price",
    ],
)
def test_per_event_failures(client: httpx.Client, event: dict[str, Any], fragment: str) -> None:
    response = post(client, body_of(event))
    assert response.status_code == 422
    [result] = results(response)
    assert result["status"] == "failed"
    assert fragment in result["error_message"]


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        (make_event(custom_data={"value": "10"}), "custom_data.currency is missing"),
        (
            make_event(event_name="add_to_cart", custom_data={"value": "10"}),
            "custom_data.currency is missing",
        ),
        (make_event(event_source_url=None), "event_source_url is missing"),
        (make_event(event_time=NOW - 2 * HOUR), "attributed as an offline event"),
        (make_event(user_data={"em": [sha("a").upper()]}), "upper-case hex"),
        (make_event(user_data={"em": [sha("a")], "ph": []}), "user_data.ph is an empty list"),
        (make_event(custom_data={"currency": "usd"}), "not an ISO-4217 code"),
        (make_event(event_id=""), "cannot be deduplicated"),
    ],
    ids=[
        "checkout-no-currency",
        "cart-no-currency",
        "web-no-url",
        "older-than-1h",
        "upper-hex",
        "empty-list",
        "currency",
        "empty-id",
    ],
)
def test_per_event_warnings(client: httpx.Client, event: dict[str, Any], fragment: str) -> None:
    response = post(client, body_of(event))
    assert response.status_code == 200
    [result] = results(response)
    assert result["status"] == "processed"
    assert fragment in result["warning_message"]


def test_no_false_warnings() -> None:
    lead = make_event(event_name="lead", custom_data={"value": "10"})  # only checkout/add_to_cart need one
    offline = make_event(action_source="offline", event_source_url=None, event_time=NOW - 3 * DAY)
    sandbox = PinterestSandbox(clock=FakeClock())
    status, _, body = sandbox.handle("POST", EVENTS, "", AUTH, json.dumps(body_of(lead, offline)).encode())
    assert status == 200
    assert [e["warning_message"] for e in json.loads(body)["events"]] == ["", ""]


def test_a_partial_failure_is_422_with_results_in_request_order(
    client: httpx.Client, sandbox: PinterestSandbox
) -> None:
    body = body_of(
        make_event(event_id="a"),
        make_event(event_id="b", event_name="purchase"),
        make_event(event_id="c", event_source_url=None),
    )
    response = post(client, body)
    assert response.status_code == 422
    details = response.json()["details"]
    assert details["num_events_received"] == 3
    assert details["num_events_processed"] == 2
    assert [e["status"] for e in details["events"]] == ["processed", "failed", "processed"]
    assert details["events"][2]["warning_message"].startswith("event_source_url is missing")
    # The processed ones count (and dedup) even though the request as a whole was a 422.
    assert [(r.event_id, r.status) for r in sandbox.received] == [
        ("a", "processed"),
        ("b", "failed"),
        ("c", "processed"),
    ]


# -- test mode ------------------------------------------------------------------------------------


def test_test_mode_is_answered_the_same_and_recorded_as_test(
    client: httpx.Client, sandbox: PinterestSandbox
) -> None:
    body = body_of(make_event(), make_event(event_id="bad", event_name="purchase"))
    live = sandbox.handle("POST", EVENTS, "", AUTH, json.dumps(body).encode())
    sandbox.reset()
    tested = post(client, body, params={"test": "true"})
    assert (tested.status_code, tested.content) == (live[0], live[2])
    assert [r.test for r in sandbox.received] == [True, True]
    # Test events are not recorded by Pinterest, so they never become the original for dedup.
    post(client, body_of(make_event()))
    assert sandbox.received[-1].duplicate is False


@pytest.mark.parametrize(("query", "test"), [("test=false", False), ("test=TRUE", True), ("test=1", True)])
def test_test_flag_spellings(client: httpx.Client, sandbox: PinterestSandbox, query: str, test: bool) -> None:
    assert post(client, body_of(), params=query).status_code == 200
    assert sandbox.received[0].test is test


def test_a_bad_test_flag_is_400(client: httpx.Client) -> None:
    response = post(client, body_of(), params={"test": "yes please"})
    assert response.status_code == 400
    assert "test must be true or false" in response.json()["message"]


# -- dedup ----------------------------------------------------------------------------------------


def test_duplicates_within_48_hours_are_folded(
    client: httpx.Client, sandbox: PinterestSandbox, clock: FakeClock
) -> None:
    assert results(post(client, body_of(make_event())))[0]["status"] == "processed"
    clock.advance(48 * HOUR - 1)
    again = post(client, body_of(make_event(event_time=int(clock.now) - 60)))
    assert again.status_code == 200
    assert results(again)[0]["status"] == "processed"  # Pinterest answers processed and folds it
    assert [r.duplicate for r in sandbox.received] == [False, True]


def test_after_48_hours_the_same_event_id_counts_again(
    client: httpx.Client, sandbox: PinterestSandbox, clock: FakeClock
) -> None:
    post(client, body_of(make_event()))
    clock.advance(48 * HOUR)
    post(client, body_of(make_event(event_time=int(clock.now) - 60)))
    clock.advance(HOUR)
    post(client, body_of(make_event(event_time=int(clock.now) - 60)))
    # The second one became the new original; the third folds into it.
    assert [r.duplicate for r in sandbox.received] == [False, False, True]


def test_dedup_key_is_event_name_and_event_id(client: httpx.Client, sandbox: PinterestSandbox) -> None:
    post(
        client,
        body_of(
            make_event(event_id="x"),
            make_event(event_id="x", event_name="page_visit"),
            make_event(event_id="y"),
            make_event(event_id="x"),  # folded within the same request too
        ),
    )
    assert [r.duplicate for r in sandbox.received] == [False, False, False, True]


def test_failed_and_offline_events_are_not_deduplicated(
    client: httpx.Client, sandbox: PinterestSandbox
) -> None:
    post(client, body_of(make_event(event_id="f", event_time=NOW - 8 * DAY)))
    post(client, body_of(make_event(event_id="f")))
    offline = make_event(event_id="o", action_source="offline")
    post(client, body_of(offline, offline))
    assert [(r.status, r.duplicate) for r in sandbox.received] == [
        ("failed", False),
        ("processed", False),
        ("processed", False),
        ("processed", False),
    ]


# -- faults through the sync transport ------------------------------------------------------------


def test_429_with_retry_after_then_normal(client: httpx.Client, sandbox: PinterestSandbox) -> None:
    sandbox.inject(Fault("429", count=2, retry_after=7))
    first, second, third = (post(client, body_of(make_event(event_id=str(i)))) for i in range(3))
    assert first.status_code == second.status_code == 429
    assert first.headers["retry-after"] == "7"
    assert first.json()["code"] == 8
    assert third.status_code == 200
    assert sandbox.requests == {429: 2, 200: 1}
    assert [r.event_id for r in sandbox.received] == ["2"]


def test_429_without_retry_after_has_no_header(client: httpx.Client, sandbox: PinterestSandbox) -> None:
    sandbox.inject(Fault("429", count=1))
    response = post(client, body_of())
    assert response.status_code == 429
    assert "retry-after" not in response.headers


@pytest.mark.parametrize(
    ("kind", "content_type", "code"),
    [("500", "application/json", 500), ("502", "text/html", None), ("503", "application/json", 4197)],
)
def test_server_errors(
    client: httpx.Client, sandbox: PinterestSandbox, kind: str, content_type: str, code: int | None
) -> None:
    sandbox.inject(Fault(kind, count=1))
    response = post(client, body_of())
    assert response.status_code == int(kind)
    assert response.headers["content-type"] == content_type
    if code is not None:
        assert response.json()["code"] == code
    assert sandbox.received == []
    assert post(client, body_of()).status_code == 200


@pytest.mark.parametrize(("kind", "code"), [("401", 2), ("403", 29)])
def test_auth_faults(client: httpx.Client, sandbox: PinterestSandbox, kind: str, code: int) -> None:
    sandbox.inject(Fault(kind, count=1))
    response = post(client, body_of())
    assert (response.status_code, response.json()["code"]) == (int(kind), code)


def test_faults_apply_in_order_and_count_limited_ones_expire(
    client: httpx.Client, sandbox: PinterestSandbox
) -> None:
    sandbox.inject(Fault("503", count=1))
    sandbox.inject(Fault("429", count=2))
    sandbox.inject(Fault("500", count=1))
    statuses = [post(client, body_of(make_event(event_id=str(i)))).status_code for i in range(5)]
    assert statuses == [503, 429, 429, 500, 200]
    assert sandbox.faults == []


def test_time_limited_faults_expire_on_the_sandbox_clock(
    client: httpx.Client, sandbox: PinterestSandbox, clock: FakeClock
) -> None:
    sandbox.inject(Fault("503", seconds=30))
    assert post(client, body_of()).status_code == 503
    clock.advance(29)
    assert post(client, body_of()).status_code == 503
    assert sandbox.faults[0]["expires_in"] == 1
    clock.advance(1)
    assert post(client, body_of()).status_code == 200


def test_unlimited_faults_last_until_cleared(client: httpx.Client, sandbox: PinterestSandbox) -> None:
    sandbox.inject(Fault("500"))
    assert [post(client, body_of()).status_code for _ in range(3)] == [500, 500, 500]
    sandbox.clear_faults()
    assert post(client, body_of()).status_code == 200


def test_drop_raises_an_httpx_transport_error(client: httpx.Client, sandbox: PinterestSandbox) -> None:
    sandbox.inject(Fault("drop", count=1))
    with pytest.raises(httpx.RemoteProtocolError) as caught:
        client.post(EVENTS, json=body_of())
    assert isinstance(caught.value, httpx.TransportError)
    assert sandbox.requests == {"drop": 1}
    assert sandbox.received == []
    assert post(client, body_of()).status_code == 200


def test_timeout_raises_read_timeout_at_once(sandbox: PinterestSandbox) -> None:
    sandbox.inject(Fault("timeout", count=1))
    with httpx.Client(
        transport=sandbox.transport(), base_url="https://x/v5", headers=AUTH, timeout=0.2
    ) as http:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            http.post(EVENTS, json=body_of())
        assert time.monotonic() - started < 0.5
        assert http.post(EVENTS, json=body_of()).status_code == 200
    assert sandbox.requests == {"timeout": 1, 200: 1}


def test_slow_answers_wait_then_answer(sandbox: PinterestSandbox) -> None:
    sandbox.inject(Fault("slow", count=1, delay=0.05))
    with httpx.Client(
        transport=sandbox.transport(), base_url="https://x/v5", headers=AUTH, timeout=1.0
    ) as http:
        started = time.monotonic()
        response = http.post(EVENTS, json=body_of())
        assert time.monotonic() - started >= 0.05
    assert response.status_code == 200
    assert sandbox.received[0].status == "processed"


def test_a_slow_answer_beyond_the_client_timeout_is_a_read_timeout(sandbox: PinterestSandbox) -> None:
    sandbox.inject(Fault("slow", count=1, delay=30))
    with httpx.Client(
        transport=sandbox.transport(), base_url="https://x/v5", headers=AUTH, timeout=0.05
    ) as http:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            http.post(EVENTS, json=body_of())
        assert time.monotonic() - started < 1


def test_faults_after_processing_exercise_dedup_on_retry(
    client: httpx.Client, sandbox: PinterestSandbox
) -> None:
    sandbox.inject(Fault("drop", count=1, after_processing=True))
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(EVENTS, json=body_of())
    sandbox.inject(Fault("503", count=1, after_processing=True))
    assert post(client, body_of()).status_code == 503
    assert post(client, body_of()).status_code == 200
    assert [r.duplicate for r in sandbox.received] == [False, True, True]
    assert sandbox.requests == {"drop": 1, 503: 1, 200: 1}


def test_latency_is_added_to_every_answer(clock: FakeClock) -> None:
    sandbox = PinterestSandbox(clock=clock, latency=0.03)
    with httpx.Client(transport=sandbox.transport(), base_url="https://x/v5", headers=AUTH) as http:
        started = time.monotonic()
        assert http.post(EVENTS, json=body_of()).status_code == 200
        assert time.monotonic() - started >= 0.03


def test_handle_raises_for_unanswered_faults(sandbox: PinterestSandbox) -> None:
    raw = json.dumps(body_of()).encode()
    sandbox.inject(Fault("drop", count=1))
    sandbox.inject(Fault("timeout", count=1))
    with pytest.raises(ConnectionDropped):
        sandbox.handle("POST", EVENTS, "", AUTH, raw)
    with pytest.raises(AnswerTimedOut):
        sandbox.handle("POST", EVENTS, "", AUTH, raw)
    assert sandbox.handle("POST", EVENTS, "", AUTH, raw)[0] == 200


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "418"},
        {"kind": "500", "count": 0},
        {"kind": "500", "seconds": 0},
        {"kind": "slow", "delay": -1},
        {"kind": "500", "retry_after": 3},
        {"kind": "429", "after_processing": True},
    ],
)
def test_bad_faults_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Fault(**kwargs)


def test_reset_forgets_everything(client: httpx.Client, sandbox: PinterestSandbox) -> None:
    post(client, body_of())
    sandbox.inject(Fault("500"))
    sandbox.reset()
    assert (sandbox.received, sandbox.requests, sandbox.faults, sandbox.rejected) == ([], {}, [], [])
    post(client, body_of())
    assert sandbox.received[0].duplicate is False
    assert sandbox.received[0].seq == 0


def test_concurrent_clients_are_all_counted(sandbox: PinterestSandbox) -> None:
    def send(worker: int) -> None:
        with httpx.Client(transport=sandbox.transport(), base_url="https://x/v5", headers=AUTH) as http:
            for i in range(25):
                http.post(EVENTS, json=body_of(make_event(event_id=f"{worker}-{i}")))

    sandbox.inject(Fault("429", count=20))
    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sandbox.requests == {429: 20, 200: 80}
    assert len(sandbox.received) == 80
    assert sorted(r.seq for r in sandbox.received) == list(range(80))


def test_async_transport(sandbox: PinterestSandbox) -> None:
    async def scenario() -> list[Any]:
        outcomes: list[Any] = []
        sandbox.inject(Fault("drop", count=1))
        sandbox.inject(Fault("slow", count=1, delay=0.01))
        sandbox.inject(Fault("timeout", count=1))
        async with httpx.AsyncClient(
            transport=sandbox.async_transport(), base_url="https://x/v5", headers=AUTH, timeout=0.5
        ) as http:
            for _ in range(4):
                try:
                    outcomes.append((await http.post(EVENTS, json=body_of())).status_code)
                except httpx.TransportError as exc:
                    outcomes.append(type(exc))
        return outcomes

    assert anyio.run(scenario) == [httpx.RemoteProtocolError, 200, httpx.ReadTimeout, 200]


# -- the records ----------------------------------------------------------------------------------

RECORD_FIELDS = (
    "seq",
    "time",
    "test",
    "ad_account_id",
    "status",
    "error",
    "warning",
    "duplicate",
    "event_name",
    "event_id",
    "has_click_id",
    "has_email",
    "has_ip_ua",
)


def test_records_hold_nothing_the_garbage_collector_tracks(sandbox: PinterestSandbox) -> None:
    late = make_event(event_id="late", event_time=NOW - 30 * DAY)  # failed: an error message too
    sandbox.handle("POST", EVENTS, "", AUTH, json.dumps(body_of(make_event(), late)).encode())
    for record in sandbox.received:
        assert [name for name in RECORD_FIELDS if gc.is_tracked(getattr(record, name))] == []
    assert sandbox.received[1].error is not None


def test_kept_records_add_no_tracked_objects(sandbox: PinterestSandbox) -> None:
    def send(batch: int) -> None:
        events = [make_event(event_id=f"{batch}-{i}") for i in range(100)]
        assert sandbox.handle("POST", EVENTS, "", AUTH, json.dumps(body_of(*events)).encode())[0] == 200

    send(0)  # whatever the first request creates once (imports, caches) is not per record
    gc.collect()
    before = len(gc.get_objects())
    for batch in range(1, 6):
        send(batch)
    gc.collect()
    # Kept as parsed dicts, these 500 events would be 2,000 tracked objects (4 containers each).
    assert len(gc.get_objects()) - before < 100
    assert len(sandbox.received) == 600


UNUSUAL = make_event(
    event_id="ünïcödé-🛒-\ud83d",  # a lone surrogate, as a JSON body may carry it ("\ud83d")
    user_data={"em": [sha("a"), sha("b")], "client_ip_address": "2001:db8::1", "client_user_agent": "Ω"},
    custom_data={
        "content_ids": ["sku-1", "", "sku-ß"],
        "contents": [
            {"id": "sku-1", "quantity": 9_223_372_036_854_775_807, "item_price": "1e-7"},
            {"id": "sku-ß", "quantity": 0, "item_name": "naïve 🧦\u0000"},
        ],
        "num_items": -1,
    },
)


def test_event_reads_back_exactly_what_was_received(sandbox: PinterestSandbox) -> None:
    raw = json.dumps(body_of(UNUSUAL)).encode()  # ensure_ascii: the surrogate travels as an escape
    sandbox.handle("POST", EVENTS, "", AUTH, raw)
    [record] = sandbox.received
    received = json.loads(raw)["data"][0]
    # repr also tells 1 from 1.0 and True, -0.0 from 0.0, and key orders apart.
    assert repr(record.event) == repr(received)
    assert record.event_id == "ünïcödé-🛒-\ud83d"
    assert record.to_json()["event"] == received


def test_event_is_a_fresh_copy_on_every_read(sandbox: PinterestSandbox) -> None:
    sandbox.handle("POST", EVENTS, "", AUTH, json.dumps(body_of()).encode())
    [record] = sandbox.received
    first = record.event
    first["user_data"]["em"].append("changed")
    first["event_name"] = "changed"
    assert record.event == make_event()
    assert record.event is not record.event
    with pytest.raises(AttributeError):
        record.status = "failed"  # type: ignore[misc]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=25,
)


@given(st.dictionaries(st.text(), JSON_VALUES, max_size=6))
def test_a_record_round_trips_any_json_value(extra: dict[str, Any]) -> None:
    event = {**make_event(), **extra}
    record = ReceivedEvent(7, 1.5, False, ACCOUNT, event, "processed", None, None, False)
    assert repr(record.event) == repr(event)


def test_a_record_keeps_its_constructor_and_reads_like_before() -> None:
    event = make_event()
    record = ReceivedEvent(3, NOW, True, ACCOUNT, event, "failed", "bad", None, False)
    same = ReceivedEvent(
        seq=3,
        time=NOW,
        test=True,
        ad_account_id=ACCOUNT,
        event=make_event(),
        status="failed",
        error="bad",
        warning=None,
        duplicate=False,
    )
    assert record == same
    assert hash(record) == hash(same)
    assert record != ReceivedEvent(4, NOW, True, ACCOUNT, event, "failed", "bad", None, False)
    reordered = dict(reversed(list(event.items())))  # equal as a value, packed to other bytes
    twin = ReceivedEvent(3, NOW, True, ACCOUNT, reordered, "failed", "bad", None, False)
    assert twin == record
    assert hash(twin) == hash(record)
    assert (record.event_name, record.event_id) == ("checkout", "order-1")
    assert (record.has_click_id, record.has_email, record.has_ip_ua) == (True, True, True)
    assert repr(record) == (
        f"ReceivedEvent(seq=3, time={NOW}, test=True, ad_account_id='{ACCOUNT}', event={event!r}, "
        "status='failed', error='bad', warning=None, duplicate=False)"
    )


def test_summarize_counts_match_signals_without_unpacking_events(
    sandbox: PinterestSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    maid = {"hashed_maids": [sha("m")]}
    ip_ua = {"client_ip_address": "203.0.113.7", "client_user_agent": "UA"}
    events = [
        make_event(event_id="all"),  # click id, email, IP + UA
        make_event(event_id="maid", user_data=maid),  # none
        make_event(event_id="ip-ua", user_data=ip_ua),
        make_event(event_id="em-ip", user_data={"em": [sha("x")], "client_ip_address": "203.0.113.7"}),
        make_event(event_id="em-click", user_data={"em": [sha("x")], "click_id": "dj0y"}),
        # Empty values carry no signal: an empty email list, IP and click id.
        make_event(
            event_id="empty",
            user_data={**maid, "em": [], "client_ip_address": "", "client_user_agent": "UA", "click_id": ""},
        ),
        make_event(event_id="all"),  # folded: not counted
        make_event(event_id="late", event_time=NOW - 30 * DAY),  # failed: not counted
    ]
    sandbox.handle("POST", EVENTS, "", AUTH, json.dumps(body_of(*events)).encode())
    test_body = json.dumps(body_of(make_event(user_data=maid))).encode()
    sandbox.handle("POST", EVENTS, "test=true", AUTH, test_body)

    def unpacked(record: ReceivedEvent) -> dict[str, Any]:
        raise AssertionError("summarize unpacked an event")

    monkeypatch.setattr(ReceivedEvent, "event", property(unpacked))
    figures = summarize(sandbox.received)
    [row] = figures["live"]["events"]
    assert (row["received"], row["accepted"], row["failed"], row["folded"]) == (8, 6, 1, 1)
    # Of 6 accepted: click id on 2, email on 3, IP + user agent on 2.
    assert row["coverage"] == {"click_id": 33.3, "email": 50.0, "ip_ua": 33.3}
    assert figures["live"]["totals"]["coverage"] == row["coverage"]
    [test_row] = figures["test"]["events"]
    assert test_row["coverage"] == {"click_id": 0.0, "email": 0.0, "ip_ua": 0.0}


def test_received_since_after_old_records_fell_off(clock: FakeClock) -> None:
    sandbox = PinterestSandbox(clock=clock, max_records=5)
    events = [make_event(event_id=str(i)) for i in range(8)]
    sandbox.handle("POST", EVENTS, "", AUTH, json.dumps(body_of(*events)).encode())
    assert [r.seq for r in sandbox.received] == [3, 4, 5, 6, 7]
    assert [r.event_id for r in sandbox.received_since(0)] == ["3", "4", "5", "6", "7"]
    assert [r.seq for r in sandbox.received_since(6)] == [6, 7]
    assert sandbox.received_since(8) == []
    assert sandbox.received_since(99) == []
    sandbox.reset()
    sandbox.handle("POST", EVENTS, "", AUTH, json.dumps(body_of(make_event(event_id="new"))).encode())
    assert [(r.seq, r.event_id) for r in sandbox.received_since(0)] == [(0, "new")]
    assert sandbox.received_since(1) == []


# -- the ASGI app ---------------------------------------------------------------------------------


@pytest.fixture
def app_client(sandbox: PinterestSandbox) -> Iterator[TestClient]:
    with TestClient(sandbox.asgi_app(), base_url="http://sandbox.test") as test_client:
        yield test_client


def test_app_serves_the_events_endpoint_with_and_without_v5(app_client: TestClient) -> None:
    for path in (f"/v5{EVENTS}", EVENTS):
        response = app_client.post(path, json=body_of(make_event(event_id=path)), headers=AUTH)
        assert response.status_code == 200
        validate_response_body(200, response.json())
    assert (
        app_client.post(f"/v5{EVENTS}", json=body_of(), headers={"Authorization": "Bearer x"}).status_code
        == 401
    )
    assert app_client.post("/v5/ad_accounts/1/events", json=body_of(), headers=AUTH).status_code == 403
    assert app_client.get(f"/v5{EVENTS}").status_code == 405


def test_app_received_endpoint(app_client: TestClient) -> None:
    app_client.post(
        f"/v5{EVENTS}", json=body_of(make_event(event_id="a"), make_event(event_id="b")), headers=AUTH
    )
    app_client.post(f"/v5{EVENTS}?test=true", json=body_of(make_event(event_id="c")), headers=AUTH)
    everything = app_client.get("/_sandbox/received").json()
    assert [r["event"]["event_id"] for r in everything["records"]] == ["a", "b", "c"]
    assert [r["test"] for r in everything["records"]] == [False, False, True]
    assert everything["next"] == 3
    assert everything["requests"] == {"200": 2}
    first = everything["records"][0]
    assert set(first) == {
        "seq",
        "time",
        "test",
        "ad_account_id",
        "event",
        "status",
        "error",
        "warning",
        "duplicate",
    }
    later = app_client.get("/_sandbox/received", params={"since": 2}).json()
    assert [r["event"]["event_id"] for r in later["records"]] == ["c"]
    assert app_client.get("/_sandbox/received", params={"since": 9}).json() == {
        "records": [],
        "next": 9,
        "requests": {"200": 2},
    }
    assert app_client.get("/_sandbox/received", params={"since": "-1"}).status_code == 400


def test_app_fault_control(app_client: TestClient, sandbox: PinterestSandbox) -> None:
    response = app_client.post("/_sandbox/faults", json={"kind": 429, "count": 1, "retry_after": 2})
    assert response.status_code == 200
    assert response.json()["faults"][0]["kind"] == "429"
    app_client.post("/_sandbox/faults", json={"kind": "503"})
    assert len(app_client.get("/_sandbox/faults").json()["faults"]) == 2
    limited = app_client.post(f"/v5{EVENTS}", json=body_of(), headers=AUTH)
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "2")
    assert app_client.post(f"/v5{EVENTS}", json=body_of(), headers=AUTH).status_code == 503
    assert app_client.delete("/_sandbox/faults").json() == {"faults": []}
    assert app_client.post(f"/v5{EVENTS}", json=body_of(), headers=AUTH).status_code == 200
    for bad in ({"kind": "nope"}, {"kind": "500", "count": "x"}, {"kind": "500", "color": 1}, [1]):
        assert app_client.post("/_sandbox/faults", json=bad).status_code == 400
    assert app_client.post("/_sandbox/faults", content=b"{").status_code == 400
    assert app_client.post("/_sandbox/reset").json() == {"reset": True}
    assert sandbox.received == []


def test_app_slow_and_timeout_and_drop(app_client: TestClient, sandbox: PinterestSandbox) -> None:
    sandbox.inject(Fault("slow", count=1, delay=0.02))
    sandbox.inject(Fault("timeout", count=1, delay=0.02))
    sandbox.inject(Fault("drop", count=1))
    assert app_client.post(f"/v5{EVENTS}", json=body_of(), headers=AUTH).status_code == 200
    held = app_client.post(f"/v5{EVENTS}", json=body_of(), headers=AUTH)
    assert held.status_code == 504  # the answer after the hold, long after any client gave up
    # In-process there is no socket to close: the drop surfaces as the sandbox's exception.
    with pytest.raises(ConnectionDropped):
        app_client.post(f"/v5{EVENTS}", json=body_of(), headers=AUTH)


def test_app_diagnostics_page_shows_the_figures(app_client: TestClient, sandbox: PinterestSandbox) -> None:
    no_click = make_event(event_id="2", user_data={"hashed_maids": [sha("m")]})
    app_client.post(
        f"/v5{EVENTS}",
        json=body_of(
            make_event(event_id="1"),
            no_click,
            make_event(event_id="1"),  # folded
            make_event(event_id="<script>alert(1)</script>", event_name="purchase"),  # failed
            make_event(event_id="4", event_name="page_visit", event_source_url=None),  # warning
        ),
        headers=AUTH,
    )
    app_client.post(f"/v5{EVENTS}?test=true", json=body_of(make_event(event_name="lead")), headers=AUTH)
    app_client.post(f"/v5{EVENTS}", json={"data": []}, headers=AUTH)
    page = app_client.get("/_sandbox/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert re.search(r'id="total-received">5<', html)
    assert re.search(r'id="total-accepted">3<', html)
    assert re.search(r'id="total-failed">1<', html)
    assert re.search(r'id="total-warnings">1<', html)
    assert re.search(r'id="total-folded">1<', html)
    checkout_row = html.split('data-event="checkout"')[1].split("</tr>")[0]
    numbers = re.findall(r'<td class="num">([^<]*)<', checkout_row)
    assert numbers[:5] == ["3", "2", "0", "0", "1"]  # received, accepted, failed, warnings, folded
    assert "50%" in checkout_row  # click id on one of the two accepted checkouts
    assert "Invalid event_name parameter." in html
    assert "event_source_url is missing" in html
    assert "Test events" in html
    assert 'data-event="lead"' in html
    assert "data: must have at least 1 items" in html  # the rejected request
    assert "<script>alert(1)</script>" not in html  # autoescaped
    assert "&lt;script&gt;" in html
    assert "<link" not in html  # no external assets
    assert "<script" not in html


def test_app_diagnostics_json(app_client: TestClient) -> None:
    app_client.post(f"/v5{EVENTS}", json=body_of(), headers=AUTH)
    figures = app_client.get("/_sandbox/diagnostics.json").json()
    assert figures["live"]["totals"]["accepted"] == 1
    assert figures["live"]["events"][0]["coverage"] == {"click_id": 100.0, "email": 100.0, "ip_ua": 100.0}
    assert figures["test"]["events"] == []
    assert figures["requests"] == {"200": 1}
    assert len(figures["recent"]) == 1


def test_empty_diagnostics_page_renders(app_client: TestClient) -> None:
    html = app_client.get("/_sandbox/").text
    assert "No events yet." in html
    assert app_client.get("/", follow_redirects=False).headers["location"] == "/_sandbox/"


def test_summarize_coverage_counts_accepted_events_only(sandbox: PinterestSandbox) -> None:
    bare = {"client_ip_address": "203.0.113.7", "client_user_agent": "UA"}
    events = [
        make_event(event_id="1"),
        make_event(event_id="2", user_data=bare),
        make_event(event_id="3", user_data={"em": [sha("x")], "client_ip_address": "203.0.113.7"}),
        make_event(event_id="4", event_time=NOW - 30 * DAY),  # failed: not in coverage
    ]
    sandbox.handle("POST", EVENTS, "", AUTH, json.dumps(body_of(*events)).encode())
    row = summarize(sandbox.received)["live"]["events"][0]
    assert (row["received"], row["accepted"], row["failed"]) == (4, 3, 1)
    assert row["coverage"] == {"click_id": 33.3, "email": 66.7, "ip_ua": 66.7}
    assert row["reasons"][0].startswith("Invalid event_timestamp parameter.")


# -- a real server --------------------------------------------------------------------------------


def test_real_server_drops_connections_and_releases_held_requests() -> None:
    sandbox = PinterestSandbox()
    server = build_server(sandbox, port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        event = make_event(event_time=int(time.time()))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/v5", headers=AUTH, timeout=0.3) as http:
            assert http.post(EVENTS, json=body_of(event)).status_code == 200
            sandbox.inject(Fault("drop", count=1))
            with pytest.raises(httpx.RemoteProtocolError):
                http.post(EVENTS, json=body_of(event))
            sandbox.inject(Fault("timeout", count=1, delay=30))
            with pytest.raises(httpx.ReadTimeout):
                http.post(EVENTS, json=body_of(event))
            assert http.post(EVENTS, json=body_of(event)).json()["num_events_processed"] == 1
            assert http.get(f"http://127.0.0.1:{port}/_sandbox/").status_code == 200
        assert sandbox.requests == {200: 2, "drop": 1, "timeout": 1}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive(), "the held timeout request kept the server from stopping"


def test_schema_helper_accepts_copies_without_mutating_the_input() -> None:
    body = body_of()
    before = copy.deepcopy(body)
    validate_request_body(body)
    assert body == before
