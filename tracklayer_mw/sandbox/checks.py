"""Per-event checks Pinterest makes beyond the JSON schema, as pure functions.

The schema (5.23) no longer has enums for ``event_name``/``action_source`` and says nothing about
hashing or timestamps; Pinterest enforces those when it processes each event. References are to
``pinterest/CAPI_V5.md`` in the project's shared notes (sections in brackets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# [§4] The 5.23 spec's list; any other name "will not be accepted".
EVENT_NAMES = frozenset(
    {
        "add_payment_info",
        "add_to_cart",
        "add_to_wishlist",
        "app_install",
        "checkout",
        "custom",
        "initiate_checkout",
        "lead",
        "page_visit",
        "search",
        "signup",
        "subscribe",
        "view_category",
        "view_content",
        "watch_video",
    }
)
# [§2] action_source values.
ACTION_SOURCES = frozenset({"app_android", "app_ios", "web", "offline"})
# [§3] Fields that must hold SHA-256 hex digests; the rest of user_data is sent in the clear.
HASHED_FIELDS = (
    "em",
    "ph",
    "fn",
    "ln",
    "ge",
    "db",
    "ct",
    "st",
    "zp",
    "country",
    "external_id",
    "hashed_maids",
)
# [§5] "Only events that occurred within the previous seven days may be sent" (third-party).
MAX_AGE_SECONDS = 7 * 24 * 3600
# How far ahead of the sandbox clock an event_time may be (clock skew); milliseconds sent by
# mistake land decades in the future and fail here.
MAX_FUTURE_SECONDS = 3600
# [§5] Events received more than ~1 hour after they happened are reported as offline.
OFFLINE_AFTER_SECONDS = 3600
# [§2] value, item_price and predicted_ltv are strings "parsed as a double". Stricter than Java's
# parser on purpose (no "NaN", no hex, no surrounding spaces): a sender should write plain decimals.
_DECIMAL = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")  # fullmatch: "$" would also take a trailing "\n"
# What a well-behaved sender writes: lower-case digests. Matching it means neither the error nor
# the upper-case warning of _SHA256_HEX applies, so the usual event takes one regex per value.
_LOWER_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# Events whose value is a money amount that needs a currency to count (brief: checkout, add to cart).
_VALUE_NEEDS_CURRENCY = frozenset({"checkout", "add_to_cart"})

PAST_TIMESTAMP = "Invalid event_timestamp parameter. Given timestamp is in the past."
FUTURE_TIMESTAMP = "Invalid event_timestamp parameter. Given timestamp is in the future."


@dataclass(slots=True)
class EventVerdict:
    """What the sandbox thinks of one schema-valid event."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.errors)


# The sandbox checks every event of every request, so these functions are written for the usual
# event (nothing to say): no message text is built until there is something wrong.


def check_event(event: dict[str, Any], now: float) -> EventVerdict:
    """Pinterest's processing rules for one event that already passed the schema."""
    verdict = EventVerdict()
    _check_names(event, verdict)
    _check_time(event, now, verdict)
    _check_user_data(event.get("user_data", {}), verdict)
    _check_custom_data(event, verdict)
    if event.get("action_source") == "web" and not event.get("event_source_url"):
        verdict.warnings.append("event_source_url is missing; it is recommended for web events.")
    return verdict


def _check_names(event: dict[str, Any], verdict: EventVerdict) -> None:
    name = event["event_name"]
    if name not in EVENT_NAMES:
        verdict.errors.append(
            f"Invalid event_name parameter. {name!r} is not a supported event name; "
            f"use one of: {', '.join(sorted(EVENT_NAMES))}."
        )
    source = event["action_source"]
    if source not in ACTION_SOURCES:
        verdict.errors.append(
            f"Invalid action_source parameter. {source!r} is not one of: {', '.join(sorted(ACTION_SOURCES))}."
        )
    if event["event_id"] == "":
        verdict.warnings.append("event_id is empty; this event cannot be deduplicated.")


def _check_time(event: dict[str, Any], now: float, verdict: EventVerdict) -> None:
    age = now - event["event_time"]
    if age > MAX_AGE_SECONDS:
        # [§5] the observed message starts like this; the rest is ours.
        verdict.errors.append(f"{PAST_TIMESTAMP} Events older than 7 days are not accepted.")
    elif age < -MAX_FUTURE_SECONDS:
        verdict.errors.append(
            f"{FUTURE_TIMESTAMP} event_time must be Unix seconds, not later than 1 hour from now."
        )
    elif age > OFFLINE_AFTER_SECONDS and event["action_source"] != "offline":
        verdict.warnings.append(
            "event_time is more than 1 hour ago; the event will be attributed as an offline event."
        )


def _check_user_data(user_data: dict[str, Any], verdict: EventVerdict) -> None:
    for key in HASHED_FIELDS:
        values = user_data.get(key)
        if values is None:
            continue
        if not values:
            verdict.warnings.append(f"user_data.{key} is an empty list; it carries no match signal.")
            continue
        if all(map(_LOWER_SHA256_HEX.fullmatch, values)):
            continue
        if not all(map(_SHA256_HEX.fullmatch, values)):
            verdict.errors.append(
                f"Invalid user_data.{key} parameter. Values must be SHA-256 hashed "
                "(64 hexadecimal characters)."
            )
        elif any(value != value.lower() for value in values):
            verdict.warnings.append(f"user_data.{key} holds upper-case hex; send lower-case SHA-256 digests.")


def _check_custom_data(event: dict[str, Any], verdict: EventVerdict) -> None:
    custom = event.get("custom_data")
    if not custom:
        return
    for key in ("value", "predicted_ltv"):
        value = custom.get(key)
        if value is not None and not _DECIMAL.match(value):
            verdict.errors.append(_not_decimal(f"custom_data.{key}", value))
    for index, item in enumerate(custom.get("contents") or ()):
        price = item.get("item_price")
        if price is not None and not _DECIMAL.match(price):
            verdict.errors.append(_not_decimal(f"custom_data.contents[{index}].item_price", price))
    currency = custom.get("currency")
    if currency is not None and not _CURRENCY.match(currency):
        verdict.warnings.append(f"custom_data.currency {currency!r} is not an ISO-4217 code such as 'USD'.")
    if event["event_name"] in _VALUE_NEEDS_CURRENCY and custom.get("value") is not None and not currency:
        verdict.warnings.append(
            "custom_data.currency is missing; the value is read in the ad account's default currency."
        )


def _not_decimal(where: str, value: str) -> str:
    return f"Invalid {where} parameter. {value!r} is not a decimal number."
