"""Signed, timestamped values with itsdangerous: key rotation, one salt per use, an injectable clock."""

from __future__ import annotations

import hashlib
import hmac
import json
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from itsdangerous import BadData, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode
from itsdangerous.signer import HMACAlgorithm, Signer
from itsdangerous.timed import TimestampSigner

COOKIE_SALT = "tracklayer.context-cookie"
LINKER_SALT = "tracklayer.linker"
# Another server (the linked site, or a sibling behind the load balancer) may sign with a clock
# running a little ahead: accept values signed up to this far in the future.
CLOCK_SKEW = 120
COMPRESS_ABOVE = 512  # bytes of JSON; below this a value is signed uncompressed (see _Serializer)


class _Serializer(URLSafeTimedSerializer):
    """itsdangerous, minus the per-call costs that showed up as most of a landing request's time.
    Plain itsdangerous reads its tokens, and they read its; they are byte for byte the same except
    for small values itsdangerous would have compressed (tests/test_signing.py).

    - zlib only for large values: itsdangerous tries it on every dump, which for the usual value of
      two hundred bytes saves a few bytes for ~10-30 us (zlib sets up its state on every call). A
      value with a long landing URL is still compressed, so cookies stay well under 4 KB.
    - One signer per salt, made once: itsdangerous builds a new one (and derives its keys again,
      one HMAC per key) on every dumps and loads. Signers hold only their settings: sharing one
      between threads is safe.
    - One JSON encoder: `json.dumps` with itsdangerous's options builds a new one on every call.
    """

    _json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # itsdangerous's _CompactJSON

    def dump_payload(self, obj: Any) -> bytes:
        payload = self._json.encode(obj).encode("utf-8")
        if len(payload) > COMPRESS_ABOVE:  # itsdangerous's own form: "." + base64(zlib), when shorter
            compressed = zlib.compress(payload)
            if len(compressed) < len(payload) - 1:
                return b"." + base64_encode(compressed)
        return base64_encode(payload)

    def make_signer(self, salt: str | bytes | None = None) -> Signer:
        signers: dict[str | bytes | None, Signer] = self.__dict__.setdefault("_signers", {})
        signer = signers.get(salt)
        if signer is None:
            signer = signers[salt] = super().make_signer(salt)
        return signer


class _HmacSha1(HMACAlgorithm):
    """itsdangerous's default, HMAC-SHA1, through the one-shot C function: its own call goes
    through the pure-Python `hmac.HMAC` class, because its digest method is a Python function."""

    def __init__(self) -> None:
        super().__init__(hashlib.sha1)

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        return hmac.digest(key, value, "sha1")


class _CachingSigner(TimestampSigner):
    """Derived keys computed once per secret key (itsdangerous derives them on every call)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("algorithm", _HmacSha1())
        super().__init__(*args, **kwargs)

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        derived: dict[str | bytes | None, bytes] = self.__dict__.setdefault("_derived", {})
        key = derived.get(secret_key)
        if key is None:
            key = derived[secret_key] = super().derive_key(secret_key)
        return key


class SignedCodec:
    """`dumps`/`loads` compact JSON; the newest key signs, every key verifies (oldest first)."""

    def __init__(self, keys: Sequence[str], *, salt: str, clock: Callable[[], float]) -> None:
        class ClockSigner(_CachingSigner):
            def get_timestamp(self) -> int:
                return int(clock())

        self._clock = clock
        self._serializer = _Serializer(
            list(keys),
            salt=salt,
            signer=ClockSigner,
            serializer_kwargs={"separators": (",", ":")},
        )

    def dumps(self, value: Any) -> str:
        token = self._serializer.dumps(value)
        assert isinstance(token, str)
        return token

    def loads(self, token: str, *, max_age: int) -> tuple[Any, int] | None:
        """(value, signed_at) or None for anything tampered, expired, foreign or malformed."""
        verified = self.verify(token)
        if verified is None or not self.current(verified[1], max_age=max_age):
            return None
        return verified

    def verify(self, token: str) -> tuple[Any, int] | None:
        """(value, signed_at) when the signature is ours, whatever its age; else None."""
        if not token or len(token) > 4096:
            return None
        try:
            # The age is checked by current(), not by itsdangerous, which refuses any signature dated in
            # its future.
            value, signed_at = self._serializer.loads(token, max_age=None, return_timestamp=True)
        except (BadData, ValueError, TypeError):
            return None
        return value, int(signed_at.timestamp())

    def current(self, issued_at: int, *, max_age: int) -> bool:
        """Whether a value signed at `issued_at` is still good: not older than max_age, and not from
        further in the future than another server's clock may run ahead."""
        return -CLOCK_SKEW <= int(self._clock()) - issued_at <= max_age
