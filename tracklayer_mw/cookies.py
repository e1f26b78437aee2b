"""The cookies tracklayer sets from the server, and the signed `_tl` cookie that remembers them.

Safari caps cookies written by JavaScript at 7 days (24 hours after a decorated ad click) but not
cookies set with `Set-Cookie` on the site's own responses, so the click id and the Pinterest tag's
own cookies are re-issued from here. `_tl` is signed and HttpOnly: it holds the click context and
a digest of the values last issued, and its signing time says when that was.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tracklayer_mw.config import Settings
from tracklayer_mw.context import TAG_COOKIES, ClickContext, cookie_safe
from tracklayer_mw.signing import COOKIE_SALT, SignedCodec

EPIK_COOKIE = "_epik"
CONTEXT_COOKIE = "_tl"
MAX_AGE = 31_536_000  # one year, as the contract and Pinterest's own tag use
REFRESH_AFTER = 86_400  # an unchanged value is re-issued at most once a day


@dataclass(frozen=True, slots=True)
class Remembered:
    """What the `_tl` cookie says: the click context, and what was issued when."""

    context: ClickContext | None
    digest: str
    issued_at: int


def values_digest(values: Mapping[str, str]) -> str:
    joined = "\n".join(f"{name}={values[name]}" for name in sorted(values))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def tag_cookie_values(cookies: Mapping[str, str]) -> dict[str, str]:
    """The Pinterest tag's own cookies worth re-issuing, when their values are cookie-safe."""
    values = {}
    for name in TAG_COOKIES:
        value = cookie_safe(cookies.get(name))
        if value is not None:
            values[name] = value
    return values


class CookieJar:
    def __init__(self, settings: Settings, *, clock: Callable[[], float]) -> None:
        self._codec = SignedCodec(settings.secret_keys, salt=COOKIE_SALT, clock=clock)
        self._settings = settings
        # A visitor sends the same `_tl` on every request until it is re-issued (at most daily):
        # verifying it once per token, not per request, took ~11 us off each of that visitor's requests.
        # Bounded; an entry is the immutable result, its age is checked on every use.
        self._verified = functools.lru_cache(maxsize=4096)(self._read)

    def remembered(self, cookies: Mapping[str, str]) -> Remembered | None:
        """The verified `_tl` cookie; a tampered, foreign or expired one counts as absent."""
        found = self._verified(cookies.get(CONTEXT_COOKIE, ""))
        if found is None or not self._codec.current(found.issued_at, max_age=MAX_AGE):
            return None
        return found

    def _read(self, token: str) -> Remembered | None:
        # Cached per token (see __init__): the signature and the payload never change, only the age.
        verified = self._codec.verify(token)
        if verified is None or not isinstance(verified[0], dict):
            return None
        data, issued_at = verified
        digest = data.get("d")
        return Remembered(
            ClickContext.from_dict(data.get("c")), digest if isinstance(digest, str) else "", issued_at
        )

    def set_cookie_headers(
        self, context: ClickContext | None, tag_values: Mapping[str, str], *, host: str | None, secure: bool
    ) -> list[str]:
        values = dict(tag_values)
        if context is not None:
            values[EPIK_COOKIE] = context.epik
        remember: dict[str, object] = {"d": values_digest(values)}
        if context is not None:
            remember["c"] = context.to_dict()
        domain = self._domain_for(host)
        headers = [self._header(name, value, domain=domain, secure=secure) for name, value in values.items()]
        headers.append(
            self._header(
                CONTEXT_COOKIE, self._codec.dumps(remember), domain=domain, secure=secure, http_only=True
            )
        )
        return headers

    def expire_headers(self, cookies: Mapping[str, str], *, host: str | None, secure: bool) -> list[str]:
        """Remove the cookies tracklayer issued (when `_tl` says it did): consent was withdrawn."""
        if CONTEXT_COOKIE not in cookies:
            return []
        domain = self._domain_for(host)
        names = [name for name in (EPIK_COOKIE, *TAG_COOKIES, CONTEXT_COOKIE) if name in cookies]
        return [self._header(name, "", domain=domain, secure=secure, max_age=0) for name in names]

    def consent_header(self, name: str, value: str, *, host: str | None, secure: bool) -> str:
        """The consent cookie, readable by the snippet, for consent that arrived with a linker token."""
        return self._header(name, value, domain=self._domain_for(host), secure=secure)

    def _domain_for(self, host: str | None) -> str | None:
        # A Domain the request host is not inside would be rejected by the browser: stay host-only there.
        if host and self._settings.is_cookie_domain_host(host):
            return self._settings.cookie_domain
        return None

    @staticmethod
    def _header(
        name: str,
        value: str,
        *,
        domain: str | None,
        secure: bool,
        http_only: bool = False,
        max_age: int = MAX_AGE,
    ) -> str:
        parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}"]
        if domain:
            parts.append(f"Domain={domain}")
        parts.append("SameSite=Lax")
        if secure:
            parts.append("Secure")
        if http_only:
            parts.append("HttpOnly")
        return "; ".join(parts)
