"""What the stress scripts share: servers as subprocesses, the sandbox read-out, the id ledger, figures."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "stress" / "results"
PYTHON = sys.executable
SECRET = "stress-secret-key-0123456789abcdef"
TOKEN = "sandbox-token"  # the sandbox's well-known test token
AD_ACCOUNT = "549755885175"
SITE_HOST = "www.shop.localhost"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- servers -------------------------------------------------------------------------------------


class Server:
    """A subprocess in its own process group, its output in a log file; ready when `ready_url` answers."""

    def __init__(
        self, name: str, argv: list[str], *, env: dict[str, str], log_path: Path, ready_url: str
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.ready_url = ready_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> float:
        """Start and wait until it answers; returns the seconds that took."""
        began = time.monotonic()
        with self.log_path.open("ab") as out:
            out.write(f"\n--- start {self.starts} at {time.time():.3f}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        deadline = began + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                httpx.get(self.ready_url, timeout=1.0)
                return time.monotonic() - began
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"{self.name} did not answer within {timeout} s; see {self.log_path}"
                    ) from None
                time.sleep(0.05)

    def kill9(self) -> None:
        """SIGKILL to the whole process group (uvicorn's workers too), then reap."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (a graceful uvicorn shutdown: lifespan, flush), SIGKILL after `timeout`."""
        if self.proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        self.proc = None
        return code

    def worker_pids(self) -> list[int]:
        """The process itself, or its children when it is a uvicorn supervisor (--workers N)."""
        if self.proc is None:
            return []
        children: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                children += [int(pid) for pid in (task / "children").read_text().split()]
        # uvicorn's multiprocess supervisor forks a resource tracker too: keep only the workers.
        workers = [pid for pid in children if "uvicorn" in _cmdline(pid) or "spawn_main" in _cmdline(pid)]
        return workers or [self.proc.pid]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def rss_kb(pid: int) -> int:
    """Resident set size from /proc (kB); 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def sandbox_server(port: int, logdir: Path, *, latency: float = 0.0) -> Server:
    argv = [PYTHON, "-m", "stress.sandbox_server", "--port", str(port), "--latency", str(latency)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return Server(
        "sandbox",
        argv,
        env=env,
        log_path=logdir / "sandbox.log",
        ready_url=f"http://127.0.0.1:{port}/_stress/ids?since=999999999",
    )


def app_env(sandbox_port: int, outbox: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRACKLAYER_")}
    env.update(
        {
            "TRACKLAYER_SECRET_KEY": SECRET,
            "TRACKLAYER_PINTEREST_AD_ACCOUNT_ID": AD_ACCOUNT,
            "TRACKLAYER_PINTEREST_ACCESS_TOKEN": TOKEN,
            "TRACKLAYER_PINTEREST_API_BASE": f"http://127.0.0.1:{sandbox_port}/v5",
            "TRACKLAYER_OUTBOX": f"sqlite:///{outbox}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def app_server(
    port: int, env: dict[str, str], logdir: Path, *, workers: int = 1, name: str = "app"
) -> Server:
    argv = [PYTHON, "-m", "uvicorn", "stress.app:create_app", "--factory", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    return Server(
        name, argv, env=env, log_path=logdir / f"{name}.log", ready_url=f"http://127.0.0.1:{port}/ping"
    )


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    """Stop every server on the way out, whatever happened."""
    try:
        yield
    finally:
        for server in reversed(servers):
            server.stop(timeout=10)


# --- the sandbox read-out ------------------------------------------------------------------------


class SandboxView:
    """Reads the sandbox's records incrementally: live processed ids (counted), failures, requests."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.base, timeout=30.0)
        self.next = 0
        self.received: Counter[str] = Counter()  # live, processed events per event_id
        self.failed: Counter[str] = Counter()
        self.test_events = 0
        self.requests: dict[str, int] = {}

    def poll(self) -> Counter[str]:
        answer = self.client.get("/_stress/ids", params={"since": self.next}).json()
        for _seq, event_id, status, test in answer["ids"]:
            if test:
                self.test_events += 1
            elif status == "processed":
                self.received[event_id] += 1
            else:
                self.failed[event_id] += 1
        self.next = answer["next"]
        self.requests = answer["requests"]
        return self.received

    def request_total(self) -> int:
        self.poll()
        return sum(self.requests.values())

    def inject(self, fault: dict[str, Any]) -> None:
        self.client.post("/_sandbox/faults", json=fault).raise_for_status()

    def clear_faults(self) -> None:
        self.client.delete("/_sandbox/faults").raise_for_status()

    def close(self) -> None:
        self.client.close()


# --- the ledger: what the app accepted, what may have been accepted -----------------------------


@dataclass
class Ledger:
    """Every event id the client learnt was accepted (202 / returned by track()), and the ones in doubt."""

    accepted: set[str] = field(default_factory=set)
    ambiguous: set[str] = field(default_factory=set)  # sent, but the answer never came (server killed)
    refused: Counter[str] = field(default_factory=Counter)  # answer status -> requests
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests only
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, ids: Iterable[str], status: int | str, seconds: float | None) -> None:
        with self.lock:
            if status in (200, 202):
                self.accepted.update(ids)
            elif status == "lost":
                self.ambiguous.update(ids)
            else:
                self.refused[str(status)] += 1
            if seconds is not None:
                self.latencies.append(seconds)


