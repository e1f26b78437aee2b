"""The one normalized event schema (CONTRACT.md §5), shared by the browser and the server.

`parse_event()` turns untrusted input into an `Event`: every field checked, user data hashed on
the spot, so nothing raw ever reaches the outbox. Errors name the field path.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from tracklayer_mw.hashing import UserDataError, hash_user

# TrackLayer name -> (Pinterest API event_name, Pinterest tag event)
EVENT_NAMES: dict[str, tuple[str, str]] = {
    "PageVisit": ("page_visit", "pagevisit"),
    "ViewCategory": ("view_category", "viewcategory"),
    "Search": ("search", "search"),
    "AddToCart": ("add_to_cart", "addtocart"),
    "AddToWishlist": ("add_to_wishlist", "addtowishlist"),
    "AddPaymentInfo": ("add_payment_info", "addpaymentinfo"),
    "Checkout": ("initiate_checkout", "initiatecheckout"),
    "Purchase": ("checkout", "checkout"),
    "Lead": ("lead", "lead"),
    "Signup": ("signup", "signup"),
    "WatchVideo": ("watch_video", "watchvideo"),
    "ViewContent": ("view_content", "viewcontent"),
    "Subscribe": ("subscribe", "subscribe"),
    "Custom": ("custom", "custom"),
}

MAX_AGE_SECONDS = 7 * 24 * 3600
MAX_FUTURE_SECONDS = 5 * 60
MAX_ORDER_ID_LENGTH = 100
EVENT_ID_RE = re.compile(r"^[A-Za-z0-9._~:%-]{1,128}\Z")  # \Z: "$" would let a trailing newline through
_CURRENCY_RE = re.compile(r"^[A-Za-z]{3}$")
_MILLISECONDS_FROM = 100_000_000_000  # a seconds value this large would be the year 5138
_TOP_LEVEL = {"event", "event_id", "event_time", "url", "user", "custom", "pixel"}
_TEXT_FIELDS = ("order_id", "search_string", "content_name", "content_category", "content_brand")
_CONTENT_TEXT = ("id", "item_name", "item_category", "item_brand")
_MAX_TEXT = 500
_MAX_ITEMS = 100

Source = Literal["browser", "server"]


class EventError(ValueError):
    """A bad event: `path` names the field (`custom.contents[0].quantity`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


def checked_event_name(name: object) -> str:
    """`name`, when it is one of EVENT_NAMES; else EventError (a ValueError)."""
    if not isinstance(name, str) or name not in EVENT_NAMES:
        raise EventError("event", f"unknown event {name!r}; expected one of {', '.join(EVENT_NAMES)}")
    return name


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event whose user data is already hashed: safe to store and to log by id."""

    event: str
    event_id: str
    event_time: int
    url: str | None = None
    user: dict[str, list[str]] = field(default_factory=dict)  # tracklayer field -> sha256 hex values
    custom: dict[str, Any] = field(default_factory=dict)
    click_id: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    opt_out: bool = False
    opt_out_type: str | None = None
    pixel: bool = False  # the browser fired the Pinterest tag twin with the same event_id
    source: str = "server"

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Event:
        try:  # what to_payload() wrote: every field, nothing else (the worker reads one per event sent)
            return cls(**payload)
        except TypeError:  # a payload with fields this version does not know, or without optional ones
            return cls(**{key: payload[key] for key in cls.__dataclass_fields__ if key in payload})

    def with_context(self, **changes: Any) -> Event:
        return replace(self, **changes)

    @property
    def has_match_keys(self) -> bool:
        """Pinterest needs an email, or the client IP together with the user agent."""
        return bool(self.user.get("email")) or bool(self.client_ip and self.user_agent)


def event_id_for_order(event: str, order_id: str) -> str:
    """`<event>:<order_id>` with every byte outside [A-Za-z0-9._~-] percent-encoded (CONTRACT.md §5)."""
    encoded = quote(order_id, safe="")
    if len(encoded) > MAX_ORDER_ID_LENGTH:
        raise EventError(
            "custom.order_id",
            f"longer than {MAX_ORDER_ID_LENGTH} characters once encoded; pass an event_id instead",
        )
    return f"{event}:{encoded}"


def parse_event(
    raw: object,
    *,
    now: float,
    source: Source,
    default_phone_country: str | None = None,
) -> Event:
    """Validate one event object from the browser or the server; raises `EventError`."""
    if not isinstance(raw, Mapping):
        raise EventError("event", "must be a JSON object")
    unknown = sorted(str(key) for key in raw if key not in _TOP_LEVEL)
    if unknown:
        raise EventError(unknown[0], f"unknown field; expected one of {', '.join(sorted(_TOP_LEVEL))}")

    name = checked_event_name(raw.get("event"))

    custom = _parse_custom(raw.get("custom"))
    event_id = raw.get("event_id")
    if event_id is None or event_id == "":
        order_id = custom.get("order_id")
        event_id = event_id_for_order(name, order_id) if order_id else str(uuid.uuid4())
    elif not isinstance(event_id, str) or not EVENT_ID_RE.match(event_id):
        raise EventError("event_id", "must be 1-128 characters of A-Z a-z 0-9 . _ ~ : % -")

    pixel = raw.get("pixel", False)
    if not isinstance(pixel, bool):
        raise EventError("pixel", "must be true or false")

    try:
        user = hash_user(_as_mapping(raw.get("user"), "user"), default_phone_country=default_phone_country)
    except UserDataError as exc:
        path, _, message = str(exc).partition(": ")
        raise EventError(path, message or str(exc)) from None

    return Event(
        event=name,
        event_id=event_id,
        event_time=_parse_event_time(raw.get("event_time"), now),
        url=_parse_url(raw.get("url")),
        user=user,
        custom=custom,
        pixel=pixel,
        source=source,
    )


def merge_payloads(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """One user action reported twice (browser beacon and server `track()`): keep every signal once.

    The outbox calls this when an event with the same name and id is still waiting, so Pinterest
    receives one event carrying the browser's click id and the server's hashed email together.
    """
    merged = dict(old)
    for key, value in new.items():
        if key == "user":
            user = {name: list(values) for name, values in (old.get("user") or {}).items()}
            for name, values in (value or {}).items():
                user[name] = list(dict.fromkeys([*user.get(name, []), *values]))
            merged["user"] = user
        elif key == "custom":
            merged["custom"] = {**(value or {}), **(old.get("custom") or {})}
        elif key in ("pixel", "opt_out"):
            merged[key] = bool(old.get(key)) or bool(value)
        elif key == "source":
            merged[key] = "+".join(sorted((set(str(old.get(key, "")).split("+")) | {str(value)}) - {""}))
        elif merged.get(key) in (None, "", [], {}):
            merged[key] = value
    return merged


# --- field parsers -------------------------------------------------------------------------------


def _as_mapping(value: object, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise EventError(path, "must be an object")
    return value


def _parse_event_time(value: object, now: float) -> int:
    if value is None:
        return int(now)
    # A range check, not math.isfinite() (OverflowError on a huge JSON integer); NaN and inf fail it too.
    if isinstance(value, bool) or not isinstance(value, int | float) or not -(2**63) <= value < 2**63:
        raise EventError("event_time", "must be a Unix time in seconds (or milliseconds)")
    seconds = value / 1000 if value >= _MILLISECONDS_FROM else value
    if seconds < now - MAX_AGE_SECONDS:
        raise EventError("event_time", "more than 7 days old; Pinterest does not accept it")
    if seconds > now + MAX_FUTURE_SECONDS:
        raise EventError("event_time", "more than 5 minutes in the future; check the clock")
    return int(seconds)


def _parse_url(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 2048:
        raise EventError("url", "must be an absolute http(s) URL of at most 2048 characters")
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. "http://[::1" (unbalanced IPv6 brackets)
        raise EventError("url", "must be an absolute http(s) URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(ch in value for ch in "\r\n\t "):
        raise EventError("url", "must be an absolute http(s) URL")
    return value


def _text(value: object, path: str, *, limit: int = _MAX_TEXT) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise EventError(path, "must be a string")
    text = str(value).strip()
    if not text or len(text) > limit:
        raise EventError(path, f"must be 1-{limit} characters")
    return text


def _money(value: object, path: str) -> str:
    """Money goes to Pinterest as a decimal string, never in exponent notation."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise EventError(path, "must be a number")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise EventError(path, "must be a number") from None
    if not amount.is_finite() or abs(amount) >= Decimal(10) ** 12:
        raise EventError(path, "must be a finite number below 10^12")
    # Round to 12 places first: "1e-999999" (9 bytes) would otherwise become a million-character string.
    return format(amount.quantize(Decimal("1e-12")).normalize(), "f")


def _count(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        raise EventError(path, "must be a whole number from 0 to 1000000")
    return value


def _list(value: object, path: str) -> Sequence[Any]:
    if not isinstance(value, list | tuple) or len(value) > _MAX_ITEMS:
        raise EventError(path, f"must be a list of at most {_MAX_ITEMS} items")
    return value


def _parse_contents(value: object) -> list[dict[str, Any]]:
    contents = []
    for index, item in enumerate(_list(value, "custom.contents")):
        path = f"custom.contents[{index}]"
        if not isinstance(item, Mapping):
            raise EventError(path, "must be an object")
        entry: dict[str, Any] = {}
        for key, raw in item.items():
            if key in _CONTENT_TEXT:
                entry[key] = _text(raw, f"{path}.{key}")
            elif key == "quantity":
                entry[key] = _count(raw, f"{path}.quantity")
            elif key == "item_price":
                entry[key] = _money(raw, f"{path}.item_price")
            else:
                known = ", ".join((*_CONTENT_TEXT, "quantity", "item_price"))
                raise EventError(f"{path}.{key}", f"unknown field; expected one of {known}")
        contents.append(entry)
    return contents


def _parse_custom(value: object) -> dict[str, Any]:
    custom: dict[str, Any] = {}
    for key, raw in _as_mapping(value, "custom").items():
        path = f"custom.{key}"
        if raw is None:
            continue
        if key == "value":
            custom[key] = _money(raw, path)
        elif key == "currency":
            if not isinstance(raw, str) or not _CURRENCY_RE.match(raw.strip()):
                raise EventError(path, "must be a three-letter ISO 4217 code such as USD")
            custom[key] = raw.strip().upper()
        elif key in _TEXT_FIELDS:
            custom[key] = _text(raw, path)
        elif key == "num_items":
            custom[key] = _count(raw, path)
        elif key == "content_ids":
            custom[key] = [_text(item, f"{path}[{i}]") for i, item in enumerate(_list(raw, path))]
        elif key == "contents":
            custom[key] = _parse_contents(raw)
        else:
            known = ", ".join(("value", "currency", "num_items", "content_ids", "contents", *_TEXT_FIELDS))
            raise EventError(path, f"unknown field; expected one of {known}")
    return custom
