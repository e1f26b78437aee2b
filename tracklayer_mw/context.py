"""The click context (epik, provenance, landing, utm_*) and what a request says about its client.

Everything here is a pure function of request data; the engine decides what to do with it.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit, urlunsplit

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
# Provenance, strongest first: a click seen in the URL beats one carried by a linker token, which beats
# the page URL a beacon reports, which beats a cookie the Pinterest tag wrote.
SOURCES = ("url", "linker", "referrer", "cookie")
TAG_COOKIES = ("_derived_epik", "_pin_unauth")

# Values we copy into Set-Cookie headers: cookie-safe characters only (RFC 6265 cookie-octet
# without `%`-free restrictions), so a crafted value can never add attributes or headers.
_COOKIE_VALUE_RE = re.compile(r"^[A-Za-z0-9!#$%&'()*+./:<=>?@\[\]^_`{|}~-]{1,512}$")
_MAX_LANDING = 512
_MAX_UTM = 100
# `(?<!cu)`: CUBOT is a phone brand ("CUBOT P30" in real Android user agents), not a crawler.
_BOT_RE = re.compile(
    r"(?<!cu)bot\b|(?<!cu)bot/|crawl|spider|slurp|facebookexternalhit|bingpreview|embedly|quora link preview|"
    r"pinterest/0\.|lighthouse|pagespeed|prerender|headless-shell|phantomjs|scrapy",
    re.IGNORECASE,
)


def cookie_safe(value: str | None) -> str | None:
    """The value when it can be written into a cookie untouched, else None (ignored)."""
    if value is None or not _COOKIE_VALUE_RE.match(value):
        return None
    return value


@dataclass(frozen=True, slots=True)
class ClickContext:
    epik: str
    source: str
    clicked_at: int
    landing_url: str | None = None
    utm: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"e": self.epik, "s": self.source, "t": self.clicked_at}
        if self.landing_url:
            data["l"] = self.landing_url
        if self.utm:
            data["u"] = dict(self.utm)
        return data

    @classmethod
    def from_dict(cls, data: object) -> ClickContext | None:
        """Rebuild from a verified token or cookie; anything malformed is None, never an error."""
        if not isinstance(data, Mapping):
            return None
        epik, source, clicked_at = data.get("e"), data.get("s"), data.get("t")
        landing = data.get("l")
        utm = data.get("u") or {}
        if (
            not isinstance(epik, str)
            or cookie_safe(epik) is None
            or source not in SOURCES
            or not isinstance(clicked_at, int)
            or isinstance(clicked_at, bool)
            or not (landing is None or isinstance(landing, str))
            or not isinstance(utm, Mapping)
        ):
            return None
        pairs = tuple(
            (key, value[:_MAX_UTM])
            for key, value in utm.items()
            if key in UTM_KEYS and isinstance(value, str)
        )
        return cls(epik, str(source), clicked_at, landing[:_MAX_LANDING] if landing else None, pairs)

    def adopted_as(self, source: str) -> ClickContext:
        return replace(self, source=source)


# An email address in a page URL (a newsletter link, a form sent by GET) is personal data.
_EMAIL_RE = re.compile(r"[^\s@/?&=#:;,]+@[^\s@/?&=#:;,]+\.[a-z]{2,}", re.IGNORECASE)


def without_emails(url: str) -> str:
    """`url` without the query pairs (and fragment) holding an email address, the rest as written.

    URLs are stored in the outbox and sent as `event_source_url`: raw personal data must be neither.
    """
    if "@" not in unquote_plus(url):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.partition("?")[0].partition("#")[0]
    kept = [pair for pair in parts.query.split("&") if pair and not _EMAIL_RE.search(unquote_plus(pair))]
    fragment = "" if _EMAIL_RE.search(unquote_plus(parts.fragment)) else parts.fragment
    return urlunsplit(parts._replace(query="&".join(kept), fragment=fragment))


def query_params(query_string: str) -> dict[str, list[str]]:
    try:
        return parse_qs(query_string, keep_blank_values=False, max_num_fields=200)
    except ValueError:  # more fields than max_num_fields: treat as no parameters at all
        return {}


def epik_from_params(params: Mapping[str, Sequence[str]]) -> str | None:
    """The ad click id. Pinterest's own tag compares the name case-insensitively."""
    for key, values in params.items():
        if key.lower() == "epik" and values:
            return cookie_safe(values[-1].strip())
    return None


