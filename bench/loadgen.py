"""A small HTTP/1.1 load generator on raw asyncio sockets (uvloop), for what wrk cannot do here.

- `open`: open loop at a fixed rate (wrk2 is not available). Requests leave on schedule whatever
  the server does: a new keep-alive connection is opened when every open one is busy, so a slow
  answer never delays the next request (no coordinated omission). Reports the server's answer
  time (request written -> response read) and how late the client itself was.
- `closed`: send exactly N events in batches over C connections, as fast as the server answers
  (the memory benchmark needs a count, wrk only has a duration).

Run on the client core: `taskset -c 1 python -m bench.loadgen open --port P --rate 1000 ...`;
prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import uvloop

from bench.payloads import INGEST_PATH, ingest_body, ingest_headers


def build_request(host: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
IDLE_MAX = (
    2.0  # seconds; servers close idle keep-alive connections (uvicorn after 5 s): never reuse one that old
)


@dataclass
class Pool:
    host: str
    port: int
    idle: list[tuple[float, Connection]] = field(
        default_factory=list
    )  # (last used, connection), oldest first
    opened: int = 0

    async def take(self, *, fresh: bool = False) -> tuple[Connection, bool]:
        """A connection and whether it was reused; idle ones too old to trust are closed on the way."""
        now = time.monotonic()
        while self.idle and now - self.idle[0][0] > IDLE_MAX:
            self.idle.pop(0)[1][1].close()
        if self.idle and not fresh:
            return self.idle.pop()[1], True
        self.opened += 1
        return await asyncio.open_connection(self.host, self.port), False

    def give(self, conn: Connection) -> None:
        self.idle.append((time.monotonic(), conn))

    def close(self) -> None:
        for _, (_, writer) in self.idle:
            writer.close()


async def _once(pool: Pool, conn: Connection, request: bytes) -> int:
    reader, writer = conn
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    keep = True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            keep = False
    if length:
        await reader.readexactly(length)
    if keep:
        pool.give(conn)
    else:
        writer.close()
    return status


async def exchange(pool: Pool, request: bytes) -> tuple[int, float]:
    """One request on a pooled connection; (status, seconds from the first write to the whole response).

    Like any HTTP client, a request that fails on a reused keep-alive connection (closed by the
    server meanwhile) is sent again once on a new one; the time counts from the first attempt.
    """
    sent = time.perf_counter()
    conn, reused = await pool.take()
    try:
        status = await _once(pool, conn, request)
    except (OSError, asyncio.IncompleteReadError):
        conn[1].close()
        if not reused:
            raise
        conn, _ = await pool.take(fresh=True)
        status = await _once(pool, conn, request)
    return status, time.perf_counter() - sent


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    if not samples_ms:
        return {}
    ordered = sorted(samples_ms)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": ordered[-1],
        "mean_ms": statistics.fmean(ordered),
    }


async def open_loop(
    host: str, port: int, *, batch: int, rate: float, seconds: float, warmup: float
) -> dict[str, Any]:
    authority = f"{host}:{port}"
    headers = ingest_headers(authority)
    prefix = uuid.uuid4().hex[:12]
    total = int(rate * (seconds + warmup))
    requests = [
        build_request(
            authority, INGEST_PATH, headers, ingest_body(batch, authority, f"{prefix}-{i}").encode()
        )
        for i in range(total)
    ]
    pool = Pool(host, port)
    answers: list[tuple[float, int, float]] = []  # (scheduled offset, status, answer seconds)
    lateness: list[float] = []
    loop = asyncio.get_running_loop()

    async def one(offset: float, request: bytes) -> None:
        try:
            status, elapsed = await exchange(pool, request)
        except (OSError, asyncio.IncompleteReadError):
            status, elapsed = 0, 0.0
        answers.append((offset, status, elapsed))

    tasks: list[asyncio.Task[None]] = []
    start = loop.time() + 0.05
    for i, request in enumerate(requests):
        offset = i / rate
        delay = start + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lateness.append(max(0.0, loop.time() - start - offset))
        tasks.append(asyncio.create_task(one(offset, request)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    pool.close()
    measured = [(status, answer) for offset, status, answer in answers if offset >= warmup]
    statuses = Counter(status for status, _ in measured)
    return {
        "mode": "open",
        "batch": batch,
        "target_rate": rate,
        "achieved_rate": len(requests) / elapsed if elapsed else 0.0,
        "requests": len(measured),
        "events_per_s": rate * batch,
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": sum(n for status, n in statuses.items() if status != 202),
        "connections": pool.opened,
        "client_late_p99_ms": sorted(lateness)[int(0.99 * len(lateness))] * 1000 if lateness else 0.0,
        **percentiles([answer * 1000 for status, answer in measured if status == 202]),
    }


async def closed_loop(host: str, port: int, *, batch: int, events: int, concurrency: int) -> dict[str, Any]:
    authority = f"{host}:{port}"
    headers = ingest_headers(authority)
    prefix = uuid.uuid4().hex[:12]
    count = -(-events // batch)
    pool = Pool(host, port)
    statuses: Counter[int] = Counter()
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            i = next_index
            next_index += 1
            size = min(batch, events - i * batch)
            body = ingest_body(size, authority, f"{prefix}-{i}").encode()
            status, _ = await exchange(pool, build_request(authority, INGEST_PATH, headers, body))
            statuses[status] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    pool.close()
    return {
        "mode": "closed",
        "batch": batch,
        "events": events,
        "requests": count,
        "seconds": elapsed,
        "events_per_s": events / elapsed,
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": sum(n for status, n in statuses.items() if status != 202),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["open", "closed"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rate", type=float, default=1000.0, help="open: requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="open: measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="open: seconds sent but not counted")
    parser.add_argument("--events", type=int, default=100_000, help="closed: events to send")
    parser.add_argument("--concurrency", type=int, default=8, help="closed: connections")
    args = parser.parse_args()
    if args.mode == "open":
        coro = open_loop(
            args.host, args.port, batch=args.batch, rate=args.rate, seconds=args.seconds, warmup=args.warmup
        )
    else:
        coro = closed_loop(
            args.host, args.port, batch=args.batch, events=args.events, concurrency=args.concurrency
        )
    print(json.dumps(uvloop.run(coro)))


if __name__ == "__main__":
    main()
