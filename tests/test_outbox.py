"""The outbox: shared semantics on both implementations, then what only a real SQLite file can show
(reopening after a crash, kill -9, several threads and processes on one file, fork)."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tracklayer_mw import outbox as outbox_module
from tracklayer_mw.outbox import (
    ClaimedEvent,
    LogEntry,
    MemoryOutbox,
    Merge,
    NewEvent,
    Outbox,
    OutboxCounts,
    Settlement,
    SQLiteOutbox,
    open_outbox,
)

T0 = 1_700_000_000  # event_time of the test events; the outbox's clock (`now=`) is independent of it


def ev(event_id: str, name: str = "Purchase", *, event_time: int = T0, **payload: Any) -> NewEvent:
    return NewEvent(event_id, name, event_time, {"event_id": event_id, **payload})


def union(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {**old, **new, "merges": old.get("merges", 0) + 1}


def ids(claimed: list[ClaimedEvent]) -> list[str]:
    return [c.event_id for c in claimed]


Factory = Callable[..., Outbox]


@pytest.fixture(params=["sqlite", "memory"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    opened: list[Outbox] = []

    def factory(merge: Merge | None = None) -> Outbox:
        path = str(tmp_path / "outbox.sqlite3")
        outbox = SQLiteOutbox(path, merge=merge) if request.param == "sqlite" else MemoryOutbox(merge=merge)
        opened.append(outbox)
        return outbox

    yield factory
    for outbox in opened:
        outbox.close()


@pytest.fixture
def outbox(make: Factory) -> Outbox:
    return make()


# --- shared semantics ------------------------------------------------------------------------------


def test_put_claim_ack(outbox: Outbox) -> None:
    outbox.put([ev("a", value=1), ev("b"), ev("c")])
    claimed = outbox.claim(10, now=100.0, lease=30.0)
    assert ids(claimed) == ["a", "b", "c"]
    assert all(type(c.id) is int and c.attempts == 1 for c in claimed)
    assert claimed[0] == ClaimedEvent(claimed[0].id, "a", "Purchase", T0, {"event_id": "a", "value": 1}, 1)
    assert outbox.counts(now=100.0) == OutboxCounts(pending=0, retrying=0, in_flight=3, dead=0)
    outbox.ack([claimed[0].id, claimed[1].id])
    assert outbox.counts(now=100.0) == OutboxCounts(pending=0, retrying=0, in_flight=1, dead=0)
    assert outbox.claim(10, now=129.0, lease=30.0) == []
    again = outbox.claim(10, now=130.0, lease=30.0)  # the un-acked one comes back when its lease ends
    assert ids(again) == ["c"]
    assert again[0].attempts == 2


def test_claim_takes_oldest_first_up_to_limit(outbox: Outbox) -> None:
    outbox.put([ev(f"e{i}") for i in range(5)])
    assert ids(outbox.claim(2, now=1.0, lease=10.0)) == ["e0", "e1"]
    assert ids(outbox.claim(2, now=1.0, lease=10.0)) == ["e2", "e3"]
    assert ids(outbox.claim(2, now=1.0, lease=10.0)) == ["e4"]
    assert outbox.claim(2, now=1.0, lease=10.0) == []
    assert outbox.claim(0, now=100.0, lease=10.0) == []


def test_lease_blocks_a_second_claim_until_it_expires(outbox: Outbox) -> None:
    outbox.put([ev("a")])
    first = outbox.claim(10, now=100.0, lease=30.0)
    assert outbox.claim(10, now=129.99, lease=30.0) == []
    assert outbox.next_due(now=100.0) == 130.0
    second = outbox.claim(10, now=130.0, lease=30.0)
    assert [c.id for c in second] == [first[0].id]
    assert second[0].payload == first[0].payload
    assert second[0].attempts == 2


def test_retry_waits_until_at(outbox: Outbox) -> None:
    outbox.put([ev("a"), ev("b")])
    a, b = outbox.claim(10, now=100.0, lease=30.0)
    outbox.retry([a.id], at=105.0, error="HTTP 503")
    assert outbox.counts(now=101.0) == OutboxCounts(pending=0, retrying=1, in_flight=1, dead=0)
    assert outbox.next_due(now=101.0) == 105.0  # the retry, not b's lease at 130
    assert outbox.claim(10, now=104.0, lease=30.0) == []
    retried = outbox.claim(10, now=105.0, lease=30.0)
    assert ids(retried) == ["a"]
    assert retried[0].attempts == 2
    assert b.attempts == 1


def test_bury_keeps_dead_letters_newest_first(outbox: Outbox) -> None:
    outbox.put([ev("a"), ev("b"), ev("c")])
    a, b, c = outbox.claim(10, now=100.0, lease=30.0)
    outbox.bury([(a.id, "Invalid event_time")], now=150.0)
    outbox.bury([(b.id, "401 Unauthorized")], now=160.0)
    outbox.bury([(b.id, "buried twice")], now=170.0)  # the first reason stays
    letters = outbox.dead_letters()
    assert [(d.event_id, d.reason, d.died_at, d.attempts) for d in letters] == [
        ("b", "401 Unauthorized", 160.0, 1),
        ("a", "Invalid event_time", 150.0, 1),
    ]
    assert (letters[0].id, letters[0].event_name, letters[0].event_time) == (b.id, "Purchase", T0)
    assert [d.event_id for d in outbox.dead_letters(limit=1)] == ["b"]
    assert outbox.counts(now=200.0) == OutboxCounts(pending=0, retrying=1, in_flight=0, dead=2)
    assert ids(outbox.claim(10, now=1000.0, lease=30.0)) == ["c"]  # the dead are never claimed
    outbox.ack([c.id])
    assert outbox.next_due(now=1000.0) is None  # ... and never due


def test_counts_every_state(outbox: Outbox) -> None:
    assert outbox.counts(now=0.0) == OutboxCounts(0, 0, 0, 0)
    outbox.put([ev(f"e{i}") for i in range(6)])
    e0, e1, e2, _e3 = outbox.claim(4, now=100.0, lease=30.0)
    outbox.retry([e0.id], at=500.0, error="timeout")
    outbox.bury([(e1.id, "rejected")], now=100.0)
    outbox.ack([e2.id])
    assert outbox.counts(now=100.0) == OutboxCounts(pending=2, retrying=1, in_flight=1, dead=1)
    # e3's lease ran out (its process died): it waits to be claimed again, attempted once already.
    assert outbox.counts(now=130.0) == OutboxCounts(pending=2, retrying=2, in_flight=0, dead=1)


def test_next_due(outbox: Outbox) -> None:
    assert outbox.next_due(now=50.0) is None
    outbox.put([ev("a")])
    due = outbox.next_due(now=50.0)
    assert due is not None
    assert due <= 50.0  # a new event is due at once
    outbox.claim(10, now=50.0, lease=30.0)
    assert outbox.next_due(now=50.0) == 80.0


def test_bury_expired_skips_leased_rows(outbox: Outbox) -> None:
    outbox.put([ev("leased", event_time=10), ev("old", event_time=20), ev("new", event_time=40)])
    (leased,) = outbox.claim(1, now=100.0, lease=30.0)
    assert leased.event_id == "leased"
    assert outbox.bury_expired(event_time_before=30, reason="older than 7 days", now=110.0) == 1
    assert [(d.event_id, d.reason, d.died_at) for d in outbox.dead_letters()] == [
        ("old", "older than 7 days", 110.0)
    ]
    assert outbox.bury_expired(event_time_before=30, reason="expired", now=130.0) == 1  # its lease ended
    assert {d.event_id for d in outbox.dead_letters()} == {"old", "leased"}
    assert outbox.bury_expired(event_time_before=30, reason="again", now=140.0) == 0
    assert ids(outbox.claim(10, now=140.0, lease=30.0)) == ["new"]


def test_retry_dead(make: Factory) -> None:
    outbox = make(merge=union)
    outbox.put([ev("a"), ev("b")])
    a, b = outbox.claim(10, now=100.0, lease=30.0)
    outbox.bury([(a.id, "401"), (b.id, "401")], now=100.0)
    outbox.put([ev("a", late=True)])  # a fresh copy of a dead event, queued while the dead one waits
    assert outbox.retry_dead(now=200.0) == 2
    assert outbox.retry_dead(now=200.0) == 0
    assert outbox.dead_letters() == []
    assert outbox.counts(now=200.0) == OutboxCounts(pending=3, retrying=0, in_flight=0, dead=0)
    revived = outbox.claim(10, now=200.0, lease=30.0)
    assert sorted(ids(revived)) == ["a", "a", "b"]
    assert {c.attempts for c in revived} == {1}
    outbox.put([ev("a", later=True)])  # revived rows are no merge targets: a new row
    assert outbox.counts(now=200.0).pending == 1


def test_put_merges_into_an_unclaimed_row(make: Factory) -> None:
    outbox = make(merge=union)
    outbox.put([ev("a", email="h1")])
    outbox.put([ev("a", click_id="c1"), ev("a", "PageVisit"), ev("b")])
    outbox.put([ev("a", value=3), ev("a", value=4)])  # duplicates inside one batch merge too
    assert outbox.counts(now=0.0).pending == 3
    first = outbox.claim(10, now=0.0, lease=30.0)
    assert [(c.event_name, c.event_id) for c in first] == [
        ("Purchase", "a"),
        ("PageVisit", "a"),
        ("Purchase", "b"),
    ]
    assert first[0].payload == {"event_id": "a", "email": "h1", "click_id": "c1", "value": 4, "merges": 3}
    outbox.put([ev("a", value=5)])  # the first one is claimed (maybe sent): this becomes a new row
    (second,) = outbox.claim(10, now=0.0, lease=30.0)
    assert second.id not in {c.id for c in first}
    assert second.payload == {"event_id": "a", "value": 5}


def test_put_without_merge_adds_rows(outbox: Outbox) -> None:
    outbox.put([ev("a", n=1)])
    outbox.put([ev("a", n=2)])
    assert [c.payload["n"] for c in outbox.claim(10, now=0.0, lease=30.0)] == [1, 2]


def test_a_failing_merge_raises_its_own_error(make: Factory) -> None:
    def broken(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("no merge today")

    outbox = make(merge=broken)
    outbox.put([ev("a")])
    with pytest.raises(KeyError, match="no merge today"):
        outbox.put([ev("a")])


def test_payload_must_be_json(outbox: Outbox) -> None:
    with pytest.raises(ValueError):
        outbox.put([ev("a", value=math.nan)])
    with pytest.raises(TypeError):
        outbox.put([ev("a", value=object())])
    assert outbox.counts(now=0.0) == OutboxCounts(0, 0, 0, 0)


def test_claimed_payloads_are_copies(outbox: Outbox) -> None:
    outbox.put([ev("a", items=[1])])
    (first,) = outbox.claim(10, now=0.0, lease=1.0)
    first.payload["items"].append(2)
    (again,) = outbox.claim(10, now=1.0, lease=1.0)
    assert again.payload["items"] == [1]


def test_a_thousand_in_one_call(outbox: Outbox) -> None:
    outbox.put([ev(f"e{i}", n=i) for i in range(1000)])
    claimed = outbox.claim(1000, now=0.0, lease=30.0)
    assert [c.payload["n"] for c in claimed] == list(range(1000))
    assert len({c.id for c in claimed}) == 1000
    outbox.ack(c.id for c in claimed)
    assert outbox.counts(now=0.0) == OutboxCounts(0, 0, 0, 0)


def entry(at: float, event_id: str, outcome: str = "processed", **flags: bool) -> LogEntry:
    signals = {"click_id": False, "email": False, "ip_ua": False, "pixel": False, "test": False, **flags}
    return LogEntry(at, event_id, "Purchase", outcome, "", "", **signals)


def test_delivery_log_round_trip_and_purge(outbox: Outbox) -> None:
    entries = [
        entry(10.0, "a", click_id=True, email=True),
        LogEntry(20.0, "b", "Lead", "failed", "Invalid email", "Missing IP", True, False, True, True, True),
        entry(20.0, "c", "retry", pixel=True),
        entry(30.0, "d", "dead", test=True),
    ]
    outbox.log(entries[:2])
    outbox.log(entries[2:])
    assert outbox.log_since(0.0) == entries
    assert outbox.log_since(20.0) == entries[1:]
    assert all(type(flag) is bool for e in outbox.log_since(0.0) for flag in (e.click_id, e.test))
    assert outbox.purge_log(before=25.0) == 3
    assert outbox.log_since(0.0) == entries[3:]
    assert outbox.purge_log(before=25.0) == 0


def test_settle_acks_buries_retries_and_logs_a_batch(outbox: Outbox) -> None:
    outbox.put([ev("done"), ev("dead"), ev("again"), ev("other")])
    done, dead, again, _other = outbox.claim(4, now=100.0, lease=30.0)
    logged = [entry(101.0, "done"), entry(101.0, "dead", "failed"), entry(101.0, "again", "retry")]
    outbox.settle(
        Settlement(101.0, done=[done.id], dead=[(dead.id, "Invalid")], retry=[again.id], retry_at=150.0,
                   retry_error="HTTP 503", log=logged)
    )  # fmt: skip
    assert [(d.event_id, d.reason, d.died_at) for d in outbox.dead_letters()] == [("dead", "Invalid", 101.0)]
    assert outbox.log_since(0.0) == logged
    assert outbox.counts(now=101.0) == OutboxCounts(pending=0, retrying=1, in_flight=1, dead=1)
    assert outbox.next_due(now=101.0) == 130.0  # "other", still leased; "again" waits until 150
    assert ids(outbox.claim(10, now=150.0, lease=30.0)) == ["again", "other"]
    outbox.settle(Settlement(200.0))  # nothing to write is fine


def test_release_gives_claimed_rows_back_unsent(outbox: Outbox) -> None:
    outbox.put([ev("a"), ev("b")])
    a, _b = outbox.claim(2, now=100.0, lease=30.0)
    outbox.release([a.id], at=110.0)
    assert outbox.counts(now=100.0) == OutboxCounts(pending=0, retrying=1, in_flight=1, dead=0)
    assert outbox.claim(10, now=109.0, lease=30.0) == []
    (again,) = outbox.claim(10, now=110.0, lease=30.0)
    assert (again.event_id, again.attempts) == ("a", 2)  # a claim counts as an attempt, sent or not
    outbox.release([], at=0.0)


def test_settle_is_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outbox = SQLiteOutbox(str(tmp_path / "outbox.sqlite3"))
    try:
        outbox.put([ev("a"), ev("b")])
        a, b = outbox.claim(2, now=100.0, lease=30.0)
        # The log insert is the last statement: when it fails, the ack and the burial are undone too.
        monkeypatch.setattr(outbox_module, "_LOG_INSERT", "INSERT INTO no_such_table VALUES ")
        with pytest.raises(sqlite3.OperationalError):
            outbox.settle(Settlement(101.0, done=[a.id], dead=[(b.id, "x")], log=[entry(101.0, "a")]))
        assert outbox.counts(now=101.0) == OutboxCounts(pending=0, retrying=0, in_flight=2, dead=0)
        statements: list[str] = []
        outbox._connect().set_trace_callback(statements.append)
        monkeypatch.undo()
        outbox.settle(Settlement(101.0, done=[a.id], dead=[(b.id, "x")], log=[entry(101.0, "a")]))
        assert [s for s in statements if s.startswith(("BEGIN", "COMMIT"))] == ["BEGIN IMMEDIATE", "COMMIT"]
        assert outbox.counts(now=101.0) == OutboxCounts(pending=0, retrying=0, in_flight=0, dead=1)
    finally:
        outbox.close()


def test_never_logs_payloads(outbox: Outbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    outbox.put([ev("a", em="f1d2d2f924e986ac86fdf7b36c94bcdf32beec15")])
    (a,) = outbox.claim(10, now=0.0, lease=30.0)
    outbox.retry([a.id], at=1.0, error="timeout")
    outbox.bury([(a.id, "rejected")], now=2.0)
    assert "f1d2d2f9" not in caplog.text


# --- what only a real SQLite file shows -----------------------------------------------------------


def test_a_crashed_claim_comes_back_in_a_new_process_object(tmp_path: Path) -> None:
    path = str(tmp_path / "outbox.sqlite3")
    first = SQLiteOutbox(path)
    first.put([ev("a", value=42, user_data={"em": ["ab" * 32]})])
    (claimed,) = first.claim(10, now=100.0, lease=30.0)
    first.close()  # "crashed": never acked, never retried
    del first

    second = SQLiteOutbox(path)
    try:
        assert second.counts(now=110.0) == OutboxCounts(pending=0, retrying=0, in_flight=1, dead=0)
        assert second.claim(10, now=110.0, lease=30.0) == []
        (back,) = second.claim(10, now=130.0, lease=30.0)
        assert (back.id, back.event_id, back.payload, back.attempts) == (claimed.id, "a", claimed.payload, 2)
    finally:
        second.close()


KILLED_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from tracklayer_mw.outbox import NewEvent, SQLiteOutbox

    outbox = SQLiteOutbox(sys.argv[1])
    n = int(sys.argv[2])
    for i in range(50):  # one commit each
        outbox.put([NewEvent(f"e{i}", "Purchase", 1700000000, {"i": i})])
    outbox.put([NewEvent(f"e{i}", "Purchase", 1700000000, {"i": i}) for i in range(50, n)])
    outbox.claim(10, now=1000.0, lease=30.0)  # claimed, then the process dies before sending
    print("ok", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_kill_9_loses_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "outbox.sqlite3")
    n = 1234
    child = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, path, str(n)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.stdout == "ok\n", child.stderr
    assert child.returncode == -signal.SIGKILL
    outbox = SQLiteOutbox(path)
    try:
        assert outbox.counts(now=1010.0) == OutboxCounts(pending=n - 10, retrying=0, in_flight=10, dead=0)
        everything = outbox.claim(n, now=1030.0, lease=30.0)
        assert sorted(c.payload["i"] for c in everything) == list(range(n))
        assert sorted(c.attempts for c in everything)[-11:] == [1] + [2] * 10
    finally:
        outbox.close()


KILLED_MID_GROUP_COMMITS = textwrap.dedent(
    """
    import os, signal, sys, threading
    from tracklayer_mw.outbox import NewEvent, SQLiteOutbox

    outbox = SQLiteOutbox(sys.argv[1])
    printed = threading.Lock()
    acked = 0

    def putter(t):
        global acked
        for i in range(10_000):
            outbox.put([NewEvent(f"t{t}-{i}", "Purchase", 1700000000, {"t": t})])
            with printed:  # acknowledged: put() returned
                print(f"t{t}-{i}", flush=True)
                acked += 1
                if acked == 600:  # mid-flight for the other threads: some are committing right now
                    os.kill(os.getpid(), signal.SIGKILL)

    for t in range(8):
        threading.Thread(target=putter, args=(t,)).start()
    """
)


def test_kill_9_during_group_commits_loses_no_acknowledged_put(tmp_path: Path) -> None:
    path = str(tmp_path / "outbox.sqlite3")
    child = subprocess.run(
        [sys.executable, "-c", KILLED_MID_GROUP_COMMITS, path],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    acknowledged = child.stdout.split()
    assert len(acknowledged) == 600
    outbox = SQLiteOutbox(path)
    try:
        stored = set(ids(outbox.claim(100_000, now=0.0, lease=30.0)))
    finally:
        outbox.close()
    assert set(acknowledged) <= stored


def _hold_the_write_lock(outbox: SQLiteOutbox) -> threading.Lock:
    """The write lock, taken as the worker's transaction would: puts arriving meanwhile wait."""
    lock = outbox._write_lock
    lock.acquire()
    return lock


