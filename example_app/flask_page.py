"""The styling-session page, written in Flask: `TrackLayerWSGIMiddleware` on a WSGI app.

Served at ``lead.shop.localhost`` (inside the store's cookie domain, so it shares the visitor's
click id and consent). The form's POST tracks a ``Lead`` on the server with the visitor's email;
the thank-you page fires the browser's ``Lead`` with the same ``event_id``, so the two are one
event at Pinterest.

The demo shares the store's `Engine` (one outbox, one delivery thread); on its own,
``TrackLayerWSGIMiddleware(app.wsgi_app, settings=Settings.from_env())`` is all it takes.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from flask import Flask, redirect, render_template, request
from werkzeug.wrappers import Response as WerkzeugResponse

from example_app.catalog import money
from example_app.store import STATIC, TEMPLATES, Store, Visit
from tracklayer_mw import TrackLayerWSGIMiddleware, track

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_REF = re.compile(r"^[a-f0-9]{8}$")


def create_lead_app(store: Store) -> Flask:
    """The Flask app, its `wsgi_app` wrapped by the tracking middleware (sharing the store's engine)."""
    app = Flask(
        __name__, template_folder=str(TEMPLATES), static_folder=str(STATIC), static_url_path="/static"
    )
    app.jinja_env.filters["money"] = money
    app.jinja_env.globals["tracklayer_tag"] = lambda *args: ""  # the middleware injects the tag here

    def page(template: str, *, title: str, events: list[dict[str, Any]] | None = None, **context: Any) -> str:
        visit = Visit.of(
            request.scheme, request.host.rsplit(":", 1)[0], _port(), request.cookies, store.hosts
        )
        return render_template(
            template, title=title, page_events=events or [], **store.layout(visit), **context
        )

    @app.get("/")
    def lead_form() -> str:
        return page("lead.html", title="Book a styling session — Maple & Moss", error=None, form={})

    @app.post("/")
    def lead_submit() -> WerkzeugResponse | tuple[str, int]:
        form = {key: value.strip() for key, value in request.form.items()}
        if not _EMAIL.match(form.get("email", "")):
            html = page(
                "lead.html",
                title="Book a styling session — Maple & Moss",
                error="Please enter a valid email address.",
                form=form,
            )
            return html, 400
        ref = secrets.token_hex(4)
        # The server's half of the Lead; the thank-you page sends the browser's half with this id.
        track(
            request,
            "Lead",
            user={"email": form["email"], "first_name": form.get("first_name", "")},
            custom={"content_name": "Styling session"},
            event_id=f"Lead:{ref}",
        )
        return redirect(f"/thanks?ref={ref}", code=303)

    @app.get("/thanks")
    def lead_thanks() -> str:
        ref = request.args.get("ref", "")
        events = []
        if _REF.match(ref):
            events.append(
                {
                    "event": "Lead",
                    "custom": {"content_name": "Styling session"},
                    "options": {"event_id": f"Lead:{ref}"},
                }
            )
        return page("lead_thanks.html", title="See you soon — Maple & Moss", events=events)

    app.wsgi_app = TrackLayerWSGIMiddleware(app.wsgi_app, engine=store.engine)  # type: ignore[method-assign]
    return app


def _port() -> int | None:
    host = request.host
    if ":" in host and not host.endswith("]"):
        port = host.rsplit(":", 1)[1]
        return int(port) if port.isdigit() else None
    return None
