"""`track()`: a server-side event from inside a request handler, whatever the framework."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tracklayer_mw.events import checked_event_name
from tracklayer_mw.request import state_of

if TYPE_CHECKING:
    from tracklayer_mw.engine import RequestState

logger = logging.getLogger("tracklayer_mw")


def track(
    request: object,
    event: str,
    *,
    user: Mapping[str, Any] | None = None,
    custom: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    event_time: float | None = None,
    url: str | None = None,
) -> str | None:
    """Queue a server-side event and return its `event_id`; `None` when nothing was queued (why is logged).

    `request` may be a Starlette/FastAPI Request, an ASGI scope, a WSGI environ, a Flask request or a
    Django HttpRequest. No network call is made: the event is hashed and written to the outbox, and
    the background worker sends it. A developer's mistake (unknown event, wrong types) raises
    `ValueError`; tracking trouble never does.
    """
    checked_event_name(event)  # a developer's mistake, with or without a middleware in front
    state = _state_or_none(request, f"track({event!r})")
    if state is None:
        logger.warning(
            "tracklayer: track(%r) on a request no TrackLayer middleware saw; nothing queued", event
        )
        return None
    try:
        return state.engine.track(
            state, event, user=user, custom=custom, event_id=event_id, event_time=event_time, url=url
        )
    except ValueError:
        raise
    except Exception:
        logger.exception("tracklayer: track(%r) failed; nothing queued", event)
        return None


def snippet_tag(request: object, nonce: str | None = None) -> str:
    """The snippet's HTML for a template that places it itself (a streamed page), e.g. through
    `install_jinja`; the request is marked so the middleware adds no second tag. "" outside the middleware."""
    state = _state_or_none(request, "snippet_tag()")
    if state is None:
        return ""
    state.tag_placed = True
    return state.engine.tag_html(state, nonce)


def _state_or_none(request: object, caller: str) -> RequestState | None:
    """The request's state; None, logged, when building it fails. A deferred state is built here,
    inside the host's handler, where tracking trouble must not raise."""
    try:
        return state_of(request)
    except Exception:
        logger.exception("tracklayer: %s could not read the request; nothing done", caller)
        return None
