"""The host app the stress scripts run under uvicorn: a few pages and a handler calling `track()`.

``uvicorn stress.app:create_app --factory`` with the ``TRACKLAYER_*`` variables set. Routes:

- ``GET /``       a small HTML page (the snippet gets injected): the host's own latency is timed here;
- ``GET /ping``   plain text, no injection;
- ``POST /order`` JSON ``{"order_id": ..., "email": ..., "phone": ...}``: calls
  ``track(request, "Purchase", ...)`` and answers ``{"event_id": ...}`` (``null`` when nothing was queued).

``STRESS_LEASE_SECONDS`` shortens the outbox lease (``tracklayer_mw.worker.LEASE_SECONDS``, 30 s)
so the fast kill -9 test sees claimed events come back in seconds; the stress scripts leave it alone.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tracklayer_mw import Settings, TrackLayerMiddleware, track

PAGE = "<!doctype html><html><head><title>stress shop</title></head><body><h1>Shop</h1></body></html>"


async def home(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def ping(request: Request) -> Response:
    return PlainTextResponse("pong")


async def order(request: Request) -> Response:
    data = await request.json()
    event_id = track(
        request,
        "Purchase",
        user={"email": data.get("email"), "phone": data.get("phone")},
        custom={"order_id": str(data["order_id"]), "value": 12.5, "currency": "USD"},
    )
    return JSONResponse({"event_id": event_id})


def create_app() -> Starlette:
    lease = os.environ.get("STRESS_LEASE_SECONDS")
    if lease:
        from tracklayer_mw import worker

        worker.LEASE_SECONDS = float(lease)
    settings = Settings.from_env()
    return Starlette(
        routes=[Route("/", home), Route("/ping", ping), Route("/order", order, methods=["POST"])],
        middleware=[Middleware(TrackLayerMiddleware, settings=settings)],
    )
