"""Delivery, one destination: `taskset -c 0 python -m bench.delivery --api-base URL --events N` -> JSON.

The measuring is `bench.pipeline`'s (the outbox/delivery micro-benchmark): its realistic events,
`fill()` (puts of 1,000, not timed), `drain()` (`Deliverer.run_once()` in batches of 1,000 until
the outbox is empty, checked to end with no dead letter) and its `TimedTransport` (the time spent
inside HTTP exchanges, i.e. the destination's share). This wrapper only runs one drain against a
given server, in its own process on the server core, and answers in JSON for the suite's table.
With `--puts`, it also reports `bench.pipeline`'s one-event-per-put() outbox throughput.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import pipeline


def measure(api_base: str, events: int, workdir: Path, *, puts: bool = False) -> dict[str, Any]:
    now = time.time()
    result: dict[str, Any] = {}
    if puts:
        row = pipeline.bench_single_puts(workdir, now)
        result["single_put"] = {"events": row.events, "seconds": row.seconds, "events_per_s": row.rate}
    outbox = pipeline.open_outbox(workdir, "delivery")
    put_seconds = pipeline.fill(outbox, "bench", events, now)
    timed = pipeline.TimedTransport(httpx.HTTPTransport())
    cpu = time.process_time()
    seconds = pipeline.drain(outbox, api_base, timed, events)  # raises unless all delivered, none dead
    cpu = time.process_time() - cpu
    outbox.close()
    local = seconds - timed.seconds
    cycles = -(-events // pipeline.MAX_BATCH)
    return {
        **result,
        "events": events,
        "batch": pipeline.MAX_BATCH,
        "cycles": cycles,
        "seconds": seconds,
        "events_per_s": events / seconds if seconds else 0.0,
        "http_seconds": timed.seconds,
        "local_seconds": local,
        "local_us_per_event": local / events * 1e6 if events else 0.0,
        "local_events_per_s": events / local if local > 0 else 0.0,
        "cpu_seconds": cpu,
        "put_1000_events_per_s": events / put_seconds if put_seconds else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--puts", action="store_true", help="also measure one event per put()")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tl-delivery-") as workdir:
        print(json.dumps(measure(args.api_base, args.events, Path(workdir), puts=args.puts)))


if __name__ == "__main__":
    main()
