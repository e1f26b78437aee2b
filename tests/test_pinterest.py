"""The Conversions API request (to_pinterest/build_body), the answer (classify) and the adapter.

Every body built here is checked against Pinterest's official schema with ``validate_request_body``.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import socket
import time
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import httpx
import pytest

from tests.pinterest_schema import validate_request_body
from tracklayer_mw.events import EVENT_NAMES, Event, parse_event
from tracklayer_mw.pinterest import (
    MAX_BATCH,
    PARTNER_NAME,
    EventResult,
    PinterestAdapter,
    SendOutcome,
    build_body,
    classify,
    retry_after_seconds,
    to_pinterest,
)
from tracklayer_mw.sandbox import PinterestSandbox

NOW = 1_764_322_000
TOKEN = "pina_SECRET-conversion-token-123"
ACCOUNT = "549755885175"
API_BASE = "https://api.pinterest.com/v5"
EVENTS_URL = f"{API_BASE}/ad_accounts/{ACCOUNT}/events"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rich_event() -> Event:
    return parse_event(
        {
            "event": "Purchase",
            "event_time": NOW - 30,
            "url": "https://shop.example/thanks?order=A-1001",
            "user": {
                "email": "Ann@Example.com",
                "phone": "+1 (650) 555-1234",
                "first_name": "Ann",
                "last_name": "Lee",
                "gender": "female",
                "date_of_birth": "1990-07-04",
                "city": "Menlo Park",
                "state": "CA",
                "zip": "94025",
                "country": "US",
                "external_id": "cust-42",
            },
            "custom": {
                "value": 49.99,
                "currency": "usd",
                "order_id": "A-1001",
                "num_items": 2,
                "search_string": "blue shirt",
                "content_ids": ["sku-1"],
                "contents": [
                    {
                        "id": "sku-1",
                        "quantity": 2,
                        "item_price": 24.995,
                        "item_name": "Shirt",
                        "item_category": "shirts",
                        "item_brand": "ACME",
                    }
                ],
                "content_name": "Blue shirt",
                "content_category": "shirts",
                "content_brand": "ACME",
            },
            "pixel": True,
        },
        now=NOW,
        source="browser",
    ).with_context(
        click_id="dj0yJnU9aG9sYUFCQw",
        client_ip="2001:db8::7",
        user_agent="Mozilla/5.0 (X11; Linux x86_64)",
        opt_out_type="LDP",
    )


def minimal_event(event_id: str = "pv-1", name: str = "PageVisit") -> Event:
    return Event(
        event=name, event_id=event_id, event_time=NOW, client_ip="203.0.113.9", user_agent="Mozilla/5.0"
    )


# --- the request ---------------------------------------------------------------------------------


def test_rich_event_maps_every_field_to_the_conversions_api() -> None:
    item = to_pinterest(rich_event())
    assert item == {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": NOW - 30,
        "event_id": "Purchase:A-1001",
        "event_source_url": "https://shop.example/thanks?order=A-1001",
        "partner_name": PARTNER_NAME,
        "opt_out": False,
        "user_data": {
            "em": [_sha("ann@example.com")],
            "ph": [_sha("16505551234")],
            "fn": [_sha("ann")],
            "ln": [_sha("lee")],
            "ge": [_sha("f")],
            "db": [_sha("19900704")],
            "ct": [_sha("menlopark")],
            "st": [_sha("ca")],
            "zp": [_sha("94025")],
            "country": [_sha("us")],
            "external_id": [_sha("cust-42")],
            "client_ip_address": "2001:db8::7",
            "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "click_id": "dj0yJnU9aG9sYUFCQw",
        },
        "custom_data": {
            "value": "49.99",
            "currency": "USD",
            "order_id": "A-1001",
            "num_items": 2,
            "search_string": "blue shirt",
            "content_ids": ["sku-1"],
            "contents": [
                {
                    "id": "sku-1",
                    "quantity": 2,
                    "item_price": "24.995",
                    "item_name": "Shirt",
                    "item_category": "shirts",
                    "item_brand": "ACME",
                }
            ],
            "content_name": "Blue shirt",
            "content_category": "shirts",
            "content_brand": "ACME",
            "opt_out_type": "LDP",
        },
    }
    validate_request_body(build_body([rich_event()]))


def test_minimal_event_sends_only_required_fields_and_match_keys() -> None:
    item = to_pinterest(minimal_event())
    assert item == {
        "event_name": "page_visit",
        "action_source": "web",
        "event_time": NOW,
        "event_id": "pv-1",
        "partner_name": PARTNER_NAME,
        "opt_out": False,
        "user_data": {"client_ip_address": "203.0.113.9", "client_user_agent": "Mozilla/5.0"},
    }
    validate_request_body(build_body([minimal_event()]))


def test_email_alone_is_enough_for_a_valid_body() -> None:
    event = Event(event="Lead", event_id="l-1", event_time=NOW, user={"email": [_sha("a@b.co")]})
    body = build_body([event])
    validate_request_body(body)
    assert body["data"][0]["user_data"] == {"em": [_sha("a@b.co")]}


def test_an_event_without_email_or_ip_and_user_agent_fails_the_schema() -> None:
    # Why the worker never sends one (it would make Pinterest refuse the whole batch).
    event = Event(event="Lead", event_id="l-1", event_time=NOW, user={"phone": [_sha("16505551234")]})
    assert not event.has_match_keys
    with pytest.raises(AssertionError):
        validate_request_body(build_body([event]))


def test_opt_out_is_sent_as_a_boolean() -> None:
    item = to_pinterest(minimal_event().with_context(opt_out=True))
    assert item["opt_out"] is True
    validate_request_body({"data": [item]})


@pytest.mark.parametrize(("name", "names"), EVENT_NAMES.items(), ids=list(EVENT_NAMES))
def test_every_event_name_maps_to_the_pinterest_api_name(name: str, names: tuple[str, str]) -> None:
    body = build_body([minimal_event(name=name)])
    validate_request_body(body)
    assert body["data"][0]["event_name"] == names[0]


def test_empty_user_fields_and_unknown_custom_keys_are_left_out() -> None:
    event = minimal_event().with_context(
        user={"email": [], "phone": [_sha("1")]}, custom={"value": "1", "x": 2}
    )
    item = to_pinterest(event)
    assert "em" not in item["user_data"]
    assert item["custom_data"] == {"value": "1"}
    validate_request_body({"data": [item]})


def test_build_body_takes_1_to_1000_events() -> None:
    body = build_body([minimal_event(f"e-{i}") for i in range(MAX_BATCH)])
    validate_request_body(body)
    assert len(body["data"]) == 1000
    with pytest.raises(ValueError, match="1 to 1000"):
        build_body([])
    with pytest.raises(ValueError, match="1 to 1000"):
        build_body([minimal_event(f"e-{i}") for i in range(MAX_BATCH + 1)])


def test_body_survives_json_with_non_ascii_text() -> None:
    event = rich_event().with_context(custom={"content_name": "Chemise bleue – été 🌞", "value": "1"})
    body = build_body([event])
    validate_request_body(json.loads(json.dumps(body, ensure_ascii=False).encode().decode("utf-8")))


# --- the answer ----------------------------------------------------------------------------------


def _events(*entries: tuple[str, str | None, str | None]) -> list[dict[str, Any]]:
    return [{"status": s, "error_message": e, "warning_message": w} for s, e, w in entries]


def _ok(*entries: tuple[str, str | None, str | None]) -> bytes:
    processed = sum(1 for status, _, _ in entries if status == "processed")
    body = {
        "num_events_received": len(entries),
        "num_events_processed": processed,
        "events": _events(*entries),
    }
    return json.dumps(body).encode()


PAST = "Invalid event_timestamp parameter. Given timestamp is in the past."
WARN = "event_source_url is missing; it is recommended for web events."
PARTIAL = "The action could not be processed properly due to some or all data provided being invalid."
HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


def _error(code: int, message: str) -> bytes:
    return json.dumps({"code": code, "message": message}).encode()


def _detailed(*entries: tuple[str, str | None, str | None]) -> bytes:
    details = json.loads(_ok(*entries))
    return json.dumps({"code": 953, "message": PARTIAL, "details": details}).encode()


P = ("processed", "", "")


def judged(*pairs: tuple[bool, str] | tuple[bool, str, str]) -> tuple[EventResult, ...]:
    return tuple(EventResult(pair[0], pair[1], pair[2] if len(pair) == 3 else "") for pair in pairs)


class Case(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes
    count: int
    kind: str
    results: tuple[EventResult, ...]
    message: str  # a part of outcome.message


def case(*fields: Any, id: str) -> Any:
    return pytest.param(Case(*fields), id=id)


CLASSIFY_CASES = [
    # 200: each event judged on its own
    case(200, {}, _ok(P, P), 2, "results", judged((True, ""), (True, "")), "", id="200-all-processed"),
    case(
        200,
        {},
        _ok(P, ("failed", PAST, ""), P),
        3,
        "results",
        judged((True, ""), (False, PAST), (True, "")),
        "",
        id="200-with-failed-events",
    ),
    case(
        200,
        {},
        _ok(("processed", "", WARN)),
        1,
        "results",
        judged((True, "", WARN)),
        "",
        id="200-with-warnings",
    ),
    case(
        200,
        {},
        _ok(("processed", None, None), ("failed", None, None)),
        2,
        "results",
        judged((True, ""), (False, "")),
        "",
        id="200-null-messages",
    ),
    case(
        200,
        {},
        _ok(P),
        3,
        "results",
        judged((True, ""), (True, ""), (True, "")),
        "",
        id="200-fewer-answers-than-sent",
    ),
    case(200, {}, _ok(P, P, P), 1, "results", judged((True, "")), "", id="200-more-answers-than-sent"),
    case(200, {}, b"{}", 2, "results", judged((True, ""), (True, "")), "", id="200-json-without-events"),
    case(
        200,
        {},
        b'{"events": ["odd", null]}',
        2,
        "results",
        judged((True, ""), (True, "")),
        "",
        id="200-events-that-are-not-objects",
    ),
    case(200, {}, b"<html>Welcome to nginx!</html>", 2, "retry", (), "HTTP 200", id="200-html-not-pinterest"),
    case(200, {}, b"", 1, "retry", (), "HTTP 200", id="200-empty-body"),
    case(200, {}, b"[1, 2]", 1, "retry", (), "HTTP 200", id="200-json-list"),
    case(200, {}, b"\xff\xfe\x00garbage", 1, "retry", (), "HTTP 200", id="200-binary-garbage"),
    # 422: partial failure, per event when the details say so
    case(
        422,
        {},
        _detailed(P, ("failed", PAST, "")),
        2,
        "results",
        judged((True, ""), (False, PAST)),
        PARTIAL,
        id="422-partial-with-details",
    ),
    case(
        422,
        {},
        _error(953, PARTIAL),
        2,
        "results",
        judged((False, PARTIAL), (False, PARTIAL)),
        PARTIAL,
        id="422-without-details",
    ),
    case(422, {}, b"not json", 1, "results", judged((False, "not json")), "not json", id="422-garbage-body"),
    case(422, {}, b"", 1, "results", judged((False, "rejected (422)")), "", id="422-empty-body"),
    # the whole request refused for good
    case(
        400,
        {},
        _error(4196, "The request was invalid."),
        2,
        "reject",
        (),
        "HTTP 400: Pinterest found the request invalid (The request was invalid.)",
        id="400",
    ),
    case(401, {}, _error(2, "Authentication failed."), 1, "reject", (), "access token", id="401"),
    case(403, {}, _error(29, "You are not permitted."), 1, "reject", (), "ad account", id="403"),
    case(404, {}, _error(404, "Not found."), 1, "reject", (), "no such ad account", id="404"),
    case(400, {}, b"<html>Bad Request</html>", 1, "reject", (), "Bad Request", id="400-html-body"),
    case(405, {}, b"", 1, "reject", (), "HTTP 405: Pinterest refused the request", id="405-empty-body"),
    # nothing judged: retry
    case(408, {}, b"", 1, "retry", (), "HTTP 408", id="408"),
    case(429, {}, _error(8, "Rate limited."), 1, "retry", (), "HTTP 429: Rate limited.", id="429"),
    case(500, {}, _error(500, "Internal server error."), 1, "retry", (), "HTTP 500", id="500"),
    case(502, {}, HTML_502, 1, "retry", (), "502 Bad Gateway", id="502-html"),
    case(503, {}, _error(4197, "The endpoint has been ramped down."), 1, "retry", (), "ramped", id="503"),
    case(504, {}, b"", 1, "retry", (), "HTTP 504", id="504-empty"),
    case(500, {}, b"\x00\xff\xfe" * 50, 1, "retry", (), "HTTP 500", id="500-binary-garbage"),
]


@pytest.mark.parametrize("case", CLASSIFY_CASES)
def test_classify_decides_each_events_fate_from_the_answer(case: Case) -> None:
    outcome = classify(case.status, case.headers, case.body, case.count)
    assert outcome.kind == case.kind
    assert outcome.status == case.status
    assert outcome.results == case.results
    if case.kind == "results":
        assert len(outcome.results) == case.count
    assert case.message in outcome.message


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("30", 30.0, id="seconds"),
        pytest.param(" 7 ", 7.0, id="seconds-with-spaces"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("-5", None, id="negative"),
        pytest.param("²", None, id="superscript-two-latin1"),
        pytest.param("", None, id="empty"),
    ],
)
def test_429_reads_retry_after_in_seconds(retry_after: str | None, expected: float | None) -> None:
    headers = httpx.Headers({} if retry_after is None else {"Retry-After": retry_after.encode("latin-1")})
    outcome = classify(429, headers, _error(8, "Rate limited."), 3)
    assert outcome.kind == "retry"
    assert outcome.rate_limited
    assert outcome.retry_after == expected


def test_429_reads_retry_after_as_an_http_date() -> None:
    headers = httpx.Headers({"Retry-After": email.utils.formatdate(time.time() + 120, usegmt=True)})
    outcome = classify(429, headers, b"", 1)
    assert outcome.retry_after == pytest.approx(120, abs=3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("Fri, 28 Nov 2025 09:28:10 GMT", 90.0, id="future-date"),
        pytest.param("Fri, 28 Nov 2025 09:20:00 GMT", 0.0, id="past-date-is-zero"),
        pytest.param("Fri, 31 Feb 2025 09:20:00 GMT", None, id="impossible-date"),
        pytest.param("120", 120.0, id="seconds"),
    ],
)
def test_retry_after_seconds(value: str, expected: float | None) -> None:
    now = 1_764_322_000  # Fri, 28 Nov 2025 09:26:40 GMT
    assert retry_after_seconds(value, now=now) == expected


def test_only_429_is_rate_limited() -> None:
    assert not classify(503, {}, b"", 1).rate_limited
    assert classify(429, {}, b"", 1).rate_limited


def test_long_messages_are_cut_to_500_characters() -> None:
    outcome = classify(400, {}, _error(4196, "x" * 5000), 1)
    assert len(outcome.message) < 700
    result = classify(200, {}, _ok(("failed", "y" * 5000, "z" * 5000)), 1).results[0]
    assert len(result.error) == 500
    assert len(result.warning) == 500


# --- the adapter ---------------------------------------------------------------------------------


class Recorder:
    """A MockTransport handler that validates and records every request, then answers as told."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        validate_request_body(json.loads(request.read()))
        return self.answer(request)


