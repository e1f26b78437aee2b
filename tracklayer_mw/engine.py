"""The engine both adapters share: click context, cookies, redirects, the snippet, events.

Protocol-neutral: `asgi.py` and `wsgi.py` turn requests into a `RequestView`, call `begin()`, and
hand the response's status and headers back to `response_headers()`. Everything here runs inside
the adapters' guard, so a bug in it is logged and the host's response goes out unchanged.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from tracklayer_mw.config import Settings
from tracklayer_mw.context import (
    ClickContext,
    click_from_page_url,
    click_from_url,
    cookie_safe,
    epik_from_params,
    fresher,
    is_bot,
    query_params,
    without_emails,
)
from tracklayer_mw.cookies import EPIK_COOKIE, CookieJar, tag_cookie_values, values_digest
from tracklayer_mw.events import Event, EventError, merge_payloads, parse_event
from tracklayer_mw.hashing import USER_FIELDS, UserDataError, hash_user
from tracklayer_mw.linker import TOKEN_PARAM, Linker, with_param, without_param
from tracklayer_mw.outbox import NewEvent, Outbox, open_outbox
from tracklayer_mw.pinterest import PinterestAdapter
from tracklayer_mw.request import DeferredState, RequestView
from tracklayer_mw.snippet import SnippetTag
from tracklayer_mw.worker import Deliverer

logger = logging.getLogger("tracklayer_mw")

REFRESH_AFTER = 86_400


@dataclass(slots=True)
class RequestState:
    """Everything tracklayer knows about one request; lives in the scope/environ under "tracklayer"."""

    view: RequestView
    context: ClickContext | None
    remembered_digest: str
    remembered_at: int
    tag_values: dict[str, str]
    url_epik: str | None
    consent: bool
    gpc: bool
    engine: Engine = field(repr=False)
    cookies_issued: bool = False
    consent_carried: bool = False  # consent arrived with a linker token; remember it on this host
    tag_placed: bool = False  # a template placed the snippet itself (`snippet_tag()`)
    _bot: bool | None = None

    @property
    def bot(self) -> bool:
        """A well-known crawler (worked out only when an event or a cookie is at stake)."""
        if self._bot is None:
            self._bot = is_bot(self.view.headers.get("user-agent"))
        return self._bot


def is_shared_cacheable(cache_control: str | None) -> bool:
    """A response a shared cache may store must not carry one visitor's cookies."""
    if not cache_control:
        return False
    directives = {part.strip().split("=", 1)[0].lower() for part in cache_control.split(",")}
    return "public" in directives or "s-maxage" in directives


def lone_surrogate_at(value: object, path: str = "") -> str | None:
    """The path of the first text JSON's "\\ud800" escapes left without its pair, or None.

    Such text is not Unicode: it cannot be hashed or sent (UTF-8 has no encoding for it).
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "event"
        return None
    children: list[tuple[object, str]] = []
    if isinstance(value, dict):
        children = [(key, path) for key in value]
        children += [(item, f"{path}.{key}" if path else str(key)) for key, item in value.items()]
    elif isinstance(value, list):
        children = [(item, f"{path}[{index}]") for index, item in enumerate(value)]
    for child, child_path in children:
        found = lone_surrogate_at(child, child_path)
        if found is not None:
            return found
    return None


class guard:
    """Around every tracking step in a request: a tracklayer bug is logged, the request goes on.

    A class rather than @contextmanager: it runs a few times per request, and this is cheaper."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> bool:
        if kind is None or not issubclass(kind, Exception):
            return False  # nothing went wrong, or a KeyboardInterrupt/SystemExit: let it through
        logger.error("tracklayer: %s failed; the request goes on untouched", self.what, exc_info=error)
        return True


def report_failure(what: str) -> None:
    """What `guard` logs, for the per-request paths that use a plain try/except (no guard object)."""
    logger.exception("tracklayer: %s failed; the request goes on untouched", what)


_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork() -> None:
    # A forked child has no delivery thread (gunicorn --preload): its first request starts one.
    for engine in list(_ENGINES):
        engine._started = False
        engine._start_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


