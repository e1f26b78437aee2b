"""Pinterest Conversions API v5: the request body, and a pure classification of every answer.

`build_body()` and `classify()` are pure functions; `PinterestAdapter.send()` only glues them to
an `httpx.Client`, so most of this module is tested without a network.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

from tracklayer_mw.events import EVENT_NAMES, Event
from tracklayer_mw.hashing import USER_FIELDS

PARTNER_NAME = "ss-tracklayer"
MAX_BATCH = 1000
_CUSTOM_KEYS = (
    "value",
    "currency",
    "order_id",
    "num_items",
    "search_string",
    "content_ids",
    "contents",
    "content_name",
    "content_category",
    "content_brand",
)
_MAX_MESSAGE = 500
# check_circular=False: the body is built here from plain data, it cannot hold a cycle (~8 % faster).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)


@dataclass(frozen=True, slots=True)
class EventResult:
    processed: bool
    error: str = ""
    warning: str = ""


_PROCESSED = EventResult(processed=True)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What one request came to.

    `results`: Pinterest judged each event (200 or 422): processed ones are done, failed ones are
    dead letters. `retry`: nothing was judged (429, 5xx, timeout, connection error): try all again.
    `reject`: the whole request was refused for good (400, 401, 403, ...): all dead letters.
    """

    kind: Literal["results", "retry", "reject"]
    results: tuple[EventResult, ...] = ()
    message: str = ""
    status: int | None = None
    retry_after: float | None = None

    @property
    def rate_limited(self) -> bool:
        return self.status == 429


class Adapter(Protocol):
    """One destination. Only Pinterest is built; the protocol keeps the worker platform-neutral."""

    name: str
    max_batch: int

    def send(self, client: httpx.Client, events: Sequence[Event]) -> SendOutcome: ...


# --- the request ---------------------------------------------------------------------------------


def to_pinterest(event: Event) -> dict[str, Any]:
    """One element of `data[]`, valid against ConversionEvents in the official schema."""
    user: dict[str, Any] = {
        USER_FIELDS[name]: list(values)
        for name, values in event.user.items()
        if values and name in USER_FIELDS
    }
    if event.client_ip:
        user["client_ip_address"] = event.client_ip
    if event.user_agent:
        user["client_user_agent"] = event.user_agent
    if event.click_id:
        user["click_id"] = event.click_id

    custom = {key: event.custom[key] for key in _CUSTOM_KEYS if key in event.custom}
    if event.opt_out_type:
        custom["opt_out_type"] = event.opt_out_type

    item: dict[str, Any] = {
        "event_name": EVENT_NAMES[event.event][0],
        "action_source": "web",
        "event_time": event.event_time,
        "event_id": event.event_id,
        "user_data": user,
        "partner_name": PARTNER_NAME,
        "opt_out": event.opt_out,
    }
    if event.url:
        item["event_source_url"] = event.url
    if custom:
        item["custom_data"] = custom
    return item


def build_body(events: Sequence[Event]) -> dict[str, Any]:
    if not 1 <= len(events) <= MAX_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH} events, not {len(events)}")
    return {"data": [to_pinterest(event) for event in events]}


# --- the answer ----------------------------------------------------------------------------------