def _adapter(*, test_mode: bool = False, api_base: str = API_BASE) -> PinterestAdapter:
    return PinterestAdapter(ad_account_id=ACCOUNT, access_token=TOKEN, api_base=api_base, test_mode=test_mode)


def _send(
    answer: Callable[[httpx.Request], httpx.Response], events: list[Event] | None = None, **kwargs: Any
) -> tuple[SendOutcome, Recorder]:
    recorder = Recorder(answer)
    with httpx.Client(transport=httpx.MockTransport(recorder)) as client:
        outcome = _adapter(**kwargs).send(client, events or [minimal_event()])
    return outcome, recorder


def test_adapter_posts_json_to_the_events_endpoint_with_the_bearer_token() -> None:
    outcome, recorder = _send(
        lambda request: httpx.Response(200, content=_ok(P, P)), [rich_event(), minimal_event()]
    )
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == EVENTS_URL
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == build_body([rich_event(), minimal_event()])
    assert outcome == SendOutcome("results", judged((True, ""), (True, "")), status=200)


def test_adapter_tolerates_a_trailing_slash_on_the_api_base() -> None:
    _, recorder = _send(lambda request: httpx.Response(200, content=_ok(P)), api_base=API_BASE + "/")
    assert str(recorder.requests[0].url) == EVENTS_URL