def _wait_for_waiting_puts(outbox: SQLiteOutbox, count: int) -> None:
    """Until a leader is committing and `count` puts wait behind it."""
    deadline = time.monotonic() + 10
    while not outbox._leading or len(outbox._group) != count:
        assert time.monotonic() < deadline, "the puts did not queue"
        time.sleep(0.005)


def test_puts_waiting_for_the_lock_are_committed_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = SQLiteOutbox(str(tmp_path / "outbox.sqlite3"))
    transactions: list[int] = []
    real_tx = outbox._tx

    def counting_tx() -> Any:
        transactions.append(len(outbox._group))
        return real_tx()

    monkeypatch.setattr(outbox, "_tx", counting_tx)
    one_by_one: list[object] = []  # the fallback when a group fails: a savepoint per put
    monkeypatch.setattr(outbox, "_commit_each", one_by_one.append)
    lock = _hold_the_write_lock(outbox)
    threads = [threading.Thread(target=outbox.put, args=([ev(f"e{i}")],)) for i in range(12)]
    try:
        threads[0].start()  # the leader: takes its own put, then waits for the lock
        deadline = time.monotonic() + 10
        while not transactions:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        for thread in threads[1:]:
            thread.start()
        _wait_for_waiting_puts(outbox, 11)
    finally:
        lock.release()
    for thread in threads:
        thread.join(timeout=10)
    assert len(transactions) == 2  # the first put alone, then the 11 that queued behind it in one
    assert one_by_one == []  # in one statement
    assert outbox.counts(now=0.0).pending == 12
    assert (outbox._group, outbox._leading) == ([], False)
    outbox.close()