def _short(text: object) -> str:
    return str(text or "").strip()[:_MAX_MESSAGE]


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` as seconds or an HTTP date (Pinterest documents none, but proxies send it)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²" (latin-1 0xB2) is a digit to isdigit() but not to float()
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _per_event(data: Any, count: int) -> tuple[EventResult, ...] | None:
    if not isinstance(data, Mapping) or not isinstance(data.get("events"), list):
        return None
    results = []
    for item in data["events"][:count]:
        entry = item if isinstance(item, Mapping) else {}
        processed = entry.get("status") != "failed"
        error, warning = entry.get("error_message"), entry.get("warning_message")
        if processed and not error and not warning:
            results.append(_PROCESSED)  # the usual answer: one shared result, nothing to trim
        else:
            results.append(EventResult(processed, _short(error), _short(warning)))
    # Pinterest answers in request order; an answer shorter than the batch leaves the rest judged
    # by the status code alone (processed on 200).
    results.extend(_PROCESSED for _ in range(count - len(results)))
    return tuple(results)


def classify(status: int, headers: Mapping[str, str], body: bytes, count: int) -> SendOutcome:
    """Decide, from Pinterest's answer alone, what happens to each of the `count` events sent."""
    data = _json(body)
    message = (
        _short(data.get("message"))
        if isinstance(data, Mapping)
        else _short(body[:200].decode(errors="replace"))
    )
    if status == 200:
        if not isinstance(data, Mapping):
            # Not Pinterest's JSON (a proxy or captive portal page, a wrong api_base): nothing was judged.
            message = f"HTTP 200 without a JSON answer: {message}".strip()
            return SendOutcome("retry", message=message, status=status)
        results = _per_event(data, count) or (_PROCESSED,) * count
        return SendOutcome("results", results, status=status)
    if status == 422:
        details = data.get("details") if isinstance(data, Mapping) else None
        judged = _per_event(details, count)
        if judged is None:
            judged = tuple(
                EventResult(processed=False, error=message or "rejected (422)") for _ in range(count)
            )
        return SendOutcome("results", judged, message=message, status=status)
    if status in (408, 425, 429) or status >= 500:
        retry_after = retry_after_seconds(headers.get("retry-after"))
        return SendOutcome(
            "retry", message=f"HTTP {status}: {message}".strip(), status=status, retry_after=retry_after
        )
    return SendOutcome("reject", message=f"HTTP {status}: {explain(status, message)}", status=status)


def explain(status: int, message: str = "") -> str:
    """Pinterest's refusal in words a developer can act on."""
    hints = {
        400: "Pinterest found the request invalid",
        401: "the access token is wrong or expired: generate a Conversion Access Token in Ads Manager "
        "(Conversions > Set up API) and set TRACKLAYER_PINTEREST_ACCESS_TOKEN",
        403: "the token's user has no access to this ad account: check TRACKLAYER_PINTEREST_AD_ACCOUNT_ID, "
        "or give the token's user an Admin, Analyst, Audience or Campaign role on it",
        404: "no such ad account or endpoint: check TRACKLAYER_PINTEREST_AD_ACCOUNT_ID and "
        "TRACKLAYER_PINTEREST_API_BASE",
    }
    hint = hints.get(status, "Pinterest refused the request")
    return f"{hint} ({message})" if message else hint


# --- the adapter ---------------------------------------------------------------------------------


class PinterestAdapter:
    name = "pinterest"
    max_batch = MAX_BATCH

    def __init__(
        self, *, ad_account_id: str, access_token: str, api_base: str, test_mode: bool = False
    ) -> None:
        self.url = f"{api_base.rstrip('/')}/ad_accounts/{ad_account_id}/events"
        self._headers = {
            "Authorization": f"Bearer {access_token}",
            "Content-Type": "application/json",
            "User-Agent": "tracklayer_mw",
        }
        self.test_mode = test_mode

    def __repr__(self) -> str:  # the token stays out of every repr
        return f"PinterestAdapter(url={self.url!r}, test_mode={self.test_mode})"

    def send(self, client: httpx.Client, events: Sequence[Event], *, test: bool | None = None) -> SendOutcome:
        body = _ENCODER.encode(build_body(events)).encode()
        params = {"test": "true"} if (self.test_mode if test is None else test) else None
        try:
            response = client.post(self.url, content=body, headers=self._headers, params=params)
        except httpx.TimeoutException:
            return SendOutcome("retry", message="timed out waiting for Pinterest")
        except httpx.RequestError as exc:  # TransportError, and DecodingError from a garbled gzip body
            return SendOutcome("retry", message=f"could not reach Pinterest ({type(exc).__name__})")
        return classify(response.status_code, response.headers, response.content, len(events))
