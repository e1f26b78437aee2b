"""A protocol-neutral view of one request, built from an ASGI scope or a WSGI environ.

The engine only ever sees a `RequestView`; `asgi.py` and `wsgi.py` build it, and `state_of()`
finds the per-request state again from whatever request object a host app hands to `track()`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any

from tracklayer_mw.context import client_ip, forwarded_value, normalize_host

if TYPE_CHECKING:
    from tracklayer_mw.engine import RequestState

STATE_KEY = "tracklayer"  # scope["tracklayer"] / environ["tracklayer"]: the RequestState
INJECTED_KEY = "tracklayer.injected"  # set when a template placed the snippet itself
_MAX_COOKIE_HEADER = 8192


def parse_cookies(header: str) -> dict[str, str]:
    """Lenient like browsers: one bad pair never hides the others; never raises."""
    cookies: dict[str, str] = {}
    if len(header) > _MAX_COOKIE_HEADER:
        header = header[:_MAX_COOKIE_HEADER].rpartition(";")[0]  # whole pairs only: never a value cut short
    for chunk in header.split(";"):
        name, sep, value = chunk.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or name in cookies:
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                value = SimpleCookie(f"x={value}")["x"].value
            except (CookieError, KeyError):
                continue
        cookies[name] = value
    return cookies


@dataclass(slots=True)
class RequestView:
    method: str
    scheme: str
    host: str | None
    path: str
    query_string: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    client_ip: str | None
    # The ASGI scope or WSGI environ the view was read from (a consent callable may look at it).
    # Never the mapping that holds the request's state: that would be a reference cycle per request.
    raw: Any = field(repr=False)
    cookies: dict[str, str] = field(default_factory=dict)
    authority: str | None = None  # host[:port] as requested, for URLs (`host` has no port)

    @property
    def url(self) -> str:
        host = self.authority or self.host or "localhost"
        query = f"?{self.query_string}" if self.query_string else ""
        return f"{self.scheme}://{host}{self.path}{query}"

    @property
    def secure(self) -> bool:
        return self.scheme == "https"


_AUTHORITY_RE = re.compile(r"^(?:[a-z0-9.-]{1,253}|\[[0-9a-f:.]{2,45}\])(?::[0-9]{1,5})?$")


def _authority(host_header: str | None) -> str | None:
    """The Host header's `host[:port]` when it is one (an IPv6 literal included), else None."""
    authority = (host_header or "").strip().lower()
    return authority if _AUTHORITY_RE.match(authority) else None


def _effective(
    scheme: str, host_header: str | None, peer: str | None, headers: Mapping[str, str], hops: int
) -> tuple[str, str | None, str | None, str | None]:
    if hops > 0:
        proto = forwarded_value([headers.get("x-forwarded-proto", "")], hops, set_by_one=True)
        if proto in ("http", "https"):
            scheme = proto
        forwarded_host = forwarded_value([headers.get("x-forwarded-host", "")], hops, set_by_one=True)
        host_header = forwarded_host or host_header
    ip = client_ip(peer, [headers.get("x-forwarded-for", "")], hops)
    return scheme, normalize_host(host_header), _authority(host_header), ip