def test_a_failing_merge_fails_only_its_own_put_in_a_group(tmp_path: Path) -> None:
    def picky(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        if new.get("bad"):
            raise KeyError("no merge for this one")
        return {**old, **new}

    outbox = SQLiteOutbox(str(tmp_path / "outbox.sqlite3"), merge=picky)
    try:
        outbox.put([ev("a"), ev("b")])
        errors: dict[str, BaseException | None] = {}

        def put(name: str, event: NewEvent) -> None:
            try:
                outbox.put([event])
                errors[name] = None
            except BaseException as exc:
                errors[name] = exc

        lock = _hold_the_write_lock(outbox)
        first = threading.Thread(target=put, args=("first", ev("c")))
        first.start()
        _wait_for_waiting_puts(outbox, 0)  # the leader took its own put and waits for the lock
        others = [
            threading.Thread(target=put, args=("bad", ev("a", bad=True))),
            threading.Thread(target=put, args=("good", ev("b", extra=1))),
        ]
        for thread in others:
            thread.start()
        _wait_for_waiting_puts(outbox, 2)
        lock.release()
        for thread in [first, *others]:
            thread.join(timeout=10)
        assert isinstance(errors["bad"], KeyError)
        assert errors["first"] is None
        assert errors["good"] is None
        payloads = {c.event_id: c.payload for c in outbox.claim(10, now=0.0, lease=30.0)}
        assert payloads == {
            "a": {"event_id": "a"},
            "b": {"event_id": "b", "extra": 1},
            "c": {"event_id": "c"},
        }
    finally:
        outbox.close()


def _drain(outbox: SQLiteOutbox, start: Any) -> list[str]:
    """Claim small batches until the queue is empty, acking as a worker would."""
    got: list[str] = []
    start.wait(timeout=60)
    while batch := outbox.claim(7, now=1000.0, lease=600.0):
        got.extend(ids(batch))
        outbox.ack(c.id for c in batch)
    return got


def test_two_threads_never_claim_the_same_row(tmp_path: Path) -> None:
    outbox = SQLiteOutbox(str(tmp_path / "outbox.sqlite3"))  # one object: a connection per thread
    outbox.put([ev(f"e{i}") for i in range(2000)])
    start = threading.Barrier(2)
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            results[n] = _drain(outbox, start)
        except BaseException as exc:
            errors.append(exc)
        finally:
            outbox.close()  # this thread's connection

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    outbox.close()
    assert errors == []
    together = results[0] + results[1]
    assert len(together) == 2000
    assert set(together) == {f"e{i}" for i in range(2000)}


def _drain_in_process(path: str, out: str, start: Any) -> None:
    outbox = SQLiteOutbox(path)
    try:
        Path(out).write_text(json.dumps(_drain(outbox, start)))
    finally:
        outbox.close()


def test_two_processes_never_claim_the_same_row(tmp_path: Path) -> None:
    path = str(tmp_path / "outbox.sqlite3")
    setup = SQLiteOutbox(path)
    setup.put([ev(f"e{i}") for i in range(2000)])
    setup.close()
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    outs = [str(tmp_path / f"claimed-{n}.json") for n in range(2)]
    procs = [ctx.Process(target=_drain_in_process, args=(path, out, start)) for out in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    got = [json.loads(Path(out).read_text()) for out in outs]
    together = got[0] + got[1]
    assert len(together) == 2000
    assert set(together) == {f"e{i}" for i in range(2000)}


def _put_from_forked_child(outbox: SQLiteOutbox) -> None:
    outbox.put([ev("from-child")])  # must open its own connection, not use the parent's


@pytest.mark.skipif(sys.platform != "linux", reason="fork")
def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    outbox = SQLiteOutbox(str(tmp_path / "outbox.sqlite3"))
    try:
        outbox.put([ev("from-parent")])
        child = multiprocessing.get_context("fork").Process(target=_put_from_forked_child, args=(outbox,))
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0
        outbox.put([ev("parent-again")])  # the parent's connection still works
        assert ids(outbox.claim(10, now=0.0, lease=30.0)) == ["from-parent", "from-child", "parent-again"]
    finally:
        outbox.close()


def test_schema_and_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "outbox.sqlite3"  # missing parents are created
    SQLiteOutbox(str(path)).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        conn.execute("PRAGMA user_version = 99")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(RuntimeError, match="schema 99"):
        SQLiteOutbox(str(path))


def test_the_log_is_written_in_chunks_within_sqlites_variable_limit(tmp_path: Path) -> None:
    outbox = SQLiteOutbox(str(tmp_path / "outbox.sqlite3"))
    try:
        # As on a SQLite built with a low limit: 2 entries (22 variables) per INSERT.
        outbox._connect().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 30)
        entries = [entry(float(i), f"e{i}", pixel=i % 2 == 0) for i in range(5)]
        outbox.log(entries)
        assert outbox.log_since(0.0) == entries
        outbox._connect().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32766)
        many = [entry(10.0 + i, f"m{i}") for i in range(outbox_module._LOG_CHUNK * 2 + 1)]
        outbox.log(many)
        assert outbox.log_since(10.0) == many
    finally:
        outbox.close()


