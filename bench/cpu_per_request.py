"""Server CPU time per request, bare app against the same app behind TrackLayer.

``.venv/bin/python -m bench.cpu_per_request [--paths /page,/json] [--reps 4] [--seconds 3]
[--returning] [--floors]``

Throughput ratios move when other processes share the cores; the CPU time the server process spends
per request (utime + stime from ``/proc/PID/stat`` divided by the requests wrk made) hardly does,
which makes this the tool for A/B questions about a few microseconds. Servers (uvicorn, one worker)
on core 0, wrk (``-t1 -c50``) on core 1, variants interleaved, medians of the repetitions.

``--returning`` sends the cookies a landing with ``?epik=`` set (``_epik``, ``_tl``) on every request:
a visitor who came from an ad.

``--floors`` also measures the two floors of the overhead table: a do-nothing middleware that only
wraps ``send``, and one that injects the same tag and does nothing else (``bench.apps``).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.apps import EPIK, USER_AGENT

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {"bare": "bench.apps:starlette_bare", "tracklayer": "bench.apps:starlette_wrapped"}
FLOORS = {"do-nothing": "bench.apps:starlette_passthrough", "injecting": "bench.apps:starlette_injecting"}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(url: str, seconds: int, cookie: str | None) -> int:
    """How many requests wrk made."""
    headers = ["-H", f"User-Agent: {USER_AGENT}", "-H", "Accept: text/html", "-H", "Accept-Language: en-US"]
    if cookie:
        headers += ["-H", f"Cookie: {cookie}"]
    command = ["taskset", "-c", "1", "wrk", "-t1", "-c50", f"-d{seconds}s", *headers, url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    made = re.search(r"(\d+) requests in", out)
    if made is None:
        raise RuntimeError(f"wrk said: {out}")
    return int(made.group(1))


def _landing_cookies(port: int) -> str:
    """The cookies a first visit with ?epik= gets, as a Cookie header."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/landing?epik={EPIK}", headers={"User-Agent": USER_AGENT}
    )
    with urllib.request.urlopen(request) as response:
        cookies = response.headers.get_all("set-cookie") or []
    return "; ".join(cookie.split(";", 1)[0] for cookie in cookies)


def main(argv: list[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--paths", default="/page,/json")
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--returning", action="store_true", help="send a returning ad visitor's cookies")
    parser.add_argument("--floors", action="store_true", help="also the do-nothing and injection floors")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="tl-cpu-"))
    env = dict(os.environ, BENCH_OUTBOX=str(work / "outbox.sqlite3"), BENCH_API_BASE="http://127.0.0.1:9/v5")
    servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    try:
        variants = {**VARIANTS, **(FLOORS if args.floors else {})}
        for index, (name, factory) in enumerate(variants.items()):
            port = 8191 + index
            command = [
                "taskset", "-c", "0", sys.executable, "-m", "uvicorn", "--factory", factory,
                "--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "httptools",
                "--no-access-log", "--log-level", "warning",
            ]  # fmt: skip
            servers[name] = (port, subprocess.Popen(command, cwd=REPO, env=env))
        time.sleep(5)
        cookie = _landing_cookies(servers["tracklayer"][0]) if args.returning else None
        for path in args.paths.split(","):
            for port, _ in servers.values():
                _wrk(f"http://127.0.0.1:{port}{path}", 1, cookie)  # warm up
            cpu: dict[str, list[float]] = {name: [] for name in servers}
            for _ in range(args.reps):
                for name, (port, process) in servers.items():
                    before = _cpu_seconds(process.pid)
                    requests = _wrk(f"http://127.0.0.1:{port}{path}", args.seconds, cookie)
                    cpu[name].append((_cpu_seconds(process.pid) - before) / requests * 1e6)
            bare, tracked = statistics.median(cpu["bare"]), statistics.median(cpu["tracklayer"])
            who = "returning visitor" if args.returning else "first visit"
            print(
                f"{path} ({who}): bare {bare:.1f} us/request, TrackLayer {tracked:.1f} us/request, "
                f"+{tracked - bare:.1f} us, ratio {bare / tracked:.2f}"
            )
            for name in FLOORS if args.floors else ():
                floor = statistics.median(cpu[name])
                extra = floor - bare
                print(f"    {name} floor: {floor:.1f} us/request, +{extra:.1f} us, ratio {bare / floor:.2f}")
    finally:
        for _, process in servers.values():
            process.terminate()
            process.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
