"""Pure-function tests for tracklayer_mw.snippet: injection, the HTML predicate, CSP nonces, rendering."""

from __future__ import annotations

import html
import json
import logging
import re
from typing import Any

import jinja2
import markupsafe
import pytest

from tracklayer_mw.snippet import (
    INJECTED_KEY,
    csp_nonce,
    inject,
    install_jinja,
    is_html_response,
    jinja_tag,
    render_tag,
    script_bytes,
    snippet_config,
)

TAG = b'<script async src="/_tl/t.js" data-tl="{}"></script>'

# ---------------------------------------------------------------------------------------------- inject


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b"<html><head><title>x</title></head><body>hi</body></html>",
            b"<html><head><title>x</title>" + TAG + b"</head><body>hi</body></html>",
            id="before-head",
        ),
        pytest.param(
            b"<HTML><HEAD></HEAD><BODY></BODY></HTML>",
            b"<HTML><HEAD>" + TAG + b"</HEAD><BODY></BODY></HTML>",
            id="uppercase-head",
        ),
        pytest.param(
            b"<head></Head ><body></body>",
            b"<head>" + TAG + b"</Head ><body></body>",
            id="mixed-case-head-with-space",
        ),
        pytest.param(
            b'<HEAD></HEAD><body><script>var t="<head></head>";</script></body>',
            b"<HEAD>" + TAG + b'</HEAD><body><script>var t="<head></head>";</script></body>',
            id="the-first-close-of-any-spelling-not-a-later-lowercase-one-in-a-script",
        ),
        pytest.param(
            b"<head></head><p></head></p>",
            b"<head>" + TAG + b"</head><p></head></p>",
            id="first-head-only",
        ),
        pytest.param(
            b"<p>no head</p></body></html>",
            b"<p>no head</p>" + TAG + b"</body></html>",
            id="no-head-but-body",
        ),
        pytest.param(
            b"<p>a</BODY><p>b</Body>",
            b"<p>a</BODY><p>b" + TAG + b"</Body>",
            id="uppercase-body-last-one",
        ),
    ],
)
def test_inject_places_the_tag(body: bytes, expected: bytes) -> None:
    assert inject(body, TAG) == expected


def test_inject_neither_head_nor_body_leaves_body_untouched() -> None:
    assert inject(b'{"json": "<html>"}', TAG) is None


def test_inject_empty_body() -> None:
    assert inject(b"", TAG) is None


def test_inject_already_injected_by_a_template() -> None:
    body = b'<head><script async src="/_tl/t.js" data-tl="{}"></script></head><body></body>'
    assert inject(body, TAG) is None


def test_inject_already_injected_uppercase() -> None:
    body = b"<HEAD><SCRIPT ASYNC SRC=/_tl/t.js DATA-TL='{}'></SCRIPT></HEAD>"
    assert inject(body, TAG) is None


def test_inject_marker_in_prose_does_not_count() -> None:
    body = b"<head></head><body><code>&lt;script data-tl=...&gt;</code> data-tl= is our marker</body>"
    assert inject(body, TAG) == b"<head>" + TAG + b"</head><body><code>&lt;script data-tl=...&gt;</code>" + (
        b" data-tl= is our marker</body>"
    )


# ------------------------------------------------------------------------------------ is_html_response


def test_html_200_get() -> None:
    assert is_html_response(200, "text/html; charset=utf-8", None, "GET")


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("text/html", id="bare"),
        pytest.param("TEXT/HTML; Charset=UTF-8", id="uppercase-with-params"),
        pytest.param(" text/html ;charset=latin-1", id="spaces"),
    ],
)
def test_html_media_type_variants(content_type: str) -> None:
    assert is_html_response(200, content_type, None, "GET")


@pytest.mark.parametrize("encoding", [pytest.param("identity", id="identity"), pytest.param("", id="empty")])
def test_html_identity_encoding_is_fine(encoding: str) -> None:
    assert is_html_response(201, "text/html", encoding, "POST")


def test_not_html_json() -> None:
    assert not is_html_response(200, "application/json", None, "GET")


def test_not_html_xhtml_lookalike() -> None:
    assert not is_html_response(200, "text/htmlx", None, "GET")


