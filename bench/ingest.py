"""Section 3: ingest. Answer time at a fixed 1,000 events/s (open loop), and wrk's maximum throughput.

The server is the wrapped Starlette app under uvicorn on the server core, its worker delivering to
the sandbox (150 ms answers) throughout, as in production. Bodies are what the snippet sends:
`{"events": [...]}` as `text/plain`, with Origin, Referer and a browser User-Agent, a new event id
per event.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench import wrk
from bench.common import (
    REALISTIC_LATENCY,
    Context,
    loadgen,
    outbox_backlog,
    outbox_path,
    start_app,
    start_sandbox,
    steady,
)
from bench.payloads import INGEST_PATH, ingest_headers, ingest_template
from bench.report import Goal, SectionResult, Table, fmt_ms, fmt_rps

RATE = 1000  # events per second
P99_GOAL_MS = 10.0
BATCH = 20
TIMEOUT = ["--timeout", "10s"]  # wrk leaves answers slower than its timeout out of the percentiles


def run(ctx: Context) -> SectionResult:
    started = time.monotonic()
    raw: dict[str, Any] = {}
    fixed = Table(
        f"3a. Ingest answer time at a fixed {RATE:,} events/s (open loop, {ctx.pick(15, 2):.0f} s measured)",
        ["body", "requests/s", "events/s", "p50", "p90", "p99", "p99.9", "max", "errors"],
    )
    peak = Table(
        f"3b. Ingest maximum throughput (wrk -t1 -c50; median of {int(ctx.pick(3, 1))} runs of "
        f"{ctx.pick(5, 1):.0f} s)",
        ["body", "requests/s", "events/s", "p50", "p99", "errors"],
    )
    goals: list[Goal] = []
    sandbox = start_sandbox(ctx, "sandbox-ingest", latency=REALISTIC_LATENCY)
    app = start_app(ctx, "starlette_wrapped", sandbox)
    try:
        seconds = ctx.pick(15, 2)
        for batch, rate in ((1, RATE), (BATCH, RATE / BATCH)):
            args = ["open", "--port", str(app.port), "--batch", str(batch), "--rate", str(rate)]
            argv = [*args, "--seconds", str(seconds), "--warmup", "1"]
            result = steady(ctx, lambda argv=argv: loadgen(argv, timeout=seconds + 120))
            raw[f"open.batch{batch}"] = result
            label = "1 event (beacon)" if batch == 1 else f"{batch} events"
            fixed.rows.append(
                [
                    label,
                    f"{result['achieved_rate']:,.0f}",
                    f"{result['events_per_s']:,.0f}",
                    fmt_ms(result["p50_ms"]),
                    fmt_ms(result["p90_ms"]),
                    fmt_ms(result["p99_ms"]),
                    fmt_ms(result["p999_ms"]),
                    fmt_ms(result["max_ms"]),
                    str(result["errors"]),
                ]
            )
            if batch == 1:
                goals.append(
                    Goal(
                        f"ingest p99 at {RATE:,} events/s (1-event beacons)",
                        f"< {P99_GOAL_MS:.0f} ms",
                        fmt_ms(result["p99_ms"]),
                        result["p99_ms"] < P99_GOAL_MS and result["errors"] == 0,
                    )
                )
        raw["backlog_after_open_loop"] = outbox_backlog(outbox_path(app))

        authority = f"127.0.0.1:{app.port}"
        for batch in (1, BATCH):
            script = wrk.post_script(
                ctx.directory("lua"), ingest_template(batch, authority), ingest_headers(authority)
            )
            if not ctx.quick:
                wrk.run(app.url + INGEST_PATH, 1, script=script, extra=TIMEOUT)  # warm-up
            runs = [
                wrk.run(app.url + INGEST_PATH, ctx.pick(5, 1), script=script, extra=TIMEOUT)
                for _ in range(int(ctx.pick(3, 1)))
            ]
            result = wrk.median(runs)
            raw[f"wrk.batch{batch}"] = {"median": result.to_json(), "runs": [r.to_json() for r in runs]}
            label = "1 event (beacon)" if batch == 1 else f"{batch} events"
            peak.rows.append(
                [
                    label,
                    fmt_rps(result.rps),
                    fmt_rps(result.rps * batch),
                    fmt_ms(result.p50_ms),
                    fmt_ms(result.p99_ms),
                    str(result.errors),
                ]
            )
        raw["backlog_after_wrk"] = outbox_backlog(outbox_path(app))
    finally:
        app.stop()
        sandbox.stop()
    opened = [f"open.batch{batch}" for batch in (1, BATCH)]
    fixed.notes.append(
        "Answer time = request written -> whole 202 read, by a raw-socket asyncio client on core 1 that "
        "sends on schedule whatever the server does (a new keep-alive connection when all are busy). "
        "1 s of warm-up not counted."
    )
    fixed.notes.append(
        f"Connections the client needed: {', '.join(str(raw[key]['connections']) for key in opened)}; "
        f"client lateness p99: {statistics.fmean(raw[key]['client_late_p99_ms'] for key in opened):.1f} ms."
    )
    peak.notes.append(
        f"Outbox backlog after the wrk runs (the worker sends to a {REALISTIC_LATENCY * 1000:.0f} ms sandbox "
        "meanwhile): "
        f"{raw['backlog_after_wrk']['waiting']:,} events waiting, {raw['backlog_after_wrk']['dead']} dead."
    )
    return SectionResult("ingest", [fixed, peak], goals, raw, time.monotonic() - started)
