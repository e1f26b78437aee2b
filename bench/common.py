"""What the sections share: run length (quick or full), the work directory, starting the servers."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from bench.apps import SANDBOX_ACCOUNT
from bench.servers import (
    CLIENT_CORE,
    Server,
    free_port,
    gunicorn_argv,
    sandbox_argv,
    tree_cpu_seconds,
    uvicorn_argv,
)

T = TypeVar("T")

REALISTIC_LATENCY = 0.150  # seconds: a Conversions API answer as seen from a shop's server
NOISY = 0.10  # a run during which other processes used more than this share of the machine is repeated
RETRIES = 3
CALM_WAIT = 20.0  # seconds to wait for calm before a measured block


@dataclass
class Context:
    quick: bool
    workdir: Path
    noise: list[float] = field(
        default_factory=list
    )  # other processes' share of the machine, per measured block

    def pick(self, full: float, quick: float) -> float:
        return quick if self.quick else full

    def directory(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine (all cores) has spent running processes since boot.

    user + nice + system only: interrupt and softirq time (loopback networking under wrk) is not
    charged to any process, so counting it would make our own traffic look like someone else's.
    """
    user, nice, system = (int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:4])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


@dataclass
class Monitor:
    """How much CPU processes outside this benchmark (another engineer's tests...) used during a block.

    foreign = machine busy time - ours, where ours is this process and all its descendants (servers,
    wrk, the load generator, Chromium), live or already reaped.
    """

    foreign_seconds: float = 0.0
    wall_seconds: float = 0.0
    _start: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))

    def __enter__(self) -> Monitor:
        self._start = (time.monotonic(), machine_busy_seconds(), tree_cpu_seconds(os.getpid()))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        started, busy, ours = self._start
        self.wall_seconds = time.monotonic() - started
        ours_now = tree_cpu_seconds(os.getpid())
        self.foreign_seconds = max(0.0, (machine_busy_seconds() - busy) - (ours_now - ours))

    @property
    def foreign_share(self) -> float:
        """Share of the whole machine (both cores) other processes used."""
        cores = os.cpu_count() or 1
        return self.foreign_seconds / (self.wall_seconds * cores) if self.wall_seconds else 0.0


def wait_quiet(max_wait: float, threshold: float = NOISY, window: float = 1.0) -> float:
    """Wait (up to `max_wait` s) for a `window` in which other processes use under `threshold` of it."""
    deadline = time.monotonic() + max_wait
    while True:
        with Monitor() as monitor:
            time.sleep(window)
        if monitor.foreign_share < threshold or time.monotonic() >= deadline:
            return monitor.foreign_share


def steady(ctx: Context, measure: Callable[[], T]) -> T:
    """Run `measure` when the machine is calm; repeat it if other processes used the machine meanwhile.

    Other engineers' test runs share these two cores. Before each attempt (full runs only) wait up
    to `CALM_WAIT` s for half a second of calm; a block during which others took more than `NOISY`
    of the machine is measured again, up to `RETRIES` times. The share seen is kept in `ctx.noise`.
    """
    attempts = 1 if ctx.quick else RETRIES
    for attempt in range(attempts):
        if not ctx.quick:
            wait_quiet(CALM_WAIT, window=0.5)
        with Monitor() as monitor:
            result = measure()
        ctx.noise.append(monitor.foreign_share)
        if monitor.foreign_share < NOISY or attempt == attempts - 1:
            return result
    raise AssertionError("unreachable")


def note_noise(section: Any, noise: list[float]) -> None:
    """Keep the interference seen during a section, and say so under its table when it was high."""
    section.raw["foreign_cpu_share"] = noise
    worst = max(noise, default=0.0)
    if worst >= NOISY and section.tables:
        section.tables[0].notes.append(
            f"Other processes on the machine used up to {worst:.0%} of it during a measured block here "
            f"({sum(share >= NOISY for share in noise)} of {len(noise)} blocks over {NOISY:.0%}, "
            "after retries): "
            "treat these figures with care."
        )


def start_sandbox(
    ctx: Context, name: str, *, latency: float, stub: bool = False, nice: bool = True, core: str = CLIENT_CORE
) -> Server:
    """The sandbox on the client core (niced by default, so the load generator there goes first)."""
    port = free_port()
    server = Server(
        name,
        sandbox_argv(port, latency, stub=stub, nice=nice),
        port,
        core=core,
        ready_path="/_sandbox/received?since=999999999",
    )
    return server.start(ctx.directory("logs"))


def app_env(sandbox: Server, outbox: Path) -> dict[str, str]:
    return {
        "BENCH_API_BASE": f"{sandbox.url}/v5",
        "BENCH_OUTBOX": str(outbox),
        "BENCH_NAIVE_URL": f"{sandbox.url}/v5/ad_accounts/{SANDBOX_ACCOUNT}/events",
    }


def start_app(ctx: Context, factory: str, sandbox: Server, *, server: str = "uvicorn") -> Server:
    """`bench.apps:<factory>` under uvicorn (ASGI) or gunicorn (WSGI) on the server core; its own outbox."""
    port = free_port()
    argv = (
        uvicorn_argv(f"bench.apps:{factory}", port)
        if server == "uvicorn"
        else gunicorn_argv(f"bench.apps:{factory}", port)
    )
    outbox = ctx.directory("outboxes") / f"{factory}-{port}.sqlite3"
    app = Server(factory, argv, port, env=app_env(sandbox, outbox), ready_path="/json")
    return app.start(ctx.directory("logs"))


def outbox_path(app: Server) -> Path:
    return Path(app.env["BENCH_OUTBOX"])


def outbox_backlog(path: Path) -> dict[str, int]:
    """Rows still to send and dead letters, read from the SQLite file (another process owns it)."""
    if not path.exists():
        return {"waiting": 0, "dead": 0}
    conn = sqlite3.connect(path, timeout=5)
    try:
        waiting, dead = conn.execute(
            "SELECT COALESCE(SUM(dead = 0), 0), COALESCE(SUM(dead = 1), 0) FROM outbox"
        ).fetchone()
    finally:
        conn.close()
    return {"waiting": int(waiting), "dead": int(dead)}


def wait_drained(path: Path, timeout: float) -> tuple[bool, float]:
    """Wait until the outbox holds nothing to send; (drained, seconds waited)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if outbox_backlog(path)["waiting"] == 0:
            return True, time.monotonic() - started
        time.sleep(0.25)
    return False, time.monotonic() - started


def sandbox_requests(sandbox: Server) -> dict[str, int]:
    with urllib.request.urlopen(f"{sandbox.url}/_sandbox/received?since=999999999", timeout=10) as answer:
        requests: dict[str, int] = json.load(answer)["requests"]
    return requests


def loadgen(args: list[str], timeout: float) -> dict[str, Any]:
    """`python -m bench.loadgen ...` on the client core; its JSON answer."""
    done = subprocess.run(
        ["taskset", "-c", CLIENT_CORE, sys.executable, "-m", "bench.loadgen", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result
