"""Section 4: delivery from the outbox to Pinterest, batches of 1,000.

Three destinations: the validating sandbox answering at once (the goal's figure), the same sandbox
at a realistic 150 ms, and a stub that checks nothing (the library's side of the pipeline alone).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from bench.common import REALISTIC_LATENCY, Context, start_sandbox, steady
from bench.report import Goal, SectionResult, Table, fmt_rps
from bench.servers import SERVER_CORE

GOAL_EVENTS_PER_S = 20_000


def _measure(api_base: str, events: int, *, puts: bool) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.delivery", "--api-base", api_base, "--events", str(events)]
    done = subprocess.run(
        ["taskset", "-c", SERVER_CORE, *argv, *(["--puts"] if puts else [])],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.delivery failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(ctx: Context) -> SectionResult:
    started = time.monotonic()
    table = Table(
        "4. Delivery: outbox -> Pinterest, batches of 1,000 (Deliverer.run_once until empty)",
        [
            "destination",
            "events",
            "events/s",
            "ms per batch",
            "of which HTTP",
            "library CPU µs/event",
            "library alone, events/CPU-s",
        ],
    )
    raw: dict[str, Any] = {}
    goals: list[Goal] = []
    destinations = (
        (
            "sandbox",
            "sandbox (validates every event), answers at once",
            0.0,
            False,
            int(ctx.pick(50_000, 3_000)),
        ),
        (
            "sandbox_150ms",
            f"sandbox, answers in {REALISTIC_LATENCY * 1000:.0f} ms",
            REALISTIC_LATENCY,
            False,
            int(ctx.pick(20_000, 2_000)),
        ),
        ("stub", "stub (checks nothing), answers at once", 0.0, True, int(ctx.pick(50_000, 3_000))),
    )
    for key, label, latency, stub, events in destinations:
        sandbox = start_sandbox(ctx, f"delivery-{key}", latency=latency, stub=stub, nice=False)
        try:
            puts = key == "sandbox" and not ctx.quick
            result = steady(ctx, lambda url=f"{sandbox.url}/v5", n=events, p=puts: _measure(url, n, puts=p))
            result["sandbox_cpu_seconds"] = sandbox.cpu_seconds()
        finally:
            sandbox.stop()
        raw[key] = result
        cycles = max(1, result["cycles"])
        # CPU, not wall minus HTTP: the worker claims and builds the next batch while one is in flight.
        cpu_us = result["cpu_seconds"] / result["events"] * 1e6
        table.rows.append(
            [
                label,
                f"{result['events']:,}",
                fmt_rps(result["events_per_s"]),
                f"{result['seconds'] / cycles * 1000:.0f}",
                f"{result['http_seconds'] / cycles * 1000:.0f}",
                f"{cpu_us:.0f}",
                fmt_rps(1e6 / cpu_us if cpu_us else 0.0),
            ]
        )
    goals.append(
        Goal(
            "delivery to the sandbox",
            f"> {GOAL_EVENTS_PER_S:,} events/s",
            f"{raw['sandbox']['events_per_s']:,.0f} events/s",
            raw["sandbox"]["events_per_s"] > GOAL_EVENTS_PER_S,
        )
    )
    goals.append(
        Goal(
            "delivery, library side only (stub Pinterest)",
            f"> {GOAL_EVENTS_PER_S:,} events/s",
            f"{raw['stub']['events_per_s']:,.0f} events/s",
            raw["stub"]["events_per_s"] > GOAL_EVENTS_PER_S,
        )
    )
    single = raw["sandbox"].get("single_put")
    table.notes += [
        "Measured with `bench.pipeline` (fill, drain, TimedTransport) in its own process on core 0; the "
        "destination is a uvicorn server on core 1. The outbox is filled first (not timed) with Purchase "
        "events carrying hashed email, IP, user agent, click id and contents; every run ends with an empty "
        "outbox and no "
        "dead letter.",
        "'of which HTTP' = time inside the HTTP exchange (the destination's own work + loopback), which "
        "under a backlog overlaps the claiming and building of the next batch; 'library CPU µs/event' = "
        "the delivering process's CPU time (all its threads) / events: claim, build and encode the body, "
        "send, settle, delivery log.",
    ]
    if single:
        table.notes.append(
            f"Outbox put(), one event per transaction (what one track() call does): "
            f"{single['events_per_s']:,.0f} events/s; 1,000 per put(): "
            f"{raw['sandbox']['put_1000_events_per_s']:,.0f} "
            "events/s."
        )
    return SectionResult("delivery", [table], goals, raw, time.monotonic() - started)
