"""Deliverer: one cycle at a time with a fake clock, then the real thread.

Every request any test here makes passes through ``Validating``, which checks the body against
Pinterest's official schema before the sandbox (or a MockTransport handler) sees it. Nothing
sleeps: the thread tests wait on ``threading.Event``s with timeouts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pinterest_schema import validate_request_body
from tracklayer_mw.events import MAX_AGE_SECONDS, Event, merge_payloads, parse_event
from tracklayer_mw.outbox import MemoryOutbox, NewEvent, Settlement, SQLiteOutbox
from tracklayer_mw.pinterest import PinterestAdapter
from tracklayer_mw.sandbox import Fault, PinterestSandbox
from tracklayer_mw.worker import (
    CHECKPOINT_EVERY_FULL_CYCLES,
    LEASE_SECONDS,
    SEND_AGE_LIMIT,
    Deliverer,
    backoff,
)

NOW = 1_764_322_000.0
ACCOUNT = "549755885175"
TOKEN = "sandbox-token"
API_BASE = "https://api.pinterest.com/v5"
FIRST_RETRY = 1.5  # backoff(1) with rand() == 0.5: 2 s * (0.5 + 0.25)
PAST = "Invalid event_timestamp parameter. Given timestamp is in the past."


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Validating(httpx.BaseTransport):
    """Checks each request body against the official schema and records it, then passes it on."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.bodies: list[dict[str, Any]] = []
        self.urls: list[httpx.URL] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.read())
        validate_request_body(body)
        self.bodies.append(body)
        self.urls.append(request.url)
        return self.inner.handle_request(request)

    @property
    def sizes(self) -> list[int]:
        return [len(body["data"]) for body in self.bodies]


def mock(handler: Callable[[httpx.Request], httpx.Response]) -> Validating:
    return Validating(httpx.MockTransport(handler))


def answer_200(request: httpx.Request) -> httpx.Response:
    count = len(json.loads(request.content)["data"])
    events = [{"status": "processed", "error_message": "", "warning_message": ""}] * count
    return httpx.Response(
        200, json={"num_events_received": count, "num_events_processed": count, "events": events}
    )


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def sandbox(clock: Clock) -> PinterestSandbox:
    return PinterestSandbox(token=TOKEN, ad_account_ids=(ACCOUNT,), clock=clock)


@pytest.fixture
def outbox_path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.sqlite3"


@pytest.fixture
def outbox(outbox_path: Path) -> Iterator[SQLiteOutbox]:
    box = SQLiteOutbox(str(outbox_path), merge=merge_payloads)
    yield box
    box.close()


def pinterest(*, token: str = TOKEN, test_mode: bool = False) -> PinterestAdapter:
    return PinterestAdapter(ad_account_id=ACCOUNT, access_token=token, api_base=API_BASE, test_mode=test_mode)


@pytest.fixture
def make_deliverer(outbox: SQLiteOutbox, clock: Clock) -> Iterator[Callable[..., Deliverer]]:
    made: list[Deliverer] = []

    def factory(transport: httpx.BaseTransport, **kwargs: Any) -> Deliverer:
        options: dict[str, Any] = {"transport": transport, "clock": clock, "rand": lambda: 0.5, **kwargs}
        adapter = options.pop("adapter", pinterest(test_mode=options.get("test_mode", False)))
        deliverer = Deliverer(options.pop("outbox", outbox), adapter, **options)
        made.append(deliverer)
        return deliverer

    yield factory
    for deliverer in made:
        deliverer.stop()


def event(i: int = 0, *, at: float | None = None, **context: Any) -> Event:
    values: dict[str, Any] = {
        "client_ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0",
        "user": {"email": [_sha(f"user{i}@example.com")]},
        **context,
    }
    return Event(event="AddToCart", event_id=f"e-{i}", event_time=int(NOW if at is None else at), **values)


def queue(outbox: SQLiteOutbox, *events: Event) -> list[Event]:
    outbox.put([NewEvent(e.event_id, e.event, e.event_time, e.to_payload()) for e in events])
    return list(events)


def queue_n(outbox: SQLiteOutbox, count: int, *, at: float = NOW) -> list[Event]:
    return queue(outbox, *(event(i, at=at) for i in range(count)))


def totals(outbox: SQLiteOutbox, now: float) -> tuple[int, int, int, int]:
    counts = outbox.counts(now=now)
    return counts.pending, counts.retrying, counts.in_flight, counts.dead


def outcomes(outbox: SQLiteOutbox) -> list[tuple[str, str]]:
    return [(entry.event_id, entry.outcome) for entry in outbox.log_since(0)]


def dead_reasons(outbox: SQLiteOutbox) -> dict[str, str]:
    return {letter.event_id: letter.reason for letter in outbox.dead_letters()}


# --- backoff -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(0, 1, 2), (1, 1, 2), (2, 2, 4), (3, 4, 8), (5, 16, 32), (10, 450, 900), (5000, 450, 900)],
)
def test_backoff_doubles_with_jitter_up_to_the_cap(attempt: int, low: float, high: float) -> None:
    assert backoff(attempt, rand=lambda: 0.0) == low
    assert backoff(attempt, rand=lambda: 1.0) == high


def test_backoff_survives_attempt_counts_past_the_float_range() -> None:
    assert backoff(1100, rand=lambda: 1.0) == 900.0
    assert backoff(10**6, rand=lambda: 0.0) == 450.0


