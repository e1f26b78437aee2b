"""kill -9 of the app server in the middle of a delivery loses nothing (the fast cousin of stress/crash.py).

Real processes: the sandbox (``stress.sandbox_server``, every answer 0.5 s late, so a request stays
in flight) and the app (``stress.app`` under uvicorn) on one SQLite outbox in tmp_path. Events go in
through ingest and track(); as soon as the sandbox has recorded the first batch, while its answer is
still on the way, the server is killed with SIGKILL, with a second wave of events queued but not yet
claimed. After a restart every accepted id must reach the sandbox, nothing else may, and the outbox
must end empty. The lease is shortened to 3 s (``STRESS_LEASE_SECONDS``) so the claimed batch comes
back within this test's ~15 s; ``python -m stress.crash`` runs the real 30 s lease.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from stress.common import (
    Ledger,
    SandboxView,
    Server,
    app_env,
    app_server,
    free_port,
    outbox_counts,
    reconcile,
    sandbox_server,
    send_ingest,
    send_order,
    wait_delivered,
)

LEASE = 3.0


@dataclass
class Servers:
    sandbox: Server
    sandbox_port: int
    app: Server
    app_url: str
    outbox: Path


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    sandbox_port, app_port = free_port(), free_port()
    outbox = tmp_path / "outbox.sqlite3"
    sandbox = sandbox_server(sandbox_port, tmp_path, latency=0.5)
    env = app_env(
        sandbox_port,
        outbox,
        STRESS_LEASE_SECONDS=str(LEASE),
        TRACKLAYER_REQUEST_TIMEOUT="2",
        TRACKLAYER_INGEST_RATE_PER_MINUTE="100000",
    )
    app = app_server(app_port, env, tmp_path)
    try:
        sandbox.start()
        yield Servers(sandbox, sandbox_port, app, f"http://127.0.0.1:{app_port}", outbox)
    finally:
        app.kill9()
        sandbox.kill9()


def test_kill_9_during_delivery_loses_nothing(servers: Servers) -> None:
    app, outbox = servers.app, servers.outbox
    view = SandboxView(servers.sandbox_port)
    ledger = Ledger()
    began = time.monotonic()
    app.start()
    with httpx.Client(base_url=servers.app_url, timeout=10.0) as client:
        for _ in range(5):
            assert send_ingest(client, ledger, 20, "wave1") == 202
            assert send_order(client, ledger, "wave1") == 200
        # The first batch is at the sandbox, its answer 0.5 s away: the worker is mid-delivery.
        deadline = time.monotonic() + 10
        while not view.poll() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert view.received, "no delivery started"
        for _ in range(5):
            assert send_ingest(client, ledger, 20, "wave2") == 202
    app.kill9()
    killed_with = reconcile(ledger, view)
    assert killed_with["missing"] > 0, "everything was delivered before the kill: nothing was tested"

    app.start()
    delivered_in = wait_delivered(ledger, view, timeout=LEASE + 10)
    deadline = time.monotonic() + LEASE + 10
    while outbox_counts(outbox)["alive"] and time.monotonic() < deadline:
        time.sleep(0.1)
    figures = reconcile(ledger, view)
    view.close()

    assert delivered_in is not None, figures
    assert figures["accepted"] == 5 * 20 * 2 + 5
    assert figures["missing"] == 0
    assert figures["unexpected"] == 0
    assert figures["failed_at_sandbox"] == 0
    assert outbox_counts(outbox) == {"alive": 0, "dead": 0}
    # The batch in flight at the kill had reached the sandbox and was sent again: at least once.
    assert figures["duplicates"] > 0
    assert time.monotonic() - began < 30
