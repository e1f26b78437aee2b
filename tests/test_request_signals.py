"""The per-request checks for click signals (in the URL, in the cookies), on raw ASGI bytes and on
WSGI text, say the same."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracklayer_mw.request import cookies_carry_click, scope_cookies_carry_click, url_carries_click

TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=60)
PIECES = st.sampled_from(
    ["epik=x", "EPIK=1", "_tlx=t", "_epik=", "_tl=", "_pin_unauth=", "_derived_epik=", "a=b"]
)


def scope(query: bytes, cookies: list[bytes]) -> dict[str, object]:
    headers = [(b"host", b"shop.example")] + [(b"cookie", value) for value in cookies]
    return {"type": "http", "query_string": query, "headers": headers}


@pytest.mark.parametrize(
    ("query", "cookies", "in_url", "in_cookies"),
    [
        (b"", [], False, False),
        (b"q=shoes&page=2", [b"session=abc; theme=dark"], False, False),
        (b"epik=dj0yJnU9", [], True, False),
        (b"utm_source=pinterest&EPIK=abc", [], True, False),
        (b"a=1&_tlx=token", [], True, False),
        (b"", [b"session=abc; _epik=dj0y"], False, True),
        (b"", [b"session=abc", b"_tl=signed"], False, True),  # HTTP/2: one Cookie field per pair
        (b"", [b"_pin_unauth=dWlk"], False, True),
        (b"", [b"_derived_epik=dj0y"], False, True),
        (b"", [b"tl=1; epik=1"], False, False),  # not our cookie names
    ],
)
def test_click_signals(query: bytes, cookies: list[bytes], in_url: bool, in_cookies: bool) -> None:
    assert url_carries_click(query) is in_url
    assert url_carries_click(query.decode("latin-1")) is in_url
    assert scope_cookies_carry_click(scope(query, cookies)) is in_cookies
    assert cookies_carry_click("; ".join(c.decode() for c in cookies)) is in_cookies


@given(
    query=st.lists(st.one_of(TEXT, PIECES), max_size=4).map("&".join),
    cookies=st.lists(st.lists(st.one_of(TEXT, PIECES), max_size=3).map("; ".join), max_size=3),
)
def test_raw_and_text_checks_agree(query: str, cookies: list[str]) -> None:
    raw = scope(query.encode("latin-1"), [c.encode("latin-1") for c in cookies])
    assert url_carries_click(raw["query_string"]) == url_carries_click(query)  # type: ignore[arg-type]
    assert scope_cookies_carry_click(raw) == cookies_carry_click("; ".join(cookies))