def test_test_mode_adds_test_true_to_the_query() -> None:
    _, recorder = _send(lambda request: httpx.Response(200, content=_ok(P)), test_mode=True)
    assert recorder.requests[0].url.params["test"] == "true"
    assert str(recorder.requests[0].url) == EVENTS_URL + "?test=true"


def test_live_mode_sends_no_test_parameter() -> None:
    _, recorder = _send(lambda request: httpx.Response(200, content=_ok(P)))
    assert "test" not in recorder.requests[0].url.params


def test_send_can_force_a_single_test_request() -> None:
    recorder = Recorder(lambda request: httpx.Response(200, content=_ok(P)))
    with httpx.Client(transport=httpx.MockTransport(recorder)) as client:
        _adapter().send(client, [minimal_event()], test=True)
        _adapter(test_mode=True).send(client, [minimal_event()], test=False)
    assert [r.url.params.get("test") for r in recorder.requests] == ["true", None]


def test_adapter_passes_retry_after_through_on_429() -> None:
    outcome, _ = _send(lambda request: httpx.Response(429, headers={"Retry-After": "12"}, content=b""))
    assert outcome.kind == "retry"
    assert outcome.retry_after == 12.0


def _raise(exc: type[httpx.RequestError], message: str) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc(message, request=request)

    return handler


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        pytest.param(httpx.ReadTimeout, "timed out", id="read-timeout"),
        pytest.param(httpx.ConnectTimeout, "timed out", id="connect-timeout"),
        pytest.param(httpx.PoolTimeout, "timed out", id="pool-timeout"),
        pytest.param(httpx.ConnectError, "ConnectError", id="connection-refused"),
        pytest.param(httpx.RemoteProtocolError, "RemoteProtocolError", id="connection-dropped"),
        pytest.param(httpx.ReadError, "ReadError", id="connection-reset"),
    ],
)
def test_network_failures_are_retried(exc: type[httpx.RequestError], words: str) -> None:
    outcome, _ = _send(_raise(exc, "[Errno 111] Connection refused"))
    assert outcome.kind == "retry"
    assert outcome.status is None
    assert words in outcome.message


