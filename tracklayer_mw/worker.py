"""The background delivery loop: outbox -> Pinterest, batched, retried, never blocking a request.

One daemon thread per process (pid-aware, so forking servers get their own). `run_once()` is one
claim -> send -> settle cycle; the thread only repeats it, which keeps the logic testable with a
fake clock and no sleeps.

Under a backlog (a full batch), the next batch is claimed, read and built while the current request
is in flight (the request itself goes out on a sender thread), and goes out as soon as the current
answer is in, before that batch is settled: Pinterest's answer time and ours overlap, one request at
a time still. A pause (429, 5xx) hands a batch claimed ahead back to the outbox unsent, due when the
pause ends; stop() settles a request in flight and hands back what was not sent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import httpx

from tracklayer_mw.events import MAX_AGE_SECONDS, Event
from tracklayer_mw.outbox import ClaimedEvent, LogEntry, Outbox, Settlement
from tracklayer_mw.pinterest import Adapter, SendOutcome

logger = logging.getLogger("tracklayer_mw")

LEASE_SECONDS = 30.0  # > the HTTP timeout; a crashed process's claims come back within it
POLL_SECONDS = 1.0  # how often another process's events are looked for
LINGER_SECONDS = 0.2  # after a wake-up, let a burst of events gather into one batch
HOUSEKEEPING_SECONDS = 60.0
# Under a backlog, a WAL checkpoint for every 4 full batches: ~6 % more events/s than one per batch
# (bench: `Deliverer.checkpoint_after`), while the WAL holds at most a few batches' pages.
CHECKPOINT_EVERY_FULL_CYCLES = 4
LOG_RETENTION_SECONDS = 7 * 24 * 3600
# Leave a margin so an event is never sent so close to the 7-day limit that it expires in flight.
SEND_AGE_LIMIT = MAX_AGE_SECONDS - 120
UNREADABLE = "unreadable payload (written by an incompatible version?)"
STALE = "older than 7 days before it could be sent"


def backoff(
    attempt: int,
    retry_after: float | None = None,
    *,
    base: float = 2.0,
    cap: float = 900.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Exponential delay with jitter; `Retry-After` is a floor. Attempt 1 waits 1-2 s."""
    # The exponent is clamped: 2.0 * 2**1100 overflows a float, and attempts grow with every claim.
    delay = min(cap, base * 2.0 ** min(max(0, attempt - 1), 40)) * (0.5 + rand() / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, 3600.0))
    return delay


@dataclass(frozen=True, slots=True)
class _Batch:
    claimed: int  # rows claimed, including those buried before sending
    rows: list[ClaimedEvent]  # the rows to send, and their events
    events: list[Event]
    pid: int  # the process that claimed it: a forked child never sends its parent's batch
    claimed_at: float  # a batch claimed ahead is sent only while its lease has time left


