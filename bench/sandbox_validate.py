"""What the Pinterest sandbox costs per 1,000-event body: `.venv/bin/python -m bench.sandbox_validate`.

Builds events the way the library does (`parse_event`, then `pinterest.build_body`, the body
`PinterestAdapter.send` posts) and times, in CPU seconds of this process (`time.process_time`, so
other load on the machine matters less), the minimum and the mean over ``--repeats`` runs of:

- ``json parse``: ``json.loads`` of the request bytes (what the sandbox does first);
- ``schema validation``: ``sandbox.schema.validate_request_body`` on the parsed body, and on the
  same body with one event's ``event_time`` a float (the error path: a 400 naming that event);
- ``per-event checks``: ``sandbox.checks.check_event`` for every event;
- ``sandbox dispatch``: ``PinterestSandbox.dispatch`` of the whole request (parse, validate, checks,
  dedup, records, the per-event answer): the sandbox's side of one delivery;
- ``round trip``: ``PinterestAdapter.send`` through ``sandbox.transport()``: the library's side
  (body building, JSON, httpx, reading the answer) plus the sandbox's.

Every dispatched body carries fresh event ids, so dedup remembers them as it would in a delivery run.

``--sustained N`` instead sends N consecutive bodies to one sandbox with the default ``max_records``
(100,000: 120 bodies of 1,000 fill it and then evict), as a long delivery run does, and reports the
CPU time per request (min, median, mean: the gap between median and mean is the cyclic garbage
collector's full passes over the records), the CPU time spent inside the collector, and the RSS of
this process before and after. ``--no-gc`` disables the cyclic garbage collector for the run: what
is left is the code's own cost.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from bench.pipeline import template
from tracklayer_mw.events import Event
from tracklayer_mw.pinterest import PinterestAdapter, build_body
from tracklayer_mw.sandbox import PinterestSandbox
from tracklayer_mw.sandbox.checks import check_event
from tracklayer_mw.sandbox.schema import validate_request_body

TOKEN = "sandbox-token"
ACCOUNT = "549755885175"
PATH = f"/v5/ad_accounts/{ACCOUNT}/events"
HEADERS = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}


def batches(count: int, now: float) -> Iterator[list[Event]]:
    """Endless batches of ``count`` events, each batch with event ids no other batch uses."""
    base = template(now)
    number = 0
    while True:
        yield [base.with_context(event_id=f"b{number}-{i}") for i in range(count)]
        number += 1


def encode(body: dict[str, Any]) -> bytes:
    """The bytes `PinterestAdapter.send` posts."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def cpu_ms(run: Callable[[], object], prepare: Callable[[], None], repeats: int) -> tuple[float, float]:
    """``run``'s least and mean CPU time over ``repeats`` runs, in ms; ``prepare`` runs untimed before each.

    The minimum is the cost of the code; the mean adds what comes and goes, above all the cyclic
    garbage collector's full passes over everything the sandbox keeps (its records).
    """
    spent = []
    for _ in range(repeats):
        prepare()
        started = time.process_time()
        run()
        spent.append(time.process_time() - started)
    return min(spent) * 1000, sum(spent) / len(spent) * 1000


