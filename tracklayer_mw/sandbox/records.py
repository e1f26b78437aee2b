"""What the sandbox remembers about the traffic it received."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ReceivedEvent:
    """One event of an events request that passed authentication and the schema.

    ``status`` is what the sandbox answered for it (``processed``/``failed``); ``duplicate`` marks
    a processed event folded into an earlier one with the same ``(event_name, event_id)``.
    """

    seq: int
    time: float
    test: bool
    ad_account_id: str
    event: dict[str, Any]
    status: str
    error: str | None
    warning: str | None
    duplicate: bool

    @property
    def event_name(self) -> str:
        return str(self.event.get("event_name", ""))

    @property
    def event_id(self) -> str:
        return str(self.event.get("event_id", ""))

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
