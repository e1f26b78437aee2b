"""The per-request check for click signals, on raw ASGI bytes and on WSGI text, says the same."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracklayer_mw.request import carries_click_signals, scope_carries_click_signals

TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=60)
PIECES = st.sampled_from(
    ["epik=x", "EPIK=1", "_tlx=t", "_epik=", "_tl=", "_pin_unauth=", "_derived_epik=", "a=b"]
)


def scope(query: bytes, cookies: list[bytes]) -> dict[str, object]:
    headers = [(b"host", b"shop.example")] + [(b"cookie", value) for value in cookies]
    return {"type": "http", "query_string": query, "headers": headers}


@pytest.mark.parametrize(
    ("query", "cookies", "expected"),
    [
        (b"", [], False),
        (b"q=shoes&page=2", [b"session=abc; theme=dark"], False),
        (b"epik=dj0yJnU9", [], True),
        (b"utm_source=pinterest&EPIK=abc", [], True),
        (b"a=1&_tlx=token", [], True),
        (b"", [b"session=abc; _epik=dj0y"], True),
        (b"", [b"session=abc", b"_tl=signed"], True),  # HTTP/2: one Cookie field per pair
        (b"", [b"_pin_unauth=dWlk"], True),
        (b"", [b"_derived_epik=dj0y"], True),
        (b"", [b"tl=1; epik=1"], False),  # not our cookie names
    ],
)
def test_click_signals(query: bytes, cookies: list[bytes], expected: bool) -> None:
    assert scope_carries_click_signals(scope(query, cookies)) is expected
    assert carries_click_signals(query.decode("latin-1"), "; ".join(c.decode() for c in cookies)) is expected


@given(
    query=st.lists(st.one_of(TEXT, PIECES), max_size=4).map("&".join),
    cookies=st.lists(st.lists(st.one_of(TEXT, PIECES), max_size=3).map("; ".join), max_size=3),
)
def test_raw_and_text_checks_agree(query: str, cookies: list[str]) -> None:
    raw = scope(query.encode("latin-1"), [c.encode("latin-1") for c in cookies])
    assert scope_carries_click_signals(raw) == carries_click_signals(query, "; ".join(cookies))
