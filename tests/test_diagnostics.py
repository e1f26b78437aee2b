"""Diagnostics figures and verdicts from scripted delivery logs (tracklayer_mw.diagnostics).

Each scenario is a hand-written log whose expected figures are counted by hand below it: event
ids count once per name, and the latest row of an id decides its outcome and its signals.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest

from tracklayer_mw.diagnostics import EventRow, Finding, Report, build_report, render_html, render_text
from tracklayer_mw.outbox import LogEntry, OutboxCounts

NOW = 1_764_322_000.0
HOUR = 3600.0
EMPTY = OutboxCounts(pending=0, retrying=0, in_flight=0, dead=0)
UNAUTHORIZED = "HTTP 401: the access token is wrong or expired (Authentication failed.)"
FORBIDDEN = "HTTP 403: the token's user has no access to this ad account"


def entry(
    event_id: str,
    outcome: str = "processed",
    *,
    name: str = "PageVisit",
    ago: float = 60.0,
    message: str = "",
    warning: str = "",
    click_id: bool = False,
    email: bool = False,
    ip_ua: bool = True,
    pixel: bool = False,
    test: bool = False,
) -> LogEntry:
    return LogEntry(
        at=NOW - ago,
        event_id=event_id,
        event_name=name,
        outcome=outcome,
        message=message,
        warning=warning,
        click_id=click_id,
        email=email,
        ip_ua=ip_ua,
        pixel=pixel,
        test=test,
    )


def report_of(entries: list[LogEntry], counts: OutboxCounts = EMPTY, **kwargs: Any) -> Report:
    options: dict[str, Any] = {"now": NOW, "has_credentials": True, "test_mode": False, **kwargs}
    return build_report(entries, counts, **options)


def titles(report: Report, level: str | None = None) -> list[str]:
    return [f.title for f in report.findings if level is None or f.level == level]


def finding(report: Report, fragment: str) -> Finding:
    matches = [f for f in report.findings if fragment in f.title]
    assert len(matches) == 1, titles(report)
    return matches[0]


# --- the scripted day ----------------------------------------------------------------------------


def scripted_day() -> list[LogEntry]:
    """A day of traffic with every kind of outcome; the expected figures are in test_scripted_figures."""
    log = [
        # Outside a 24 h window: never counted.
        entry("old-1", "failed", name="Purchase", ago=25 * HOUR, message="too old to matter"),
        # pv-0 was retried twice, then processed: one event, sent and processed once.
        entry("pv-0", "retry", ago=3 * HOUR, message="timed out waiting for Pinterest", click_id=True),
        entry("pv-0", "retry", ago=2 * HOUR, message="timed out waiting for Pinterest", click_id=True),
    ]
    # Ten page visits: 6 with a click id, 5 with a pixel twin, all with IP + UA.
    log += [entry(f"pv-{i}", click_id=i < 6, pixel=i % 2 == 0, ago=HOUR - i) for i in range(10)]
    log += [
        # p-0: retried, then processed; click id and email.
        entry("p-0", "retry", name="Purchase", ago=5 * HOUR, message="HTTP 503: ramped down", click_id=True),
        entry("p-0", "processed", name="Purchase", ago=4 * HOUR, click_id=True, email=True, pixel=True),
        entry("p-1", "processed", name="Purchase", ago=300, email=True, warning="currency is not ISO 4217"),
        entry("p-2", "failed", name="Purchase", ago=200, message="event_time is too old", ip_ua=False),
        entry("p-3", "processed", name="Purchase", ago=100, warning="currency is not ISO 4217"),
        entry("p-4", "retry", name="Purchase", ago=50, message="HTTP 503: ramped down"),
        # An add to cart refused with the whole batch: dead, never judged per event.
        entry("a-0", "dead", name="AddToCart", ago=400, message=UNAUTHORIZED),
        entry("a-1", "processed", name="AddToCart", ago=30, warning="unknown field foo"),
    ]
    return log


def test_scripted_figures() -> None:
    report = report_of(scripted_day(), OutboxCounts(pending=2, retrying=1, in_flight=0, dead=2))

    assert [row.event_name for row in report.rows] == ["PageVisit", "AddToCart", "Purchase"]
    rows = {row.event_name: row for row in report.rows}
    assert rows["PageVisit"] == EventRow(
        "PageVisit", events=10, sent=10, processed=10, click_id=6, ip_ua=10, pixel=5
    )
    assert rows["Purchase"] == EventRow(
        "Purchase",
        events=5,
        sent=4,
        processed=3,
        failed=1,
        warnings=2,
        retrying=1,
        click_id=1,
        email=2,
        ip_ua=4,
        pixel=1,
    )
    assert rows["AddToCart"] == EventRow(
        "AddToCart", events=2, sent=1, processed=1, warnings=1, dead=1, ip_ua=2
    )
    assert report.totals == EventRow(
        "All events",
        events=17,
        sent=15,
        processed=14,
        failed=1,
        warnings=3,
        retrying=1,
        dead=1,
        click_id=7,
        email=2,
        ip_ua=16,
        pixel=6,
    )
    assert rows["PageVisit"].shares == {"click_id": 0.6, "email": 0.0, "ip_ua": 1.0, "pixel": 0.5}
    assert rows["Purchase"].shares == {"click_id": 0.2, "email": 0.4, "ip_ua": 0.8, "pixel": 0.2}
    assert (report.pending, report.retrying, report.in_flight, report.dead) == (2, 1, 0, 2)


def test_scripted_messages() -> None:
    report = report_of(scripted_day())
    # Newest first; p-0's old 503 was resolved, p-4's is still current. The 25 h old one is out.
    assert [(m.text, m.count, m.outcome) for m in report.failures] == [
        ("HTTP 503: ramped down", 1, "retry"),
        ("event_time is too old", 1, "failed"),
        (UNAUTHORIZED, 1, "dead"),
    ]
    assert report.failures[0].last_at == NOW - 50
    # Most frequent first.
    assert [(m.text, m.count, m.event_names) for m in report.warnings] == [
        ("currency is not ISO 4217", 2, ("Purchase",)),
        ("unknown field foo", 1, ("AddToCart",)),
    ]


def test_scripted_findings() -> None:
    report = report_of(scripted_day(), OutboxCounts(pending=0, retrying=1, in_flight=0, dead=2))
    assert report.level == "error"

    refused = finding(report, "HTTP 401")
    assert refused.level == "error"
    assert refused.title == "Pinterest refused 1 event with HTTP 401"
    assert "Conversion Access Token" in refused.advice
    assert "retry-dead" in refused.advice

    assert finding(report, "waiting for a retry").title == "1 event is waiting for a retry"
    assert finding(report, "waiting for a retry").level == "warn"
    assert "HTTP 503: ramped down" in finding(report, "waiting for a retry").advice
    failed = finding(report, "Pinterest failed")
    assert failed.title == "Pinterest failed 1 of 15 events"
    assert "event_time is too old" in failed.advice
    assert finding(report, "dead letters in the outbox").title == "2 dead letters in the outbox"

    # Page visits keep 60% click ids, purchases 20% (< half of 60%): lost on the way.
    lost = finding(report, "Click ids get lost")
    assert lost.topic == "match"
    assert "Purchase 20%" in lost.title
    assert "TRACKLAYER_COOKIE_DOMAIN" in lost.advice
    assert "TRACKLAYER_LINKED_DOMAINS" in lost.advice
    emails = finding(report, "carry an email")
    assert "Purchase 40%" in emails.title
    assert "track(request" in emails.advice
    # 16 of 17 have IP + UA (94%): fine. 7 of 17 click ids (41%): not "low" overall.
    assert not [t for t in titles(report) if "IP address" in t or "Only " in t]

    warnings = finding(report, "warned about")
    assert warnings.topic == "warnings"
    assert warnings.title == "Pinterest warned about 3 events"
    assert warnings.advice.index("currency is not ISO 4217") < warnings.advice.index("unknown field foo")
    # An error in delivery: no "events arrive" all-clear.
    assert not titles(report, "ok")


def test_window_is_configurable() -> None:
    report = report_of(scripted_day(), hours=1)
    # Only rows from the last hour: p-1..p-4, a-0, a-1 and the ten page visits' processed rows.
    assert report.totals.events == 16
    assert report.hours == 1
    assert "the last hour" in render_text(report)
    with pytest.raises(ValueError, match="hours"):
        report_of([], hours=0)


def test_latest_row_decides_signals() -> None:
    # The click id arrived with a later copy of the event (browser beacon merged into the server event).
    report = report_of(
        [
            entry("e-1", "retry", message="timed out", click_id=False),
            entry("e-1", "processed", ago=10, click_id=True),
            entry("e-1", "processed", name="Purchase", ago=5),  # same id, another name: its own event
        ]
    )
    assert report.totals.events == 2
    assert report.rows[0].click_id == 1
    assert report.rows[0].retrying == 0


# --- "nothing arrives" -----------------------------------------------------------------------------


def test_no_credentials() -> None:
    report = report_of([], OutboxCounts(pending=7, retrying=0, in_flight=0, dead=0), has_credentials=False)
    first = report.findings[0]
    assert first.level == "error"
    assert first.title == "No Pinterest credentials: nothing can be sent"
    assert "TRACKLAYER_PINTEREST_ACCESS_TOKEN" in first.advice
    assert "7 queued" in first.advice
    assert report.level == "error"


def test_everything_retrying() -> None:
    log = [entry(f"e-{i}", "retry", message="could not reach Pinterest (ConnectError)") for i in range(3)]
    report = report_of(log, OutboxCounts(pending=0, retrying=3, in_flight=0, dead=0))
    found = finding(report, "Nothing reached Pinterest")
    assert found.level == "error"
    assert "could not reach Pinterest (ConnectError)" in found.advice
    assert "tracklayer check" in found.advice


@pytest.mark.parametrize(
    ("message", "status", "advice"),
    [
        pytest.param(UNAUTHORIZED, 401, "Conversion Access Token", id="401"),
        pytest.param(FORBIDDEN, 403, "TRACKLAYER_PINTEREST_AD_ACCOUNT_ID", id="403"),
    ],
)
def test_refused_credentials(message: str, status: int, advice: str) -> None:
    log = [entry(f"e-{i}", "dead", message=message) for i in range(4)]
    report = report_of(log, OutboxCounts(pending=0, retrying=0, in_flight=0, dead=4))
    found = finding(report, f"HTTP {status}")
    assert found.level == "error"
    assert found.title == f"Pinterest refused 4 events with HTTP {status}"
    assert advice in found.advice


def test_no_events_at_all() -> None:
    report = report_of([])
    assert [(f.level, f.title) for f in report.findings] == [("warn", "No events in the last 24 hours")]
    assert "TrackLayerMiddleware" in report.findings[0].advice
    assert report.rows == ()
    assert report.totals.share("click_id") is None


def test_queued_but_never_sent() -> None:
    report = report_of([], OutboxCounts(pending=12, retrying=0, in_flight=0, dead=0))
    found = finding(report, "queued but none was sent")
    assert found.level == "error"
    assert found.title == "12 events are queued but none was sent in the last 24 hours"


def test_healthy_day() -> None:
    log = [entry(f"pv-{i}", click_id=True, pixel=True, ago=100 + i) for i in range(20)] + [
        entry(f"p-{i}", name="Purchase", click_id=True, email=True, ago=50 + i) for i in range(6)
    ]
    report = report_of(log)
    assert [(f.level, f.title) for f in report.findings] == [
        ("ok", "Events arrive: Pinterest processed 26 of 26 sent"),
        ("ok", "Match signals look healthy"),
    ]
    assert report.level == "ok"


def test_low_click_id_share_overall() -> None:
    report = report_of([entry(f"pv-{i}", click_id=i == 0) for i in range(20)])
    found = finding(report, "carry a Pinterest click id")
    assert found.title == "Only 5% of events carry a Pinterest click id"
    for hint in ("landing pages", "TRACKLAYER_COOKIE_DOMAIN", "TRACKLAYER_LINKED_DOMAINS"):
        assert hint in found.advice


def test_low_ip_ua_share() -> None:
    report = report_of([entry(f"e-{i}", click_id=True, ip_ua=i < 5) for i in range(10)])
    found = finding(report, "IP address")
    assert found.title == "Only 50% of events carry the visitor's IP address and user agent"
    assert "TRACKLAYER_TRUSTED_PROXY_HOPS" in found.advice


def test_small_samples_do_not_judge_match_quality() -> None:
    report = report_of([entry(f"p-{i}", name="Purchase") for i in range(4)])
    assert not [f for f in report.findings if f.topic == "match"]


def test_test_mode_is_flagged() -> None:
    report = report_of([entry("e-1", click_id=True, test=True)], test_mode=True)
    found = finding(report, "Test mode is on")
    assert (found.level, found.topic) == ("warn", "setup")
    assert report.totals.test == 1


# --- rendering -------------------------------------------------------------------------------------


def test_json_is_serializable_and_complete() -> None:
    data = json.loads(json.dumps(report_of(scripted_day()).to_json()))
    assert data["verdict"] == "error"
    assert data["totals"]["events"] == 17
    assert data["totals"]["shares"]["click_id"] == round(7 / 17, 4)
    purchase = next(row for row in data["events"] if row["event_name"] == "Purchase")
    assert purchase["shares"] == {"click_id": 0.2, "email": 0.4, "ip_ua": 0.8, "pixel": 0.2}
    assert data["outbox"] == {"pending": 0, "retrying": 0, "in_flight": 0, "dead": 0}
    assert data["warnings"][0] == {
        "text": "currency is not ISO 4217",
        "count": 2,
        "last_at": NOW - 100,
        "outcome": "processed",
        "event_names": ["Purchase"],
    }
    assert {f["topic"] for f in data["findings"]} == {"delivery", "match", "warnings"}


def test_render_text() -> None:
    text = render_text(report_of(scripted_day()))
    lines = text.splitlines()
    assert lines[0].startswith("TrackLayer diagnostics: the last 24 hours (to 2025-11-28")
    header = next(line for line in lines if line.startswith("Event"))
    assert header.split() == [
        "Event", "Events", "Sent", "Processed", "Failed", "Warnings", "Retrying", "Dead",
        "Click", "id", "Email", "IP", "+", "UA", "Pixel", "twin",
    ]  # fmt: skip
    purchase = next(line for line in lines if line.startswith("Purchase"))
    assert purchase.split() == ["Purchase", "5", "4", "3", "1", "2", "1", "0", "20%", "40%", "80%", "20%"]
    totals = next(line for line in lines if line.startswith("All events"))
    assert totals.split()[2:5] == ["17", "15", "14"]
    assert "Outbox now: 0 pending, 0 retrying, 0 in flight, 0 dead" in lines
    assert "  ✗ Pinterest refused 1 event with HTTP 401" in lines
    assert any("currency is not ISO 4217" in line for line in lines[lines.index("Most frequent warnings:") :])


def test_render_html_is_escaped_and_self_contained() -> None:
    log = [entry("e-1", "failed", message='<script>alert("x")</script>', warning="<b>bold</b>")]
    page = render_html(report_of(log))
    assert page.startswith("<!doctype html>")
    assert "<script" not in page
    assert "&lt;script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    # Nothing fetched from elsewhere: no external stylesheet, script, image or font.
    assert not re.search(r"""(?:src|href)=|@import|url\(""", page)


def test_render_html_dashboard() -> None:
    page = render_html(report_of(scripted_day(), OutboxCounts(pending=3, retrying=1, in_flight=2, dead=4)))
    text = html.unescape(page)
    assert "<table>" in page
    assert '<span class="pill error">broken</span>' in page
    assert "Click ids get lost between landing and conversion" in text
    assert '<i style="width: 60.0%"></i>' in page  # the page visits' click-id bar
    assert '<div class="tile"><b>4</b><span>dead letters</span></div>' in page
    assert "<td>Purchase</td><td>5</td><td>4</td><td>3</td><td>1</td>" in page
    assert "No events were logged" in render_html(report_of([]))