class _Sender:
    """One daemon thread sending requests in order. Not a ThreadPoolExecutor: its threads are joined
    at interpreter exit, so a request in flight would hold a stopping process for its whole timeout;
    what a daemon thread leaves unsettled comes back when its lease ends."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[SendOutcome], Callable[[], SendOutcome]] | None] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._loop, name="tracklayer.Sender", daemon=True).start()

    def submit(self, send: Callable[[], SendOutcome]) -> Future[SendOutcome]:
        future: Future[SendOutcome] = Future()
        self._jobs.put((future, send))
        return future

    def shutdown(self) -> None:
        self._jobs.put(None)  # after the jobs already queued

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, send = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(send())
                except BaseException as exc:  # handed to the delivery thread, which settles or retries
                    future.set_exception(exc)


class Deliverer:
    def __init__(
        self,
        outbox: Outbox,
        adapter: Adapter | None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        batch_size: int = 1000,
        test_mode: bool = False,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if adapter is not None and not 1 <= batch_size <= adapter.max_batch:
            raise ValueError(f"batch_size: 1 to {adapter.max_batch}")
        self.outbox = outbox
        self.adapter = adapter
        self.batch_size = batch_size
        self.test_mode = test_mode
        self._transport = transport
        self._timeout = timeout
        self._clock = clock
        self._rand = rand
        self._client: httpx.Client | None = None
        self._client_pid = 0
        self._sender: _Sender | None = None
        self._sender_pid = 0
        self._next: _Batch | None = None  # claimed ahead, not sent yet
        self._in_flight: tuple[_Batch, Future[SendOutcome]] | None = None  # sent, to settle next cycle
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._lock = threading.Lock()
        self._cycle_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cycle = threading.Condition()
        self._cycles = 0
        self._full_cycles = 0  # full batches delivered in a row since the queue last ran short
        _DELIVERERS.add(self)
        self.paused_until = 0.0
        self._failures_in_a_row = 0
        self._next_housekeeping = 0.0
        self._warned_no_credentials = False

    # --- one cycle -------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Claim a batch, send it, settle every event. Returns how many events were handled."""
        now = self._clock()
        if now >= self._next_housekeeping:
            self._housekeeping(now)
        if self.adapter is None:
            if not self._warned_no_credentials:
                self._warned_no_credentials = True
                logger.warning(
                    "tracklayer: no Pinterest credentials; events are kept in the outbox until they can be "
                    "sent (set TRACKLAYER_PINTEREST_AD_ACCOUNT_ID and TRACKLAYER_PINTEREST_ACCESS_TOKEN)"
                )
            return 0
        with self._cycle_lock:  # a thread left over from a timed-out stop() never overlaps the new one
            return self._cycle_locked(now)

    def _cycle_locked(self, now: float) -> int:
        batch, sending = self._take_in_flight()  # sent at the end of the last cycle
        if sending is None:
            if now < self.paused_until:
                self._release_next()
                return 0
            batch = self._take_next(now) or self._claim(now)
            if not batch.rows:
                return batch.claimed
            sending = self._send(batch)
        assert batch is not None
        try:
            if batch.claimed >= self.batch_size and self._next is None:  # a backlog: claim ahead meanwhile
                self._next = self._claim(now)
        finally:  # even when that claim failed, the batch in flight is settled
            outcome = sending.result()
            try:
                ahead = self._next
                if (
                    outcome.kind != "retry"
                    and ahead is not None
                    and ahead.rows
                    and self._fresh(ahead, self._clock())
                    and not self._stopping.is_set()
                ):
                    # Keep the pipe full: the next request goes out before this batch is settled.
                    self._next, self._in_flight = None, (ahead, self._send(ahead))
            finally:  # Pinterest answered: settle, whatever happened to the next send
                self.outbox.settle(self._settle(batch.rows, batch.events, outcome, self._clock()))
                if self.paused_until > now:
                    self._release_next()
        return batch.claimed

    def _fresh(self, batch: _Batch, now: float) -> bool:
        # Its lease runs from the claim: sent later than this, it could outlive the lease in flight and
        # be claimed and sent by another process meanwhile.
        return batch.pid == os.getpid() and now - batch.claimed_at < LEASE_SECONDS / 3

    def _take_next(self, now: float) -> _Batch | None:
        """The batch claimed ahead, if it is still fresh; a stale one goes back to the outbox."""
        batch, self._next = self._next, None
        if batch is not None and self._fresh(batch, now):
            return batch
        self._next = batch
        self._release_next()
        return None

    def _send(self, batch: _Batch) -> Future[SendOutcome]:
        assert self.adapter is not None
        adapter, client, events = self.adapter, self._http_client(), batch.events
        return self._send_pool().submit(lambda: adapter.send(client, events))

    def _take_in_flight(self) -> tuple[_Batch | None, Future[SendOutcome] | None]:
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None or in_flight[0].pid != os.getpid():  # a parent's request is the parent's
            return None, None
        return in_flight

    def _finish_in_flight(self, timeout: float | None = None) -> None:
        """Wait (up to `timeout`) for a request still in flight and settle its batch (stopping).
        On timeout the batch stays leased: it goes out again when its lease ends."""
        batch, sending = self._take_in_flight()
        if batch is not None and sending is not None:
            outcome = sending.result(timeout)
            self.outbox.settle(self._settle(batch.rows, batch.events, outcome, self._clock()))

    def _claim(self, now: float) -> _Batch:
        """Claim a batch and read it; what cannot be sent is buried (and logged) at once."""
        assert self.adapter is not None
        claimed = self.outbox.claim(self.batch_size, now=now, lease=LEASE_SECONDS)
        rows: list[ClaimedEvent] = []
        events: list[Event] = []
        dead: list[tuple[int, str]] = []
        dead_log: list[LogEntry] = []
        for row in claimed:
            try:
                event = Event.from_payload(row.payload)
            except (TypeError, ValueError, KeyError):
                # A row no version of this library can read must not block its batch every cycle.
                dead.append((row.id, UNREADABLE))
                continue
            if row.event_time < now - SEND_AGE_LIMIT:
                dead.append((row.id, STALE))
                dead_log.append(self._entry(now, event, "dead", STALE))
                continue
            rows.append(row)
            events.append(event)
        if dead:
            self.outbox.settle(Settlement(now, dead=dead, log=dead_log))
        return _Batch(len(claimed), rows, events, os.getpid(), now)

    def _release_next(self) -> None:
        """Hand a batch claimed ahead back unsent, due when the pause ends (or now)."""
        batch, self._next = self._next, None
        if batch is not None and batch.rows and batch.pid == os.getpid():
            self.outbox.release([row.id for row in batch.rows], at=max(self.paused_until, self._clock()))

    def _settle(
        self, rows: Sequence[ClaimedEvent], events: Sequence[Event], outcome: SendOutcome, now: float
    ) -> Settlement:
        """What the answer means for each row; written by the caller in one transaction."""
        if outcome.kind != "retry":
            self._failures_in_a_row = 0
        if outcome.kind == "results":
            results = outcome.results
            done = [row.id for row, result in zip(rows, results, strict=True) if result.processed]
            failed = [
                (row.id, result.error or "failed")
                for row, result in zip(rows, results, strict=True)
                if not result.processed
            ]
            log = [
                self._entry(
                    now, event, "processed" if result.processed else "failed", result.error, result.warning
                )
                for event, result in zip(events, results, strict=True)
            ]
            if failed:
                logger.warning(
                    "tracklayer: Pinterest failed %d of %d events (dead letters)", len(failed), len(rows)
                )
            return Settlement(now, done=done, dead=failed, log=log)
        if outcome.kind == "reject":
            logger.error("tracklayer: Pinterest refused a batch of %d events: %s", len(rows), outcome.message)
            return Settlement(
                now,
                dead=[(row.id, outcome.message) for row in rows],
                log=[self._entry(now, event, "dead", outcome.message) for event in events],
            )
        # retry: nothing was judged. An event that would pass the 7-day limit before its next try dies now.
        # One time for the whole batch: jitter per row would scatter it into one request per event.
        at = now + backoff(max(row.attempts for row in rows), outcome.retry_after, rand=self._rand)
        reason = f"would be older than 7 days at the next try ({outcome.message})"
        expired = [
            (row, event)
            for row, event in zip(rows, events, strict=True)
            if row.event_time < at - SEND_AGE_LIMIT
        ]
        again = [
            (row, event)
            for row, event in zip(rows, events, strict=True)
            if row.event_time >= at - SEND_AGE_LIMIT
        ]
        # Pinterest is struggling (429, 5xx, timeouts): the whole worker backs off, longer with each
        # failure in a row, so new events do not keep the request rate of a healthy API.
        self._failures_in_a_row += 1
        self.paused_until = max(
            at, now + backoff(self._failures_in_a_row, outcome.retry_after, rand=self._rand)
        )
        logger.warning("tracklayer: delivery of %d events will be retried: %s", len(rows), outcome.message)
        # One log entry per outcome: an expired row is logged "dead", not "retry" too.
        return Settlement(
            now,
            dead=[(row.id, reason) for row, _ in expired],
            retry=[row.id for row, _ in again],
            retry_at=at,
            retry_error=outcome.message,
            log=[self._entry(now, event, "dead", reason) for _, event in expired]
            + [self._entry(now, event, "retry", outcome.message) for _, event in again],
        )

    def _entry(self, now: float, event: Event, outcome: str, message: str, warning: str = "") -> LogEntry:
        return LogEntry(
            at=now,
            event_id=event.event_id,
            event_name=event.event,
            outcome=outcome,
            message=message,
            warning=warning,
            click_id=bool(event.click_id),
            email=bool(event.user.get("email")),
            ip_ua=bool(event.client_ip and event.user_agent),
            pixel=event.pixel,
            test=self.test_mode,
        )

    def checkpoint_after(self, handled: int) -> None:
        """Copy the WAL back into the database after a cycle: between cycles and outside every lock, so
        no request's put() waits on a checkpoint. Under a backlog (full batches) only every
        CHECKPOINT_EVERY_FULL_CYCLES-th time: a batch's pages are written by its claim, its settle
        and its log, and one checkpoint for several batches copies each page once. The cycle that
        empties the queue always checkpoints, so an idle outbox leaves a clean WAL."""
        self._full_cycles = self._full_cycles + 1 if handled >= self.batch_size else 0
        if self._full_cycles % CHECKPOINT_EVERY_FULL_CYCLES == 0:
            self.outbox.checkpoint()

    def _housekeeping(self, now: float) -> None:
        self._next_housekeeping = now + HOUSEKEEPING_SECONDS
        expired = self.outbox.bury_expired(
            event_time_before=int(now - SEND_AGE_LIMIT),
            reason="older than 7 days before it could be sent",
            now=now,
        )
        if expired:
            logger.warning(
                "tracklayer: %d queued events passed the 7-day limit and became dead letters", expired
            )
        self.outbox.purge_log(before=now - LOG_RETENTION_SECONDS)

    def _send_pool(self) -> _Sender:
        # One thread, so requests still go out one at a time; like the client, one per process.
        if self._sender is None or self._sender_pid != os.getpid():
            self._sender = _Sender()
            self._sender_pid = os.getpid()
        return self._sender

    def _http_client(self) -> httpx.Client:
        # A client (and its connection pool) belongs to one process: never reuse it after a fork.
        if self._client is None or self._client_pid != os.getpid():
            self._client = httpx.Client(transport=self._transport, timeout=self._timeout)
            self._client_pid = os.getpid()
        return self._client

    # --- the thread ------------------------------------------------------------------------------

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread_pid == os.getpid() and self._thread.is_alive()

    def start(self) -> None:
        """Idempotent and fork-aware: a forked child starts its own thread on first use."""
        with self._lock:
            if self.is_alive:
                return
            # A stop event per thread: a thread still finishing after a timed-out stop() keeps its own
            # (set) event and ends; clearing a shared one would have kept it running beside this one.
            self._stopping = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stopping,), name="tracklayer.Deliverer", daemon=True
            )
            self._thread_pid = os.getpid()
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self, stopping: threading.Event) -> None:
        errors = 0
        while not stopping.is_set():
            try:
                handled = self.run_once()
                self.checkpoint_after(handled)
                errors = 0
            except Exception:
                errors += 1
                logger.exception("tracklayer: delivery cycle failed; retrying")
                handled = 0
                stopping.wait(min(30.0, backoff(errors, rand=self._rand)))
            with self._cycle:
                self._cycles += 1
                self._cycle.notify_all()
            if handled >= self.batch_size:
                continue  # a backlog: keep going without waiting
            self._wait_for_work(stopping)
        with contextlib.suppress(Exception), self._cycle_lock:  # else its lease brings it back later
            self._finish_in_flight()
            self._release_next()
        self.outbox.close()  # this thread's connection: sqlite3 lets only its own thread close it

    def _wait_for_work(self, stopping: threading.Event) -> None:
        now = self._clock()
        timeout = POLL_SECONDS
        if self.paused_until > now:
            timeout = min(max(self.paused_until - now, 0.01), 30.0)
        else:
            try:
                due = self.outbox.next_due(now=now)
            except Exception:
                due = None
            if due is not None:
                timeout = min(timeout, max(due - now, 0.01))
        if self._wake.wait(timeout):
            self._wake.clear()
            stopping.wait(LINGER_SECONDS)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until nothing is due for sending.

        True when drained; False on timeout (the events stay queued).
        """
        if self.adapter is None:
            return False  # nothing can leave without credentials
        deadline = time.monotonic() + timeout
        while True:
            now = self._clock()
            due = self.outbox.next_due(now=now)
            if (due is None or due > now) and self.outbox.counts(now=now).in_flight == 0:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                counts = self.outbox.counts(now=now)
                logger.info(
                    "tracklayer: flush timed out; %d events stay queued", counts.pending + counts.retrying
                )
                return False
            if not self.is_alive:
                if self.run_once() == 0:
                    now = self._clock()
                    due = self.outbox.next_due(now=now)
                    return due is None or due > now
                continue
            with self._cycle:
                seen = self._cycles
                self.wake()
                # wait_for() calls the lambda within this iteration: the late binding B023 warns of is moot.
                self._cycle.wait_for(lambda: self._cycles > seen, timeout=min(remaining, 1.0))  # noqa: B023

    def stop(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and self._thread_pid == os.getpid():
            thread.join(timeout)
        if thread is None or not thread.is_alive():  # else it is still the thread's to finish
            with contextlib.suppress(Exception), self._cycle_lock:  # what run_once() from here left
                self._release_next()
                self._finish_in_flight(timeout=max(0.0, deadline - time.monotonic()))
        self._thread = None
        if self._sender is not None and self._sender_pid == os.getpid():
            # Not waiting: stop() keeps to its timeout; a request still in flight finishes on its own.
            self._sender.shutdown()
        self._sender = None
        if self._client is not None and self._client_pid == os.getpid():
            self._client.close()
        self._client = None


_DELIVERERS: weakref.WeakSet[Deliverer] = weakref.WeakSet()


def _new_locks_after_fork() -> None:
    # A lock copied by fork may be held by a thread the child does not have (the delivery thread
    # holds the cycle lock while a request is out): the child's own thread would wait on it forever.
    for deliverer in list(_DELIVERERS):
        deliverer._lock = threading.Lock()
        deliverer._cycle_lock = threading.Lock()
        deliverer._cycle = threading.Condition()


os.register_at_fork(after_in_child=_new_locks_after_fork)
