"""The browser side's Python half: render the tag, decide where and when to inject it.

Pure functions only (no ASGI/WSGI code), so both adapters and the Jinja helper share them:

- :func:`snippet_config` builds the ``data-tl`` config the snippet (``static/tracklayer.js``) reads;
- :func:`render_tag` renders the HTML put before ``</head>``: an inline stub (so pages may call
  ``tracklayer.track(...)`` before ``t.js`` has loaded) and the async ``<script data-tl=...>``;
- :func:`inject` places that tag into an HTML body, :func:`is_html_response` decides whether a
  response is one to inject into, :func:`csp_nonce` finds the nonce the app's CSP allows;
- :func:`install_jinja` / :func:`jinja_tag` let templates place the tag themselves (streamed pages).

The ``data-tl`` keys are short on purpose (they ride on every HTML page):

====  =================================================================================
key   meaning
====  =================================================================================
i     ingest URL, e.g. ``/_tl/ingest``
g     go URL (linker), e.g. ``/_tl/go``
l     linked domains: hosts, or ``.suffix`` for the suffix and any subdomain of it
c     consent mode: ``none``, ``granted``, ``denied`` or ``cookie:NAME=VALUE``
d     cookie domain for the consent cookie, or ``""`` (host-only)
t     Pinterest tag id, or ``""`` (then the snippet does not load the Pinterest tag)
pv    ``1`` to send one PageVisit per page view, ``0`` not to
====  =================================================================================

Notes on ``static/tracklayer.js`` (it must stay under 2 KB gzipped, so its reasons live here):

- Ingest body: ``{"events": [{"event", "event_id", "event_time" (ms), "url": location.href,
  "custom": {...}, "user"?: {...}, "pixel": bool}]}``, sent with ``navigator.sendBeacon`` (a string
  body goes as ``text/plain``: no CORS preflight) or, when the beacon is refused, ``fetch`` with
  ``keepalive`` (its defaults are ``credentials: same-origin`` and ``text/plain`` for a string).
  Both outlive the page, and events are sent synchronously inside ``track()``, so an event fired
  just before a navigation or on ``pagehide`` still arrives. Events released by ``consent(true)``
  go in one body.
- Event ids: ``options.event_id``; else ``<event>:<order_id>`` with the order id encoded like
  Python's ``urllib.parse.quote(order_id, safe="")`` (``encodeURIComponent`` plus ``!'()*``), over
  100 encoded characters is an error; else ``crypto.randomUUID()`` (a ``getRandomValues`` v4 UUID
  where it is missing: old browsers, insecure contexts). Minting in the browser means cached HTML
  never shares an id between visitors.
- An id never fires twice on a page; ids containing ``:`` (order based) are also kept in
  ``localStorage["tl_ids"]`` (the last 50; blocked storage is ignored), so reloading an order
  confirmation does not count the purchase again.
- The real ``window.tracklayer`` has no ``q``: a second copy of the snippet on the page sees that
  and stops, so there is one PageVisit per view.
- With ``t`` set, the snippet loads the Pinterest tag (stub, ``core.js``, ``load``, ``page``) only
  when the page has no ``window.pintrk`` of its own: loading it twice would count every page twice.
- Consent ``cookie:...``/``denied``: events are held (50 at most), the pixel stays silent and the
  Pinterest tag is not loaded until ``consent(true)``; ``consent(false)`` drops them and deletes the
  cookie. ``setconsent`` is passed on to ``pintrk`` when it exists.
- Linker: a GET form's action query is dropped by browsers (replaced with the fields), so ``to``
  carries the action without its query. A form field named ``to`` would clash with ours.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

__all__ = [
    "INJECTED_KEY",
    "csp_nonce",
    "inject",
    "install_jinja",
    "is_html_response",
    "jinja_tag",
    "render_tag",
    "script_bytes",
    "snippet_config",
]

logger = logging.getLogger("tracklayer_mw")

#: The key the engine sets to ``True`` in the ASGI scope / WSGI environ once a template has placed the
#: tag itself (see :func:`install_jinja`), so the middleware does not inject a second one.
INJECTED_KEY = "tracklayer.injected"

# The inline stub: queues calls made before t.js has loaded; t.js replays ``q`` and replaces the object.
_STUB = (
    "window.tracklayer=window.tracklayer||{q:[],"
    'track:function(){this.q.push(["track",arguments])},'
    'consent:function(){this.q.push(["consent",arguments])}};'
)

# Autoescaped: the URL, the JSON config and the nonce cannot leave their attributes.
_TAG_TEMPLATE = jinja2.Environment(autoescape=True).from_string(
    '{% set n %}{% if nonce %} nonce="{{ nonce }}"{% endif %}{% endset %}'
    "<script{{ n }}>{{ stub|safe }}</script>"
    '<script async src="{{ src }}" data-tl="{{ data }}"{{ n }}></script>'
)

_HEAD_CLOSE = re.compile(rb"</head\s*>", re.IGNORECASE)
_BODY_CLOSE = re.compile(rb"</body\s*>", re.IGNORECASE)
# An already-placed tag: our script element carries ``data-tl=`` (a template placed it, or an app
# behind two middlewares). Anchored to ``<script`` so prose mentioning the attribute does not count.
_ALREADY = re.compile(rb"<script\b[^>]*\sdata-tl\s*=", re.IGNORECASE)
_NONCE = re.compile(r"'nonce-([A-Za-z0-9+/_=-]+)'")
# For a <script> element, CSP consults script-src-elem, then script-src, then default-src.
_SCRIPT_DIRECTIVES = ("script-src-elem", "script-src", "default-src")

CONSENT_MODES = ("none", "granted", "denied")


def snippet_config(
    *,
    ingest_url: str,
    go_url: str,
    linked_domains: Sequence[str] = (),
    consent: str = "none",
    cookie_domain: str | None = None,
    tag_id: str | None = None,
    page_visit: bool = True,
) -> dict[str, object]:
    """The ``data-tl`` config for :func:`render_tag`, with the snippet's short keys.

    ``consent`` is ``"none"`` (no gate), ``"granted"``/``"denied"`` (the server's decision for this
    request) or ``"cookie:NAME=VALUE"`` (granted while ``document.cookie`` holds ``NAME=VALUE``; the
    snippet writes that cookie on ``tracklayer.consent(true)``).
    """
    if consent not in CONSENT_MODES and not (consent.startswith("cookie:") and "=" in consent[7:]):
        raise ValueError(
            f"consent must be one of {', '.join(CONSENT_MODES)} or 'cookie:NAME=VALUE', got {consent!r}"
        )
    return {
        "i": ingest_url,
        "g": go_url,
        "l": [d.strip().lower() for d in linked_domains if d.strip()],
        "c": consent,
        "d": cookie_domain or "",
        "t": tag_id or "",
        "pv": 1 if page_visit else 0,
    }


def render_tag(*, script_url: str, config: Mapping[str, object], nonce: str | None = None) -> str:
    """The HTML to inject before ``</head>``: the inline stub, then ``<script async src data-tl>``.

    Every dynamic value is HTML-escaped (``"``, ``<``, ``&``...), so no config value or nonce can
    leave its attribute; the browser un-escapes the attribute before the snippet parses the JSON.
    """
    data = json.dumps(dict(config), separators=(",", ":"))
    return _TAG_TEMPLATE.render(stub=_STUB, src=script_url, data=data, nonce=nonce or "")


def inject(body: bytes, tag: bytes) -> bytes | None:
    """``body`` with ``tag`` inserted before the first ``</head>`` (any case), else before the last
    ``</body>``; ``None`` (leave the body untouched) when there is neither, or when the body already
    carries a tracklayer tag (a ``<script ... data-tl=...>``, e.g. placed by a template)."""
    match = _HEAD_CLOSE.search(body)
    # A tag already placed belongs in the head: looking there only keeps big pages cheap.
    if _ALREADY.search(body, 0, match.start() if match else len(body)):
        return None
    if match is None:
        closes = list(_BODY_CLOSE.finditer(body))
        if not closes:
            return None
        match = closes[-1]
    at = match.start()
    return body[:at] + tag + body[at:]


def is_html_response(
    status: int, content_type: str | None, content_encoding: str | None, method: str
) -> bool:
    """Whether a response is one to inject into: 2xx with a whole body (not 204/205, not a 206
    range), media type ``text/html`` (parameters ignored), no ``Content-Encoding`` other than
    ``identity``, not HEAD."""
    if not 200 <= status < 300 or status in (204, 205, 206) or method.upper() == "HEAD":
        return False
    if content_encoding and content_encoding.strip().lower() not in ("", "identity"):
        return False
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "text/html"


def csp_nonce(csp_header_values: Iterable[str]) -> str | None:
    """The nonce the app's ``Content-Security-Policy`` lets scripts run with, or ``None``.

    Reads each policy (several headers, or one header holding a comma-separated list) and, per
    policy, the directive a ``<script>`` element is checked against: ``script-src-elem``, else
    ``script-src``, else ``default-src``. The first ``'nonce-...'`` found wins.
    """
    for header in csp_header_values:
        for policy in header.split(","):
            directives: dict[str, str] = {}
            for part in policy.split(";"):
                name, *value = part.split(None, 1) or [""]
                # The first occurrence of a directive counts; browsers ignore repeats.
                directives.setdefault(name.lower(), value[0] if value else "")
            for name in _SCRIPT_DIRECTIVES:
                if name in directives:
                    found = _NONCE.search(directives[name])
                    if found:
                        return found.group(1)
                    break
    return None


def jinja_tag(tag_factory: Callable[[Any], str]) -> Callable[..., Markup]:
    """The ``tracklayer_tag`` template global: ``{{ tracklayer_tag(request) }}``.

    ``tag_factory(request_or_scope)`` is supplied by the engine: it renders the tag for that request
    (config, CSP nonce) and sets ``scope["tracklayer.injected"] = True`` (ASGI) or
    ``environ["tracklayer.injected"] = True`` (WSGI), see :data:`INJECTED_KEY`, so the middleware
    does not inject a second tag. Called without an argument, the global uses the template
    context's ``request`` (what Starlette's ``Jinja2Templates`` and Flask provide). Tracking trouble
    never breaks the page: a failing factory is logged and renders nothing.
    """

    @jinja2.pass_context
    def tracklayer_tag(context: jinja2.runtime.Context, request: Any = None) -> Markup:
        if request is None:
            request = context.get("request")
        try:
            # The factory's output is the tag render_tag() built, with every value already escaped.
            return Markup(tag_factory(request))  # noqa: S704
        except Exception:
            logger.exception("tracklayer_tag: could not render the tag")
            return Markup("")

    return tracklayer_tag


def install_jinja(env: jinja2.Environment, tag_factory: Callable[[Any], str] | None = None) -> None:
    """Register ``tracklayer_tag`` (see :func:`jinja_tag`) as a global of ``env``.

    Put ``{{ tracklayer_tag(request) }}`` in the template's ``<head>`` when the page is streamed (the
    middleware only injects into bodies it can see ``</head>`` in). The default factory is
    :func:`tracklayer_mw.snippet_tag`: it renders the request's tag and marks the request, so the
    middleware leaves the page alone.
    """
    if tag_factory is None:
        from tracklayer_mw.tracking import snippet_tag

        tag_factory = snippet_tag
    env.globals["tracklayer_tag"] = jinja_tag(tag_factory)


def script_bytes() -> bytes:
    """The snippet's source (``static/tracklayer.js``), from the wheel or from a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "static" / "tracklayer.js", here.parent / "static" / "tracklayer.js"):
        if candidate.is_file():
            return candidate.read_bytes()
    raise FileNotFoundError("tracklayer.js not found next to the tracklayer_mw package")


