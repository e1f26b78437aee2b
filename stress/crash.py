"""kill -9 the app server at random moments during delivery, restart it, repeat; then count ids.

``python -m stress.crash [--quick] [--cycles 20] [--seed N]``

The sandbox answers every request after ``--latency`` seconds (0.2 s), so the delivery thread spends
most of its time with a request in flight, and two client threads keep sending ingest batches and
``POST /order`` (track()) across the kills. One SQLite outbox in a temp dir is shared by every
incarnation of the server. At the end (after the last restart, within ``--final-timeout``) every id
answered with 202 or returned by track() must be at the sandbox (missing = 0), and every id at the
sandbox must be one the client sent (unexpected = 0). Ids whose request died with the server are
"in doubt": they may or may not have been queued, so either outcome is right for them.
Duplicates are reported: at-least-once delivery re-sends what a killed process had claimed.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stress.common import (
    Ledger,
    SandboxView,
    Sender,
    app_env,
    app_server,
    free_port,
    latency_summary,
    log,
    outbox_counts,
    reconcile,
    running,
    sandbox_server,
    wait_delivered,
    write_results,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 cycles")
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--min-up", type=float, default=0.5, help="shortest life of a server, seconds")
    parser.add_argument("--max-up", type=float, default=4.0, help="longest life of a server, seconds")
    parser.add_argument("--latency", type=float, default=0.2, help="sandbox answer latency, seconds")
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn --workers (kill -9 takes them all)")
    parser.add_argument(
        "--final-timeout", type=float, default=120.0, help="seconds to wait for the last events"
    )
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    cycles = 5 if args.quick else args.cycles
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    rng = random.Random(seed)

    with tempfile.TemporaryDirectory(prefix="tl-crash-") as tmp:
        workdir = Path(tmp)
        sandbox_port, app_port = free_port(), free_port()
        outbox = workdir / "outbox.sqlite3"
        sandbox = sandbox_server(sandbox_port, workdir, latency=args.latency)
        # One client address sends everything here: lift the per-client ingest rate (default 600/min).
        env = app_env(sandbox_port, outbox, TRACKLAYER_INGEST_RATE_PER_MINUTE="1000000")
        app = app_server(app_port, env, workdir, workers=args.workers)
        with running(sandbox, app):
            sandbox.start()
            view = SandboxView(sandbox_port)
            ledger = Ledger()
            log(f"crash: {cycles} kill -9 cycles, {args.workers} worker(s), seed {seed}, outbox {outbox}")
            startups: list[float] = []
            lifetimes: list[float] = []
            started = time.monotonic()
            senders = [Sender(f"http://127.0.0.1:{app_port}", ledger, f"c{i}") for i in range(args.senders)]
            for sender in senders:
                sender.start()
            for cycle in range(cycles):
                startups.append(app.start())
                life = rng.uniform(args.min_up, args.max_up)
                lifetimes.append(life)
                time.sleep(life)
                before = reconcile(ledger, view)
                app.kill9()
                log(
                    f"cycle {cycle + 1:2}/{cycles}: killed after {life:.2f} s; "
                    f"accepted so far {before['accepted']}, "
                    f"at the sandbox {before['delivered']}"
                )
            startups.append(app.start())
            time.sleep(2.0)  # traffic into the last incarnation too
            for sender in senders:
                sender.stop()
            send_seconds = time.monotonic() - started
            log("senders stopped; waiting for every accepted event to reach the sandbox")
            drained_in = wait_delivered(ledger, view, args.final_timeout)
            # In-doubt events that made it into the outbox leave too: wait for an empty outbox.
            waited = time.monotonic()
            deadline = waited + args.final_timeout
            while outbox_counts(outbox)["alive"] and time.monotonic() < deadline:
                time.sleep(0.5)
            emptied_in = time.monotonic() - waited + (drained_in or 0.0)
            time.sleep(1.0)
            figures = reconcile(ledger, view)
            left = outbox_counts(outbox)
            app.stop()
            view.close()

    ok = (
        figures["missing"] == 0
        and figures["unexpected"] == 0
        and figures["failed_at_sandbox"] == 0
        and left == {"alive": 0, "dead": 0}
    )
    result: dict[str, Any] = {
        "ok": ok,
        "seed": seed,
        "cycles": cycles,
        "kills": cycles,
        "workers": args.workers,
        "sandbox_latency_s": args.latency,
        "send_seconds": round(send_seconds, 1),
        "server_lifetimes_s": [round(x, 2) for x in lifetimes],
        "startup_s": latency_summary(startups),
        "final_drain_s": None if drained_in is None else round(drained_in, 1),
        "outbox_empty_s": round(emptied_in, 1),
        "outbox_left": left,
        "refused": dict(ledger.refused),
        "client_latency": latency_summary(ledger.latencies),
        **figures,
    }
    path = write_results("crash", result)
    print()
    print(f"crash: {'OK' if ok else 'FAILED'}  ({cycles} kill -9 cycles, seed {seed})")
    print(
        f"  accepted {figures['accepted']}, delivered {figures['delivered']}, missing {figures['missing']}, "
        f"unexpected {figures['unexpected']}, "
        f"duplicates {figures['duplicates']} ({figures['duplicated_ids']} ids)"
    )
    print(
        f"  in doubt (request died with the server): {figures['in_doubt_sent']}, "
        f"of which delivered {figures['in_doubt_delivered']}"
    )
    print(
        f"  every accepted id at the sandbox {result['final_drain_s']} s after the senders stopped; "
        f"outbox empty after {result['outbox_empty_s']} s (lease 30 s); left {left}"
    )
    print(f"  refused answers {dict(ledger.refused)}; failed at the sandbox {figures['failed_at_sandbox']}")
    print(f"  results: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