def test_puts_leave_checkpoints_to_the_worker(tmp_path: Path) -> None:
    # A commit crossing SQLite's default 1,000 pages of WAL would checkpoint (and fsync) inside the put,
    # with the write lock held; here only the worker's checkpoint() does, outside it. Until a checkpoint,
    # the rows live in the WAL alone and the database file stays as small as its schema.
    path = tmp_path / "outbox.sqlite3"
    outbox = SQLiteOutbox(str(path))
    try:
        pragma = outbox._connect().execute("PRAGMA wal_autocheckpoint").fetchone()
        assert pragma == (outbox_module.BACKSTOP_CHECKPOINT_PAGES,)
        empty = path.stat().st_size
        for i in range(400):  # one 3 KB payload per put: 1,200 KB, more than 1,000 pages of WAL
            outbox.put([ev(f"e{i}", blob="x" * 3000)])
        wal_pages = (Path(f"{path}-wal").stat().st_size - 32) // (24 + 4096)
        assert 1000 < wal_pages < outbox_module.BACKSTOP_CHECKPOINT_PAGES
        assert path.stat().st_size == empty  # no put checkpointed
        outbox.checkpoint()
        assert path.stat().st_size > 400 * 3000  # the rows are in the database file now
        assert outbox.counts(now=0.0).pending == 400
    finally:
        outbox.close()


