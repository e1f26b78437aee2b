"""Injected faults: what they are and which one the next request meets.

A fault describes how the sandbox misbehaves; *how* a misbehaviour reaches the client (an httpx
exception, a closed socket, a sleep) is up to the front end that realises it: ``transport.py`` or
``app.py``. This module only decides, request by request, which fault applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

_Number = TypeVar("_Number", int, float)

#: Every kind ``Fault`` accepts.
FAULT_KINDS = frozenset({"429", "500", "502", "503", "slow", "timeout", "drop", "401", "403"})

# Kinds where "the events were processed, then the answer was lost" is a real-world case (the
# at-least-once scenario the dedup of event ids exists for). A 429, 401 or 403 is decided before
# any processing, and a slow answer is processed anyway.
_MAY_PROCESS_FIRST = frozenset({"500", "502", "503", "timeout", "drop"})

#: Seconds a "slow" answer waits when the fault names no delay.
DEFAULT_SLOW_DELAY = 1.0
#: Seconds the server holds a "timeout" answer when the fault names no delay: longer than any
#: sensible client timeout (httpx defaults to 5 s). The httpx transports raise at once instead.
DEFAULT_TIMEOUT_HOLD = 60.0


@dataclass(frozen=True)
class Fault:
    """One misbehaviour to inject.

    - ``kind``: one of ``FAULT_KINDS``: ``"429"``, ``"500"``, ``"502"``, ``"503"``, ``"401"``,
      ``"403"`` (answer with that status), ``"slow"`` (answer normally after ``delay`` seconds),
      ``"timeout"`` (no answer within the client's timeout), ``"drop"`` (connection dropped).
    - ``count``: how many requests it affects; ``None`` = until it expires or is cleared.
    - ``seconds``: how long it stays active after ``inject`` (on the sandbox clock); ``None`` = no limit.
    - ``delay``: seconds for ``slow`` (default 1) and how long the server holds a ``timeout``
      (default 60; the transports raise at once unless a delay is given).
    - ``retry_after``: for ``429``, the ``Retry-After`` header in seconds (Pinterest documents none).
    - ``after_processing``: for 5xx, ``timeout`` and ``drop``: process and record the events first,
      then fail the answer, so a retry exercises deduplication.
    """

    kind: str
    count: int | None = None
    seconds: float | None = None
    delay: float | None = None
    retry_after: int | None = None
    after_processing: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1 (or None for no limit)")
        if self.seconds is not None and self.seconds <= 0:
            raise ValueError("seconds must be positive (or None for no limit)")
        if self.delay is not None and self.delay < 0:
            raise ValueError("delay must not be negative")
        if self.retry_after is not None and (self.kind != "429" or self.retry_after < 0):
            raise ValueError("retry_after is a non-negative number of seconds, for 429 faults only")
        if self.after_processing and self.kind not in _MAY_PROCESS_FIRST:
            raise ValueError(f"after_processing applies to {sorted(_MAY_PROCESS_FIRST)} only")

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        """A fault from the JSON of ``POST /_sandbox/faults``; ``ValueError`` when malformed."""
        if not isinstance(data, dict):
            raise ValueError('expected a JSON object such as {"kind": "429", "count": 2}')
        unknown = set(data) - {"kind", "count", "seconds", "delay", "retry_after", "after_processing"}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        kind = data.get("kind")
        if isinstance(kind, int) and not isinstance(kind, bool):
            kind = str(kind)  # {"kind": 429} is a natural thing to type
        if not isinstance(kind, str):
            raise ValueError("kind is required, a string")
        return cls(
            kind=kind,
            count=_optional_number(data, "count", int),
            seconds=_optional_number(data, "seconds", float),
            delay=_optional_number(data, "delay", float),
            retry_after=_optional_number(data, "retry_after", int),
            after_processing=_flag(data, "after_processing"),
        )

    @property
    def slow_delay(self) -> float:
        return DEFAULT_SLOW_DELAY if self.delay is None else self.delay

    @property
    def timeout_hold(self) -> float:
        return DEFAULT_TIMEOUT_HOLD if self.delay is None else self.delay


def _optional_number(data: dict[str, Any], name: str, kind: type[_Number]) -> _Number | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if kind is int and value != int(value):
        raise ValueError(f"{name} must be a whole number")
    return kind(value)


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")
    return value


@dataclass
class _Active:
    fault: Fault
    remaining: int | None
    expires_at: float | None


@dataclass
class FaultQueue:
    """Active faults in injection order. Not thread-safe: the sandbox calls it under its lock."""

    _active: list[_Active] = field(default_factory=list)

    def add(self, fault: Fault, now: float) -> None:
        expires = None if fault.seconds is None else now + fault.seconds
        self._active.append(_Active(fault, fault.count, expires))

    def clear(self) -> None:
        self._active.clear()

    def take(self, now: float) -> Fault | None:
        """The fault this request meets (the oldest active one), using up one of its count."""
        self._expire(now)
        if not self._active:
            return None
        head = self._active[0]
        if head.remaining is not None:
            head.remaining -= 1
            if head.remaining == 0:
                self._active.pop(0)
        return head.fault

    def describe(self, now: float) -> list[dict[str, Any]]:
        """The active faults as JSON-ready dicts, with what is left of each."""
        self._expire(now)
        return [
            {
                "kind": active.fault.kind,
                "remaining": active.remaining,
                "expires_in": None if active.expires_at is None else round(active.expires_at - now, 3),
                "delay": active.fault.delay,
                "retry_after": active.fault.retry_after,
                "after_processing": active.fault.after_processing,
            }
            for active in self._active
        ]

    def _expire(self, now: float) -> None:
        self._active = [a for a in self._active if a.expires_at is None or a.expires_at > now]
