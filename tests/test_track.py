"""`track()` (CONTRACT.md §1): from every kind of request object, what it attaches, what it refuses
(ValueError for the developer's mistakes) and what it never does (raise for tracking trouble, wait
on Pinterest, send without consent or for bots)."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.middleware_support import (
    BOT_UA,
    BROWSER_UA,
    CLIENT_IP,
    FRAMEWORKS,
    SHOP,
    BlockingTransport,
    Rig,
    asgi_client,
    django_asgi_shop,
    failing_engine,
    fetch,
    shop_client,
)
from tracklayer_mw import Engine, Settings, TrackLayerMiddleware, track
from tracklayer_mw.outbox import MemoryOutbox, NewEvent
from tracklayer_mw.request import STATE_KEY, view_from_scope

EPIK = "dj0yJnU9dHJhY2s"
ANN = hashlib.sha256(b"ann@example.com").hexdigest()


def request_seen_by(
    engine: Engine, *, headers: dict[str, str] | None = None, path: str = "/checkout"
) -> dict[str, Any]:
    """An ASGI scope the middleware has seen (its state attached), for calling track() directly."""
    sent = {"host": "www.shop.localhost", "user-agent": BROWSER_UA, **(headers or {})}
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "query_string": b"",
        "headers": [(name.encode(), value.encode()) for name, value in sent.items()],
        "client": (CLIENT_IP, 50000),
    }
    scope[STATE_KEY] = engine.begin(view_from_scope(scope, 0))
    return scope


def delivered_one(rig: Rig) -> dict[str, Any]:
    (event,) = rig.delivered()
    return event


# --- from every kind of request -----------------------------------------------------------------------


def _client_for(kind: str, engine: Engine) -> Any:
    if kind == "django-asgi-request":
        return asgi_client(TrackLayerMiddleware(django_asgi_shop(), engine=engine))
    return shop_client(kind.split("-", 1)[0], engine)


REQUEST_KINDS = [
    pytest.param("starlette-request", "", id="starlette-request"),
    pytest.param("starlette-asgi-scope", "&scope=1", id="asgi-scope"),
    pytest.param("fastapi-request", "", id="fastapi-request"),
    pytest.param("flask-request", "", id="flask-request"),
    pytest.param("django-wsgi-request", "", id="django-wsgi-request"),
    pytest.param("django-asgi-request", "", id="django-asgi-request"),
    pytest.param("wsgi-environ", "", id="wsgi-environ"),
]


@pytest.mark.parametrize(("kind", "extra"), REQUEST_KINDS)
def test_track_returns_the_event_id_it_queued(rig: Rig, kind: str, extra: str) -> None:
    response = fetch(_client_for(kind, rig.engine()), "GET", f"/buy?order=A-1001{extra}")
    assert response.json() == {"event_id": "Purchase:A-1001"}


@pytest.mark.parametrize(("kind", "extra"), REQUEST_KINDS)
def test_track_attaches_click_client_and_url_from_the_request(rig: Rig, kind: str, extra: str) -> None:
    fetch(_client_for(kind, rig.engine()), "GET", f"/buy?order=A-1001{extra}", cookies={"_epik": EPIK})
    event = delivered_one(rig)
    assert event["event_name"] == "checkout"
    assert event["event_source_url"] == f"{SHOP}/buy?order=A-1001{extra}"
    assert event["user_data"] == {
        "em": [ANN],
        "click_id": EPIK,
        "client_ip_address": CLIENT_IP,
        "client_user_agent": BROWSER_UA,
    }
    assert event["custom_data"] == {"value": "49.99", "currency": "USD", "order_id": "A-1001"}


def test_track_on_a_request_no_middleware_saw_returns_none(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tracklayer_mw"):
        assert track({"type": "http"}, "Purchase", user={"email": "ann@example.com"}) is None
    assert "no TrackLayer middleware saw" in caplog.text


def test_an_unknown_event_raises_even_on_a_request_no_middleware_saw() -> None:
    with pytest.raises(ValueError, match="unknown event 'Bought'"):
        track({"type": "http"}, "Bought")


@pytest.mark.parametrize(
    "base_url",
    [
        pytest.param("http://www.shop.localhost:8000", id="port"),
        pytest.param("https://www.shop.localhost:8443", id="https-port"),
        pytest.param("http://[::1]:8000", id="ipv6-literal"),
    ],
)
@pytest.mark.parametrize("framework", ["starlette", "flask"])
def test_request_url_keeps_the_host_and_port_as_requested(rig: Rig, framework: str, base_url: str) -> None:
    fetch(shop_client(framework, rig.engine(), base_url=base_url), "GET", "/buy")
    assert delivered_one(rig)["event_source_url"] == f"{base_url}/buy"


def test_request_url_uses_the_forwarded_host_of_a_trusted_proxy(rig: Rig) -> None:
    engine = rig.engine(trusted_proxy_hops=1)
    headers = {"x-forwarded-host": "www.shop.localhost:8443", "x-forwarded-proto": "https"}
    fetch(shop_client("starlette", engine, base_url="http://10.0.0.5:8000"), "GET", "/buy", headers=headers)
    assert delivered_one(rig)["event_source_url"] == "https://www.shop.localhost:8443/buy"


def test_an_email_in_the_request_url_is_never_stored_or_sent(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine())
    fetch(client, "GET", "/buy?newsletter=1&email=dora.inurl%40example.com")
    assert delivered_one(rig)["event_source_url"] == f"{SHOP}/buy?newsletter=1"


def test_explicit_url_wins_over_the_request_url(rig: Rig) -> None:
    scope = request_seen_by(rig.engine())
    track(scope, "Lead", user={"email": "ann@example.com"}, url="https://www.shop.localhost/landing")
    assert delivered_one(rig)["event_source_url"] == "https://www.shop.localhost/landing"


def test_track_hashes_user_data_exactly_once(rig: Rig) -> None:
    scope = request_seen_by(rig.engine())
    track(scope, "Signup", user={"email": " Ann@Example.COM ", "external_id": ANN.upper()})
    assert delivered_one(rig)["user_data"]["em"] == [ANN]


# --- the developer's mistakes raise ValueError --------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param({"event": "Bought"}, "unknown event 'Bought'", id="unknown-event"),
        pytest.param({"event": "Purchase", "user": ["ann@example.com"]}, "user", id="user-not-a-mapping"),
        pytest.param({"event": "Purchase", "user": {"email": 42}}, "user.email", id="email-not-text"),
        pytest.param(
            {"event": "Purchase", "user": {"emial": "ann@example.com"}}, "emial", id="unknown-user-field"
        ),
        pytest.param({"event": "Purchase", "custom": ["x"]}, "custom", id="custom-not-a-mapping"),
        pytest.param(
            {"event": "Purchase", "custom": {"value": "lots"}}, "custom.value", id="value-not-a-number"
        ),
        pytest.param({"event": "Purchase", "event_time": "yesterday"}, "event_time", id="bad-event-time"),
        pytest.param({"event": "Purchase", "event_id": "has space"}, "event_id", id="bad-event-id"),
    ],
)
def test_developer_mistakes_raise_valueerror_with_a_clear_message(
    rig: Rig, arguments: dict[str, Any], message: str
) -> None:
    scope = request_seen_by(rig.engine())
    event = arguments.pop("event")
    with pytest.raises(ValueError, match=re.escape(message)):
        track(scope, event, **arguments)


def test_unknown_event_error_lists_the_event_names(rig: Rig) -> None:
    with pytest.raises(ValueError, match="PageVisit, ViewCategory, Search"):
        track(request_seen_by(rig.engine()), "Bought")


def test_developer_mistakes_raise_even_without_consent(rig: Rig) -> None:
    scope = request_seen_by(rig.engine(consent="tl_consent=granted"))
    with pytest.raises(ValueError, match="unknown event"):
        track(scope, "Bought")


# --- the customer's data is not the developer's bug ---------------------------------------------------


def test_unusable_customer_phone_drops_that_field_and_keeps_the_event(rig: Rig) -> None:
    scope = request_seen_by(rig.engine())
    assert track(scope, "Lead", user={"email": "ann@example.com", "phone": "call me maybe"}) is not None
    assert set(delivered_one(rig)["user_data"]) == {"em", "client_ip_address", "client_user_agent"}


@pytest.mark.parametrize("field", ["email", "first_name", "external_id", "phone"])
def test_customer_text_that_is_not_unicode_drops_that_field_and_keeps_the_event(rig: Rig, field: str) -> None:
    """A lone surrogate (from a form or a database) cannot be hashed: the field goes, not the request."""
    scope = request_seen_by(rig.engine())
    assert track(scope, "Lead", user={field: "ann\ud800@example.com"}) is not None
    assert set(delivered_one(rig)["user_data"]) == {"client_ip_address", "client_user_agent"}


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"custom": {"order_id": "A-\ud800"}}, id="order-id"),
        pytest.param({"custom": {"content_name": "mug \udfff"}}, id="custom-text"),
        pytest.param({"custom": {"content_ids": ["sku-\ud800"]}}, id="content-ids"),
        pytest.param({"url": "https://www.shop.localhost/\ud800"}, id="url"),
    ],
)
def test_event_text_that_is_not_unicode_queues_nothing_and_never_raises(
    rig: Rig, arguments: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Queued, it could never be sent: every delivery batch holding it would fail to encode."""
    scope = request_seen_by(rig.engine())
    assert track(scope, "Purchase", user={"email": "ann@example.com"}, **arguments) is None
    assert "not valid Unicode" in caplog.text
    assert rig.delivered() == []