class Engine:
    def __init__(
        self,
        settings: Settings,
        *,
        outbox: Outbox | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.outbox = outbox or open_outbox(settings.outbox, merge=merge_payloads)
        adapter = None
        if settings.pinterest_ad_account_id and settings.pinterest_access_token:
            adapter = PinterestAdapter(
                ad_account_id=settings.pinterest_ad_account_id,
                access_token=settings.pinterest_access_token,
                api_base=settings.pinterest_api_base,
                test_mode=settings.pinterest_test_mode,
            )
        self.deliverer = Deliverer(
            self.outbox,
            adapter,
            transport=transport,
            timeout=settings.request_timeout,
            test_mode=settings.pinterest_test_mode,
            clock=clock,
        )
        self.cookies = CookieJar(settings, clock=clock)
        self.linker = Linker(settings.secret_keys, clock=clock)
        self.snippet = SnippetTag(
            prefix=settings.path_prefix,
            linked_domains=settings.linked_hosts,
            consent_cookie=settings.consent_cookie,
            cookie_domain=settings.cookie_domain,
            tag_id=settings.pinterest_tag_id,
            page_visit=settings.page_visit,
        )
        # The tag of a page without a CSP nonce, when it depends on nothing of the request (consent not
        # a callable, no cookie_domain that a linked host falls outside): rendered and encoded once.
        self.static_tag: bytes | None = None
        if not callable(settings.consent) and settings.cookie_domain is None:
            self.static_tag = self.snippet.html().encode()
        self._started = False
        self._start_lock = threading.Lock()
        _ENGINES.add(self)

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        with self._start_lock:
            self.deliverer.start()
            self._started = True

    def ensure_started(self) -> None:
        """Without a lifespan (WSGI, --lifespan off, a forked worker), the first request starts delivery."""
        if not self._started:  # per request: one attribute (a forked child is reset by _after_fork)
            self.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what can be sent within `timeout`; whatever is left stays in the outbox for the next start."""
        try:
            self.deliverer.flush(timeout)
        finally:
            self.deliverer.stop(timeout)
            self._started = False  # a request after a stop starts delivery again

    # --- per request -----------------------------------------------------------------------------

    def begin(self, view: RequestView) -> RequestState:
        """Resolve the click context of a request: URL, then the cookies tracklayer and the tag wrote."""
        now = self.clock()
        params = query_params(view.query_string)
        remembered = self.cookies.remembered(view.cookies)
        context = remembered.context if remembered else None
        tag_epik = cookie_safe(view.cookies.get(EPIK_COOKIE))
        if tag_epik and (context is None or context.epik != tag_epik):
            # The tag wrote a click id we did not issue. All we know of its age: it is newer than the
            # last `_tl` (issued together with `_epik`); without one, it may be any age. Dated so, it
            # beats what `_tl` remembers, but never a fresher click from the URL, a token or a page.
            written = min(remembered.issued_at + 1, int(now)) if remembered else 0
            context = fresher(context, ClickContext(tag_epik, "cookie", written))
        context = fresher(context, click_from_url(view.url, params, source="url", now=now))
        return RequestState(
            view=view,
            context=context,
            remembered_digest=remembered.digest if remembered else "",
            remembered_at=remembered.issued_at if remembered else 0,
            tag_values=tag_cookie_values(view.cookies),
            url_epik=epik_from_params(params),
            consent=self._consent(view),
            gpc=self.settings.respect_gpc and view.headers.get("sec-gpc", "").strip() == "1",
            engine=self,
        )

    def _consent(self, view: RequestView) -> bool:
        consent = self.settings.consent
        if consent is None:
            return True
        if isinstance(consent, str):
            name, _, value = consent.partition("=")
            return view.cookies.get(name) == value
        try:
            return bool(consent(view))
        except Exception:
            logger.exception(
                "tracklayer: the consent callable failed; treating the request as without consent"
            )
            return False

    def arrival(self, state: RequestState) -> str | None:
        """A request with a linker token: adopt its context; for GET/HEAD, the clean URL to redirect to."""
        query, token = without_param(state.view.query_string, TOKEN_PARAM)
        if token is None:
            return None
        carried = self.linker.verify(token, state.view.host)
        if carried is not None:
            state.context = fresher(state.context, carried)
            if not state.consent and self.settings.consent_cookie is not None:
                # Tokens are minted only with consent, by a site of the same operator (it holds the
                # secret): the visitor's choice travels with the click and is remembered here too.
                state.consent = state.consent_carried = True
        else:
            logger.info("tracklayer: ignored a bad, expired, replayed or foreign linker token")
        state.view.query_string = query
        if state.view.method not in ("GET", "HEAD"):
            return None
        # A path-only Location: never another host, even for a path like //evil.example. The path
        # arrives decoded, so every "%" in it is a literal one and is encoded again.
        path = "/" + state.view.path.lstrip("/\\")
        return quote(path, safe="/:@!$&'()*+,;=-._~") + (f"?{query}" if query else "")

    def set_cookie_headers(self, state: RequestState, *, cache_control: str | None = None) -> list[str]:
        """The Set-Cookie values: none if nothing is new, it was refreshed today, no consent, cacheable."""
        if state.cookies_issued or state.bot or is_shared_cacheable(cache_control):
            return []
        if not state.consent:
            # Consent withdrawn after tracklayer set its cookies: take them back, once.
            state.cookies_issued = True
            return self.cookies.expire_headers(
                state.view.cookies, host=state.view.host, secure=state.view.secure
            )
        values = dict(state.tag_values)
        if state.context is not None:
            values[EPIK_COOKIE] = state.context.epik
        if not values:
            return []
        changed = values_digest(values) != state.remembered_digest
        if not changed and self.clock() - state.remembered_at < REFRESH_AFTER:
            return []
        state.cookies_issued = True
        headers = self.cookies.set_cookie_headers(
            state.context, state.tag_values, host=state.view.host, secure=state.view.secure
        )
        if state.consent_carried and (consent := self.settings.consent_cookie) is not None:
            headers.append(
                self.cookies.consent_header(*consent, host=state.view.host, secure=state.view.secure)
            )
        return headers

    def tag_html(self, state: RequestState, nonce: str | None = None) -> str:
        """The snippet tag for this request's page."""
        return self.tag_for_host(state.view.host, nonce, consent=state.consent)

    def page_tag(self, state: RequestState | DeferredState, nonce: str | None = None) -> bytes:
        """The tag the middleware injects into a page: rendered once when nothing of the request can
        change it, else for the request's host and consent (a deferred state is built only then)."""
        if nonce is None and self.static_tag is not None:
            return self.static_tag
        if isinstance(state, DeferredState):
            state = state.get()
        return self.tag_html(state, nonce).encode()

    def tag_for_host(self, host: str | None, nonce: str | None = None, *, consent: bool = True) -> str:
        """The snippet tag for a page on `host` (`consent` matters only when consent is a callable)."""
        settings = self.settings
        # On a host outside cookie_domain (a linked site) the browser refuses that Domain: host-only there.
        host_only = (
            settings.cookie_domain is not None
            and host is not None
            and not settings.is_cookie_domain_host(host)
        )
        # A callable's decision is rendered into the page (the cookie form of consent suits cached pages).
        decision = ("granted" if consent else "denied") if callable(settings.consent) else None
        return self.snippet.html(nonce=nonce, host_only=host_only, consent=decision)

    def redirect_location(self, state: RequestState, location: str) -> str | None:
        """The app's own redirect, carrying the click on: `epik` inside the site, a token to linked hosts."""
        if location.startswith(("/\\", "\\")):
            return None
        try:
            target = urlsplit(location)
            host = target.hostname or state.view.host
        except ValueError:
            return None
        if host is None or target.scheme not in ("", "http", "https"):
            return None  # mailto:, tel:, an app's own scheme: no host of ours, nothing to carry
        if host == state.view.host or self.settings.is_cookie_domain_host(host):
            if state.url_epik and epik_from_params(query_params(target.query)) is None:
                return with_param(location, "epik", state.url_epik)
            return None
        if self.settings.is_linked_host(host):
            if state.context is None or not state.consent or state.bot:
                return None
            return with_param(location, TOKEN_PARAM, self.linker.mint(state.context, host))
        return None

    def adopt_page_url(self, state: RequestState, url: str | None) -> None:
        """A beacon from a page whose own (cached) response could not set cookies reports its URL."""
        if not url or state.view.host is None:
            return
        try:
            host = urlsplit(url).hostname
        except ValueError:
            return
        if host == state.view.host or (host and self.settings.is_cookie_domain_host(host)):
            state.context = fresher(state.context, click_from_page_url(url, now=self.clock()))

    # --- events ----------------------------------------------------------------------------------

    def attach(self, state: RequestState, event: Event) -> Event:
        """The request's click context, client and privacy flags, added to a validated event."""
        view = state.view
        opt_out = not state.consent  # only reached without consent when on_no_consent is "opt_out"
        url = event.url or (view.headers.get("referer") if event.source == "browser" else view.url)
        return event.with_context(
            url=without_emails(url) if url else None,
            click_id=state.context.epik if state.context else None,
            client_ip=view.client_ip,
            user_agent=(view.headers.get("user-agent") or "")[:2048] or None,
            opt_out=opt_out,
            opt_out_type="LDP" if state.gpc else None,
        )

    def should_drop(self, state: RequestState) -> str | None:
        """Why no event may leave for this request, or None."""
        if state.bot:
            return "bot"
        if not state.consent and self.settings.on_no_consent == "drop":
            return "no consent"
        return None

    def queue(self, events: list[Event], *, wait: bool = True) -> bool:
        """Durable on return (raises when the outbox cannot write). With `wait=False` (an event loop),
        False instead of waiting for the outbox: nothing was queued, call again with `wait=True`."""
        rows = [
            NewEvent(event.event_id, event.event, event.event_time, event.to_payload()) for event in events
        ]
        if wait:
            self.outbox.put(rows)
        elif not self.outbox.put_nowait(rows):
            return False
        self.deliverer.wake()
        return True

    def track(
        self,
        state: RequestState,
        event: str,
        *,
        user: Mapping[str, Any] | None = None,
        custom: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        event_time: float | None = None,
        url: str | None = None,
    ) -> str | None:
        if user is not None and not isinstance(user, Mapping):
            raise ValueError("user: must be a mapping of field names to values")
        for name, value in (user or {}).items():
            # A misspelt field or a non-text value is the developer's bug: say so, never drop it quietly.
            if name not in USER_FIELDS:
                raise ValueError(
                    f"tracklayer.track: user.{name}: unknown field; expected one of {', '.join(USER_FIELDS)}"
                )
            items = value if isinstance(value, list | tuple) else [value]
            if not all(item is None or isinstance(item, str) for item in items):
                raise ValueError(f"tracklayer.track: user.{name}: must be a string or a list of strings")
        bad = lone_surrogate_at({"custom": custom, "event_id": event_id, "url": url})
        if bad is not None:  # text from a database or a form, not the developer's mistake
            logger.warning(
                "tracklayer: %s not queued: %s is not valid Unicode (a lone surrogate)", event, bad
            )
            return None
        raw: dict[str, Any] = {
            "event": event,
            "custom": custom,
            "event_id": event_id,
            "event_time": event_time,
        }
        if url is not None:
            raw["url"] = url
        try:
            parsed = parse_event(raw, now=self.clock(), source="server")
        except EventError as exc:
            raise ValueError(f"tracklayer.track: {exc}") from None
        # A customer's malformed phone number is not the developer's bug: drop that field, keep the event.
        hashed: dict[str, list[str]] = {}
        for name, value in (user or {}).items():
            try:
                hashed.update(
                    hash_user({name: value}, default_phone_country=self.settings.default_phone_country)
                )
            except UserDataError as exc:
                logger.warning("tracklayer: dropped a user field from %s %s: %s", event, parsed.event_id, exc)
            except UnicodeEncodeError:
                logger.warning(
                    "tracklayer: dropped user.%s from %s %s: not valid Unicode", name, event, parsed.event_id
                )
        reason = self.should_drop(state)
        if reason:
            logger.info("tracklayer: %s %s not queued (%s)", event, parsed.event_id, reason)
            return None
        final = self.attach(state, parsed.with_context(user=hashed))
        if not final.has_match_keys:
            logger.warning(
                "tracklayer: %s %s not queued: Pinterest needs an email, or the client IP and user agent",
                event,
                parsed.event_id,
            )
            return None
        try:
            self.queue([final])
        except Exception:
            logger.exception("tracklayer: could not queue %s %s", event, parsed.event_id)
            return None
        return final.event_id


def engine_for(
    settings: Settings | None,
    engine: Engine | None,
    *,
    outbox: Outbox | None = None,
    transport: httpx.BaseTransport | None = None,
    clock: Callable[[], float] = time.time,
) -> Engine:
    """The engine a middleware runs: the one given (shared between apps), or one for `settings`
    (read from the environment when absent)."""
    if engine is not None:
        return engine
    return Engine(settings or Settings.from_env(), outbox=outbox, transport=transport, clock=clock)
