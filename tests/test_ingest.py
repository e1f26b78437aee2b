"""`POST /_tl/ingest` (CONTRACT.md §3): every status on every framework, partial batches, the size
limit while reading, same-site checks, the per-client rate, what is attached, and that a request
never waits on Pinterest."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.middleware_support import (
    BOT_UA,
    BROWSER_UA,
    CLIENT_IP,
    FRAMEWORKS,
    SHOP,
    BlockingTransport,
    FakeClock,
    Rig,
    fetch,
    shop_client,
)
from tracklayer_mw import TrackLayerMiddleware, TrackLayerWSGIMiddleware
from tracklayer_mw.endpoints import MAX_BODY, RateLimiter

INGEST = "/_tl/ingest"
EPIK = "dj0yJnU9aW5nZXN0"


def post(client: Any, body: Any, *, content_type: str = "application/json", **kwargs: Any) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": content_type, **kwargs.pop("headers", {})}
    return fetch(client, "POST", INGEST, content=content, headers=headers, **kwargs)


# --- every status, on every framework ---------------------------------------------------------------

STATUS_CASES = [
    pytest.param(("POST", "application/json", b'{"event":"AddToCart"}', {}, 202), id="202-accepted"),
    pytest.param(
        ("POST", "text/plain;charset=UTF-8", b'{"event":"AddToCart"}', {}, 202), id="202-sendbeacon"
    ),
    pytest.param(("POST", "application/json", b'{"event":', {}, 400), id="400-bad-json"),
    pytest.param(("POST", "application/json", b'{"event":"Bought"}', {}, 400), id="400-bad-event"),
    pytest.param(
        ("POST", "application/json", b'{"event":"AddToCart"}', {"origin": "https://evil.example"}, 403),
        id="403-origin",
    ),
    pytest.param(
        ("POST", "application/json", b'{"event":"AddToCart"}', {"sec-fetch-site": "cross-site"}, 403),
        id="403-fetch",
    ),
    pytest.param(("GET", None, b"", {}, 405), id="405-get"),
    pytest.param(("PUT", "application/json", b'{"event":"AddToCart"}', {}, 405), id="405-put"),
    pytest.param(("POST", "application/json", b"{" + b" " * MAX_BODY + b"}", {}, 413), id="413-too-large"),
    pytest.param(("POST", "application/x-www-form-urlencoded", b"event=AddToCart", {}, 415), id="415-form"),
    pytest.param(("POST", None, b'{"event":"AddToCart"}', {}, 415), id="415-no-type"),
]


@pytest.mark.parametrize("case", STATUS_CASES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ingest_answers_with_the_contract_status(
    rig: Rig, framework: str, case: tuple[str, str | None, bytes, dict[str, str], int]
) -> None:
    method, content_type, body, headers, status = case
    sent = {**headers, **({"content-type": content_type} if content_type else {})}
    response = fetch(shop_client(framework, rig.engine()), method, INGEST, content=body, headers=sent)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ingest_answers_429_to_a_client_over_its_rate(rig: Rig, framework: str) -> None:
    client = shop_client(framework, rig.engine(ingest_rate_per_minute=1))  # a burst of 10, then 1 a minute
    answers = [post(client, {"event": "AddToCart"}).status_code for _ in range(11)]
    assert answers == [202] * 10 + [429]


def test_429_says_when_to_retry(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine(ingest_rate_per_minute=1))
    for _ in range(10):
        post(client, {"event": "AddToCart"})
    response = post(client, {"event": "AddToCart"})
    assert (response.status_code, response.headers["retry-after"]) == (429, "10")


def test_rate_is_per_client(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine(ingest_rate_per_minute=1, trusted_proxy_hops=1))
    for _ in range(11):
        post(client, {"event": "AddToCart"}, headers={"x-forwarded-for": "198.51.100.1"})
    response = post(client, {"event": "AddToCart"}, headers={"x-forwarded-for": "198.51.100.2"})
    assert response.status_code == 202


def test_rate_limiter_refills_at_the_configured_rate() -> None:
    clock = FakeClock(0)
    limiter = RateLimiter(60, clock=clock)  # one a second, a burst of 10
    assert [limiter.allow("a") for _ in range(11)] == [True] * 10 + [False]
    clock.advance(1)
    assert [limiter.allow("a"), limiter.allow("a")] == [True, False]


def test_rate_limiter_burst_never_exceeds_its_cap() -> None:
    clock = FakeClock(0)
    limiter = RateLimiter(60, clock=clock)
    limiter.allow("a")
    clock.advance(3600)
    assert sum(limiter.allow("a") for _ in range(20)) == 10


def test_rate_limiter_forgets_the_oldest_clients_first() -> None:
    clock = FakeClock(0)
    limiter = RateLimiter(60, clock=clock, max_clients=2)
    for _ in range(10):
        limiter.allow("old")
    limiter.allow("b")
    limiter.allow("c")  # "old" is forgotten: a full bucket again
    assert limiter.allow("old")


def test_405_names_the_allowed_method(rig: Rig) -> None:
    response = fetch(shop_client("starlette", rig.engine()), "GET", INGEST)
    assert response.headers["allow"] == "POST"


def test_unknown_endpoint_under_the_prefix_is_404(rig: Rig) -> None:
    assert fetch(shop_client("starlette", rig.engine()), "GET", "/_tl/nope").status_code == 404


# --- 202 ----------------------------------------------------------------------------------------------


def test_202_lists_the_accepted_event_ids(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine())
    response = post(client, {"event": "AddToCart", "event_id": "evt-1"})
    assert (response.status_code, response.json()) == (202, {"accepted": 1, "event_ids": ["evt-1"]})


def test_202_for_a_batch(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine())
    batch = {"events": [{"event": "PageVisit", "event_id": "a"}, {"event": "AddToCart", "event_id": "b"}]}
    assert post(client, batch).json() == {"accepted": 2, "event_ids": ["a", "b"]}


def test_order_id_gives_the_shared_event_id(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine())
    response = post(client, {"event": "Purchase", "custom": {"order_id": "A 1001/x"}})
    assert response.json()["event_ids"] == ["Purchase:A%201001%2Fx"]


# --- 400 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        pytest.param(b"\xff\xfe", "body: not UTF-8", id="not-utf8"),
        pytest.param(b"{", "body: not valid JSON", id="not-json"),
        pytest.param(b"[" * 100_00 + b"]" * 100_00, "body: not valid JSON", id="too-deep"),
        pytest.param(
            b'{"events":[],"x":1}', "events: must be the only field, and a list", id="events-and-more"
        ),
        pytest.param(b'{"events":{}}', "events: must be the only field, and a list", id="events-not-list"),
        pytest.param(b'{"events":[]}', "events: send 1 to 100 events per request", id="empty-batch"),
        pytest.param(
            json.dumps({"events": [{"event": "PageVisit"}] * 101}).encode(),
            "events: send 1 to 100 events per request",
            id="batch-too-big",
        ),
        pytest.param(
            b'{"event":"AddToCart","custom":{"value":"lots"}}',
            "custom.value: must be a number",
            id="field-path",
        ),
    ],
)
def test_400_says_what_is_wrong(rig: Rig, body: bytes, error: str) -> None:
    response = post(shop_client("starlette", rig.engine()), body)
    assert (response.status_code, response.json()["error"]) == (400, error)


def test_400_for_an_unknown_event_lists_the_names(rig: Rig) -> None:
    response = post(shop_client("starlette", rig.engine()), {"event": "Bought"})
    assert "PageVisit" in response.json()["error"]
    assert "Purchase" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        pytest.param(
            b'{"event":"Purchase","custom":{"order_id":"\\ud800"}}', "custom.order_id", id="order-id"
        ),
        pytest.param(
            b'{"event":"AddToCart","user":{"email":"\\uD800@example.com"}}', "user.email", id="email"
        ),
        pytest.param(
            b'{"event":"AddToCart","user":{"external_id":"\\udfff"}}', "user.external_id", id="external-id"
        ),
        pytest.param(b'{"event":"AddToCart","url":"https://www.shop.localhost/\\ud800"}', "url", id="url"),
        pytest.param(
            b'{"event":"AddToCart","custom":{"content_ids":["\\ud800"]}}',
            "custom.content_ids[0]",
            id="content-ids",
        ),
        pytest.param(b'{"event":"AddToCart","\\ud800":1}', "event", id="field-name"),
    ],
)
def test_lone_surrogate_in_a_string_is_a_400_never_a_5xx(rig: Rig, body: bytes, path: str) -> None:
    response = post(shop_client("starlette", rig.engine()), body)
    assert (response.status_code, response.json()["error"]) == (
        400,
        f"{path}: not valid Unicode (a lone surrogate)",
    )


def test_paired_surrogates_are_ordinary_text(rig: Rig) -> None:
    body = b'{"event":"AddToCart","custom":{"content_name":"\\ud83d\\ude00 mug"}}'
    assert post(shop_client("starlette", rig.engine()), body).status_code == 202


def test_event_with_a_lone_surrogate_is_rejected_and_the_rest_of_the_batch_delivered(rig: Rig) -> None:
    body = b'{"events":[{"event":"AddToCart","url":"https://x/\\ud800"},{"event":"Search","event_id":"ok"}]}'
    answer = post(shop_client("starlette", rig.engine()), body).json()
    assert (answer["event_ids"], [reject["index"] for reject in answer["rejected"]]) == (["ok"], [0])
    assert [event["event_id"] for event in rig.delivered()] == ["ok"]


def test_partial_batch_accepts_the_good_events_and_lists_the_rejects(rig: Rig) -> None:
    batch = {
        "events": [
            {"event": "PageVisit", "event_id": "good-0"},
            {"event": "AddToCart", "custom": {"value": "lots"}},
            {"event": "Bought"},
            {"event": "Search", "event_id": "good-3"},
        ]
    }
    answer = post(shop_client("starlette", rig.engine()), batch).json()
    assert answer["accepted"] == 2
    assert answer["event_ids"] == ["good-0", "good-3"]
    assert [(reject["index"], reject["error"].split(":")[0]) for reject in answer["rejected"]] == [
        (1, "events[1].custom.value"),
        (2, "events[2].event"),
    ]


def test_partial_batch_reject_indexes_point_at_the_original_events(rig: Rig) -> None:
    batch = {
        "events": [
            {"event": "Bought"},
            {"event": "AddToCart", "event_id": "no-match-keys"},
            {"event": "AddToCart", "event_id": "has-email", "user": {"email": "ann@example.com"}},
        ]
    }
    client = shop_client("starlette", rig.engine())
    answer = post(client, batch, headers={"user-agent": ""}).json()  # no user agent: only the email matches
    assert answer["event_ids"] == ["has-email"]
    assert [(reject["index"], reject["error"].split(":")[0]) for reject in answer["rejected"]] == [
        (0, "events[0].event"),
        (1, "events[1].user"),
    ]


def test_batch_where_no_event_can_be_matched_is_400(rig: Rig) -> None:
    response = post(
        shop_client("starlette", rig.engine()), {"event": "AddToCart"}, headers={"user-agent": ""}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "user: needs an email, or the client's IP and user agent"


# --- 403: same-site only ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({"origin": SHOP}, 202, id="same-origin"),
        pytest.param({"origin": f"{SHOP}:8443"}, 202, id="same-host-other-port"),
        pytest.param({"origin": "https://blog.shop.localhost"}, 202, id="inside-cookie-domain"),
        pytest.param({"origin": "https://shop.localhost"}, 202, id="cookie-domain-itself"),
        pytest.param({}, 202, id="no-origin-no-fetch-metadata"),
        pytest.param({"sec-fetch-site": "same-origin"}, 202, id="fetch-same-origin"),
        pytest.param({"sec-fetch-site": "same-site"}, 202, id="fetch-same-site"),
        pytest.param({"sec-fetch-site": "none"}, 202, id="fetch-none"),
        pytest.param({"origin": "https://evil.example"}, 403, id="other-site"),
        pytest.param({"origin": "https://evilshop.localhost"}, 403, id="lookalike-suffix"),
        pytest.param({"origin": "https://shop.localhost.evil.example"}, 403, id="lookalike-prefix"),
        pytest.param({"origin": "https://pay.localhost"}, 403, id="linked-domain-is-another-site"),
        pytest.param({"origin": "null"}, 403, id="opaque-origin"),
        pytest.param({"origin": "http://[::1"}, 403, id="malformed-origin"),
        pytest.param({"sec-fetch-site": "cross-site"}, 403, id="fetch-cross-site"),
        pytest.param({"origin": SHOP, "sec-fetch-site": "cross-site"}, 202, id="origin-decides-when-present"),
    ],
)
def test_same_site_check(rig: Rig, headers: dict[str, str], status: int) -> None:
    assert (
        post(shop_client("starlette", rig.engine()), {"event": "AddToCart"}, headers=headers).status_code
        == status
    )


# --- 413 while reading the stream ---------------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_413_for_a_chunked_body_without_content_length(rig: Rig, framework: str) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 16384

    client = shop_client(framework, rig.engine())
    response = fetch(client, "POST", INGEST, content=body(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_body_of_exactly_the_limit_is_read(rig: Rig) -> None:
    body = b'{"event":"AddToCart"}'
    body += b" " * (MAX_BODY - len(body))
    assert post(shop_client("starlette", rig.engine()), body).status_code == 202


def test_asgi_ingest_stops_reading_once_past_the_limit(rig: Rig) -> None:
    chunk = b" " * 16384
    received = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": chunk, "more_body": received < 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the host app must not see tracklayer's own endpoint")

    middleware = TrackLayerMiddleware(app, engine=rig.engine())
    scope = {
        "type": "http",
        "method": "POST",
        "path": INGEST,
        "query_string": b"",
        "headers": [(b"host", b"www.shop.localhost"), (b"content-type", b"application/json")],
        "client": (CLIENT_IP, 1),
        "scheme": "http",
    }
    anyio.run(middleware, scope, receive, send)
    assert sent[0]["status"] == 413
    assert received == MAX_BODY // len(chunk) + 1


def test_wsgi_ingest_reads_at_most_one_byte_past_the_limit(rig: Rig) -> None:
    stream = io.BytesIO(b" " * (10 * MAX_BODY))
    statuses: list[str] = []
    middleware = TrackLayerWSGIMiddleware(lambda environ, start: [], engine=rig.engine())
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": INGEST,
        "SERVER_NAME": "www.shop.localhost",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": CLIENT_IP,
        "CONTENT_TYPE": "application/json",
        "wsgi.input": stream,
        "wsgi.url_scheme": "http",
    }
    body = b"".join(middleware(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    assert statuses == ["413 Error"]
    assert json.loads(body) == {"error": f"body: larger than {MAX_BODY} bytes"}
    assert stream.tell() == MAX_BODY + 1


# --- what is attached ---------------------------------------------------------------------------------


def delivered_one(rig: Rig) -> dict[str, Any]:
    (event,) = rig.delivered()
    return event


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ingest_attaches_click_id_client_ip_and_user_agent(rig: Rig, framework: str) -> None:
    client = shop_client(framework, rig.engine())
    post(client, {"event": "AddToCart", "url": f"{SHOP}/p/1"}, cookies={"_epik": EPIK})
    user_data = delivered_one(rig)["user_data"]
    assert (user_data["click_id"], user_data["client_ip_address"], user_data["client_user_agent"]) == (
        EPIK,
        CLIENT_IP,
        BROWSER_UA,
    )


def test_forwarded_for_is_ignored_without_trusted_proxies(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine(trusted_proxy_hops=0))
    post(client, {"event": "AddToCart"}, headers={"x-forwarded-for": "198.51.100.7"})
    assert delivered_one(rig)["user_data"]["client_ip_address"] == CLIENT_IP


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_client_ip_comes_from_the_trusted_hop(rig: Rig, framework: str) -> None:
    client = shop_client(framework, rig.engine(trusted_proxy_hops=1))
    post(client, {"event": "AddToCart"}, headers={"x-forwarded-for": "6.6.6.6, 198.51.100.7"})
    assert delivered_one(rig)["user_data"]["client_ip_address"] == "198.51.100.7"


@pytest.mark.parametrize("where", ["url", "referer"])
def test_an_email_in_the_page_url_is_never_stored_or_sent(rig: Rig, where: str) -> None:
    page = f"{SHOP}/thanks?email=ann%40example.com&order=7"
    event = {"event": "Lead", **({"url": page} if where == "url" else {})}
    post(shop_client("starlette", rig.engine()), event, headers={"referer": page})
    assert delivered_one(rig)["event_source_url"] == f"{SHOP}/thanks?order=7"


def test_browser_event_url_defaults_to_the_referer(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine())
    post(client, {"event": "AddToCart"}, headers={"referer": f"{SHOP}/p/sku-9"})
    assert delivered_one(rig)["event_source_url"] == f"{SHOP}/p/sku-9"


def test_ingest_answers_while_pinterest_is_not_answering(rig: Rig) -> None:
    blocking = BlockingTransport(rig.transport)
    client = shop_client("starlette", rig.engine(transport=blocking))
    try:
        assert post(client, {"event": "AddToCart", "event_id": "first"}).status_code == 202
        assert blocking.entered.wait(5), "the worker never called Pinterest"
        started = time.monotonic()
        assert post(client, {"event": "AddToCart", "event_id": "second"}).status_code == 202
        assert time.monotonic() - started < 2
        assert not blocking.release.is_set()
    finally:
        blocking.release.set()


# --- privacy: bots, consent, GPC ----------------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bots_produce_no_events(rig: Rig, framework: str) -> None:
    client = shop_client(framework, rig.engine())
    response = post(client, {"event": "PageVisit"}, headers={"user-agent": BOT_UA})
    assert (response.status_code, response.json()) == (
        202,
        {"accepted": 0, "event_ids": [], "dropped": "bot"},
    )
    assert rig.delivered() == []


def test_without_consent_events_are_dropped(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine(consent="tl_consent=granted"))
    response = post(client, {"event": "PageVisit"})
    assert response.json() == {"accepted": 0, "event_ids": [], "dropped": "no consent"}
    assert rig.delivered() == []


def test_with_the_consent_cookie_events_are_sent(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine(consent="tl_consent=granted"))
    post(client, {"event": "PageVisit"}, cookies={"tl_consent": "granted"})
    assert delivered_one(rig)["opt_out"] is False


def test_without_consent_in_opt_out_mode_events_are_sent_with_opt_out(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine(consent=lambda request: False, on_no_consent="opt_out"))
    post(client, {"event": "PageVisit"}, cookies={"_epik": EPIK})
    assert delivered_one(rig)["opt_out"] is True


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_global_privacy_control_sends_opt_out_type_ldp(rig: Rig, framework: str) -> None:
    client = shop_client(framework, rig.engine())
    post(client, {"event": "PageVisit"}, headers={"sec-gpc": "1"})
    assert delivered_one(rig)["custom_data"]["opt_out_type"] == "LDP"


def test_without_global_privacy_control_no_opt_out_type(rig: Rig) -> None:
    client = shop_client("starlette", rig.engine())
    post(client, {"event": "PageVisit"}, headers={"sec-gpc": "0"})
    assert "opt_out_type" not in delivered_one(rig).get("custom_data", {})


# --- never a 5xx for anything a client can send ---------------------------------------------------------

# Any text JSON can carry, lone UTF-16 surrogates ("\ud800") included.
_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=30)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=20,
)
_event_like = st.fixed_dictionaries(
    {"event": st.sampled_from(["PageVisit", "Purchase", "AddToCart", "x"])},
    optional={
        "event_id": _json_values,
        "event_time": _json_values,
        "url": _text | _json_values,
        "user": st.dictionaries(
            st.sampled_from(["email", "phone", "zip", "country", "gender"]), _json_values
        ),
        "custom": st.dictionaries(
            st.sampled_from(["value", "currency", "order_id", "contents", "content_ids", "num_items"]),
            _json_values,
        ),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=_event_like | _json_values)
def test_no_client_input_gives_a_5xx(rig: Rig, document: Any) -> None:
    if not rig.engines:
        rig.engine(ingest_rate_per_minute=1_000_000)
    client = shop_client("starlette", rig.engines[0])
    response = post(client, json.dumps(document).encode())
    assert response.status_code in (202, 400)


# --- where an ASGI ingest is stored ------------------------------------------------------------------


def test_asgi_ingest_is_stored_on_the_event_loop_when_the_outbox_is_free(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = rig.engine()
    hops: list[object] = []
    real_run_sync = anyio.to_thread.run_sync

    async def counting_run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(func)
        return await real_run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting_run_sync)
    response = post(shop_client("starlette", engine), {"event": "AddToCart"})
    assert response.status_code == 202
    assert hops == []  # no thread hop: put_nowait() committed it
    assert [event["event_name"] for event in rig.delivered()] == ["add_to_cart"]


def test_asgi_ingest_waits_off_the_loop_while_another_process_writes(rig: Rig) -> None:
    engine = rig.engine()
    path = engine.settings.outbox.removeprefix("sqlite:///")
    other = sqlite3.connect(path, isolation_level=None)  # another process, as SQLite sees it
    other.execute("BEGIN IMMEDIATE")
    answers: list[Any] = []
    client = shop_client("starlette", engine)
    sending = threading.Thread(target=lambda: answers.append(post(client, {"event": "AddToCart"})))
    sending.start()
    time.sleep(0.3)
    assert sending.is_alive()  # the request waits for the outbox, in a thread: the loop goes on
    assert fetch(client, "GET", "/").status_code == 200
    other.execute("COMMIT")
    other.close()
    sending.join(5)
    assert answers[0].status_code == 202
    assert [event["event_name"] for event in rig.delivered()] == ["add_to_cart"]
