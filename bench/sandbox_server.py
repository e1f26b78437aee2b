"""A quiet sandbox server for the benchmarks: `python -m bench.sandbox_server --port P --latency 0.15`.

`tracklayer_mw.sandbox.serve()` logs every request (uvicorn's access log at info level); under tens
of thousands of requests that would be the sandbox's main cost, so this runs the same app without it.

`--stub` serves a Pinterest that checks nothing (it only counts the events and answers each as
processed): against it, the delivery benchmark measures the library's side of a delivery alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from tracklayer_mw.sandbox import PinterestSandbox

_PROCESSED = b'{"status":"processed","error_message":"","warning_message":""}'


def stub_app(latency: float) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            count = len(json.loads(body)["data"])
        except (ValueError, KeyError, TypeError):
            count = 0
        if latency:
            await asyncio.sleep(latency)
        answer = b'{"num_events_received":%d,"num_events_processed":%d,"events":[%s]}' % (
            count,
            count,
            b",".join([_PROCESSED] * count),
        )
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--stub", action="store_true", help="accept everything, check nothing")
    args = parser.parse_args()
    app = stub_app(args.latency) if args.stub else PinterestSandbox(latency=args.latency).asgi_app()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
