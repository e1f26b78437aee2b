"""Sustained ingest with wrk against ``uvicorn --workers 2`` sharing one outbox; then count every id.

``python -m stress.load [--quick] [--seconds 180] [--workers 2] [--connections 32] [--batch 1]``

wrk (``apt-get install wrk``) posts ingest bodies as fast as the server answers, each event with a
fresh id (``L<thread>-<n>-<k>``); its Lua script writes the body of every 202 to a file, so the set of
accepted ids is exact. Meanwhile the RSS of each server worker and the outbox backlog are sampled
every 5 s. When wrk stops, the outbox must drain; then every accepted id must be at the sandbox
exactly once (no crash happened, so a duplicate would be a double claim between the two processes)
and nothing else may be there. Figures: requests/s, events/s, ingest p50/p99 (wrk's own
percentiles), RSS per worker (after warm-up vs the end), backlog, drain time, the id counts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from stress.common import (
    SITE_HOST,
    Ledger,
    SandboxView,
    app_env,
    app_server,
    every,
    free_port,
    log,
    outbox_counts,
    reconcile,
    rss_kb,
    running,
    sandbox_server,
    write_results,
)

LUA = r"""
local batch = __BATCH__
local outdir = "__OUTDIR__"
local counter = 0
local threads = {}
local out = nil
local sent = nil

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  out = io.open(outdir .. "/accepted-" .. tid .. ".jsonl", "w")
  sent = io.open(outdir .. "/sent-" .. tid .. ".txt", "w")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Host"] = "__HOST__"
  wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) stress/1.0"
end

function request()
  counter = counter + 1
  local events = {}
  for k = 1, batch do
    local id = "L" .. tid .. "-" .. counter .. "-" .. k
    sent:write(id, "\n")
    events[k] = '{"event":"AddToCart","event_id":"' .. id ..
      '","url":"https://__HOST__/p/sku-1","custom":{"value":12.5,"currency":"USD","content_ids":["sku-1"]}}'
  end
  sent:flush()
  return wrk.format(nil, nil, nil, '{"events":[' .. table.concat(events, ",") .. ']}')
end

function response(status, headers, body)
  if status == 202 then
    out:write(body, "\n")
    out:flush()
  end
end

