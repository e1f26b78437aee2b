"""The sandbox misbehaves for a while, kind by kind; nothing may be lost and the host must not notice.

``python -m stress.faults [--quick] [--fault-seconds 15]``

One uvicorn server (delivery timeout ``TRACKLAYER_REQUEST_TIMEOUT=2`` s), a client sending ingest
batches and track() orders all along, and a prober process timing the host's own page (``GET /``)
every 50 ms. Phases: a fault-free baseline; then for each fault kind the sandbox is told to misbehave for
``--fault-seconds`` (429 storm, 500, 503, answers slower than the timeout, no answer at all, dropped
connections), and once it stops, the time until every event accepted so far is at the sandbox is
the recovery time; last, a quiet 503 outage with a fixed backlog and no new traffic, where only
backoff decides how many requests the worker makes. Figures per phase: the worker's requests (by
answer), events accepted, the host page's p50/p99 and the ingest p99.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from stress.common import (
    PYTHON,
    REPO,
    SITE_HOST,
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
    send_ingest,
    wait_delivered,
    write_results,
)

REQUEST_TIMEOUT = 2.0


class Prober:
    """Times the host app's own page every `interval` seconds from a process of its own (stress.probe)."""

    def __init__(self, url: str, outfile: Path, interval: float = 0.05) -> None:
        self.outfile = outfile
        argv = [
            PYTHON,
            "-m",
            "stress.probe",
            url,
            str(outfile),
            "--interval",
            str(interval),
            "--host",
            SITE_HOST,
        ]
        self.proc = subprocess.Popen(argv, cwd=REPO)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def samples(self) -> list[tuple[float, float, int]]:
        """(unix time, seconds, status) per request; status 0 for an error."""
        rows = []
        for line in self.outfile.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                rows.append((float(parts[0]), float(parts[1]), int(parts[2])))
        return rows

    def between(self, start: float, end: float) -> list[float]:
        return [seconds for at, seconds, status in self.samples() if start <= at < end and status == 200]

    @property
    def errors(self) -> int:
        return sum(1 for _, _, status in self.samples() if status != 200)