def _join(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in pairs:
        # HTTP/2 and HTTP/3 may send one Cookie field per pair: those join with "; " (RFC 9113 8.2.3).
        separator = "; " if name == "cookie" else ", "
        headers[name] = f"{headers[name]}{separator}{value}" if name in headers else value
    return headers


def view_from_scope(scope: Mapping[str, Any], trusted_hops: int) -> RequestView:
    headers = _join(
        (name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in scope["headers"]
    )
    client = scope.get("client")
    peer = client[0] if client else None
    scheme, host, authority, ip = _effective(
        scope.get("scheme", "http"), headers.get("host"), peer, headers, trusted_hops
    )
    path = scope.get("path", "/")
    view = RequestView(
        method=scope.get("method", "GET"),
        scheme="https" if scheme in ("https", "wss") else "http",
        host=host,
        path=path,
        query_string=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        client_ip=ip,
        raw=scope,
        authority=authority,
    )
    view.cookies = parse_cookies(headers.get("cookie", ""))
    return view


def view_from_environ(environ: Mapping[str, Any], trusted_hops: int) -> RequestView:
    headers = _join(
        (key[5:].replace("_", "-").lower(), str(value))
        for key, value in environ.items()
        if key.startswith("HTTP_")
    )
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = str(environ[key])
    host_header = headers.get("host") or environ.get("SERVER_NAME")
    scheme, host, authority, ip = _effective(
        environ.get("wsgi.url_scheme", "http"), host_header, environ.get("REMOTE_ADDR"), headers, trusted_hops
    )
    path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/"
    # PEP 3333 hands PATH_INFO over as latin-1-decoded bytes; restore the UTF-8 text.
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        path = path.encode("latin-1").decode("utf-8")
    view = RequestView(
        method=environ.get("REQUEST_METHOD", "GET"),
        scheme=scheme,
        host=host,
        path=path,
        query_string=environ.get("QUERY_STRING", ""),
        headers=headers,
        client_ip=ip,
        raw=environ,
        authority=authority,
    )
    view.cookies = parse_cookies(headers.get("cookie", ""))
    return view


CLICK_COOKIES = ("_epik=", "_tl=", "_pin_unauth=", "_derived_epik=")
_CLICK_COOKIES_RAW = tuple(name.encode() for name in CLICK_COOKIES)


def url_carries_click(query_string: str | bytes) -> bool:
    """A click id or a linker token in the URL: acted on before the app runs (cookies, `_tlx`)."""
    if isinstance(query_string, bytes):
        query = query_string.lower()
        return b"epik" in query or b"_tlx" in query
    query_text = query_string.lower()
    return "epik" in query_text or "_tlx" in query_text


def cookies_carry_click(cookie_header: str) -> bool:
    """A cookie tracklayer or the Pinterest tag wrote: its click may be re-issued or carried on."""
    return any(name in cookie_header for name in CLICK_COOKIES)


def scope_cookies_carry_click(scope: Mapping[str, Any]) -> bool:
    """`cookies_carry_click` on an ASGI scope's raw header bytes (latin-1 decoding maps bytes to the
    same characters, so both agree), without decoding or joining anything."""
    for name, value in scope["headers"]:
        if name == b"cookie" and any(cookie in value for cookie in _CLICK_COOKIES_RAW):
            return True
    return False


class DeferredState:
    """A request's state, built on first use (most responses never need it).

    `raw` is the scope or environ the state is built from. It must not be (or lead to) the mapping
    that holds this object: that would be a reference cycle per request, which only the cyclic
    garbage collector frees (its pauses showed up as the middleware's p99). For the same reason
    `build` is a bound method, not a closure over the request."""

    __slots__ = ("_build", "built", "raw")

    def __init__(self, build: Callable[[Mapping[str, Any]], RequestState], raw: Mapping[str, Any]) -> None:
        self._build = build
        self.built: RequestState | None = None
        self.raw = raw

    def get(self) -> RequestState:
        if self.built is None:
            self.built = self._build(self.raw)
        return self.built


def tag_placed(raw: Mapping[str, Any], state: RequestState | DeferredState | None) -> bool:
    """Whether a template placed the snippet itself: `snippet_tag()` marks the state, a template
    helper without one marks the app's scope or environ (`raw`) with INJECTED_KEY."""
    if raw.get(INJECTED_KEY):
        return True
    if isinstance(state, DeferredState):
        state = state.built
    return state is not None and state.tag_placed


def state_of(request: object) -> RequestState | None:
    """The tracklayer state of a request: a Starlette/FastAPI Request, an ASGI scope, a WSGI
    environ, a Flask request or a Django HttpRequest (WSGI `META` or ASGI `scope`)."""
    from tracklayer_mw.engine import RequestState

    candidates: list[object] = [request]
    for attribute in ("scope", "environ", "META"):
        candidates.append(getattr(request, attribute, None))
    for candidate in candidates:
        if isinstance(candidate, Mapping):
            state = candidate.get(STATE_KEY)
            if isinstance(state, DeferredState):
                state = state.get()
            if isinstance(state, RequestState):
                return state
    return None