def click_from_url(
    url: str, params: Mapping[str, Sequence[str]], *, source: str, now: float
) -> ClickContext | None:
    epik = epik_from_params(params)
    if epik is None:
        return None
    utm = tuple((key, params[key][-1][:_MAX_UTM]) for key in UTM_KEYS if params.get(key))
    return ClickContext(epik, source, int(now), without_emails(url)[:_MAX_LANDING], utm)


def click_from_page_url(url: str, *, now: float) -> ClickContext | None:
    """The page URL a beacon reports (a cached page could not set cookies on its own response)."""
    return click_from_url(url, query_params(urlsplit(url).query), source="referrer", now=now)


def fresher(current: ClickContext | None, candidate: ClickContext | None) -> ClickContext | None:
    """A fresher click always wins; on a tie the stronger provenance does. A stale value never wins."""
    if candidate is None:
        return current
    if current is None:
        return candidate
    if candidate.epik == current.epik:
        return current  # the same click seen again: keep when and where it was first seen
    if candidate.clicked_at != current.clicked_at:
        return candidate if candidate.clicked_at > current.clicked_at else current
    return candidate if SOURCES.index(candidate.source) <= SOURCES.index(current.source) else current


# --- the client ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # ipaddress is slow, and the same clients come back
def _parse_ip(value: str) -> str | None:
    value = value.strip().strip('"')
    if value.startswith("["):  # "[2001:db8::1]:443"
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:  # "203.0.113.7:51234"
        value = value.partition(":")[0]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def forwarded_value(values: Iterable[str], hops: int, *, set_by_one: bool = False) -> str | None:
    """The entry `hops` from the right of a comma-separated header, like werkzeug's ProxyFix.

    `set_by_one`: headers such as X-Forwarded-Proto are usually set once by the outermost proxy
    rather than appended by each; fewer entries than hops then all came from trusted proxies.
    """
    entries = [item.strip() for value in values for item in value.split(",") if item.strip()]
    if hops < 1 or not entries or (len(entries) < hops and not set_by_one):
        return None
    return entries[-min(hops, len(entries))]


def client_ip(peer: str | None, forwarded_for: Iterable[str], trusted_hops: int) -> str | None:
    """Trust `X-Forwarded-For` only as far as the configured proxies; never "first address wins"."""
    if trusted_hops > 0:
        forwarded = forwarded_value(forwarded_for, trusted_hops)
        if forwarded is not None:
            return _parse_ip(forwarded)
    return _parse_ip(peer) if peer else None


_HOST_RE = re.compile(r"^[a-z0-9.-]{1,253}$")


def normalize_host(host_header: str | None) -> str | None:
    """The host name of a Host header, lower-cased, without the port; None when it is not a host name."""
    if not host_header:
        return None
    host = host_header.strip().lower()
    if host.startswith("["):
        return None  # an IPv6 literal: never a cookie domain or linked host
    host = host.rpartition(":")[0] if ":" in host else host
    host = host.rstrip(".")
    return host if _HOST_RE.match(host) else None


def is_bot(user_agent: str | None) -> bool:
    return bool(user_agent) and _is_bot_agent(user_agent or "")


@functools.lru_cache(maxsize=4096)  # a site sees few distinct user agents; the regex scan is ~17 us
def _is_bot_agent(user_agent: str) -> bool:
    return _BOT_RE.search(user_agent) is not None