# --- tracking trouble never raises, never waits -------------------------------------------------------


class _BrokenOutbox(MemoryOutbox):
    def put(self, events: Any) -> None:
        raise OSError("disk full")


def test_track_returns_none_when_the_outbox_cannot_write(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    engine = Engine(make_settings(), outbox=_BrokenOutbox())
    with caplog.at_level(logging.ERROR, logger="tracklayer_mw"):
        assert track(request_seen_by(engine), "Purchase", user={"email": "ann@example.com"}) is None
    assert "could not queue" in caplog.text


def test_track_returns_at_once_while_pinterest_is_not_answering(rig: Rig) -> None:
    blocking = BlockingTransport(rig.transport)
    engine = rig.engine(transport=blocking)
    client = shop_client("starlette", engine)
    try:
        fetch(client, "GET", "/buy?order=first")
        assert blocking.entered.wait(5), "the worker never called Pinterest"
        started = time.monotonic()
        assert fetch(client, "GET", "/buy?order=second").json() == {"event_id": "Purchase:second"}
        assert time.monotonic() - started < 2
        assert not blocking.release.is_set()
    finally:
        blocking.release.set()


def test_track_without_an_email_or_a_user_agent_queues_nothing(rig: Rig) -> None:
    scope = request_seen_by(rig.engine(), headers={"user-agent": ""})
    assert track(scope, "PageVisit") is None


# --- consent, GPC, bots -------------------------------------------------------------------------------


def test_without_consent_track_drops_the_event(rig: Rig) -> None:
    scope = request_seen_by(rig.engine(consent="tl_consent=granted"))
    assert track(scope, "Purchase", user={"email": "ann@example.com"}) is None
    assert rig.delivered() == []


def test_with_the_consent_cookie_track_sends(rig: Rig) -> None:
    scope = request_seen_by(
        rig.engine(consent="tl_consent=granted"), headers={"cookie": "tl_consent=granted"}
    )
    assert track(scope, "Purchase", user={"email": "ann@example.com"}) is not None
    assert delivered_one(rig)["opt_out"] is False


def test_without_consent_in_opt_out_mode_track_sends_with_opt_out(rig: Rig) -> None:
    scope = request_seen_by(rig.engine(consent=lambda request: False, on_no_consent="opt_out"))
    assert track(scope, "Purchase", user={"email": "ann@example.com"}) is not None
    assert delivered_one(rig)["opt_out"] is True


def test_global_privacy_control_marks_server_events_ldp(rig: Rig) -> None:
    scope = request_seen_by(rig.engine(), headers={"sec-gpc": "1"})
    track(scope, "Purchase", user={"email": "ann@example.com"})
    assert delivered_one(rig)["custom_data"]["opt_out_type"] == "LDP"


def test_bots_produce_no_server_events(rig: Rig) -> None:
    scope = request_seen_by(rig.engine(), headers={"user-agent": BOT_UA})
    assert track(scope, "Purchase", user={"email": "ann@example.com"}) is None
    assert rig.delivered() == []


def test_browser_and_server_events_for_one_order_count_once(rig: Rig) -> None:
    """Merged in the outbox when both wait there together, or deduplicated by Pinterest by event_id."""
    client = shop_client("starlette", rig.engine())
    fetch(client, "POST", "/_tl/ingest", json={"event": "Purchase", "custom": {"order_id": "A-1001"}})
    fetch(client, "GET", "/buy?order=A-1001", cookies={"_epik": EPIK})
    assert {event["event_id"] for event in rig.delivered()} == {"Purchase:A-1001"}
    assert [record.duplicate for record in rig.sandbox.received].count(False) == 1


def test_outbox_gets_hashed_values_only(make_settings: Callable[..., Settings]) -> None:
    stored: list[NewEvent] = []

    class Recording(MemoryOutbox):
        def put(self, events: Any) -> None:
            stored.extend(events)

    engine = Engine(make_settings(), outbox=Recording())
    track(request_seen_by(engine), "Purchase", user={"email": "Ann@Example.com", "first_name": "Ann"})
    assert "ann" not in repr(stored[0].payload).lower().replace(ANN, "")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_track_returns_none_when_reading_the_request_fails(
    rig: Rig, framework: str, caplog: pytest.LogCaptureFixture
) -> None:
    # No click signals: the state is built only when track() asks for it, inside the host's handler.
    response = fetch(shop_client(framework, failing_engine(rig, "begin")), "GET", "/buy")
    assert response.status_code == 200
    assert response.json() == {"event_id": None}
    assert "tracklayer bug in begin" in caplog.text
