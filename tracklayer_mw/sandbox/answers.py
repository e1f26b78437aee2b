"""The bodies Pinterest answers with, built in one place so every front end sends the same bytes.

Shapes and codes follow the spec's responses (``pinterest/CAPI_V5.md`` §8): ``Error`` =
``{code, message}``; 422 is a ``DetailedError`` whose ``details`` is the ``ConversionApiResponse``.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple


class Reply(NamedTuple):
    """An HTTP answer: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, str]
    body: bytes


JSON_HEADERS = {"content-type": "application/json"}

# [§8] documented codes and messages.
AUTH_FAILED = (2, "Authentication failed.")
NOT_PERMITTED = (29, "You are not permitted to access that resource.")
INVALID_REQUEST = (4196, "The request was invalid.")
RATE_LIMITED = (
    8,
    "This request exceeded a rate limit. This can happen if the client exceeds one\n"
    "of the published rate limits within a short time window.",
)
RAMPED_DOWN = (4197, "The endpoint has been ramped down and is currently not accepting any traffic.")
PARTIAL_FAILURE = (
    953,
    "The action could not be processed properly due to some or all data provided being invalid.",
)
# Not documented by Pinterest: plausible Error bodies for the sandbox's own edge cases.
SERVER_ERROR = (500, "Internal server error.")
NOT_FOUND = (404, "Not found.")
METHOD_NOT_ALLOWED = (405, "Method not allowed.")


def json_reply(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Reply(status, {**JSON_HEADERS, **(headers or {})}, body)


def error_reply(
    status: int, code_message: tuple[int, str], detail: str = "", headers: dict[str, str] | None = None
) -> Reply:
    """An ``Error`` body; ``detail`` is appended to the message (e.g. the schema error path)."""
    code, message = code_message
    text = f"{message} {detail}" if detail else message
    return json_reply(status, {"code": code, "message": text}, headers)


def gateway_reply(status: int, reason: str) -> Reply:
    """An HTML page from a load balancer, not a JSON body: clients must cope with that as well."""
    title = f"{status} {reason}"
    body = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
    return Reply(status, {"content-type": "text/html"}, body.encode("ascii"))


def events_reply(results: list[dict[str, str]]) -> Reply:
    """200 ``ConversionApiResponse``, or 422 ``DetailedError`` around it when any event failed."""
    processed = sum(1 for result in results if result["status"] == "processed")
    response = {"num_events_received": len(results), "num_events_processed": processed, "events": results}
    if processed == len(results):
        return json_reply(200, response)
    code, message = PARTIAL_FAILURE
    return json_reply(422, {"code": code, "message": message, "details": response})