def requests_diff(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {
        key: after.get(key, 0) - before.get(key, 0)
        for key in after
        if after.get(key, 0) != before.get(key, 0)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4 s faults, 5 s baseline")
    parser.add_argument("--fault-seconds", type=float, default=15.0)
    parser.add_argument("--baseline-seconds", type=float, default=15.0)
    parser.add_argument("--recovery-timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    fault_seconds = 4.0 if args.quick else args.fault_seconds
    baseline_seconds = 5.0 if args.quick else args.baseline_seconds
    faults: list[tuple[str, dict[str, Any]]] = [
        ("429 storm", {"kind": "429"}),
        ("500", {"kind": "500"}),
        ("503", {"kind": "503"}),
        (
            f"slow (answers after {REQUEST_TIMEOUT + 1:g} s > timeout)",
            {"kind": "slow", "delay": REQUEST_TIMEOUT + 1},
        ),
        ("timeout (no answer)", {"kind": "timeout", "delay": 30}),
        ("dropped connections", {"kind": "drop"}),
    ]

    with tempfile.TemporaryDirectory(prefix="tl-faults-") as tmp:
        workdir = Path(tmp)
        sandbox_port, app_port = free_port(), free_port()
        outbox = workdir / "outbox.sqlite3"
        env = app_env(
            sandbox_port,
            outbox,
            TRACKLAYER_REQUEST_TIMEOUT=str(REQUEST_TIMEOUT),
            TRACKLAYER_INGEST_RATE_PER_MINUTE="1000000",
        )
        sandbox = sandbox_server(sandbox_port, workdir)
        app = app_server(app_port, env, workdir)
        base = f"http://127.0.0.1:{app_port}"
        with running(sandbox, app), contextlib.ExitStack() as cleanup:
            sandbox.start()
            app.start()
            view = SandboxView(sandbox_port)
            ledger = Ledger()
            prober = Prober(f"{base}/", workdir / "probe.txt")
            cleanup.callback(prober.stop)
            sender = Sender(base, ledger, "f", batch=5, pause=0.1)
            sender.start()
            phases: list[dict[str, Any]] = []

            def phase(name: str, seconds: float, fault: dict[str, Any] | None) -> dict[str, Any]:
                view.poll()
                requests_before = dict(view.requests)
                accepted_before = len(ledger.accepted)
                ingest_from = len(ledger.latencies)
                start = time.time()
                if fault is not None:
                    view.inject({**fault, "seconds": seconds})
                time.sleep(seconds)
                view.clear_faults()
                end = time.time()
                view.poll()
                made = requests_diff(requests_before, view.requests)
                row: dict[str, Any] = {
                    "phase": name,
                    "fault": fault,
                    "seconds": seconds,
                    "worker_requests": made,
                    "worker_requests_total": sum(made.values()),
                    "events_accepted": len(ledger.accepted) - accepted_before,
                    "host_page": latency_summary(prober.between(start, end)),
                    "ingest": latency_summary(ledger.latencies[ingest_from:]),
                }
                if fault is not None:
                    recovered = wait_delivered(ledger, view, args.recovery_timeout, every=0.25)
                    row["recovery_s"] = None if recovered is None else round(recovered, 2)
                    row["requests_until_recovered"] = sum(
                        requests_diff(requests_before, view.requests).values()
                    )
                log(
                    f"{name:45} requests {sum(made.values()):4} {made}  accepted {row['events_accepted']:5}  "
                    f"page p50/p99 {row['host_page']['p50_ms']}/{row['host_page']['p99_ms']} ms  "
                    f"recovery {row.get('recovery_s', '-')} s"
                )
                phases.append(row)
                return row

            log(
                f"faults: {len(faults)} kinds, {fault_seconds:g} s each, "
                f"after a {baseline_seconds:g} s baseline"
            )
            phase("baseline (no fault)", baseline_seconds, None)
            for name, fault in faults:
                phase(name, fault_seconds, fault)
            phase("after the faults (no fault)", baseline_seconds, None)

            # A quiet outage: a fixed backlog, no new traffic; only backoff decides the request count.
            sender.stop()
            wait_delivered(ledger, view, args.recovery_timeout)
            quiet_seconds = fault_seconds * 3
            with httpx.Client(base_url=base, timeout=10.0) as client:
                backlog_ledger = Ledger()
                view.inject({"kind": "503", "seconds": quiet_seconds})
                requests_before = dict(view.requests)
                start = time.time()
                send_ingest(client, backlog_ledger, 50, "quiet")
            time.sleep(quiet_seconds)
            view.poll()
            quiet_made = requests_diff(requests_before, view.requests)
            view.clear_faults()
            quiet_recovery = wait_delivered(backlog_ledger, view, args.recovery_timeout, every=0.25)
            quiet = {
                "phase": f"quiet 503 outage, 50 events backlog, {quiet_seconds:g} s",
                "worker_requests": quiet_made,
                "worker_requests_total": sum(quiet_made.values()),
                "requests_without_backoff_at_1_per_s": int(quiet_seconds),
                "recovery_s": None if quiet_recovery is None else round(quiet_recovery, 2),
                "host_page": latency_summary(prober.between(start, start + quiet_seconds)),
            }
            log(
                f"{quiet['phase']:45} requests {quiet['worker_requests_total']} {quiet_made}  "
                f"recovery {quiet['recovery_s']} s"
            )
            prober.stop()
            page_errors = prober.errors
            with ledger.lock:
                ledger.accepted |= backlog_ledger.accepted
            wait_delivered(ledger, view, args.recovery_timeout)
            deadline = time.monotonic() + args.recovery_timeout
            while outbox_counts(outbox)["alive"] and time.monotonic() < deadline:
                time.sleep(0.5)
            figures = reconcile(ledger, view)
            left = outbox_counts(outbox)
            app.stop()
            view.close()

    baseline = phases[0]["host_page"]
    worst = max(phases[1:-1], key=lambda row: row["host_page"]["p99_ms"])
    ok = (
        figures["missing"] == 0
        and figures["unexpected"] == 0
        and left == {"alive": 0, "dead": 0}
        and all(row["recovery_s"] is not None for row in phases if row["fault"] is not None)
        and quiet["recovery_s"] is not None
        and page_errors == 0
    )
    result = {
        "ok": ok,
        "fault_seconds": fault_seconds,
        "request_timeout_s": REQUEST_TIMEOUT,
        "phases": phases,
        "quiet_outage": quiet,
        "host_page_errors": page_errors,
        "host_page_baseline": baseline,
        "host_page_worst_fault_phase": {"phase": worst["phase"], **worst["host_page"]},
        "outbox_left": left,
        "refused": dict(ledger.refused),
        **figures,
    }
    path = write_results("faults", result)
    print()
    print(f"faults: {'OK' if ok else 'FAILED'}")
    print(
        f"  accepted {figures['accepted']}, delivered {figures['delivered']}, missing {figures['missing']}, "
        f"unexpected {figures['unexpected']}, duplicates {figures['duplicates']}; outbox left {left}"
    )
    print(
        f"  host page p50/p99: baseline {baseline['p50_ms']}/{baseline['p99_ms']} ms, worst fault phase "
        f"({worst['phase']}) {worst['host_page']['p50_ms']}/{worst['host_page']['p99_ms']} ms; "
        f"page errors {page_errors}"
    )
    print(f"  quiet outage: {quiet['worker_requests_total']} requests in {quiet_seconds:g} s")
    print(f"  results: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