class SnippetTag:
    """The snippet's bytes and ETag, and the tag that loads it, prepared once per middleware."""

    def __init__(
        self,
        *,
        prefix: str,
        linked_domains: Sequence[str] = (),
        consent_cookie: tuple[str, str] | None = None,
        cookie_domain: str | None = None,
        tag_id: str | None = None,
        page_visit: bool = True,
    ) -> None:
        self.script = script_bytes()
        self.etag = '"' + hashlib.sha256(self.script).hexdigest()[:20] + '"'
        # The version in the URL lets browsers cache t.js and still see a new release at once.
        self.url = f"{prefix}/t.js?v={self.etag[1:9]}"
        self.config = snippet_config(
            ingest_url=f"{prefix}/ingest",
            go_url=f"{prefix}/go",
            linked_domains=linked_domains,
            consent=f"cookie:{consent_cookie[0]}={consent_cookie[1]}" if consent_cookie else "none",
            cookie_domain=cookie_domain,
            tag_id=tag_id,
            page_visit=page_visit,
        )
        self._plain = render_tag(script_url=self.url, config=self.config)

    def html(self, *, nonce: str | None = None, host_only: bool = False, consent: str | None = None) -> str:
        """The tag; `host_only` drops the cookie domain (a linked host is outside it), `consent`
        is the server's decision for this request when consent is a callable."""
        if nonce is None and not host_only and consent is None:
            return self._plain  # the common case, rendered once
        config = dict(self.config)
        if host_only:
            config["d"] = ""
        if consent is not None:
            config["c"] = consent
        return render_tag(script_url=self.url, config=config, nonce=nonce)
