"""The delivery pipeline, end to end: `.venv/bin/python -m bench.pipeline [--events 50000]`.

Measures, on a SQLite outbox in a temporary directory (WAL, synchronous=NORMAL, with the same
merge function the middleware installs):

1. outbox put throughput: one event per `put()` (one transaction each, as one `track()` call does)
   and 1,000 events per `put()` (an ingest batch);
2. delivery throughput: a pre-filled outbox drained by `Deliverer.run_once()` (claim, build the
   body, POST, settle, delivery log) in batches of 1,000, first to the in-process sandbox transport
   (no sockets: the sandbox's validation shares this process's CPU), then to a real HTTP sandbox
   served by uvicorn in a subprocess on 127.0.0.1 (pinned to another core when there is one).

Events are shaped like real ones: hashed email, IP, user agent, click id, URL, contents. Every
delivery run checks that the outbox ends empty with no dead letter. Numbers move from run to run;
compare rows of one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tracklayer_mw.events import Event, merge_payloads, parse_event
from tracklayer_mw.outbox import NewEvent, SQLiteOutbox
from tracklayer_mw.pinterest import MAX_BATCH, PinterestAdapter
from tracklayer_mw.sandbox import PinterestSandbox
from tracklayer_mw.worker import Deliverer

TOKEN = "sandbox-token"
ACCOUNT = "549755885175"
SINGLE_PUTS = 5_000
SINGLE_PUT_SECONDS = 5.0  # stop the one-event-per-put run early on a slow disk


@dataclass(frozen=True)
class Row:
    what: str
    events: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else float("inf")


def template(now: float) -> Event:
    return parse_event(
        {
            "event": "Purchase",
            "event_time": int(now),
            "url": "https://shop.example/checkout/thanks",
            "user": {"email": "ann@example.com", "external_id": "cust-42"},
            "custom": {
                "value": 49.99,
                "currency": "USD",
                "num_items": 2,
                "content_ids": ["sku-1", "sku-2"],
                "contents": [
                    {"id": "sku-1", "quantity": 1, "item_price": 24.99, "item_name": "Shirt"},
                    {"id": "sku-2", "quantity": 1, "item_price": 25.00, "item_name": "Socks"},
                ],
            },
        },
        now=now,
        source="server",
    ).with_context(
        click_id="dj0yJnU9b1FrZ3BhWnJQc2xPT0dLbmV4ZFpsUG9TSkxPR0x0c0Y",
        client_ip="203.0.113.9",
        user_agent="Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5",
    )


def new_events(prefix: str, count: int, now: float, first: int = 0) -> list[NewEvent]:
    base = template(now)
    events = (base.with_context(event_id=f"{prefix}-{i}") for i in range(first, first + count))
    return [NewEvent(e.event_id, e.event, e.event_time, e.to_payload()) for e in events]


def open_outbox(directory: Path, name: str) -> SQLiteOutbox:
    return SQLiteOutbox(str(directory / f"{name}.sqlite3"), merge=merge_payloads)


def bench_single_puts(directory: Path, now: float) -> Row:
    outbox = open_outbox(directory, "single")
    events = new_events("single", SINGLE_PUTS, now)
    started = time.perf_counter()
    done = 0
    for event in events:
        outbox.put([event])
        done += 1
        if done % 100 == 0 and time.perf_counter() - started > SINGLE_PUT_SECONDS:
            break
    seconds = time.perf_counter() - started
    assert outbox.counts(now=now).pending == done
    outbox.close()
    return Row("outbox put, 1 event per put()", done, seconds, "one transaction each")


def fill(outbox: SQLiteOutbox, prefix: str, count: int, now: float) -> float:
    """Put `count` events in puts of 1,000; returns the seconds spent inside put()."""
    spent = 0.0
    for start in range(0, count, MAX_BATCH):
        batch = new_events(prefix, min(MAX_BATCH, count - start), now, start)  # built outside the timing
        started = time.perf_counter()
        outbox.put(batch)
        spent += time.perf_counter() - started
    assert outbox.counts(now=now).pending == count
    return spent


class TimedTransport(httpx.BaseTransport):
    """Times each exchange: the sandbox's (and the socket's) share of a delivery cycle.

    `seconds` is wall time; `cpu_seconds` the CPU this process spent inside the exchange (the whole
    sandbox for the in-process transport, little more than socket calls over HTTP).
    """

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            response = self.inner.handle_request(request)
            response.read()
            return response
        finally:
            self.seconds += time.perf_counter() - started
            self.cpu_seconds += time.thread_time() - cpu

    def close(self) -> None:
        self.inner.close()


@dataclass
class Drained:
    seconds: float  # wall
    cpu_seconds: float  # this process, all threads (the worker's requests go out on a sender thread)


def drain(outbox: SQLiteOutbox, api_base: str, transport: TimedTransport, count: int) -> float:
    """Wall seconds to deliver `count` events (bench.delivery's measure)."""
    return drain_timed(outbox, api_base, transport, count).seconds


def drain_timed(outbox: SQLiteOutbox, api_base: str, transport: TimedTransport, count: int) -> Drained:
    adapter = PinterestAdapter(ad_account_id=ACCOUNT, access_token=TOKEN, api_base=api_base)
    deliverer = Deliverer(outbox, adapter, transport=transport, batch_size=MAX_BATCH, timeout=30.0)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        handled = 0
        while handled < count:
            got = deliverer.run_once()
            deliverer.checkpoint_after(got)  # as the worker thread does after every cycle
            if got == 0:
                break
            handled += got
        drained = Drained(time.perf_counter() - started, time.process_time() - cpu)
    finally:
        deliverer.stop()
    counts = outbox.counts(now=time.time())
    if handled != count or counts != type(counts)(0, 0, 0, 0):
        reasons = {letter.reason for letter in outbox.dead_letters(5)}
        raise SystemExit(
            f"delivery incomplete: handled {handled} of {count}, outbox {counts}, dead: {reasons}"
        )
    return drained


def own_cost(count: int, drained: Drained, timed: TimedTransport) -> Row:
    """The library's CPU time in the same run: this process's, minus what the sandbox used in it.

    Not wall minus the HTTP time: under a backlog the worker claims and builds the next batch while a
    request is in flight, so the two overlap.
    """
    share = timed.seconds / drained.seconds if drained.seconds else 0.0
    note = f"claim, build, settle, log; a request was in flight {share:.0%} of the run"
    return Row(
        "  library CPU time (events per CPU-second)", count, drained.cpu_seconds - timed.cpu_seconds, note
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


SERVER_CODE = """
import sys, uvicorn
from tracklayer_mw.sandbox import PinterestSandbox
uvicorn.run(PinterestSandbox().asgi_app(), host="127.0.0.1", port=int(sys.argv[1]),
            access_log=False, log_level="warning", timeout_graceful_shutdown=2)
"""


def cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


@contextmanager
def http_sandbox() -> Iterator[tuple[str, str]]:
    """uvicorn serving a fresh sandbox in a subprocess; yields (API base, placement note)."""
    port = free_port()
    argv = [sys.executable, "-c", SERVER_CODE, str(port)]
    available = cores()
    note = "same cores as the client"
    if len(available) >= 2 and shutil.which("taskset"):
        argv = ["taskset", "-c", str(available[0]), *argv]
        os.sched_setaffinity(0, available[1:])
        note = f"server on core {available[0]}, client on {','.join(map(str, available[1:]))}"
    server = subprocess.Popen(argv)
    try:
        deadline = time.monotonic() + 20
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the sandbox server exited with {server.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the sandbox server did not start within 20 s") from None
                time.sleep(0.05)  # polling a port that is not open yet
        yield f"http://127.0.0.1:{port}/v5", note
    finally:
        if available:
            os.sched_setaffinity(0, available)
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def print_table(rows: list[Row]) -> None:
    width = max(len(row.what) for row in rows)
    print(f"{'measurement':<{width}}  {'events':>8}  {'seconds':>8}  {'events/s':>10}  note")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 8}  {'-' * 10}  ----")
    for row in rows:
        print(f"{row.what:<{width}}  {row.events:>8,}  {row.seconds:>8.2f}  {row.rate:>10,.0f}  {row.note}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=50_000, help="events per delivery run (default 50,000)")
    args = parser.parse_args(argv)
    count: int = args.events

    print("tracklayer_mw pipeline benchmark", flush=True)
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}), {platform.platform()}, "
        f"{os.cpu_count()} CPUs (usable: {len(cores()) or '?'}), SQLite {sqlite3.sqlite_version}, "
        f"httpx {httpx.__version__}"
    )
    total = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tl-bench-") as tmp:
        directory = Path(tmp)
        now = time.time()
        rows.append(bench_single_puts(directory, now))

        in_process = open_outbox(directory, "in-process")
        rows.append(
            Row("outbox put, 1,000 events per put()", count, fill(in_process, "a", count, now), "merge on")
        )
        sandbox = PinterestSandbox(token=TOKEN, ad_account_ids=(ACCOUNT,))
        timed = TimedTransport(sandbox.transport())
        drained = drain_timed(in_process, "https://api.pinterest.com/v5", timed, count)
        assert len(sandbox.received) == count
        rows.append(Row("deliver, in-process sandbox transport", count, drained.seconds, "batches of 1,000"))
        rows.append(own_cost(count, drained, timed))
        in_process.close()

        over_http = open_outbox(directory, "http")
        fill(over_http, "b", count, now)
        with http_sandbox() as (api_base, note):
            timed = TimedTransport(httpx.HTTPTransport())
            drained = drain_timed(over_http, api_base, timed, count)
        rows.append(
            Row(
                "deliver, HTTP sandbox (uvicorn, 127.0.0.1)",
                count,
                drained.seconds,
                f"batches of 1,000; {note}",
            )
        )
        rows.append(own_cost(count, drained, timed))
        over_http.close()
    print()
    print_table(rows)
    print(f"\ntotal wall time {time.perf_counter() - total:.1f} s")


if __name__ == "__main__":
    main()