def test_not_html_missing_content_type() -> None:
    assert not is_html_response(200, None, None, "GET")


def test_not_html_compressed() -> None:
    assert not is_html_response(200, "text/html", "gzip", "GET")


def test_not_html_compressed_br_uppercase() -> None:
    assert not is_html_response(200, "text/html", "BR", "GET")


def test_not_html_head_request() -> None:
    assert not is_html_response(200, "text/html", None, "HEAD")


def test_not_html_head_request_lowercase_method() -> None:
    assert not is_html_response(200, "text/html", None, "head")


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(199, id="1xx"),
        pytest.param(204, id="204-no-content"),
        pytest.param(206, id="206-a-range-of-the-page"),
        pytest.param(301, id="3xx"),
        pytest.param(304, id="304"),
        pytest.param(404, id="4xx"),
        pytest.param(500, id="5xx"),
    ],
)
def test_not_html_non_2xx(status: int) -> None:
    assert not is_html_response(status, "text/html", None, "GET")


# ------------------------------------------------------------------------------------------- csp_nonce


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([], None, id="no-header"),
        pytest.param(["script-src 'self' 'nonce-abc123'"], "abc123", id="script-src"),
        pytest.param(["default-src 'self' 'nonce-R4nd0m+/='"], "R4nd0m+/=", id="default-src-fallback"),
        pytest.param(
            ["default-src 'nonce-fromdefault'; script-src 'self' 'nonce-fromscript'"],
            "fromscript",
            id="script-src-wins",
        ),
        pytest.param(
            ["default-src 'nonce-fromdefault'; script-src 'self'"], None, id="script-src-without-nonce-wins"
        ),
        pytest.param(
            ["script-src 'nonce-a'; script-src-elem 'nonce-elem'"], "elem", id="script-src-elem-first"
        ),
        pytest.param(["style-src 'nonce-style'; img-src *"], None, id="style-nonce-only"),
        pytest.param(["SCRIPT-SRC\t'nonce-tabbed' 'strict-dynamic'"], "tabbed", id="case-and-tabs"),
        pytest.param(["img-src *", "script-src 'nonce-second'"], "second", id="second-header"),
        pytest.param(["img-src *, script-src 'nonce-listed'"], "listed", id="comma-joined-policies"),
        pytest.param(["script-src 'self'; ; "], None, id="empty-directives"),
        pytest.param(["script-src 'nonce-'"], None, id="empty-nonce"),
    ],
)
def test_csp_nonce(headers: list[str], expected: str | None) -> None:
    assert csp_nonce(headers) == expected


# ------------------------------------------------------------------------------------------ render_tag

CONFIG = snippet_config(
    ingest_url="/_tl/ingest", go_url="/_tl/go", linked_domains=["Pay.Example", ".shop.test"]
)


def _data_tl(tag: str) -> Any:
    match = re.search(r'data-tl="([^"]*)"', tag)
    assert match, tag
    return json.loads(html.unescape(match.group(1)))


def test_render_tag_shape() -> None:
    tag = render_tag(script_url="/_tl/t.js", config=CONFIG)
    stub, loader = tag.split("</script>", 1)
    assert stub.startswith("<script>window.tracklayer=window.tracklayer||{q:[],")
    assert loader.startswith('<script async src="/_tl/t.js" data-tl="')
    assert loader.endswith("></script>")
    assert "nonce" not in tag
    assert _data_tl(tag) == {
        "i": "/_tl/ingest",
        "g": "/_tl/go",
        "l": ["pay.example", ".shop.test"],
        "c": "none",
        "d": "",
        "t": "",
        "pv": 1,
    }


def test_render_tag_nonce_on_both_scripts() -> None:
    tag = render_tag(script_url="/_tl/t.js", config=CONFIG, nonce="n0nce")
    assert tag.count('nonce="n0nce"') == 2
    assert tag.startswith('<script nonce="n0nce">window.tracklayer=')