def rss_mib() -> float:
    """This process's resident set size now, in MiB (Linux: /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class CollectorClock:
    """CPU time spent inside the cyclic garbage collector, and its passes per generation."""

    def __init__(self) -> None:
        self.spent = 0.0
        self.passes = [0, 0, 0]
        self._started = 0.0

    def __enter__(self) -> CollectorClock:
        gc.callbacks.append(self._observe)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._observe)

    def _observe(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.spent += time.process_time() - self._started
            self.passes[info["generation"]] += 1


def sustained(count: int, requests: int) -> None:
    """``requests`` consecutive bodies of ``count`` events to one default-sized sandbox."""
    now = time.time()
    source = batches(count, now)
    bodies = [encode(build_body(next(source))) for _ in range(requests)]
    gc.collect()
    sandbox = PinterestSandbox(token=TOKEN, ad_account_ids=(ACCOUNT,))
    rss_before = rss_mib()
    spent = []
    with CollectorClock() as collector:
        for raw in bodies:
            started = time.process_time()
            outcome = sandbox.dispatch("POST", PATH, "", HEADERS, raw)
            spent.append(time.process_time() - started)
            assert outcome.reply.status == 200, outcome.reply.body[:300]
    rss_after = rss_mib()
    kept = len(sandbox.received)
    ms = [value * 1000 for value in spent]
    print(
        f"sustained: {requests} requests of {count} events to one sandbox ({kept:,} records kept); "
        f"CPU ms per request"
    )
    print(f"  {'min':>9}{'median':>9}{'mean':>9}{'max':>9}")
    print(f"  {min(ms):9.2f}{statistics.median(ms):9.2f}{statistics.fmean(ms):9.2f}{max(ms):9.2f}")
    passes = "/".join(map(str, collector.passes))
    print(f"  garbage collector: {collector.spent * 1000:.0f} ms CPU, passes per generation 0/1/2: {passes}")
    print(f"  RSS {rss_before:.0f} MiB before, {rss_after:.0f} MiB after (+{rss_after - rss_before:.0f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000, help="events per body (default 1000)")
    parser.add_argument("--repeats", type=int, default=30, help="runs per figure; the minimum counts")
    parser.add_argument(
        "--sustained", type=int, metavar="N", help="instead: N consecutive requests to one sandbox (try 120)"
    )
    parser.add_argument("--no-gc", action="store_true", help="disable the cyclic garbage collector")
    args = parser.parse_args()
    count, repeats = args.events, args.repeats
    if args.no_gc:
        gc.disable()
    if args.sustained:
        sustained(count, args.sustained)
        return

    now = time.time()
    source = batches(count, now)
    sandbox = PinterestSandbox(token=TOKEN, ad_account_ids=(ACCOUNT,))
    adapter = PinterestAdapter(ad_account_id=ACCOUNT, access_token=TOKEN, api_base="https://sandbox.test/v5")
    client = httpx.Client(transport=sandbox.transport())

    raw = encode(build_body(next(source)))
    parsed = json.loads(raw)
    assert not validate_request_body(parsed), "the benchmark body must be valid"  # also warms up
    one_bad = json.loads(raw)
    one_bad["data"][count // 2]["event_time"] = float(now)
    assert len(validate_request_body(one_bad)) == 1
    state: dict[str, Any] = {}

    def next_raw() -> None:
        state["raw"] = encode(build_body(next(source)))

    def next_events() -> None:
        state["events"] = next(source)

    def dispatch() -> None:
        outcome = sandbox.dispatch("POST", PATH, "", HEADERS, state["raw"])
        assert outcome.reply.status == 200, outcome.reply.body[:300]

    def send() -> None:
        outcome = adapter.send(client, state["events"])
        assert outcome.status == 200, outcome

    def nothing() -> None:
        pass

    figures = [
        ("json parse", cpu_ms(lambda: json.loads(raw), nothing, repeats)),
        ("schema validation", cpu_ms(lambda: validate_request_body(parsed), nothing, repeats)),
        ("schema validation, 1 bad event", cpu_ms(lambda: validate_request_body(one_bad), nothing, repeats)),
        ("per-event checks", cpu_ms(lambda: [check_event(e, now) for e in parsed["data"]], nothing, repeats)),
        ("sandbox dispatch", cpu_ms(dispatch, next_raw, repeats)),
        ("round trip (library + sandbox)", cpu_ms(send, next_events, repeats)),
    ]
    client.close()
    print(f"{count} events per body, {len(raw):,} bytes; CPU ms per body over {repeats} runs")
    print(f"  {'':<32}{'min':>9}{'mean':>9}")
    for what, (least, mean) in figures:
        print(f"  {what:<32}{least:9.2f}{mean:9.2f}")


if __name__ == "__main__":
    main()
