"""Server subprocesses, pinned to a core with taskset: start, wait until they answer, read RSS, stop."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SERVER_CORE = "0"
CLIENT_CORE = "1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def uvicorn_argv(app: str, port: int) -> list[str]:
    return [
        str(VENV_BIN / "python"),
        "-m",
        "uvicorn",
        app,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


GUNICORN_THREADS = 8


def gunicorn_argv(app: str, port: int) -> list[str]:
    # One gthread worker (the server has one core): keep-alive like uvicorn, 8 threads for 50 connections.
    return [
        str(VENV_BIN / "gunicorn"),
        f"{app}()",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--worker-class",
        "gthread",
        "--threads",
        str(GUNICORN_THREADS),
        "--keep-alive",
        "5",
        "--log-level",
        "warning",
    ]


def sandbox_argv(port: int, latency: float, *, stub: bool = False, nice: bool = False) -> list[str]:
    """The sandbox (or `stub`) server; `nice` when it shares the client core with a load generator."""
    argv = [
        str(VENV_BIN / "python"),
        "-m",
        "bench.sandbox_server",
        "--port",
        str(port),
        "--latency",
        str(latency),
    ]
    if stub:
        argv.append("--stub")
    return ["nice", "-n", "19", *argv] if nice else argv


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of `pid` and every live descendant, each with its reaped children.

    0 for a process already gone: once reaped, its time is in its parent's figures instead.
    """
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
        pending += _children(current)
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """One subprocess listening on 127.0.0.1:port, started under `taskset -c core`."""

    name: str
    argv: list[str]
    port: int
    core: str = SERVER_CORE
    env: Mapping[str, str] = field(default_factory=dict)
    ready_path: str = "/"
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, log_dir: Path, timeout: float = 30.0) -> Server:
        self.log_path = log_dir / f"{self.name}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **self.env}
        with self.log_path.open("wb") as log:
            # taskset execs the command: the pid is the server's own (the master's, for gunicorn).
            self.process = subprocess.Popen(
                ["taskset", "-c", self.core, *self.argv],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", self.ready_path)
                status = conn.getresponse().status
                conn.close()
                if status < 500:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def rss_kib(self, pid: int | None = None) -> dict[str, int]:
        """VmRSS and VmHWM (peak) in KiB, from /proc/PID/status."""
        values: dict[str, int] = {}
        for line in Path(f"/proc/{pid or self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(value.split()[0])
        return values

    def cpu_seconds(self) -> float:
        """CPU seconds so far of the process and its descendants (gunicorn's worker), threads included."""
        return tree_cpu_seconds(self.pid) if self.process is not None else 0.0

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