def test_a_payload_that_is_not_json_is_claimed_as_empty(tmp_path: Path) -> None:
    # Written by a broken or foreign writer: the claim still works, and the worker buries the row.
    outbox = SQLiteOutbox(str(tmp_path / "outbox.sqlite3"))
    try:
        outbox.put([ev("good")])
        with outbox._tx() as conn:
            sql = "INSERT INTO outbox (event_id, event_name, event_time, payload) VALUES (?, ?, ?, ?)"
            conn.execute(sql, ("bad", "Lead", 1, "{nope"))
        claimed = outbox.claim(10, now=0.0, lease=30.0)
        assert [(c.event_id, c.payload) for c in claimed] == [("good", {"event_id": "good"}), ("bad", {})]
    finally:
        outbox.close()


def test_reopening_keeps_rows(tmp_path: Path) -> None:
    path = str(tmp_path / "outbox.sqlite3")
    first = SQLiteOutbox(path)
    first.put([ev("a")])
    first.close()
    second = SQLiteOutbox(path)
    try:
        assert second.counts(now=0.0).pending == 1
    finally:
        second.close()


def test_claim_and_counts_walk_indexes_not_the_table(tmp_path: Path) -> None:
    outbox = SQLiteOutbox(str(tmp_path / "outbox.sqlite3"))
    conn = sqlite3.connect(outbox.path)
    try:
        claim = conn.execute("EXPLAIN QUERY PLAN " + outbox_module._CLAIM_IDS, {"now": 1, "limit": 3})
        plan = [row[3] for row in claim]
        assert "SEARCH outbox USING INDEX outbox_due (available_at<?)" in plan
        assert not any("SCAN outbox" in step or "TEMP B-TREE" in step for step in plan)
        # The statements taking a JSON list of ids look each one up by its primary key.
        for sql in (outbox_module._CLAIM, outbox_module._CLAIMED, outbox_module._ACK):
            plan = [
                row[3]
                for row in conn.execute(
                    "EXPLAIN QUERY PLAN " + sql, ["[1]"] * sql.count("?") or {"ids": "[1]", "until": 2}
                )
            ]
            assert "SEARCH outbox USING INTEGER PRIMARY KEY (rowid=?)" in plan, sql
            assert not any("SCAN outbox" in step for step in plan), sql
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + outbox_module._COUNTS, (1,))]
        assert not any(step == "SCAN outbox" for step in plan)  # every count uses an index
        assert "SCAN outbox USING INDEX outbox_unclaimed" in plan
    finally:
        conn.close()
        outbox.close()


# --- open_outbox ---------------------------------------------------------------------------------


def test_open_outbox_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    memory = open_outbox("memory://", merge=union)
    assert isinstance(memory, MemoryOutbox)

    absolute = open_outbox(f"sqlite:///{tmp_path}/abs/outbox.sqlite3")  # sqlite:////tmp/... is absolute
    assert isinstance(absolute, SQLiteOutbox)
    assert absolute.path == str(tmp_path / "abs" / "outbox.sqlite3")
    absolute.close()

    monkeypatch.chdir(tmp_path)
    relative = open_outbox("sqlite:///rel/outbox.sqlite3")
    assert isinstance(relative, SQLiteOutbox)
    assert relative.path == str(tmp_path / "rel" / "outbox.sqlite3")
    relative.close()
    assert (tmp_path / "rel" / "outbox.sqlite3").exists()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("", id="empty"),
        pytest.param("outbox.sqlite3", id="bare-path"),
        pytest.param("sqlite://outbox.sqlite3", id="two-slashes"),
        pytest.param("sqlite:///", id="no-path"),
        pytest.param("sqlite:///:memory:", id="sqlite-memory"),
        pytest.param("memory:", id="memory-no-slashes"),
        pytest.param("postgres://localhost/db", id="other-scheme"),
    ],
)
def test_open_outbox_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ValueError, match="sqlite:///PATH or memory://"):
        open_outbox(url)


