"""Time a page every N ms from a process of its own (so the orchestrator's threads cannot skew it).

``python -m stress.probe URL OUTFILE [--interval 0.05] [--host www.shop.localhost]``

Appends one line per request to OUTFILE: ``<unix time> <seconds> <status>`` (status 0 on an error),
until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import time
from types import FrameType

import httpx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("outfile")
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--host", default="www.shop.localhost")
    args = parser.parse_args()
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    with (
        open(args.outfile, "a", buffering=1) as out,
        httpx.Client(timeout=10.0, headers={"host": args.host}) as client,
    ):
        while not stopping:
            at = time.time()
            began = time.perf_counter()
            try:
                status = client.get(args.url).status_code
            except httpx.HTTPError:
                status = 0
            out.write(f"{at:.4f} {time.perf_counter() - began:.6f} {status}\n")
            time.sleep(max(0.0, args.interval - (time.perf_counter() - began)))


if __name__ == "__main__":
    main()