def reconcile(ledger: Ledger, view: SandboxView) -> dict[str, int]:
    received = view.poll()
    delivered = set(received)
    with ledger.lock:
        accepted, ambiguous = set(ledger.accepted), set(ledger.ambiguous)
    return {
        "accepted": len(accepted),
        "delivered": len(accepted & delivered),
        "missing": len(accepted - delivered),
        "unexpected": len(delivered - accepted - ambiguous),
        "duplicates": sum(count - 1 for count in received.values() if count > 1),
        "duplicated_ids": sum(1 for count in received.values() if count > 1),
        "in_doubt_sent": len(ambiguous),
        "in_doubt_delivered": len(ambiguous & delivered),
        "failed_at_sandbox": sum(view.failed.values()),
    }


def wait_delivered(ledger: Ledger, view: SandboxView, timeout: float, *, every: float = 0.5) -> float | None:
    """Seconds until every accepted id reached the sandbox, or None after `timeout`."""
    began = time.monotonic()
    while True:
        if reconcile(ledger, view)["missing"] == 0:
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            return None
        time.sleep(every)


def browser_event(event_id: str, *, email: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": "AddToCart",
        "event_id": event_id,
        "url": f"https://{SITE_HOST}/p/sku-1",
        "custom": {"value": 12.5, "currency": "USD", "content_ids": ["sku-1"]},
    }
    if email:
        event["user"] = {"email": email}
    return event


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def send_ingest(client: httpx.Client, ledger: Ledger, count: int, prefix: str) -> int | str:
    """One ingest request with `count` fresh events; the outcome goes to the ledger."""
    ids = [new_id(prefix) for _ in range(count)]
    body = {"events": [browser_event(event_id) for event_id in ids]}
    began = time.perf_counter()
    try:
        answer = client.post("/_tl/ingest", json=body, headers={"host": SITE_HOST})
    except httpx.ConnectError:
        return "down"  # nothing was sent
    except httpx.HTTPError:
        ledger.record(ids, "lost", None)
        return "lost"
    seconds = time.perf_counter() - began
    if answer.status_code == 202:
        returned = answer.json()["event_ids"]
        if sorted(returned) != sorted(ids):
            raise AssertionError(f"ingest answered other ids than it was sent: {returned[:3]}...")
        ledger.record(returned, 202, seconds)
    else:
        ledger.record(ids, answer.status_code, seconds)
    return answer.status_code


def send_order(client: httpx.Client, ledger: Ledger, prefix: str) -> int | str:
    """One `POST /order`, whose handler calls track(); the id it returned goes to the ledger."""
    order_id = new_id(prefix)
    expected = f"Purchase:{order_id}"
    body = {"order_id": order_id, "email": f"{order_id}@example.com", "phone": "+1 650 555 0100"}
    began = time.perf_counter()
    try:
        answer = client.post("/order", json=body, headers={"host": SITE_HOST})
    except httpx.ConnectError:
        return "down"
    except httpx.HTTPError:
        ledger.record([expected], "lost", None)
        return "lost"
    seconds = time.perf_counter() - began
    returned = answer.json().get("event_id") if answer.status_code == 200 else None
    if returned is not None:
        if returned != expected:
            raise AssertionError(f"track() returned {returned!r}, expected {expected!r}")
        ledger.record([returned], 200, seconds)
    else:
        ledger.record([expected], answer.status_code if answer.status_code != 200 else "none", seconds)
    return answer.status_code


class Sender(threading.Thread):
    """Sends ingest batches and track() orders in a loop until stopped; a dead server is waited out."""

    def __init__(
        self, base_url: str, ledger: Ledger, prefix: str, *, batch: int = 5, pause: float = 0.02
    ) -> None:
        super().__init__(daemon=True, name=f"sender-{prefix}")
        self.base_url = base_url
        self.ledger = ledger
        self.prefix = prefix
        self.batch = batch
        self.pause = pause
        self.stopping = threading.Event()
        self.sent = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10.0) as client:
            while not self.stopping.is_set():
                self.sent += 1
                if self.sent % 4 == 0:
                    outcome = send_order(client, self.ledger, self.prefix)
                else:
                    outcome = send_ingest(client, self.ledger, self.batch, self.prefix)
                self.stopping.wait(0.05 if outcome in ("down", "lost") else self.pause)

    def stop(self) -> None:
        self.stopping.set()
        self.join(15)


# --- figures -------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """Milliseconds."""
    return {
        "count": len(seconds),
        "p50_ms": round(percentile(seconds, 50) * 1000, 2),
        "p90_ms": round(percentile(seconds, 90) * 1000, 2),
        "p99_ms": round(percentile(seconds, 99) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2) if seconds else float("nan"),
    }


def outbox_counts(path: Path) -> dict[str, int]:
    """Rows left in the outbox file: alive (pending, retrying or leased) and dead letters."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as conn:
        alive, dead = conn.execute(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE dead = 0),"
            " (SELECT COUNT(*) FROM outbox WHERE dead = 1)"
        ).fetchone()
    return {"alive": alive, "dead": dead}


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path


def every(seconds: float, stop: threading.Event, action: Callable[[], None]) -> threading.Thread:
    """Run `action` every `seconds` in a daemon thread until `stop` is set."""

    def loop() -> None:
        while not stop.wait(seconds):
            action()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread
