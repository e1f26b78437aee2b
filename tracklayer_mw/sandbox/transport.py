"""httpx transports that answer from a sandbox in-process: ``httpx.Client(transport=sandbox.transport())``.

Injected faults become what a real client would see: ``drop`` raises ``httpx.RemoteProtocolError``
(httpcore's error for a server that closed without answering) and ``timeout`` raises
``httpx.ReadTimeout`` at once, so tests of retry logic do not wait. A ``slow`` answer really waits,
and turns into ``httpx.ReadTimeout`` after the client's read timeout when it would be later than that.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import httpx

if TYPE_CHECKING:
    from .core import Outcome, PinterestSandbox


def _read_timeout(request: httpx.Request) -> float | None:
    timeouts = request.extensions.get("timeout") or {}
    value = timeouts.get("read")
    return None if value is None else float(value)


def _wait(request: httpx.Request, outcome: Outcome) -> float:
    """Seconds to wait before answering; raises when the answer would come too late or never."""
    if outcome.kind == "drop":
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
    if outcome.kind == "timeout":
        raise httpx.ReadTimeout("sandbox: no answer in time (injected fault)", request=request)
    return outcome.delay


def _too_late(request: httpx.Request, delay: float) -> float | None:
    """The client's read timeout when ``delay`` exceeds it, else ``None``."""
    limit = _read_timeout(request)
    return limit if limit is not None and delay > limit else None


def _response(outcome: Outcome) -> httpx.Response:
    reply = outcome.reply
    return httpx.Response(reply.status, headers=reply.headers, content=reply.body)


class SandboxTransport(httpx.BaseTransport):
    """Sync transport; every request goes to ``sandbox.dispatch``."""

    def __init__(self, sandbox: PinterestSandbox) -> None:
        self.sandbox = sandbox

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        outcome = self.sandbox.dispatch(
            request.method, request.url.path, request.url.query.decode("ascii"), request.headers, body
        )
        delay = _wait(request, outcome)
        limit = _too_late(request, delay)
        if limit is not None:
            time.sleep(limit)
            raise httpx.ReadTimeout("sandbox: answer slower than the read timeout", request=request)
        if delay > 0:
            time.sleep(delay)
        return _response(outcome)


class AsyncSandboxTransport(httpx.AsyncBaseTransport):
    """Async transport (asyncio or trio, through anyio); same behaviour as ``SandboxTransport``."""

    def __init__(self, sandbox: PinterestSandbox) -> None:
        self.sandbox = sandbox

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        outcome = self.sandbox.dispatch(
            request.method, request.url.path, request.url.query.decode("ascii"), request.headers, body
        )
        delay = _wait(request, outcome)
        limit = _too_late(request, delay)
        if limit is not None:
            await anyio.sleep(limit)
            raise httpx.ReadTimeout("sandbox: answer slower than the read timeout", request=request)
        if delay > 0:
            await anyio.sleep(delay)
        return _response(outcome)
