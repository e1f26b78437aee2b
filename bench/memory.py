"""Section 6: RSS of a server before and after 100,000 ingested events, the outbox drained at the end.

The wrapped Starlette app under uvicorn (one process, core 0), its worker delivering to the sandbox
(150 ms answers). "Before" is taken after a warm-up (imports, thread pool, SQLite caches), so the
comparison shows growth per event, not start-up.
"""

from __future__ import annotations

import time
import urllib.request
from typing import Any

from bench.common import (
    REALISTIC_LATENCY,
    Context,
    Monitor,
    loadgen,
    outbox_backlog,
    outbox_path,
    start_app,
    start_sandbox,
    wait_drained,
)
from bench.report import Goal, SectionResult, Table
from bench.servers import Server

BATCH = 20
FLAT_MIB = 10.0  # the goal's "flat": less than this growth from warm to drained


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def _send(app: Server, events: int) -> dict[str, Any]:
    args = [
        "closed",
        "--port",
        str(app.port),
        "--batch",
        str(BATCH),
        "--events",
        str(events),
        "--concurrency",
        "8",
    ]
    return loadgen(args, timeout=900)


def run(ctx: Context) -> SectionResult:
    started = time.monotonic()
    events = int(ctx.pick(100_000, 10_000))
    warmup = int(ctx.pick(5_000, 1_000))
    raw: dict[str, Any] = {"events": events, "warmup_events": warmup}
    sandbox = start_sandbox(ctx, "sandbox-memory", latency=REALISTIC_LATENCY)
    app = start_app(ctx, "starlette_wrapped", sandbox)
    try:
        urllib.request.urlopen(f"{app.url}/page").read()
        raw["start"] = app.rss_kib()
        raw["warmup_send"] = _send(app, warmup)
        raw["warmup_drained"] = wait_drained(outbox_path(app), 120)
        time.sleep(0.5)
        raw["before"] = app.rss_kib()
        with Monitor() as monitor:
            raw["send"] = _send(app, events)
        ctx.noise.append(monitor.foreign_share)
        raw["after_ingest"] = app.rss_kib()
        raw["after_ingest_backlog"] = outbox_backlog(outbox_path(app))
        drained, waited = wait_drained(outbox_path(app), 300)
        raw["drained"], raw["drain_seconds"] = drained, waited
        time.sleep(0.5)
        raw["after_drain"] = app.rss_kib()
        raw["final_backlog"] = outbox_backlog(outbox_path(app))
        raw["server_cpu_seconds"] = app.cpu_seconds()
    finally:
        app.stop()
        sandbox.stop()
    before, after, drained_rss = (
        raw["before"]["VmRSS"],
        raw["after_ingest"]["VmRSS"],
        raw["after_drain"]["VmRSS"],
    )
    growth_mib = (drained_rss - before) / 1024
    table = Table(
        f"6. Memory: server RSS around {events:,} ingested events ({BATCH} per request, 8 connections)",
        ["moment", "VmRSS", "note"],
    )
    table.rows = [
        ["after start + 1 page", _mib(raw["start"]["VmRSS"]), ""],
        [f"before (after a warm-up of {warmup:,} events, drained)", _mib(before), ""],
        [
            f"after {events:,} events ingested",
            _mib(after),
            f"{raw['send']['events_per_s']:,.0f} events/s; "
            f"{raw['after_ingest_backlog']['waiting']:,} still in the outbox",
        ],
        [
            "after the outbox drained",
            _mib(drained_rss),
            f"drained in {raw['drain_seconds']:.1f} s; peak (VmHWM) {_mib(raw['after_drain']['VmHWM'])}; "
            f"{raw['final_backlog']['dead']} dead letters",
        ],
    ]
    table.notes.append(
        f"Growth from before to drained: {growth_mib:+.1f} MiB "
        f"({(drained_rss - before) / events * 1024:+.1f} bytes per event)."
    )
    goal = Goal(
        f"memory flat over {events:,} events",
        f"< {FLAT_MIB:.0f} MiB growth, drained",
        f"{growth_mib:+.1f} MiB{'' if drained else ' (NOT drained)'}",
        growth_mib < FLAT_MIB and drained and raw["send"]["errors"] == 0,
    )
    return SectionResult("memory", [table], [goal], raw, time.monotonic() - started)