function done(summary, latency, requests)
  local result = {
    requests = summary.requests, duration_us = summary.duration, bytes = summary.bytes,
    errors_connect = summary.errors.connect, errors_read = summary.errors.read,
    errors_write = summary.errors.write, errors_status = summary.errors.status,
    errors_timeout = summary.errors.timeout,
    p50_us = latency:percentile(50), p90_us = latency:percentile(90),
    p99_us = latency:percentile(99), p999_us = latency:percentile(99.9), max_us = latency.max,
    mean_us = latency.mean,
  }
  local parts = {}
  for key, value in pairs(result) do parts[#parts + 1] = '"' .. key .. '":' .. tostring(value) end
  io.write("WRK_JSON {" .. table.concat(parts, ",") .. "}\n")
end
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="30 s of load")
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1, help="events per ingest request")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    seconds = 30 if args.quick else args.seconds
    wrk = shutil.which("wrk")
    if wrk is None:
        print("load: wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="tl-load-") as tmp:
        workdir = Path(tmp)
        sandbox_port, app_port = free_port(), free_port()
        outbox = workdir / "outbox.sqlite3"
        env = app_env(sandbox_port, outbox, TRACKLAYER_INGEST_RATE_PER_MINUTE="100000000")
        sandbox = sandbox_server(sandbox_port, workdir)
        app = app_server(app_port, env, workdir, workers=args.workers)
        script = workdir / "ingest.lua"
        script.write_text(
            LUA.replace("__BATCH__", str(args.batch))
            .replace("__OUTDIR__", str(workdir))
            .replace("__HOST__", SITE_HOST)
        )
        with running(sandbox, app):
            sandbox.start()
            app.start()
            time.sleep(1.0)  # every worker up
            pids = app.worker_pids()
            view = SandboxView(sandbox_port)
            log(
                f"load: {seconds} s of wrk -c{args.connections}, {args.batch} event(s)/request, "
                f"workers {pids}"
            )
            samples: list[dict[str, Any]] = []
            stop = threading.Event()
            began = time.monotonic()

            def sample() -> None:
                try:
                    view.poll()
                except httpx.HTTPError as exc:  # a slow sandbox must not end the run
                    log(f"sandbox read-out failed ({type(exc).__name__}); next time")
                row = {
                    "t": round(time.monotonic() - began, 1),
                    "rss_kb": {str(pid): rss_kb(pid) for pid in pids},
                    "outbox_alive": outbox_counts(outbox)["alive"],
                    "delivered": sum(view.received.values()),
                }
                samples.append(row)
                log(
                    f"t={row['t']:6}s rss {row['rss_kb']} kB  backlog {row['outbox_alive']}  "
                    f"delivered {row['delivered']}"
                )

            sample()
            sampler = every(5.0, stop, sample)
            command = [wrk, "-t1", f"-c{args.connections}", f"-d{seconds}s", "--timeout", "10s"]
            command += ["-s", str(script), f"http://127.0.0.1:{app_port}/_tl/ingest"]
            finished = subprocess.run(command, capture_output=True, text=True, check=False)
            load_seconds = time.monotonic() - began
            log("wrk finished; waiting for the outbox to drain")
            drain_began = time.monotonic()
            while outbox_counts(outbox)["alive"] and time.monotonic() - drain_began < args.drain_timeout:
                time.sleep(1.0)
            drain_seconds = time.monotonic() - drain_began
            time.sleep(2.0)
            stop.set()
            sampler.join(15)
            sample()
            ledger = Ledger()
            for path in workdir.glob("accepted-*.jsonl"):
                for line in path.read_text().splitlines():
                    ledger.accepted.update(json.loads(line)["event_ids"])
            # Requests wrk sent but whose answer it never read (in flight when its time was up): in doubt.
            for path in workdir.glob("sent-*.txt"):
                ledger.ambiguous.update(set(path.read_text().split()) - ledger.accepted)
            figures = reconcile(ledger, view)
            left = outbox_counts(outbox)
            exit_code = app.stop()
            view.close()

    wrk_line = next((line for line in finished.stdout.splitlines() if line.startswith("WRK_JSON ")), None)
    if wrk_line is None:
        print(finished.stdout, finished.stderr, file=sys.stderr)
        return 2
    stats = json.loads(wrk_line.removeprefix("WRK_JSON "))
    requests_per_s = stats["requests"] / (stats["duration_us"] / 1e6)
    warm = next((row for row in samples if row["t"] >= min(30.0, seconds / 3)), samples[0])
    during = [row for row in samples if row["t"] <= load_seconds]
    end = during[-1]
    rss = {
        pid: {
            "after_warmup_kb": warm["rss_kb"][pid],
            "end_of_load_kb": end["rss_kb"][pid],
            "max_kb": max(row["rss_kb"][pid] for row in during),
            "growth_kb": end["rss_kb"][pid] - warm["rss_kb"][pid],
        }
        for pid in warm["rss_kb"]
    }
    ok = (
        figures["missing"] == 0
        and figures["unexpected"] == 0
        and figures["duplicates"] == 0
        and left == {"alive": 0, "dead": 0}
        and all(row["growth_kb"] < 20_000 for row in rss.values())
    )
    result = {
        "ok": ok,
        "seconds": seconds,
        "workers": args.workers,
        "connections": args.connections,
        "events_per_request": args.batch,
        "wrk": stats,
        "requests_per_s": round(requests_per_s, 1),
        "events_per_s": round(requests_per_s * args.batch, 1),
        "ingest_p50_ms": round(stats["p50_us"] / 1000, 2),
        "ingest_p99_ms": round(stats["p99_us"] / 1000, 2),
        "rss": rss,
        "max_backlog": max(row["outbox_alive"] for row in samples),
        "drain_s": round(drain_seconds, 1),
        "outbox_left": left,
        "server_exit_code": exit_code,
        "samples": samples,
        **figures,
    }
    path = write_results("load", result)
    print()
    print(
        f"load: {'OK' if ok else 'FAILED'}  "
        f"({seconds} s, uvicorn --workers {args.workers}, wrk -c{args.connections})"
    )
    print(
        f"  {stats['requests']} requests, {requests_per_s:.0f} req/s, "
        f"{requests_per_s * args.batch:.0f} events/s; "
        f"ingest p50 {result['ingest_p50_ms']} ms, p99 {result['ingest_p99_ms']} ms, "
        f"max {stats['max_us'] / 1000:.0f} ms; "
        f"errors: status {stats['errors_status']}, timeout {stats['errors_timeout']}, "
        f"read {stats['errors_read']}"
    )
    for pid, row in rss.items():
        print(
            f"  worker {pid}: RSS {row['after_warmup_kb'] / 1024:.1f} MiB after warm-up, "
            f"{row['end_of_load_kb'] / 1024:.1f} MiB at the end (max {row['max_kb'] / 1024:.1f})"
        )
    print(
        f"  backlog max {result['max_backlog']}, drained {result['drain_s']} s after the load; "
        f"outbox left {left}"
    )
    print(
        f"  accepted {figures['accepted']}, delivered {figures['delivered']}, missing {figures['missing']}, "
        f"unexpected {figures['unexpected']}, duplicates {figures['duplicates']}; "
        f"in doubt (answer not read when wrk stopped) {figures['in_doubt_sent']}, "
        f"delivered {figures['in_doubt_delivered']}"
    )
    print(f"  results: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
