"""Signed, timestamped values with itsdangerous: key rotation, one salt per use, an injectable clock."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from itsdangerous import BadData, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode
from itsdangerous.serializer import Serializer
from itsdangerous.timed import TimestampSigner

COOKIE_SALT = "tracklayer.context-cookie"
LINKER_SALT = "tracklayer.linker"
# Another server (the linked site, or a sibling behind the load balancer) may sign with a clock
# running a little ahead: accept values signed up to this far in the future.
CLOCK_SKEW = 120


class _UncompressedSerializer(URLSafeTimedSerializer):
    """Never zlib-compressed. itsdangerous tries zlib on every dump: for a cookie of a hundred bytes
    that saves a few bytes and was the costliest step of a landing request (about 30 us). Loading
    still accepts both forms, so values signed by an earlier version keep working."""

    def dump_payload(self, obj: Any) -> bytes:
        return base64_encode(Serializer.dump_payload(self, obj))


class SignedCodec:
    """`dumps`/`loads` compact JSON; the newest key signs, every key verifies (oldest first)."""

    def __init__(self, keys: Sequence[str], *, salt: str, clock: Callable[[], float]) -> None:
        class ClockSigner(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock())

        self._clock = clock
        self._serializer = _UncompressedSerializer(
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
        if not token or len(token) > 4096:
            return None
        try:
            # The age is checked here, not by itsdangerous, which refuses any signature dated in its future.
            value, signed_at = self._serializer.loads(token, max_age=None, return_timestamp=True)
        except (BadData, ValueError, TypeError):
            return None
        issued_at = int(signed_at.timestamp())
        if not -CLOCK_SKEW <= int(self._clock()) - issued_at <= max_age:
            return None
        return value, issued_at