def test_render_tag_escapes_config_values() -> None:
    evil = '"></script><script>alert(1)</script><!--'
    tag = render_tag(script_url="/_tl/t.js", config={**CONFIG, "t": evil, "d": "a'b&c"})
    assert tag.count("<script") == 2
    assert tag.count("</script>") == 2
    assert "alert(1)</script>" not in tag
    assert _data_tl(tag)["t"] == evil
    assert _data_tl(tag)["d"] == "a'b&c"


def test_render_tag_escapes_script_url_and_nonce() -> None:
    tag = render_tag(script_url='/t.js"><b', config=CONFIG, nonce='x" onload="alert(1)')
    assert '"><b' not in tag
    assert 'onload="alert' not in tag
    assert tag.count("<script") == 2


def test_render_tag_is_a_plain_str() -> None:
    tag = render_tag(script_url="/_tl/t.js", config=CONFIG)
    assert type(tag) is str


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({"consent": "cookie:cmp=yes"}, {"c": "cookie:cmp=yes"}, id="cookie-consent"),
        pytest.param({"consent": "denied"}, {"c": "denied"}, id="denied"),
        pytest.param(
            {"tag_id": "2612345678901", "page_visit": False}, {"t": "2612345678901", "pv": 0}, id="tag"
        ),
        pytest.param({"cookie_domain": ".shop.example"}, {"d": ".shop.example"}, id="cookie-domain"),
    ],
)
def test_snippet_config(kwargs: dict[str, Any], expected: dict[str, object]) -> None:
    config = snippet_config(ingest_url="/i", go_url="/g", **kwargs)
    assert {k: config[k] for k in expected} == expected


@pytest.mark.parametrize("consent", ["cookie:", "cookie:novalue", "yes", ""])
def test_snippet_config_rejects_bad_consent_modes(consent: str) -> None:
    with pytest.raises(ValueError, match="consent"):
        snippet_config(ingest_url="/i", go_url="/g", consent=consent)


# ----------------------------------------------------------------------------------------------- jinja


def _factory(calls: list[Any]) -> Any:
    def factory(request: Any) -> str:
        calls.append(request)
        if isinstance(request, dict):
            request[INJECTED_KEY] = True
        return render_tag(script_url="/_tl/t.js", config=CONFIG)

    return factory


def test_install_jinja_global_renders_unescaped_markup() -> None:
    env = jinja2.Environment(autoescape=True)
    calls: list[Any] = []
    install_jinja(env, _factory(calls))
    scope: dict[str, Any] = {"type": "http"}
    out = env.from_string("<head>{{ tracklayer_tag(scope) }}</head>").render(scope=scope)
    assert out == "<head>" + render_tag(script_url="/_tl/t.js", config=CONFIG) + "</head>"
    assert calls == [scope]
    assert scope[INJECTED_KEY] is True
    # what the middleware then sees: a body it must leave alone
    assert inject(out.encode(), TAG) is None


def test_jinja_tag_defaults_to_the_context_request() -> None:
    env = jinja2.Environment(autoescape=True)
    calls: list[Any] = []
    env.globals["tracklayer_tag"] = jinja_tag(_factory(calls))
    out = env.from_string("{{ tracklayer_tag() }}").render(request="REQ")
    assert calls == ["REQ"]
    assert "data-tl=" in out


def test_jinja_tag_returns_markup() -> None:
    fn = jinja_tag(lambda _request: "<b>")
    env = jinja2.Environment(autoescape=True)
    assert env.from_string("{{ f(1) }}").render(f=fn) == "<b>"
    assert isinstance(fn(env.from_string("").new_context(), 1), markupsafe.Markup)


def test_jinja_tag_never_breaks_the_page(caplog: pytest.LogCaptureFixture) -> None:
    def broken(_request: Any) -> str:
        raise RuntimeError("boom")

    env = jinja2.Environment(autoescape=True)
    install_jinja(env, broken)
    with caplog.at_level(logging.ERROR, logger="tracklayer_mw"):
        assert env.from_string("<head>{{ tracklayer_tag(1) }}</head>").render() == "<head></head>"
    assert "could not render" in caplog.text


# ---------------------------------------------------------------------------------------------- script


def test_script_bytes_is_the_snippet() -> None:
    source = script_bytes()
    assert b"tracklayer" in source
    assert source.rstrip().endswith(b")(window,document,window.tracklayer);")
