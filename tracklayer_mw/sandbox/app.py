"""The sandbox as a Starlette app (and ``serve()`` to run it with uvicorn: ``tracklayer sandbox``).

Routes:

- ``POST /v5/ad_accounts/{ad_account_id}/events`` (also without ``/v5``): the Conversions API.
- ``GET /_sandbox/received[?since=N]``: the records as JSON.
- ``GET /_sandbox/faults``, ``POST /_sandbox/faults`` (a ``Fault`` as JSON), ``DELETE /_sandbox/faults``.
- ``POST /_sandbox/reset``.
- ``GET /_sandbox/``: the diagnostics page; ``GET /_sandbox/diagnostics.json``: its figures.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import anyio
import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .core import ConnectionDropped, PinterestSandbox
from .faults import Fault

if TYPE_CHECKING:
    import uvicorn


class _EventsEndpoint:
    """The events route as a raw ASGI app: a dropped connection cannot be a Starlette ``Response``."""

    def __init__(self, sandbox: PinterestSandbox) -> None:
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        request = Request(scope)
        # The route matched, so the path is canonical; the sandbox validates the id itself.
        path = f"/v5/ad_accounts/{request.path_params['ad_account_id']}/events"
        outcome = self.sandbox.dispatch(request.method, path, request.url.query, request.headers, bytes(body))
        if outcome.delay > 0 and not await _sleep_unless_disconnected(outcome.delay, receive):
            return  # the client gave up (its timeout): nobody is left to answer
        if outcome.kind == "drop":
            await _drop(send)
        reply = outcome.reply
        await Response(reply.body, reply.status, reply.headers)(scope, receive, send)


async def _sleep_unless_disconnected(seconds: float, receive: Receive) -> bool:
    """Sleep; ``False`` as soon as the client disconnects (so a held "timeout" ends with its client)."""
    disconnected = False

    async def watch(scope: anyio.CancelScope) -> None:
        nonlocal disconnected
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected = True
        scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(watch, group.cancel_scope)
        await anyio.sleep(seconds)
        group.cancel_scope.cancel()
    return not disconnected


async def _drop(send: Send) -> None:
    """Promise a body, send none of it, and abort: the server closes the connection mid-answer.

    ASGI has no "close without answering"; raising after the response started is what makes
    uvicorn close the socket (the client sees ``httpx.RemoteProtocolError``). ``serve()`` keeps the
    resulting log line short. Under an in-process client the exception reaches the test instead.
    """
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})
    raise ConnectionDropped("sandbox: connection dropped (injected fault)")


@cache
def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FunctionLoader(_load_template), autoescape=True, undefined=jinja2.StrictUndefined
    )
    environment.filters["clock"] = _format_time
    environment.filters["percent"] = _format_percent
    return environment


def _load_template(name: str) -> str:
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


def _format_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _format_percent(value: float | None) -> str:
    return "–" if value is None else f"{value:g}%"


def create_app(sandbox: PinterestSandbox) -> Starlette:
    """The Starlette app behind ``PinterestSandbox.asgi_app()``."""
    events = _EventsEndpoint(sandbox)

    async def received(request: Request) -> Response:
        since_text = request.query_params.get("since", "0")
        if not since_text.isdigit():
            return JSONResponse({"error": "since must be a non-negative integer"}, status_code=400)
        records = sandbox.received_since(int(since_text))
        return JSONResponse(
            {
                "records": [record.to_json() for record in records],
                "next": records[-1].seq + 1 if records else int(since_text),
                "requests": {str(status): count for status, count in sandbox.requests.items()},
            }
        )

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            sandbox.clear_faults()
        elif request.method == "POST":
            try:
                sandbox.inject(Fault.from_json(await request.json()))
            except ValueError as exc:  # also a body that is not JSON (json.JSONDecodeError)
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"faults": sandbox.faults})

    async def reset(request: Request) -> Response:
        sandbox.reset()
        return JSONResponse({"reset": True})

    async def diagnostics_json(request: Request) -> Response:
        return JSONResponse(sandbox.diagnostics())

    async def diagnostics_page(request: Request) -> Response:
        page = (
            _templates()
            .get_template("diagnostics.html")
            .render(
                d=sandbox.diagnostics(),
                ad_account_ids=sandbox.ad_account_ids,
                now=sandbox.clock(),
            )
        )
        return HTMLResponse(page, headers={"cache-control": "no-store"})

    async def home(request: Request) -> Response:
        return RedirectResponse("/_sandbox/")

    return Starlette(
        routes=[
            Route("/v5/ad_accounts/{ad_account_id}/events", events),
            Route("/ad_accounts/{ad_account_id}/events", events),
            Route("/_sandbox/received", received, methods=["GET"]),
            Route("/_sandbox/faults", faults, methods=["GET", "POST", "DELETE"]),
            Route("/_sandbox/reset", reset, methods=["POST"]),
            Route("/_sandbox/diagnostics.json", diagnostics_json, methods=["GET"]),
            Route("/_sandbox/", diagnostics_page, methods=["GET"]),
            Route("/", home, methods=["GET"]),
        ]
    )


class _QuietDrops(logging.Filter):
    """Turn uvicorn's traceback for an injected drop into one line: it is the fault working."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ConnectionDropped):
            record.msg = "sandbox: dropped a connection (injected fault)"
            record.args, record.exc_info = (), None
        return True


def build_server(sandbox: PinterestSandbox, host: str = "127.0.0.1", port: int = 8765) -> uvicorn.Server:
    """A uvicorn server for ``sandbox``, not yet started (``port=0`` picks a free port).

    For tests that need a real socket: run ``server.run()`` in a thread, stop it with
    ``server.should_exit = True``.
    """
    import uvicorn  # a test/demo dependency, not a runtime one

    error_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, _QuietDrops) for existing in error_log.filters):
        error_log.addFilter(_QuietDrops())
    # A held "timeout" answer must not stall shutdown for its whole delay.
    config = uvicorn.Config(
        sandbox.asgi_app(), host=host, port=port, timeout_graceful_shutdown=2, log_level="info"
    )
    return uvicorn.Server(config)


def serve(host: str = "127.0.0.1", port: int = 8765, **sandbox_kwargs: Any) -> None:
    """Run a new sandbox until interrupted (``tracklayer sandbox``); keywords go to ``PinterestSandbox``."""
    sandbox = PinterestSandbox(**sandbox_kwargs)
    server = build_server(sandbox, host, port)
    # The command's only output: where to point the library and the browser.
    print(
        f"Pinterest sandbox on http://{host}:{port}\n"
        f"  API base:     http://{host}:{port}/v5\n"
        f"  token:        {sandbox.token}\n"
        f"  ad accounts:  {', '.join(sandbox.ad_account_ids)}\n"
        f"  diagnostics:  http://{host}:{port}/_sandbox/",
        flush=True,
    )
    server.run()
