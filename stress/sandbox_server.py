"""The Pinterest sandbox over HTTP, plus one compact read-out route for the stress scripts.

``python -m stress.sandbox_server --port P [--latency S] [--max-records N]``

Everything under ``/v5`` and ``/_sandbox`` is ``PinterestSandbox.asgi_app()`` unchanged (faults:
``POST /_sandbox/faults``). ``GET /_stress/ids?since=N`` answers the same records as
``/_sandbox/received`` without the event bodies (``[seq, event_id, status, test]``), so counting
hundreds of thousands of events does not cost the sandbox more than receiving them.
"""

from __future__ import annotations

import argparse
import json
import logging

import uvicorn
from starlette.types import Receive, Scope, Send

from tracklayer_mw.sandbox import PinterestSandbox


class _QuietDrops(logging.Filter):
    """An injected "drop" fault makes uvicorn log a traceback per request: keep one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and type(record.exc_info[1]).__name__ == "ConnectionDropped":
            record.msg, record.args, record.exc_info = (
                "sandbox: dropped a connection (injected fault)",
                (),
                None,
            )
        return True


def build_app(sandbox: PinterestSandbox) -> object:
    inner = sandbox.asgi_app()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/_stress/ids":
            query = scope.get("query_string", b"").decode()
            since = int(query.partition("since=")[2].split("&")[0] or 0) if "since=" in query else 0
            records = sandbox.received_since(since)
            body = json.dumps(
                {
                    "ids": [[r.seq, r.event_id, r.status, r.test] for r in records],
                    "next": records[-1].seq + 1 if records else since,
                    "requests": {str(status): count for status, count in sandbox.requests.items()},
                },
                separators=(",", ":"),
            ).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await inner(scope, receive, send)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--max-records", type=int, default=2_000_000)
    args = parser.parse_args()
    sandbox = PinterestSandbox(latency=args.latency, max_records=args.max_records)
    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    config = uvicorn.Config(
        build_app(sandbox),  # type: ignore[arg-type]
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