def test_retry_after_is_a_floor_capped_at_an_hour() -> None:
    assert backoff(1, 30, rand=lambda: 1.0) == 30
    assert backoff(10, 30, rand=lambda: 1.0) == 900
    assert backoff(1, 86_400, rand=lambda: 1.0) == 3600


def test_first_retry_comes_within_ten_seconds() -> None:
    assert backoff(1, rand=lambda: 0.0) >= 1
    assert backoff(1, rand=lambda: 0.999) <= 10


# --- each answer ---------------------------------------------------------------------------------


def test_processed_events_are_acked_and_leave_the_outbox(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    sent = queue_n(outbox, 3)
    transport = Validating(sandbox.transport())
    assert make_deliverer(transport).run_once() == 3
    assert totals(outbox, NOW) == (0, 0, 0, 0)
    assert outbox.next_due(now=NOW) is None
    assert [(r.event_id, r.status, r.test) for r in sandbox.received] == [
        (e.event_id, "processed", False) for e in sent
    ]
    assert outcomes(outbox) == [(e.event_id, "processed") for e in sent]
    assert transport.urls[0] == f"{API_BASE}/ad_accounts/{ACCOUNT}/events"


def test_a_batch_takes_one_write_transaction_to_claim_and_one_to_settle(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    # Every write transaction is a hand-off of the write lock that a request's put() may queue behind.
    deliverer = make_deliverer(Validating(sandbox.transport()))
    assert deliverer.run_once() == 0  # the first cycle's housekeeping, out of the way
    queue_n(outbox, 3)
    statements: list[str] = []
    outbox._connect().set_trace_callback(statements.append)  # run_once runs on this thread
    assert deliverer.run_once() == 3
    assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"] * 2  # claim, settle
    assert totals(outbox, NOW) == (0, 0, 0, 0)
    assert outcomes(outbox) == [(f"e-{i}", "processed") for i in range(3)]
    statements.clear()
    outbox.put([NewEvent("bad-1", "PageVisit", int(NOW), {"not": "an event"})])
    queue(outbox, event(7))
    assert deliverer.run_once() == 2
    # two puts; the claim; the unreadable row buried before the send; the answer
    assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"] * 5
    assert totals(outbox, NOW) == (0, 0, 0, 1)


def test_test_mode_sends_test_true_and_marks_the_log(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue_n(outbox, 1)
    transport = Validating(sandbox.transport())
    make_deliverer(transport, test_mode=True).run_once()
    assert transport.urls[0].params["test"] == "true"
    assert sandbox.received[0].test is True
    assert [entry.test for entry in outbox.log_since(0)] == [True]


def test_events_failed_in_a_200_become_dead_letters_with_pinterests_message(
    outbox: SQLiteOutbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue_n(outbox, 2)

    def handler(request: httpx.Request) -> httpx.Response:
        events = [
            {"status": "processed", "error_message": "", "warning_message": ""},
            {"status": "failed", "error_message": PAST, "warning_message": ""},
        ]
        return httpx.Response(
            200, json={"num_events_received": 2, "num_events_processed": 1, "events": events}
        )

    make_deliverer(mock(handler)).run_once()
    assert totals(outbox, NOW) == (0, 0, 0, 1)
    assert dead_reasons(outbox) == {"e-1": PAST}
    assert outcomes(outbox) == [("e-0", "processed"), ("e-1", "failed")]
    assert outbox.log_since(0)[1].message == PAST


def test_warnings_are_kept_in_the_delivery_log(
    outbox: SQLiteOutbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue_n(outbox, 1)
    warning = "event_source_url is missing; it is recommended for web events."

    def handler(request: httpx.Request) -> httpx.Response:
        events = [{"status": "processed", "error_message": "", "warning_message": warning}]
        return httpx.Response(
            200, json={"num_events_received": 1, "num_events_processed": 1, "events": events}
        )

    make_deliverer(mock(handler)).run_once()
    assert totals(outbox, NOW) == (0, 0, 0, 0)
    assert [(e.outcome, e.warning) for e in outbox.log_since(0)] == [("processed", warning)]


def test_422_partial_failure_buries_only_the_failed_events(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    # The sandbox, like Pinterest, fails an event_time far in the future; the other one is fine.
    queue(outbox, event(0), event(1, at=NOW + 7200), event(2))
    make_deliverer(Validating(sandbox.transport())).run_once()
    assert sandbox.requests[422] == 1
    assert totals(outbox, NOW) == (0, 0, 0, 1)
    reason = dead_reasons(outbox)["e-1"]
    assert reason.startswith("Invalid event_timestamp parameter. Given timestamp is in the future.")
    assert outcomes(outbox) == [("e-0", "processed"), ("e-1", "failed"), ("e-2", "processed")]


@pytest.mark.parametrize(
    "case",
    [
        pytest.param((Fault("401"), 401, "access token is wrong"), id="401"),
        pytest.param((Fault("403"), 403, "no access to this ad account"), id="403"),
    ],
)
def test_refused_requests_become_dead_letters_at_once(
    outbox: SQLiteOutbox,
    sandbox: PinterestSandbox,
    make_deliverer: Callable[..., Deliverer],
    case: tuple[Fault, int, str],
) -> None:
    fault, status, words = case
    queue_n(outbox, 3)
    sandbox.inject(fault)
    deliverer = make_deliverer(Validating(sandbox.transport()))
    assert deliverer.run_once() == 3
    assert totals(outbox, NOW) == (0, 0, 0, 3)
    reasons = dead_reasons(outbox)
    assert len(set(reasons.values())) == 1
    reason = reasons["e-0"]
    assert reason.startswith(f"HTTP {status}: ")
    assert words in reason
    assert TOKEN not in reason
    assert [outcome for _, outcome in outcomes(outbox)] == ["dead"] * 3
    assert deliverer.paused_until == 0.0  # a refusal is no reason to pause
    assert outbox.next_due(now=NOW) is None  # nothing comes back by itself


def test_400_is_a_dead_letter_with_pinterests_message(
    outbox: SQLiteOutbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue_n(outbox, 2)
    transport = mock(
        lambda request: httpx.Response(400, json={"code": 4196, "message": "The request was invalid."})
    )
    make_deliverer(transport).run_once()
    assert dead_reasons(outbox) == {
        "e-0": "HTTP 400: Pinterest found the request invalid (The request was invalid.)",
        "e-1": "HTTP 400: Pinterest found the request invalid (The request was invalid.)",
    }


def test_a_wrong_token_against_the_sandbox_is_a_dead_letter(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue_n(outbox, 1)
    make_deliverer(Validating(sandbox.transport()), adapter=pinterest(token="pina_wrong")).run_once()
    (reason,) = dead_reasons(outbox).values()
    assert reason.startswith("HTTP 401: ")
    assert "Authentication failed." in reason
    assert "pina_wrong" not in reason


def _refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


RETRY_CASES = [
    pytest.param((Fault("500", count=1), "HTTP 500"), id="500"),
    pytest.param((Fault("502", count=1), "HTTP 502"), id="502"),
    pytest.param((Fault("503", count=1), "HTTP 503"), id="503"),
    pytest.param((Fault("timeout", count=1), "timed out"), id="timeout"),
    pytest.param((Fault("drop", count=1), "could not reach Pinterest"), id="connection-dropped"),
    pytest.param((Fault("503", count=1, after_processing=True), "HTTP 503"), id="503-after-processing"),
]


@pytest.mark.parametrize("case", RETRY_CASES)
def test_server_errors_and_timeouts_are_retried_after_backoff(
    outbox: SQLiteOutbox,
    sandbox: PinterestSandbox,
    clock: Clock,
    make_deliverer: Callable[..., Deliverer],
    case: tuple[Fault, str],
) -> None:
    fault, words = case
    sent = queue_n(outbox, 3)
    sandbox.inject(fault)
    transport = Validating(sandbox.transport())
    deliverer = make_deliverer(transport)
    assert deliverer.run_once() == 3
    assert totals(outbox, NOW) == (0, 3, 0, 0)
    assert outbox.next_due(now=NOW) == NOW + FIRST_RETRY
    assert [(entry.outcome, words in entry.message) for entry in outbox.log_since(0)] == [("retry", True)] * 3
    assert deliverer.paused_until == NOW + FIRST_RETRY  # an unjudged answer pauses the whole worker

    clock.advance(FIRST_RETRY - 0.01)
    assert deliverer.run_once() == 0  # not yet
    clock.advance(0.01)
    assert deliverer.run_once() == 3
    assert totals(outbox, clock.now) == (0, 0, 0, 0)
    assert transport.sizes == [3, 3]
    assert {r.event_id for r in sandbox.received if r.status == "processed"} == {e.event_id for e in sent}


def test_connection_refused_is_retried_after_backoff(
    outbox: SQLiteOutbox, clock: Clock, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue_n(outbox, 2)
    attempts: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(clock.now)
        return _refused(request) if len(attempts) == 1 else answer_200(request)

    deliverer = make_deliverer(mock(handler))
    deliverer.run_once()
    assert totals(outbox, NOW) == (0, 2, 0, 0)
    assert "could not reach Pinterest (ConnectError)" in outbox.log_since(0)[0].message
    clock.advance(FIRST_RETRY)
    deliverer.run_once()
    assert attempts == [NOW, NOW + FIRST_RETRY]
    assert totals(outbox, clock.now) == (0, 0, 0, 0)


def test_later_retries_back_off_exponentially(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, clock: Clock, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue_n(outbox, 1)
    sandbox.inject(Fault("503"))  # until cleared
    deliverer = make_deliverer(Validating(sandbox.transport()))
    delays = []
    for _ in range(5):
        assert deliverer.run_once() == 1
        due = outbox.next_due(now=clock.now)
        assert due is not None
        delays.append(due - clock.now)
        clock.now = due
    assert delays == [1.5, 3.0, 6.0, 12.0, 24.0]
    sandbox.clear_faults()
    deliverer.run_once()
    assert totals(outbox, clock.now) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    "case",
    [pytest.param((30, 30.0), id="retry-after-30"), pytest.param((None, FIRST_RETRY), id="no-retry-after")],
)
def test_429_pauses_the_whole_worker_until_paused_until(
    outbox: SQLiteOutbox,
    sandbox: PinterestSandbox,
    clock: Clock,
    make_deliverer: Callable[..., Deliverer],
    case: tuple[int | None, float],
) -> None:
    retry_after, pause = case
    queue_n(outbox, 2)
    sandbox.inject(Fault("429", count=1, retry_after=retry_after))
    transport = Validating(sandbox.transport())
    deliverer = make_deliverer(transport)
    assert deliverer.run_once() == 2
    assert deliverer.paused_until == NOW + pause
    assert outbox.next_due(now=NOW) == NOW + pause
    assert [entry.outcome for entry in outbox.log_since(0)] == ["retry", "retry"]

    queue(outbox, event(7))  # due now, but the worker is paused
    clock.advance(pause - 0.01)
    assert deliverer.run_once() == 0
    assert len(transport.bodies) == 1  # no request while paused
    assert totals(outbox, clock.now) == (1, 2, 0, 0)

    clock.advance(0.01)
    assert deliverer.run_once() == 3
    assert transport.sizes == [2, 3]
    assert totals(outbox, clock.now) == (0, 0, 0, 0)


def test_429_from_a_mock_with_an_http_date_retry_after(
    outbox: SQLiteOutbox, clock: Clock, make_deliverer: Callable[..., Deliverer]
) -> None:
    # classify() reads an HTTP date against the real time; a date 2 minutes ahead is 120 s.
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    queue_n(outbox, 1)
    deliverer = make_deliverer(mock(lambda request: httpx.Response(429, headers={"Retry-After": when})))
    deliverer.run_once()
    assert deliverer.paused_until - NOW == pytest.approx(120, abs=3)


# --- batches, age, crashes -----------------------------------------------------------------------


def test_2500_queued_events_go_out_as_1000_1000_500(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue_n(outbox, 2500)
    transport = Validating(sandbox.transport())
    deliverer = make_deliverer(transport)
    assert [deliverer.run_once() for _ in range(4)] == [1000, 1000, 500, 0]
    assert transport.sizes == [1000, 1000, 500]
    assert len(sandbox.received) == 2500
    assert len({body["data"][0]["event_id"] for body in transport.bodies}) == 3
    assert totals(outbox, NOW) == (0, 0, 0, 0)


class InFlight(httpx.BaseTransport):
    """Records how many rows are leased when each request arrives; holds the first one until `first` are."""

    def __init__(self, inner: httpx.BaseTransport, outbox: SQLiteOutbox, first: int) -> None:
        self.inner, self.outbox, self.first = inner, outbox, first
        self.seen: list[int] = []
        self.arrived = threading.Event()  # a second request

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = time.monotonic() + 5
        while not self.seen and self.outbox.counts(now=NOW).in_flight < self.first:
            assert time.monotonic() < deadline, "the next batch was never claimed"
            time.sleep(0.01)
        self.seen.append(self.outbox.counts(now=NOW).in_flight)
        if len(self.seen) == 2:
            self.arrived.set()
        return self.inner.handle_request(request)


def drain_all(deliverer: Deliverer) -> list[int]:
    handled = [deliverer.run_once()]
    while handled[-1]:
        handled.append(deliverer.run_once())
    return handled


def test_under_a_backlog_the_next_batch_is_claimed_while_one_is_in_flight(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue_n(outbox, 2500)
    held = InFlight(sandbox.transport(), outbox, first=2000)
    transport = Validating(held)
    deliverer = make_deliverer(transport)
    assert drain_all(deliverer) == [1000, 1000, 500, 0]
    assert held.seen[0] == 2000  # batch 1 in flight, batch 2 claimed meanwhile
    assert transport.sizes == [1000, 1000, 500]
    assert [r.event_id for r in sandbox.received] == [f"e-{i}" for i in range(2500)]
    assert totals(outbox, NOW) == (0, 0, 0, 0)
    assert outcomes(outbox) == [(f"e-{i}", "processed") for i in range(2500)]


def test_the_next_request_goes_out_before_the_batch_before_it_is_settled(
    outbox: SQLiteOutbox,
    sandbox: PinterestSandbox,
    make_deliverer: Callable[..., Deliverer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue_n(outbox, 2000)
    held = InFlight(sandbox.transport(), outbox, first=2000)
    deliverer = make_deliverer(Validating(held))
    overlapped: list[bool] = []
    real_settle = outbox.settle

    def settle(settlement: Settlement) -> None:
        overlapped.append(held.arrived.wait(timeout=5))  # batch 2's request, while batch 1 is unsettled
        real_settle(settlement)

    monkeypatch.setattr(outbox, "settle", settle)
    assert deliverer.run_once() == 1000
    assert overlapped == [True]
    assert held.seen == [2000, 2000]
    assert totals(outbox, NOW) == (0, 0, 1000, 0)  # batch 2: sent, settled by the next cycle
    assert deliverer.run_once() == 1000
    assert totals(outbox, NOW) == (0, 0, 0, 0)
    assert len(sandbox.received) == 2000


def test_a_pause_hands_the_batch_claimed_ahead_back_unsent(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, clock: Clock, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue_n(outbox, 2000)
    sandbox.inject(Fault("429", count=1, retry_after=60))
    transport = Validating(InFlight(sandbox.transport(), outbox, first=2000))
    deliverer = make_deliverer(transport)
    assert deliverer.run_once() == 1000
    assert deliverer.paused_until == NOW + 60
    # Both batches wait for the end of the pause; only the one sent was logged.
    assert totals(outbox, NOW) == (0, 2000, 0, 0)  # the batch claimed ahead counts its claim as an attempt
    assert outbox.next_due(now=NOW) == NOW + 60
    assert [entry.outcome for entry in outbox.log_since(0)] == ["retry"] * 1000
    assert transport.sizes == [1000]
    clock.advance(60)
    assert drain_all(deliverer) == [1000, 1000, 0]
    assert transport.sizes == [1000, 1000, 1000]
    assert len(sandbox.received) == 2000
    assert totals(outbox, clock.now) == (0, 0, 0, 0)


def test_stop_settles_the_request_in_flight(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue_n(outbox, 1500)
    deliverer = make_deliverer(Validating(InFlight(sandbox.transport(), outbox, first=1500)))
    assert deliverer.run_once() == 1000
    assert totals(outbox, NOW) == (0, 0, 500, 0)  # the last 500: sent, not settled yet
    deliverer.stop()
    assert totals(outbox, NOW) == (0, 0, 0, 0)
    assert outcomes(outbox) == [(f"e-{i}", "processed") for i in range(1500)]
    assert len(sandbox.received) == 1500


def test_a_failing_next_send_still_settles_the_batch_pinterest_answered(
    outbox: SQLiteOutbox,
    sandbox: PinterestSandbox,
    make_deliverer: Callable[..., Deliverer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue_n(outbox, 2000)
    deliverer = make_deliverer(Validating(InFlight(sandbox.transport(), outbox, first=2000)))
    real_send = deliverer._send
    sends: list[int] = []

    def send_then_fail(batch: Any) -> Any:
        sends.append(len(batch.rows))
        if len(sends) == 2:  # the batch claimed ahead, e.g. at interpreter shutdown
            raise RuntimeError("cannot schedule new futures after shutdown")
        return real_send(batch)

    monkeypatch.setattr(deliverer, "_send", send_then_fail)
    with pytest.raises(RuntimeError):
        deliverer.run_once()
    assert outcomes(outbox) == [(f"e-{i}", "processed") for i in range(1000)]  # settled all the same
    assert totals(outbox, NOW) == (0, 0, 1000, 0)  # the other batch: claimed ahead, not sent
    monkeypatch.setattr(deliverer, "_send", real_send)
    assert drain_all(deliverer) == [1000, 0]
    assert len(sandbox.received) == 2000


class SlowClockTransport(httpx.BaseTransport):
    """Each request takes `seconds` on the test's clock (a slow Pinterest)."""

    def __init__(self, inner: httpx.BaseTransport, clock: Clock, seconds: float) -> None:
        self.inner, self.clock, self.seconds = inner, clock, seconds

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.clock.advance(self.seconds)
        return self.inner.handle_request(request)


def test_a_batch_claimed_ahead_too_long_ago_goes_back_instead_of_out(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, clock: Clock, make_deliverer: Callable[..., Deliverer]
) -> None:
    # Sent after a slow request, a batch claimed ahead could outlive its lease in flight (and another
    # process claim and send it meanwhile): it is handed back and claimed again with a fresh lease.
    queue_n(outbox, 2000)
    transport = Validating(SlowClockTransport(sandbox.transport(), clock, LEASE_SECONDS / 2))
    deliverer = make_deliverer(transport)
    assert deliverer.run_once() == 1000
    time.sleep(0.2)  # a request sent ahead would be at the transport by now (it runs on the sender thread)
    assert transport.sizes == [1000]  # the batch claimed meanwhile was not sent
    assert deliverer.run_once() == 1000  # released, claimed again, sent
    assert transport.sizes == [1000, 1000]
    assert deliverer.run_once() == 0
    assert len(sandbox.received) == 2000
    assert totals(outbox, clock.now) == (0, 0, 0, 0)


def test_a_thread_left_by_a_timed_out_stop_ends_and_never_runs_beside_the_new_one(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    release = threading.Event()
    inner = sandbox.transport()

    class Held(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            release.wait(10)
            return inner.handle_request(request)

    deliverer = make_deliverer(Validating(Held()))
    queue_n(outbox, 3)
    deliverer.start()
    deliverer.wake()
    deadline = time.monotonic() + 5
    while outbox.counts(now=NOW).in_flight == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    old = [t for t in threading.enumerate() if t.name == "tracklayer.Deliverer"]
    deliverer.stop(timeout=0.2)  # the request is still held: the thread outlives stop()
    assert any(t.is_alive() for t in old)
    deliverer.start()
    release.set()
    for thread in old:
        thread.join(5)
        assert not thread.is_alive()  # its own stop event stayed set
    alive = [t for t in threading.enumerate() if t.name == "tracklayer.Deliverer" and t.is_alive()]
    assert len(alive) == 1
    assert deliverer.flush(5)
    assert sorted(r.event_id for r in sandbox.received) == ["e-0", "e-1", "e-2"]
    deliverer.stop()


def test_stop_keeps_to_its_timeout_with_a_request_in_flight(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, clock: Clock, make_deliverer: Callable[..., Deliverer]
) -> None:
    release = threading.Event()
    inner = sandbox.transport()
    requests: list[int] = []

    class HoldSecond(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            requests.append(1)
            if len(requests) == 2:
                release.wait(10)
            return inner.handle_request(request)

    queue_n(outbox, 2000)
    deliverer = make_deliverer(Validating(HoldSecond()))
    assert deliverer.run_once() == 1000  # the second batch went out ahead and is held
    started = time.monotonic()
    deliverer.stop(timeout=0.3)
    assert time.monotonic() - started < 2
    release.set()
    assert totals(outbox, clock.now) == (0, 0, 1000, 0)  # unsettled: leased until its lease ends
    clock.advance(LEASE_SECONDS)
    deliverer.start()
    assert deliverer.flush(5)
    deliverer.stop()
    assert totals(outbox, clock.now) == (0, 0, 0, 0)
    assert len({r.event_id for r in sandbox.received}) == 2000  # the held one may arrive twice


def test_batch_size_is_checked_against_pinterests_limit(outbox: SQLiteOutbox) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Deliverer(outbox, pinterest(), batch_size=1001)
    with pytest.raises(ValueError, match="batch_size"):
        Deliverer(outbox, pinterest(), batch_size=0)


def test_queued_events_past_seven_days_become_dead_letters_without_a_request(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, clock: Clock, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue(outbox, event(0, at=NOW - 6 * 24 * 3600), event(1))
    transport = Validating(sandbox.transport())
    deliverer = make_deliverer(transport, adapter=None)  # no credentials: both wait
    deliverer.run_once()
    clock.advance(24 * 3600)  # e-0 is now 7 days old
    deliverer.adapter = pinterest()
    deliverer.run_once()
    assert "7 days" in dead_reasons(outbox)["e-0"]
    assert [body["data"][0]["event_id"] for body in transport.bodies] == ["e-1"]


def test_an_event_that_turns_seven_days_old_between_housekeepings_is_not_sent(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, clock: Clock, make_deliverer: Callable[..., Deliverer]
) -> None:
    transport = Validating(sandbox.transport())
    deliverer = make_deliverer(transport)
    assert deliverer.run_once() == 0  # housekeeping ran now; the next is a minute away
    queue(outbox, event(0, at=NOW - SEND_AGE_LIMIT + 5), event(1))
    clock.advance(10)
    assert deliverer.run_once() == 2
    assert dead_reasons(outbox) == {"e-0": "older than 7 days before it could be sent"}
    assert transport.sizes == [1]
    assert sorted(outcomes(outbox)) == [("e-0", "dead"), ("e-1", "processed")]


def test_a_retry_that_would_land_past_seven_days_is_a_dead_letter_instead(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue(outbox, event(0, at=NOW - SEND_AGE_LIMIT + 20), event(1))
    sandbox.inject(Fault("429", count=1, retry_after=60))
    make_deliverer(Validating(sandbox.transport())).run_once()
    reason = dead_reasons(outbox)["e-0"]
    assert reason.startswith("would be older than 7 days at the next try (HTTP 429")
    assert totals(outbox, NOW) == (0, 1, 0, 1)
    # one log entry per outcome: e-0 is dead, not also "retry"
    assert sorted(outcomes(outbox)) == [("e-0", "dead"), ("e-1", "retry")]


def test_events_failing_for_days_are_never_sent_older_than_seven_days(
    outbox: SQLiteOutbox, clock: Clock, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue(outbox, *(event(i, at=NOW - MAX_AGE_SECONDS + 3600 * i) for i in range(1, 6)))
    oldest_sent: list[float] = []  # per request: the age of its oldest event when it left

    def handler(request: httpx.Request) -> httpx.Response:
        oldest_sent.append(
            clock.now - min(item["event_time"] for item in json.loads(request.content)["data"])
        )
        return httpx.Response(503, json={"code": 4197, "message": "ramped down"})

    deliverer = make_deliverer(mock(handler))
    for _ in range(100):
        deliverer.run_once()
        due = outbox.next_due(now=clock.now)
        if due is None:
            break
        clock.now = max(clock.now, due)
    assert totals(outbox, clock.now) == (0, 0, 0, 5)
    assert len(oldest_sent) > 20  # it kept trying for hours
    assert max(oldest_sent) < MAX_AGE_SECONDS
    assert all("7 days" in reason for reason in dead_reasons(outbox).values())


class Crash(BaseException):
    """Stands for the process dying (kill -9) in the middle of a send."""


def _crash(request: httpx.Request) -> httpx.Response:
    raise Crash


def test_an_unreadable_payload_becomes_a_dead_letter_and_does_not_block_its_batch(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    outbox.put([NewEvent("bad-1", "PageVisit", int(NOW), {"not": "an event"})])
    sent = queue_n(outbox, 2)
    assert make_deliverer(Validating(sandbox.transport())).run_once() == 3
    assert [r.event_id for r in sandbox.received] == [e.event_id for e in sent]
    assert "unreadable payload" in dead_reasons(outbox)["bad-1"]
    assert totals(outbox, NOW) == (0, 0, 0, 1)


@pytest.mark.parametrize("how", ["crash-inside-run_once", "claim-then-vanish"])
def test_events_claimed_by_a_crashed_process_are_sent_after_the_lease(
    outbox_path: Path, sandbox: PinterestSandbox, clock: Clock, how: str
) -> None:
    first = SQLiteOutbox(str(outbox_path), merge=merge_payloads)
    sent = queue_n(first, 5)
    if how == "crash-inside-run_once":
        doomed = Deliverer(first, pinterest(), transport=mock(_crash), clock=clock)
        with pytest.raises(Crash):
            doomed.run_once()
    else:
        assert len(first.claim(1000, now=NOW, lease=LEASE_SECONDS)) == 5
    assert totals(first, NOW) == (0, 0, 5, 0)
    first.close()  # the process is gone; nothing was acked

    second = SQLiteOutbox(str(outbox_path), merge=merge_payloads)
    transport = Validating(sandbox.transport())
    restarted = Deliverer(second, pinterest(), transport=transport, clock=clock, rand=lambda: 0.5)
    try:
        assert restarted.run_once() == 0  # still leased to the dead process
        clock.advance(LEASE_SECONDS)
        assert LEASE_SECONDS <= 60  # CONTRACT §6: sent again within 60 s of the next start
        assert restarted.run_once() == 5
        assert totals(second, clock.now) == (0, 0, 0, 0)
        assert sorted(r.event_id for r in sandbox.received) == sorted(e.event_id for e in sent)
    finally:
        restarted.stop()
        second.close()


def test_without_credentials_events_stay_queued_and_it_is_said_once(
    outbox: SQLiteOutbox, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    queue_n(outbox, 2)
    deliverer = Deliverer(outbox, None, clock=clock)
    with caplog.at_level(logging.WARNING, logger="tracklayer_mw"):
        assert deliverer.run_once() == 0
        clock.advance(5)
        assert deliverer.run_once() == 0
    assert totals(outbox, clock.now) == (2, 0, 0, 0)
    warnings = [record for record in caplog.records if "no Pinterest credentials" in record.getMessage()]
    assert len(warnings) == 1
    assert deliverer.flush(timeout=0.1) is False
    deliverer.stop()


def test_browser_and_server_reports_of_one_order_go_out_as_one_event(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    browser = parse_event(
        {"event": "Purchase", "custom": {"order_id": "A-1001", "value": "49.99"}, "pixel": True},
        now=NOW,
        source="browser",
    ).with_context(click_id="dj0yJnU9", client_ip="203.0.113.9", user_agent="Mozilla/5.0")
    server = parse_event(
        {"event": "Purchase", "user": {"email": "Ann@Example.com"}, "custom": {"order_id": "A-1001"}},
        now=NOW,
        source="server",
    )
    queue(outbox, browser, server)
    transport = Validating(sandbox.transport())
    assert make_deliverer(transport).run_once() == 1
    (item,) = transport.bodies[0]["data"]
    assert item["event_id"] == "Purchase:A-1001"
    assert item["user_data"]["click_id"] == "dj0yJnU9"
    assert item["user_data"]["em"] == [_sha("ann@example.com")]
    (entry,) = outbox.log_since(0)
    assert (entry.pixel, entry.click_id, entry.email, entry.ip_ua) == (True, True, True, True)


def test_delivery_log_has_one_entry_per_outcome_with_signal_flags(
    outbox: SQLiteOutbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue(
        outbox,
        event(0, click_id="dj0yJnU9", pixel=True),
        event(1, user={}),
        event(2, client_ip=None, user_agent=None),
    )

    def handler(request: httpx.Request) -> httpx.Response:
        events = [
            {"status": "processed", "error_message": "", "warning_message": ""},
            {"status": "processed", "error_message": "", "warning_message": "w"},
            {"status": "failed", "error_message": "bad", "warning_message": ""},
        ]
        return httpx.Response(
            200, json={"num_events_received": 3, "num_events_processed": 2, "events": events}
        )

    make_deliverer(mock(handler), test_mode=True).run_once()
    log = outbox.log_since(0)
    assert [
        (
            e.event_id,
            e.event_name,
            e.outcome,
            e.message,
            e.warning,
            e.click_id,
            e.email,
            e.ip_ua,
            e.pixel,
            e.test,
        )
        for e in log
    ] == [
        ("e-0", "AddToCart", "processed", "", "", True, True, True, True, True),
        ("e-1", "AddToCart", "processed", "", "w", False, False, True, False, True),
        ("e-2", "AddToCart", "failed", "bad", "", False, True, False, False, True),
    ]
    assert {entry.at for entry in log} == {NOW}


def test_a_200_that_is_not_pinterests_json_is_retried_not_acked(
    outbox: SQLiteOutbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue_n(outbox, 1)
    make_deliverer(mock(lambda request: httpx.Response(200, text="<html>captive portal</html>"))).run_once()
    assert totals(outbox, NOW) == (0, 1, 0, 0)


# --- the thread ----------------------------------------------------------------------------------


class Arrivals:
    """A MockTransport handler in front of the sandbox that signals each arrival."""

    def __init__(self, sandbox: PinterestSandbox) -> None:
        self.sandbox_transport = Validating(sandbox.transport())
        self.arrived = threading.Event()
        self.errors: list[BaseException] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self.sandbox_transport.handle_request(request)
            response.read()
        except BaseException as exc:  # surfaced by the test: the worker thread would only log it
            self.errors.append(exc)
            raise
        self.arrived.set()
        return response


@pytest.fixture
def live(outbox: SQLiteOutbox) -> Iterator[tuple[Deliverer, Arrivals, PinterestSandbox]]:
    sandbox = PinterestSandbox(token=TOKEN, ad_account_ids=(ACCOUNT,))  # real clock, like the worker's
    arrivals = Arrivals(sandbox)
    deliverer = Deliverer(outbox, pinterest(), transport=httpx.MockTransport(arrivals))
    yield deliverer, arrivals, sandbox
    deliverer.stop()
    assert arrivals.errors == []


def _threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "tracklayer.Deliverer"]


def test_a_woken_worker_delivers_a_new_event_within_two_seconds(
    outbox: SQLiteOutbox, live: tuple[Deliverer, Arrivals, PinterestSandbox]
) -> None:
    deliverer, arrivals, sandbox = live
    deliverer.start()
    queued_at = time.monotonic()
    queue(outbox, event(0, at=time.time()))
    deliverer.wake()
    assert arrivals.arrived.wait(timeout=2.0)
    assert time.monotonic() - queued_at < 2.0
    assert [r.event_id for r in sandbox.received] == ["e-0"]


class CountingOutbox(MemoryOutbox):
    def __init__(self) -> None:
        super().__init__()
        self.checkpoints = 0

    def checkpoint(self) -> None:
        self.checkpoints += 1


def test_the_worker_thread_checkpoints_after_its_cycles() -> None:
    # Puts leave WAL checkpoints to the worker (outbox.py): without these the WAL would only be
    # bounded by the backstop.
    outbox = CountingOutbox()
    deliverer = Deliverer(outbox, None)  # no credentials: nothing is sent, the cycles still run
    deliverer.start()
    try:
        assert deliverer.flush(timeout=0.1) is False
        deadline = time.monotonic() + 5
        while outbox.checkpoints < 2 and time.monotonic() < deadline:
            deliverer.wake()
            time.sleep(0.05)
    finally:
        deliverer.stop()
    assert outbox.checkpoints >= 2


def test_under_a_backlog_the_worker_checkpoints_every_fourth_full_batch_and_when_the_queue_ends() -> None:
    assert CHECKPOINT_EVERY_FULL_CYCLES == 4
    outbox = CountingOutbox()
    deliverer = Deliverer(outbox, None, batch_size=10)
    after = []
    for handled in [10] * 9 + [3, 0, 10]:  # nine full batches, a short one, an idle cycle, a full one
        deliverer.checkpoint_after(handled)
        after.append(outbox.checkpoints)
    assert after == [0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 4, 4]


def test_a_forked_child_does_not_inherit_the_locks_its_parent_held() -> None:
    # The delivery thread holds the cycle lock while a request is out; a fork then must not leave the
    # child's own delivery thread waiting on a lock no thread of the child will ever release.
    deliverer = Deliverer(CountingOutbox(), None)
    with deliverer._cycle_lock, deliverer._lock:
        pid = os.fork()
        if pid == 0:  # the child: exit at once, whatever happens
            fresh = deliverer._cycle_lock.acquire(timeout=2) and deliverer._lock.acquire(timeout=2)
            os._exit(0 if fresh else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


def test_an_event_queued_without_wake_is_picked_up_by_polling(
    outbox: SQLiteOutbox, live: tuple[Deliverer, Arrivals, PinterestSandbox]
) -> None:
    deliverer, arrivals, _ = live
    deliverer.start()
    queue(outbox, event(0, at=time.time()))  # as another process would: no wake()
    assert arrivals.arrived.wait(timeout=2.0)


def test_flush_returns_true_once_the_outbox_is_drained(
    outbox: SQLiteOutbox, live: tuple[Deliverer, Arrivals, PinterestSandbox]
) -> None:
    deliverer, _, sandbox = live
    deliverer.start()
    queue(outbox, *(event(i, at=time.time()) for i in range(1200)))
    assert deliverer.flush(timeout=10.0) is True
    counts = outbox.counts(now=time.time())
    assert (counts.pending, counts.retrying, counts.in_flight) == (0, 0, 0)
    assert len(sandbox.received) == 1200


def test_flush_without_a_thread_drains_in_the_calling_thread(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue_n(outbox, 1500)
    deliverer = make_deliverer(Validating(sandbox.transport()))
    assert deliverer.flush(timeout=10.0) is True
    assert not deliverer.is_alive
    assert len(sandbox.received) == 1500


def test_flush_returns_true_while_a_failed_send_waits_for_its_retry(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    # "Drained" means nothing is due: a retry scheduled later stays in the outbox for the next run.
    queue_n(outbox, 1)
    sandbox.inject(Fault("503"))
    deliverer = make_deliverer(Validating(sandbox.transport()))
    assert deliverer.flush(timeout=5.0) is True
    assert totals(outbox, NOW) == (0, 1, 0, 0)


def test_flush_returns_false_while_a_429_pause_holds_due_events(
    outbox: SQLiteOutbox, sandbox: PinterestSandbox, make_deliverer: Callable[..., Deliverer]
) -> None:
    queue_n(outbox, 1)
    sandbox.inject(Fault("429", count=1, retry_after=30))
    deliverer = make_deliverer(Validating(sandbox.transport()))
    deliverer.run_once()
    queue(outbox, event(5))  # due now, held back by the pause
    assert deliverer.flush(timeout=5.0) is False
    assert totals(outbox, NOW) == (1, 1, 0, 0)


def test_stop_joins_the_thread(live: tuple[Deliverer, Arrivals, PinterestSandbox]) -> None:
    deliverer, _, _ = live
    deliverer.start()
    (thread,) = _threads()
    assert thread.daemon
    deliverer.stop()
    assert not thread.is_alive()
    assert not deliverer.is_alive
    assert _threads() == []


def test_start_twice_runs_one_thread(live: tuple[Deliverer, Arrivals, PinterestSandbox]) -> None:
    deliverer, _, _ = live
    deliverer.start()
    deliverer.start()
    assert len(_threads()) == 1
    assert deliverer.is_alive


def test_the_worker_can_be_started_again_after_stop(
    outbox: SQLiteOutbox, live: tuple[Deliverer, Arrivals, PinterestSandbox]
) -> None:
    deliverer, arrivals, _ = live
    deliverer.start()
    deliverer.stop()
    deliverer.start()
    queue(outbox, event(0, at=time.time()))
    deliverer.wake()
    assert arrivals.arrived.wait(timeout=2.0)
    assert len(_threads()) == 1
