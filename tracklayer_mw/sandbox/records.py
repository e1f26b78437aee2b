"""What the sandbox remembers about the traffic it received."""

from __future__ import annotations

import marshal
from dataclasses import dataclass
from typing import Any

# One received event as the sandbox keeps it: a plain tuple of atomic values (numbers, strings,
# bytes, None), in the order of ReceivedEvent's properties. A full sandbox keeps 100,000 of them.
# The cyclic garbage collector stops tracking a tuple that holds no container the first time it
# looks at it, so its full passes never scan the kept rows; kept as parsed events (four to ten
# tracked dicts and lists each) they made every full pass ~0.4 s.
Row = tuple[int, float, bool, str, str, str | None, str | None, bool, str, str, bool, bool, bool, bytes]


def pack(
    event: dict[str, Any],
    *,
    seq: int,
    time: float,
    test: bool,
    ad_account_id: str,
    status: str,
    error: str | None,
    warning: str | None,
    duplicate: bool,
) -> Row:
    """The row of one received event: the event packed, and what the diagnostics count read from it now."""
    user = event.get("user_data")
    if not isinstance(user, dict):  # always an object once schema-valid; the constructor takes any dict
        user = {}
    return (
        seq,
        time,
        test,
        ad_account_id,
        status,
        error,
        warning,
        duplicate,
        str(event.get("event_name", "")),
        str(event.get("event_id", "")),
        bool(user.get("click_id")),
        bool(user.get("em")),
        bool(user.get("client_ip_address") and user.get("client_user_agent")),
        # marshal: the fastest exact round trip of what json.loads produces (dicts, lists, str
        # including lone surrogates, int, float, bool, None) in the standard library: ~1.5 us to
        # pack an 800-byte event and ~4 us to unpack it, against ~8 and ~7 us for compact JSON, and
        # 7% smaller. Only bytes packed here are unpacked, and they never leave the process
        # (marshal's format may change between Python versions).
        marshal.dumps(event),
    )


class ReceivedEvent:
    """One event of an events request that passed authentication and the schema.

    ``status`` is what the sandbox answered for it (``processed``/``failed``); ``duplicate`` marks
    a processed event folded into an earlier one with the same ``(event_name, event_id)``. The
    ``has_*`` flags are the match signals of its ``user_data`` that the diagnostics page counts.

    Read-only. A view of a ``Row``: the event is kept packed and ``event`` unpacks a fresh copy.
    """

    __slots__ = ("_row",)

    def __init__(  # noqa: PLR0917 - the positional signature the record had as a dataclass
        self,
        seq: int,
        time: float,
        test: bool,
        ad_account_id: str,
        event: dict[str, Any],
        status: str,
        error: str | None,
        warning: str | None,
        duplicate: bool,
    ) -> None:
        self._row = pack(
            event,
            seq=seq,
            time=time,
            test=test,
            ad_account_id=ad_account_id,
            status=status,
            error=error,
            warning=warning,
            duplicate=duplicate,
        )

    @classmethod
    def from_row(cls, row: Row) -> ReceivedEvent:
        """The record a row stands for (without packing the event again)."""
        record = cls.__new__(cls)
        record._row = row
        return record

    @property
    def seq(self) -> int:
        return self._row[0]

    @property
    def time(self) -> float:
        return self._row[1]

    @property
    def test(self) -> bool:
        return self._row[2]

    @property
    def ad_account_id(self) -> str:
        return self._row[3]

    @property
    def status(self) -> str:
        return self._row[4]

    @property
    def error(self) -> str | None:
        return self._row[5]

    @property
    def warning(self) -> str | None:
        return self._row[6]

    @property
    def duplicate(self) -> bool:
        return self._row[7]

    @property
    def event_name(self) -> str:
        return self._row[8]

    @property
    def event_id(self) -> str:
        return self._row[9]

    @property
    def has_click_id(self) -> bool:
        return self._row[10]

    @property
    def has_email(self) -> bool:
        return self._row[11]

    @property
    def has_ip_ua(self) -> bool:
        """Both an IP address and a user agent."""
        return self._row[12]

    @property
    def event(self) -> dict[str, Any]:
        """The event as received: a fresh copy on every read (changing it changes nothing here)."""
        event: dict[str, Any] = marshal.loads(self._row[13])  # noqa: S302 - packed by `pack`
        return event

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReceivedEvent):
            return NotImplemented
        # The events as values: packed bytes differ for equal dicts whose keys came in another order.
        return self._row[:13] == other._row[:13] and self.event == other.event

    def __hash__(self) -> int:
        return hash(self._row[:13])  # without the event, so equal records hash alike

    def __repr__(self) -> str:
        return (
            f"ReceivedEvent(seq={self.seq!r}, time={self.time!r}, test={self.test!r}, "
            f"ad_account_id={self.ad_account_id!r}, event={self.event!r}, status={self.status!r}, "
            f"error={self.error!r}, warning={self.warning!r}, duplicate={self.duplicate!r})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "test": self.test,
            "ad_account_id": self.ad_account_id,
            "event": self.event,
            "status": self.status,
            "error": self.error,
            "warning": self.warning,
            "duplicate": self.duplicate,
        }


@dataclass(frozen=True)
class RejectedRequest:
    """A whole events request answered without per-event results (400, 401, 403, 404, 405, 429, 5xx...)."""

    time: float
    status: int
    message: str
    test: bool

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "status": self.status, "message": self.message, "test": self.test}
