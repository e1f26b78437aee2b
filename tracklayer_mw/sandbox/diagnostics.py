"""Figures for the diagnostics page, modelled on Pinterest's Conversions Diagnostics.

Pure functions over the received records: per event name how many were accepted, failed (with
the latest reasons), warned about and folded as duplicates, and how many accepted events carry
each match signal (click id, email, IP + user agent).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .records import ReceivedEvent

# How many distinct recent failure reasons / warnings to show per event name.
LATEST_REASONS = 3


@dataclass
class EventRow:
    """The figures of one event name (or the totals when ``event_name`` is ``"all events"``)."""

    event_name: str
    received: int = 0
    accepted: int = 0
    failed: int = 0
    warnings: int = 0
    folded: int = 0
    with_click_id: int = 0
    with_email: int = 0
    with_ip_ua: int = 0
    reasons: list[str] = field(default_factory=list)
    warning_messages: list[str] = field(default_factory=list)

    def add(self, record: ReceivedEvent) -> None:
        self.received += 1
        if record.warning:
            self.warnings += 1
            _remember(self.warning_messages, record.warning)
        if record.status == "failed":
            self.failed += 1
            _remember(self.reasons, record.error or "failed")
        elif record.duplicate:
            self.folded += 1
        else:
            # Coverage is measured on accepted events only, as Pinterest's event quality is.
            self.accepted += 1
            # Flags read on arrival: counting never unpacks the (possibly 100,000) events.
            self.with_click_id += record.has_click_id
            self.with_email += record.has_email
            self.with_ip_ua += record.has_ip_ua

    def coverage(self) -> dict[str, float | None]:
        """Share (0-100) of accepted events carrying each match signal; ``None`` with none accepted."""

        def share(count: int) -> float | None:
            return None if not self.accepted else round(100 * count / self.accepted, 1)

        return {
            "click_id": share(self.with_click_id),
            "email": share(self.with_email),
            "ip_ua": share(self.with_ip_ua),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "event_name": self.event_name,
            "received": self.received,
            "accepted": self.accepted,
            "failed": self.failed,
            "warnings": self.warnings,
            "folded": self.folded,
            "coverage": self.coverage(),
            "reasons": self.reasons,
            "warning_messages": self.warning_messages,
        }


def _remember(latest: list[str], message: str) -> None:
    # Newest first, each message once, at most LATEST_REASONS of them.
    if message in latest:
        latest.remove(message)
    latest.insert(0, message)
    del latest[LATEST_REASONS:]


def summarize(records: Iterable[ReceivedEvent]) -> dict[str, Any]:
    """Per event name rows and totals, separately for live traffic and ``?test=true`` traffic."""
    sections: dict[str, tuple[dict[str, EventRow], EventRow]] = {
        "live": ({}, EventRow("all events")),
        "test": ({}, EventRow("all events")),
    }
    for record in records:
        rows, totals = sections["test" if record.test else "live"]
        name = record.event_name
        rows.setdefault(name, EventRow(name)).add(record)
        totals.add(record)
    return {
        section: {
            "events": [rows[name].to_json() for name in sorted(rows)],
            "totals": totals.to_json(),
        }
        for section, (rows, totals) in sections.items()
    }