def test_a_real_refused_connection_is_retried() -> None:
    with socket.socket() as probe:  # a port nobody listens on: bind, read it back, close
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = PinterestAdapter(
        ad_account_id=ACCOUNT, access_token=TOKEN, api_base=f"http://127.0.0.1:{port}/v5"
    )
    with httpx.Client(timeout=2.0) as client:
        outcome = adapter.send(client, [minimal_event()])
    assert outcome.kind == "retry"
    assert "could not reach Pinterest" in outcome.message


def test_a_garbled_compressed_answer_is_retried_not_raised() -> None:
    outcome, _ = _send(
        lambda request: httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"nope")
    )
    assert outcome.kind == "retry"
    assert "DecodingError" in outcome.message


def test_a_deflated_answer_is_read() -> None:
    compressed = zlib.compress(_ok(P))
    outcome, _ = _send(
        lambda request: httpx.Response(200, headers={"Content-Encoding": "deflate"}, content=compressed)
    )
    assert outcome.kind == "results"


TOKEN_CASES = [
    pytest.param(lambda request: httpx.Response(200, content=_ok(("failed", PAST, WARN))), id="200-failed"),
    pytest.param(lambda request: httpx.Response(422, content=_detailed(("failed", PAST, ""))), id="422"),
    pytest.param(
        lambda request: httpx.Response(400, content=_error(4196, "The request was invalid.")), id="400"
    ),
    pytest.param(lambda request: httpx.Response(401, content=_error(2, "Authentication failed.")), id="401"),
    pytest.param(lambda request: httpx.Response(403, content=_error(29, "Not permitted.")), id="403"),
    pytest.param(lambda request: httpx.Response(404, content=b"<html>404</html>"), id="404"),
    pytest.param(lambda request: httpx.Response(429, headers={"Retry-After": "3"}, content=b""), id="429"),
    pytest.param(lambda request: httpx.Response(500, content=b"oops"), id="500"),
    pytest.param(lambda request: httpx.Response(200, content=b"<html/>"), id="200-html"),
    pytest.param(_raise(httpx.ReadTimeout, "timed out"), id="timeout"),
    pytest.param(_raise(httpx.ConnectError, "refused"), id="connect-error"),
    pytest.param(
        lambda request: httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"x"),
        id="decoding-error",
    ),
]


