"""SignedCodec: what the `_tl` cookie and the linker token are made of."""

from __future__ import annotations

import time

from itsdangerous import URLSafeTimedSerializer
from itsdangerous.timed import TimestampSigner

from tracklayer_mw.signing import SignedCodec

NOW = 1_764_322_000.0
EPIK = "dj0yJnU9bXRfT0FzZk5XSzJ0Q3hnTlRzTkdzTF9CbHRTM0M0TnAmbj1kc2x6X1pWZ0t4Tk5LTVFoTm9aMWVnJm09MCZ0"


def codec(*keys: str) -> SignedCodec:
    return SignedCodec(keys or ("key-1",), salt="tracklayer.context-cookie", clock=lambda: NOW)


def test_small_values_are_signed_uncompressed_and_large_ones_compressed() -> None:
    # zlib would shrink this repetitive value a little, and costs ~10-30 us per landing: not used.
    small = {"e": EPIK, "r": EPIK, "t": int(NOW)}
    token = codec().dumps(small)
    assert not token.startswith(".")
    assert codec().loads(token, max_age=60) == (small, int(NOW))
    # A long landing URL with its utm values: compressed, so the cookie stays far from 4 KB.
    large = {
        "e": EPIK,
        "l": "https://shop.example/landing?" + "&".join(f"utm_{i}=spring-sale" for i in range(60)),
    }
    token = codec().dumps(large)
    assert token.startswith(".")
    assert len(token) < 600
    assert codec().loads(token, max_age=60) == (large, int(NOW))


def test_compressed_values_signed_by_plain_itsdangerous_still_load() -> None:
    legacy = URLSafeTimedSerializer(
        ["key-1"], salt="tracklayer.context-cookie", serializer_kwargs={"separators": (",", ":")}
    )
    value = {"e": EPIK * 3}
    token = legacy.dumps(value)
    assert token.startswith(".")  # itsdangerous compressed it
    # itsdangerous signs with the real clock: read it with the real clock too.
    real_clock = SignedCodec(["key-1"], salt="tracklayer.context-cookie", clock=time.time)
    loaded = real_clock.loads(token, max_age=60)
    assert loaded is not None
    assert loaded[0] == value


def test_tampered_and_foreign_values_are_refused() -> None:
    token = codec().dumps({"e": EPIK})
    assert codec().loads(token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1], max_age=60) is None
    assert codec("another-key").loads(token, max_age=60) is None
    assert codec("another-key", "key-1").loads(token, max_age=60) is not None  # rotation: old keys verify


def test_tokens_are_what_plain_itsdangerous_makes() -> None:
    # The speed-ups (no zlib, cached signer and keys, one JSON encoder, C HMAC) change no byte.
    class FixedClockSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(NOW)

    plain = URLSafeTimedSerializer(["old-key", "key-1"], salt="tracklayer.linker", signer=FixedClockSigner)
    ours = SignedCodec(["old-key", "key-1"], salt="tracklayer.linker", clock=lambda: NOW)
    large = {"l": "https://shop.example/?" + "&".join(f"k{i}=v{i}" for i in range(100))}  # compressed
    for value in (
        {"h": "pay.localhost", "c": {"e": "abc", "t": 1}},
        {"e": "ünïcode ✓"},
        [1, 2.5, None],
        large,
    ):
        assert ours.dumps(value) == plain.dumps(value)
        assert ours.loads(plain.dumps(value), max_age=60) == (value, int(NOW))