# --- put_nowait: the event loop's put -----------------------------------------------------------------


def test_put_nowait_commits_like_put(make: Factory) -> None:
    outbox = make(merge=union)
    assert outbox.put_nowait([ev("a", value=1)]) is True
    assert outbox.put_nowait([ev("a", value=2), ev("b")]) is True  # merged like put()
    claimed = outbox.claim(10, now=1.0, lease=60)
    assert ids(claimed) == ["a", "b"]
    assert claimed[0].payload["merges"] == 1
    assert claimed[0].payload["value"] == 2


def test_put_nowait_raises_a_failing_merge_like_put(make: Factory) -> None:
    def broken(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        raise LookupError("merge failed")

    outbox = make(merge=broken)
    outbox.put([ev("a")])
    with pytest.raises(LookupError, match="merge failed"):
        outbox.put_nowait([ev("a")])
    assert outbox.put_nowait([ev("c")]) is True  # the failed transaction was rolled back, nothing left open


def test_put_nowait_declines_while_a_thread_writes(tmp_path: Path) -> None:
    outbox = SQLiteOutbox(str(tmp_path / "outbox.sqlite3"))
    with outbox._write_lock:  # what a put(), claim() or settle() of another thread holds
        assert outbox.put_nowait([ev("a")]) is False
    assert outbox.counts(now=0).pending == 0  # nothing written
    assert outbox.put_nowait([ev("a")]) is True
    assert outbox.counts(now=0).pending == 1


def test_put_nowait_declines_at_once_while_another_process_writes(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = SQLiteOutbox(str(path))
    other = sqlite3.connect(path, isolation_level=None)  # another process's connection, as SQLite sees it
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        assert outbox.put_nowait([ev("a")]) is False
        assert time.monotonic() - started < 1.0  # not the 5 s busy timeout: an event loop never waits
        conn = outbox._connect()
        # put() still waits its turn: the busy timeout is back for the blocking path.
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == int(outbox_module.BUSY_TIMEOUT * 1000)
        waiting = threading.Thread(target=outbox.put, args=([ev("b")],))
        waiting.start()
        time.sleep(0.2)
        assert waiting.is_alive()
    finally:
        other.execute("COMMIT")
    waiting.join(5)
    assert not waiting.is_alive()
    assert ids(outbox.claim(10, now=1.0, lease=60)) == ["b"]
    other.close()
    outbox.close()


def test_a_put_interrupted_while_waiting_for_its_group_leaves_later_puts_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = SQLiteOutbox(str(tmp_path / "outbox.sqlite3"))

    class InterruptedOnce(threading.Event):
        fired = False

        def wait(self, timeout: float | None = None) -> bool:
            if not InterruptedOnce.fired:
                InterruptedOnce.fired = True
                raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
            return super().wait(timeout)

    leader = threading.Thread(target=outbox.put, args=([ev("first")],))
    with outbox._write_lock:  # the leader's transaction waits here, so the next put joins its group
        leader.start()
        deadline = time.monotonic() + 5
        while not outbox._leading:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        monkeypatch.setattr(outbox_module._Put, "__init__", _put_init_with(InterruptedOnce))
        with pytest.raises(KeyboardInterrupt):
            outbox.put([ev("interrupted")])
        monkeypatch.undo()
    leader.join(5)
    later = threading.Thread(target=outbox.put, args=([ev("later")],))
    later.start()
    later.join(5)
    assert not later.is_alive()  # it waited for good when the interrupted put kept its place in the queue
    assert ids(outbox.claim(10, now=1.0, lease=60)) == ["first", "later"]
    outbox.close()


def _put_init_with(event_type: type[threading.Event]) -> Callable[..., None]:
    def init(self: Any, rows: list[tuple[Any, ...]]) -> None:
        self.rows, self.done, self.lead, self.error = rows, event_type(), False, None

    return init