@pytest.mark.parametrize("answer", TOKEN_CASES)
def test_the_token_never_appears_in_repr_or_any_outcome(
    answer: Callable[[httpx.Request], httpx.Response],
) -> None:
    adapter = _adapter(test_mode=True)
    assert TOKEN not in repr(adapter)
    assert TOKEN not in str(adapter)
    outcome, recorder = _send(answer, [rich_event()])
    assert recorder.requests[0].headers["authorization"] == f"Bearer {TOKEN}"  # it was sent, though
    assert TOKEN not in repr(outcome)
    assert TOKEN not in outcome.message
    assert all(TOKEN not in result.error + result.warning for result in outcome.results)


def test_repr_says_where_events_go() -> None:
    assert repr(_adapter(test_mode=True)) == f"PinterestAdapter(url={EVENTS_URL!r}, test_mode=True)"


# --- against the sandbox -------------------------------------------------------------------------


def _validating(transport: httpx.BaseTransport) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        validate_request_body(json.loads(request.read()))
        response = transport.handle_request(request)
        response.read()
        return response

    return httpx.MockTransport(handler)


def test_adapter_and_sandbox_agree_on_a_processed_test_event() -> None:
    sandbox = PinterestSandbox(clock=lambda: NOW)
    adapter = PinterestAdapter(
        ad_account_id="549755885175", access_token="sandbox-token", api_base=API_BASE, test_mode=True
    )
    with httpx.Client(transport=_validating(sandbox.transport())) as client:
        outcome = adapter.send(client, [rich_event(), minimal_event()])
    assert outcome.kind == "results"
    assert [result.processed for result in outcome.results] == [True, True]
    assert [(record.event_id, record.test) for record in sandbox.received] == [
        ("Purchase:A-1001", True),
        ("pv-1", True),
    ]


@pytest.mark.parametrize(
    ("token", "account", "status", "words"),
    [
        pytest.param("wrong-token", "549755885175", 401, "access token", id="bad-token"),
        pytest.param("sandbox-token", "123456", 403, "no access to this ad account", id="foreign-ad-account"),
        pytest.param("sandbox-token", "not-digits", 400, "invalid", id="malformed-ad-account"),
    ],
)
def test_sandbox_refusals_are_explained_in_words(token: str, account: str, status: int, words: str) -> None:
    sandbox = PinterestSandbox(clock=lambda: NOW)
    adapter = PinterestAdapter(ad_account_id=account, access_token=token, api_base=API_BASE)
    with httpx.Client(transport=_validating(sandbox.transport())) as client:
        outcome = adapter.send(client, [minimal_event()])
    assert (outcome.kind, outcome.status) == ("reject", status)
    assert words in outcome.message
    assert token not in outcome.message
