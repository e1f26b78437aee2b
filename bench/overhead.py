"""Sections 1 and 2: request overhead (bare vs TrackLayer) and the naive synchronous integration.

All variants of a framework run at once on the server core; wrk runs on the client core. Runs are
interleaved (bare, TrackLayer, bare, TrackLayer, ...) and the median of the repetitions is
reported, so drift hits both alike; ratios are only ever taken within one run. A third variant
shows the floor: for JSON a do-nothing middleware that only wraps `send`/`start_response`, for HTML
a minimal one that injects the same tag and does nothing else (`bench.apps.MinimalInjection`).
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from bench import wrk
from bench.apps import EPIK
from bench.common import REALISTIC_LATENCY, Context, start_app, start_sandbox, steady
from bench.payloads import page_headers
from bench.report import Goal, SectionResult, Table, fmt_ms, fmt_ratio, fmt_rps
from bench.servers import GUNICORN_THREADS, Server


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    path: str
    goal: float | None = None
    floor: str | None = None  # the floor variant measured beside TrackLayer (a key of FLOORS)


FLOORS = {
    "passthrough": "do-nothing middleware (floor)",
    "injecting": "minimal tag injection, nothing else (floor)",
}


SCENARIOS = (
    Scenario("json", "JSON", "/json", 0.95, floor="passthrough"),
    Scenario("html", "HTML 10 KB (snippet injected)", "/page", 0.85, floor="injecting"),
    Scenario("landing", "landing ?epik= (cookies set)", f"/landing?epik={EPIK}"),
)
EVENT = Scenario("event", "page + one server-side event", "/event")


@dataclass(frozen=True)
class Framework:
    key: str
    label: str
    prefix: str  # bench.apps:{prefix}_bare, _wrapped, _passthrough
    server: str  # uvicorn or gunicorn


FRAMEWORKS = (
    Framework("starlette", "Starlette / uvicorn", "starlette", "uvicorn"),
    Framework("flask", "Flask / gunicorn gthread", "flask", "gunicorn"),
)


def _check(servers: dict[str, Server]) -> None:
    """Only the wrapped app sets cookies; it and the injection floor inject, the others do not (else the
    comparison is void)."""
    problems = []
    for name, server in servers.items():
        with urllib.request.urlopen(f"{server.url}/page") as answer:
            injected = b"data-tl" in answer.read()
        with urllib.request.urlopen(f"{server.url}/landing?epik={EPIK}") as answer:
            cookies = any(value.startswith("_epik=") for value in answer.headers.get_all("set-cookie") or [])
        if (name in ("wrapped", "injecting")) != injected or (name == "wrapped") != cookies:
            problems.append(f"{server.name}: injected={injected}, _epik set={cookies}")
    if problems:
        raise RuntimeError("; ".join(problems))


def _interleaved(
    ctx: Context, servers: dict[str, Server], path: str, *, timeout: str | None = None, reps: int = 5
) -> dict[str, wrk.WrkResult]:
    """Warm every variant, then run them in turn `reps` times; per-variant medians."""
    seconds = ctx.pick(3, 1)
    reps = reps if not ctx.quick else 1
    headers = page_headers()
    extra = ["--timeout", timeout] if timeout else []
    if not ctx.quick:  # warm every variant (imports, first connections, caches) before measuring
        for server in servers.values():
            wrk.run(server.url + path, 1, headers=headers, extra=extra)
    runs: dict[str, list[wrk.WrkResult]] = {name: [] for name in servers}

    def one_round() -> dict[str, wrk.WrkResult]:
        return {
            name: wrk.run(server.url + path, seconds, headers=headers, extra=extra)
            for name, server in servers.items()
        }

    for _ in range(reps):
        for name, result in steady(ctx, one_round).items():
            runs[name].append(result)
    return {name: wrk.median(results) for name, results in runs.items()}


def _row(label: str, what: str, bare: wrk.WrkResult, other: wrk.WrkResult) -> list[str]:
    return [
        label,
        what,
        fmt_rps(bare.rps),
        fmt_rps(other.rps),
        fmt_ratio(other.rps / bare.rps if bare.rps else 0.0),
        fmt_ms(bare.p50_ms),
        fmt_ms(other.p50_ms),
        fmt_ms(bare.p99_ms),
        fmt_ms(other.p99_ms),
    ]


def run(ctx: Context, *, overhead: bool = True, naive: bool = True) -> list[SectionResult]:
    started = time.monotonic()
    raw: dict[str, Any] = {}
    naive_raw: dict[str, Any] = {}
    goals: list[Goal] = []
    over = Table(
        f"1. Request overhead (wrk -t1 -c50; median of {int(ctx.pick(5, 1))} interleaved runs of "
        f"{ctx.pick(3, 1):.0f} s per variant)",
        [
            "framework",
            "response",
            "bare req/s",
            "with req/s",
            "ratio",
            "bare p50",
            "with p50",
            "bare p99",
            "with p99",
        ],
    )
    naive_table = Table(
        f"2. A server-side event per page view: naive synchronous Conversions API call vs TrackLayer "
        f"(sandbox answers in {REALISTIC_LATENCY * 1000:.0f} ms)",
        ["framework", "integration", "req/s", "p50", "p99", "errors"],
    )
    errors: list[str] = []
    sandbox = start_sandbox(ctx, "sandbox-overhead", latency=REALISTIC_LATENCY)
    try:
        for framework in FRAMEWORKS:
            servers: dict[str, Server] = {}
            try:
                for variant in ("bare", "wrapped", *FLOORS):
                    factory = f"{framework.prefix}_{variant}"
                    servers[variant] = start_app(ctx, factory, sandbox, server=framework.server)
                _check(servers)
                for scenario in SCENARIOS if overhead else ():
                    names = ("bare", "wrapped", *((scenario.floor,) if scenario.floor else ()))
                    result = _interleaved(ctx, {name: servers[name] for name in names}, scenario.path)
                    bare, wrapped = result["bare"], result["wrapped"]
                    ratio = wrapped.rps / bare.rps if bare.rps else 0.0
                    raw[f"{framework.key}.{scenario.key}"] = {
                        **{name: r.to_json() for name, r in result.items()},
                        "ratio": ratio,
                    }
                    over.rows.append(_row(framework.label, f"{scenario.label}: TrackLayer", bare, wrapped))
                    if scenario.floor:
                        floor = result[scenario.floor]
                        raw[f"{framework.key}.{scenario.key}"]["floor_ratio"] = floor.rps / bare.rps
                        what = f"{scenario.label}: {FLOORS[scenario.floor]}"
                        over.rows.append(_row(framework.label, what, bare, floor))
                    errors += [
                        f"{framework.label} {scenario.label} {name}: {r.errors} errors"
                        for name, r in result.items()
                        if r.errors
                    ]
                    if scenario.goal is not None:
                        goals.append(
                            Goal(
                                f"{framework.label}: {scenario.label}, TrackLayer / bare",
                                f">= {scenario.goal:.2f}",
                                fmt_ratio(ratio),
                                ratio >= scenario.goal,
                            )
                        )
                if naive:
                    pair = {"bare": servers["bare"], "wrapped": servers["wrapped"]}
                    result = _interleaved(ctx, pair, EVENT.path, timeout="20s", reps=3)
                    naive_raw[framework.key] = {name: r.to_json() for name, r in result.items()}
                    for name, text in (
                        ("bare", "naive: POST to the Conversions API inside the request"),
                        ("wrapped", "TrackLayer: track() queues, the worker delivers"),
                    ):
                        r = result[name]
                        naive_table.rows.append(
                            [
                                framework.label,
                                text,
                                fmt_rps(r.rps),
                                fmt_ms(r.p50_ms),
                                fmt_ms(r.p99_ms),
                                str(r.errors),
                            ]
                        )
            finally:
                for server in servers.values():
                    server.stop()
    finally:
        sandbox.stop()
    over.notes += [
        "Server: one process pinned to core 0 (uvicorn --loop uvloop --http httptools; gunicorn: one gthread "
        f"worker, {GUNICORN_THREADS} threads); wrk on core 1. Requests carry a browser's User-Agent, Accept "
        "and "
        "Accept-Language and no cookie (a first visit): every landing response sets `_epik` and `_tl`.",
        "TrackLayer: real Settings, SQLite outbox, its worker delivering to the sandbox. "
        "ratio = with req/s / bare req/s.",
        *errors,
    ]
    naive_table.notes += [
        "The same page and the same event (ViewContent) in both rows. The naive Starlette page awaits "
        "httpx.AsyncClient; the naive Flask page calls httpx.Client (holding one of the "
        f"{GUNICORN_THREADS} gthread threads for the whole call). TrackLayer's page calls track(): hashing "
        "and one SQLite commit, no network.",
    ]
    results = []
    if overhead:
        results.append(SectionResult("overhead", [over], goals, raw, time.monotonic() - started))
    if naive:
        results.append(SectionResult("naive", [naive_table], [], naive_raw, 0.0))
    return results
