"""Bugs the stress scripts (`stress/`) found, each pinned by a fast test (all fixed).

- `python -m stress.faults`: during a quiet 45 s 503 outage with a backlog of 50 events and no new
  traffic, the worker made 201 requests instead of a handful: every event of a failed batch got its
  own jittered retry time, so each retry round went out as one request per event.
- `python -m stress.load`: ingest p99 near one second: writers of one process starve each other in
  SQLite's busy handler.
- `python -m stress.load`: the sandbox stalled after ~100,000 events (quadratic dedup bookkeeping).
- `python -m stress.faults`: during 500/503/dropped-connection storms with live traffic the worker
  kept making as many requests as when Pinterest is healthy.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracklayer_mw.events import Event, merge_payloads
from tracklayer_mw.outbox import NewEvent, SQLiteOutbox
from tracklayer_mw.pinterest import PinterestAdapter
from tracklayer_mw.sandbox import Fault, PinterestSandbox
from tracklayer_mw.worker import Deliverer

NOW = 1_764_322_000.0
ACCOUNT = "549755885175"
TOKEN = "sandbox-token"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[SQLiteOutbox]:
    box = SQLiteOutbox(str(tmp_path / "outbox.sqlite3"), merge=merge_payloads)
    yield box
    box.close()


def _events(count: int) -> list[NewEvent]:
    events = []
    for i in range(count):
        digest = hashlib.sha256(f"user{i}@example.com".encode()).hexdigest()
        event = Event(event="AddToCart", event_id=f"e-{i}", event_time=int(NOW), user={"email": [digest]})
        events.append(NewEvent(event.event_id, event.event, event.event_time, event.to_payload()))
    return events


def test_a_batch_that_failed_with_503_is_retried_as_one_batch(outbox: SQLiteOutbox) -> None:
    clock = Clock()
    sandbox = PinterestSandbox(token=TOKEN, ad_account_ids=(ACCOUNT,), clock=clock)
    sandbox.inject(Fault("503", count=1))
    # Real jitter varies from call to call; a constant rand() (what test_worker.py uses) hides this.
    jitter = random.Random(7).random
    adapter = PinterestAdapter(
        ad_account_id=ACCOUNT, access_token=TOKEN, api_base="https://api.pinterest.com/v5"
    )
    deliverer = Deliverer(outbox, adapter, transport=sandbox.transport(), clock=clock, rand=jitter)
    outbox.put(_events(50))

    assert deliverer.run_once() == 50
    assert sandbox.requests == {503: 1}

    # What the thread does: sleep until the next row is due, then claim whatever is due.
    while (due := outbox.next_due(now=clock.now)) is not None:
        clock.now = max(clock.now, due)
        deliverer.run_once()
    assert outbox.counts(now=clock.now).pending + outbox.counts(now=clock.now).retrying == 0
    assert sandbox.requests == {503: 1, 200: 1}  # the retry is one request, as the first try was
    deliverer.stop()


def test_concurrent_puts_in_one_process_never_starve(outbox: SQLiteOutbox) -> None:
    """`python -m stress.load`: ingest p50 12 ms but p99 0.8-1.1 s and max 2-3 s at ~1,500 req/s.

    With the memory outbox the same run has p99 80 ms; with a process-wide lock around write
    transactions, p99 70-100 ms and max < 200 ms. Here: 16 threads put one event at a time for 3.5 s.
    """
    stop = time.monotonic() + 3.5
    worst: list[float] = []

    def put_loop(thread: int) -> None:
        slowest = 0.0
        for i in itertools.count():
            if time.monotonic() > stop:
                break
            event = Event(
                event="PageVisit", event_id=f"t{thread}-{i}", event_time=int(NOW), client_ip="192.0.2.1"
            )
            began = time.perf_counter()
            outbox.put([NewEvent(event.event_id, event.event, event.event_time, event.to_payload())])
            slowest = max(slowest, time.perf_counter() - began)
        worst.append(slowest)

    threads = [threading.Thread(target=put_loop, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(worst) == 16
    assert max(worst) < 0.4, f"a put waited {max(worst):.2f} s for the write lock"


def test_the_sandbox_stays_fast_past_100k_remembered_events() -> None:
    """`python -m stress.load` stalled after ~100k events: the sandbox took 14 s per 1,000-event batch."""
    clock = Clock()
    sandbox = PinterestSandbox(token=TOKEN, ad_account_ids=(ACCOUNT,), clock=clock, max_records=10)
    # What 100,000 earlier events within the 48 h window leave behind (filled in directly: sending
    # them would take minutes).
    sandbox._seen.update({("add_to_cart", f"earlier-{i}"): NOW for i in range(100_000)})
    began = time.perf_counter()
    for i in range(100):
        sandbox._fold(
            {"event_name": "add_to_cart", "event_id": f"new-{i}", "action_source": "web"}, False, NOW
        )
    assert time.perf_counter() - began < 0.25  # ~1.4 s today; a dict insert each is ~0.1 ms in all


def test_a_5xx_storm_slows_the_worker_down_even_while_new_events_arrive(outbox: SQLiteOutbox) -> None:
    """`python -m stress.faults`: 72-73 requests in 15 s of 500, 503 or dropped connections, the same as
    without a fault (72), against 4 in a 429 storm. Here: 15 s of 503s, a new event every 0.2 s, the
    worker run as its thread would (a cycle whenever something is due): at most one request a second."""
    clock = Clock()
    sandbox = PinterestSandbox(token=TOKEN, ad_account_ids=(ACCOUNT,), clock=clock)
    sandbox.inject(Fault("503"))  # until cleared
    adapter = PinterestAdapter(
        ad_account_id=ACCOUNT, access_token=TOKEN, api_base="https://api.pinterest.com/v5"
    )
    deliverer = Deliverer(
        outbox, adapter, transport=sandbox.transport(), clock=clock, rand=random.Random(7).random
    )
    events = iter(_events(75))
    for _ in range(75):
        outbox.put([next(events)])
        if clock.now >= deliverer.paused_until:
            deliverer.run_once()
        clock.now += 0.2
    sent = sum(sandbox.requests.values())
    assert sent <= 15, f"{sent} requests in 15 s of 503s"
    deliverer.stop()
