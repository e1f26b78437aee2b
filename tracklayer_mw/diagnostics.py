"""Delivery diagnostics: figures per event name, and a verdict in words.

`build_report()` is a pure function of the outbox's delivery log and counts, so it is tested with
scripted log entries and a fixed `now`. It answers the three questions users bring:
"nothing arrives", "low match quality" and "what are these warnings". `render_text()` serves the
CLI, `render_html()` the middleware's `{path_prefix}/diagnostics` page.

Every event id counts once per event name: an event retried three times and then processed is one
event sent and processed. Its latest log row decides its outcome and its match signals.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import jinja2

from tracklayer_mw.events import EVENT_NAMES
from tracklayer_mw.outbox import LogEntry, OutboxCounts
from tracklayer_mw.pinterest import explain

Level = Literal["ok", "warn", "error"]
Topic = Literal["delivery", "match", "warnings", "setup"]

SIGNALS: dict[str, str] = {
    "click_id": "Click id",
    "email": "Email",
    "ip_ua": "IP + UA",
    "pixel": "Pixel twin",
}

# Below this many events of a name, a share says too little to warn about.
MIN_SAMPLE = 5
# Click ids only come with visitors from Pinterest, so the bar is low; under it, something is off.
LOW_CLICK_ID_SHARE = 0.10
# A conversion keeping less than this fraction of the landing pages' click-id share lost it on the way.
CLICK_ID_KEPT = 0.5
LOW_EMAIL_SHARE = 0.5
LOW_IP_UA_SHARE = 0.9
MAX_MESSAGES = 5

# Events where the site usually knows who the customer is (an email is there to pass).
KNOWN_USER_EVENTS = ("Purchase", "Signup", "Lead", "Subscribe")
# Events down the funnel from the landing page, where a lost click id hurts attribution.
CONVERSION_EVENTS = ("AddToCart", "AddPaymentInfo", "Checkout", "Purchase", "Signup", "Lead", "Subscribe")
_SENT = ("processed", "failed")


@dataclass(frozen=True, slots=True)
class EventRow:
    """The figures of one event name; the totals row is named "All events"."""

    event_name: str
    events: int = 0  # distinct event ids logged in the window
    sent: int = 0  # reached Pinterest and were judged: processed + failed
    processed: int = 0
    failed: int = 0
    warnings: int = 0
    retrying: int = 0  # latest attempt will be retried (Pinterest unreachable, 429, 5xx)
    dead: int = 0  # refused as a whole (400/401/403) or too old: never judged per event
    test: int = 0  # sent with test=true
    click_id: int = 0
    email: int = 0
    ip_ua: int = 0
    pixel: int = 0

    def share(self, signal: str) -> float | None:
        """The fraction (0-1) of this name's events carrying `signal`; None with no events."""
        count: int = getattr(self, signal)
        return count / self.events if self.events else None

    @property
    def shares(self) -> dict[str, float | None]:
        return {signal: self.share(signal) for signal in SIGNALS}


@dataclass(frozen=True, slots=True)
class Message:
    """One distinct failure or warning text, with how many events carried it."""

    text: str
    count: int
    last_at: float
    outcome: str
    event_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    title: str
    advice: str = ""
    topic: Topic = "delivery"


@dataclass(frozen=True, slots=True)
class Report:
    generated_at: float
    hours: float
    has_credentials: bool
    test_mode: bool
    rows: tuple[EventRow, ...]
    totals: EventRow
    pending: int
    retrying: int
    in_flight: int
    dead: int
    failures: tuple[Message, ...]  # newest first
    warnings: tuple[Message, ...]  # most frequent first
    findings: tuple[Finding, ...] = ()  # filled in last: they read the figures above

    @property
    def level(self) -> Level:
        """The worst finding: the one-word verdict."""
        levels = {finding.level for finding in self.findings}
        return "error" if "error" in levels else "warn" if "warn" in levels else "ok"

    def to_json(self) -> dict[str, Any]:
        def row(item: EventRow) -> dict[str, Any]:
            shares = {k: None if v is None else round(v, 4) for k, v in item.shares.items()}
            return {**asdict(item), "shares": shares}

        def message(item: Message) -> dict[str, Any]:
            return {**asdict(item), "event_names": list(item.event_names)}

        return {
            "generated_at": self.generated_at,
            "hours": self.hours,
            "has_credentials": self.has_credentials,
            "test_mode": self.test_mode,
            "verdict": self.level,
            "events": [row(item) for item in self.rows],
            "totals": row(self.totals),
            "outbox": {
                "pending": self.pending,
                "retrying": self.retrying,
                "in_flight": self.in_flight,
                "dead": self.dead,
            },
            "failures": [message(item) for item in self.failures],
            "warnings": [message(item) for item in self.warnings],
            "findings": [asdict(f) for f in self.findings],
        }


# --- the figures ---------------------------------------------------------------------------------


def _latest_per_event(entries: Iterable[LogEntry], since: float) -> list[LogEntry]:
    """The last row of each (event name, event id); rows come oldest first, a tie goes to the later row."""
    latest: dict[tuple[str, str], LogEntry] = {}
    for entry in entries:
        if entry.at < since:
            continue
        key = (entry.event_name, entry.event_id)
        if key not in latest or entry.at >= latest[key].at:
            latest[key] = entry
    return list(latest.values())


def _row(name: str, rows: Sequence[LogEntry]) -> EventRow:
    def count(outcome: str) -> int:
        return sum(1 for entry in rows if entry.outcome == outcome)

    return EventRow(
        event_name=name,
        events=len(rows),
        sent=sum(1 for entry in rows if entry.outcome in _SENT),
        processed=count("processed"),
        failed=count("failed"),
        warnings=sum(1 for entry in rows if entry.warning),
        retrying=count("retry"),
        dead=count("dead"),
        test=sum(1 for entry in rows if entry.test),
        click_id=sum(1 for entry in rows if entry.click_id),
        email=sum(1 for entry in rows if entry.email),
        ip_ua=sum(1 for entry in rows if entry.ip_ua),
        pixel=sum(1 for entry in rows if entry.pixel),
    )


def _messages(rows: Sequence[LogEntry], text_of: str, *, by_count: bool) -> tuple[Message, ...]:
    grouped: dict[str, list[LogEntry]] = {}
    for entry in rows:
        text = getattr(entry, text_of)
        if text:
            grouped.setdefault(text, []).append(entry)
    messages = []
    for text, group in grouped.items():
        last = max(group, key=lambda entry: entry.at)
        names = tuple(sorted({entry.event_name for entry in group}, key=_name_order))
        messages.append(Message(text, len(group), last.at, last.outcome, names))
    if by_count:
        messages.sort(key=lambda item: (-item.count, -item.last_at))
    else:
        messages.sort(key=lambda item: -item.last_at)
    return tuple(messages[:MAX_MESSAGES])


def _name_order(name: str) -> tuple[int, str]:
    order = list(EVENT_NAMES)
    return (order.index(name), "") if name in order else (len(order), name)


def build_report(
    entries: Sequence[LogEntry],
    counts: OutboxCounts,
    *,
    now: float,
    hours: float = 24,
    has_credentials: bool,
    test_mode: bool,
) -> Report:
    """The figures of the last `hours` of delivery log, and the findings they lead to."""
    if hours <= 0:
        raise ValueError("hours: must be positive")
    latest = _latest_per_event(entries, now - hours * 3600)
    by_name: dict[str, list[LogEntry]] = {}
    for entry in latest:
        by_name.setdefault(entry.event_name, []).append(entry)
    rows = tuple(_row(name, by_name[name]) for name in sorted(by_name, key=_name_order))
    failures = _messages([e for e in latest if e.outcome != "processed"], "message", by_count=False)
    report = Report(
        generated_at=now,
        hours=hours,
        has_credentials=has_credentials,
        test_mode=test_mode,
        rows=rows,
        totals=_row("All events", latest),
        pending=counts.pending,
        retrying=counts.retrying,
        in_flight=counts.in_flight,
        dead=counts.dead,
        failures=failures,
        warnings=_messages(latest, "warning", by_count=True),
    )
    findings = [*_delivery_findings(report, latest), *_match_findings(report), *_warning_findings(report)]
    if test_mode:
        findings.append(
            Finding(
                "warn",
                "Test mode is on: events are sent with test=true",
                "Pinterest checks test events but does not use them for reporting or optimisation. "
                "Unset TRACKLAYER_PINTEREST_TEST_MODE in production.",
                "setup",
            )
        )
    return replace(report, findings=tuple(findings))


# --- the verdict ---------------------------------------------------------------------------------


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{share * 100:.0f}%"


def _delivery_findings(report: Report, latest: Sequence[LogEntry]) -> list[Finding]:
    """Question one: "nothing arrives at Pinterest"."""
    totals, window = report.totals, _hours_text(report.hours)
    queued = report.pending + report.retrying + report.in_flight
    findings: list[Finding] = []
    if not report.has_credentials:
        findings.append(
            Finding(
                "error",
                "No Pinterest credentials: nothing can be sent",
                "Set TRACKLAYER_PINTEREST_AD_ACCOUNT_ID and TRACKLAYER_PINTEREST_ACCESS_TOKEN, then run "
                f"`tracklayer check`. Until then events wait in the outbox ({queued} queued now) and become "
                "dead letters once they are 7 days old.",
            )
        )
    for status in (401, 403):
        refused = [e for e in latest if e.outcome == "dead" and e.message.startswith(f"HTTP {status}")]
        if refused:
            findings.append(
                Finding(
                    "error",
                    f"Pinterest refused {_plural(len(refused), 'event')} with HTTP {status}",
                    f"{_sentence(explain(status))}. Then run `tracklayer check` and "
                    "`tracklayer outbox retry-dead` to send the refused events again.",
                )
            )
    if report.has_credentials and totals.events and not totals.sent and totals.retrying:
        findings.append(
            Finding(
                "error",
                "Nothing reached Pinterest: every delivery is waiting for a retry",
                f"The latest error: {_latest_text(report, 'retry')}. Run `tracklayer check` to see whether "
                "Pinterest is reachable at TRACKLAYER_PINTEREST_API_BASE (DNS, firewall, proxy).",
            )
        )
    elif totals.retrying:
        findings.append(
            Finding(
                "warn",
                f"{_plural(totals.retrying, 'event is', 'events are')} waiting for a retry",
                f"The latest error: {_latest_text(report, 'retry')}. They are sent again with backoff.",
            )
        )
    if report.has_credentials and not totals.events:
        if queued:
            findings.append(
                Finding(
                    "error",
                    f"{_plural(queued, 'event is', 'events are')} queued but none was sent "
                    f"in the last {window}",
                    "The delivery worker runs inside the app's processes: is the app (with the middleware) "
                    "running, and does it use this same TRACKLAYER_OUTBOX?",
                )
            )
        else:
            findings.append(
                Finding(
                    "warn",
                    f"No events in the last {window}",
                    "Check that the app runs with TrackLayerMiddleware (or TrackLayerWSGIMiddleware), "
                    "that pages load the snippet (/_tl/t.js under the default path_prefix), that no "
                    "consent gate drops every event (TRACKLAYER_CONSENT_COOKIE), and that the app and "
                    "this command share TRACKLAYER_OUTBOX.",
                )
            )
    if totals.failed:
        findings.append(
            Finding(
                "warn",
                f"Pinterest failed {totals.failed} of {_plural(totals.sent, 'event')}",
                f"The latest reason: {_latest_text(report, 'failed')}. Failed events are dead letters: "
                "fix the cause, then `tracklayer outbox retry-dead`.",
            )
        )
    if report.dead:
        findings.append(
            Finding(
                "warn",
                f"{_plural(report.dead, 'dead letter')} in the outbox",
                "`tracklayer outbox dead` lists them with their reasons; `tracklayer outbox retry-dead` "
                "queues them again once the cause is fixed.",
            )
        )
    if totals.processed and not any(f.level == "error" for f in findings):
        findings.insert(
            0, Finding("ok", f"Events arrive: Pinterest processed {totals.processed} of {totals.sent} sent")
        )
    return findings


def _match_findings(report: Report) -> list[Finding]:
    """Question two: "low match quality": the signals Pinterest matches on."""
    totals = report.totals
    if totals.events < MIN_SAMPLE:
        return []
    rows = {row.event_name: row for row in report.rows}
    findings: list[Finding] = []
    click = totals.share("click_id") or 0.0
    if click < LOW_CLICK_ID_SHARE:
        findings.append(
            Finding(
                "warn",
                f"Only {_percent(click)} of events carry a Pinterest click id",
                "Only visitors arriving from Pinterest bring one, but if you run Pinterest ads, check: "
                "is the middleware on the landing pages (it reads ?epik= on the first request)? Does the "
                "shop span subdomains (set TRACKLAYER_COOKIE_DOMAIN=.shop.example)? Does checkout run on "
                "another host (add it to TRACKLAYER_LINKED_DOMAINS)?",
                "match",
            )
        )
    landing = rows.get("PageVisit")
    if landing is not None and landing.events >= MIN_SAMPLE and landing.click_id:
        landing_share = landing.share("click_id") or 0.0
        lost = [
            rows[name]
            for name in CONVERSION_EVENTS
            if name in rows
            and rows[name].events >= MIN_SAMPLE
            and (rows[name].share("click_id") or 0.0) < landing_share * CLICK_ID_KEPT
        ]
        if lost:
            names = ", ".join(f"{row.event_name} {_percent(row.share('click_id'))}" for row in lost)
            findings.append(
                Finding(
                    "warn",
                    "Click ids get lost between landing and conversion "
                    f"(page visits {_percent(landing_share)}; {names})",
                    "The click id lives in first-party cookies: set TRACKLAYER_COOKIE_DOMAIN when pages "
                    "and checkout are on different subdomains, list checkout or payment hosts outside it "
                    "in TRACKLAYER_LINKED_DOMAINS, and track server-side conversions with the visitor's "
                    "request.",
                    "match",
                )
            )
    no_email = [
        rows[name]
        for name in KNOWN_USER_EVENTS
        if name in rows
        and rows[name].events >= MIN_SAMPLE
        and (rows[name].share("email") or 0.0) < LOW_EMAIL_SHARE
    ]
    if no_email:
        names = ", ".join(f"{row.event_name} {_percent(row.share('email'))}" for row in no_email)
        findings.append(
            Finding(
                "warn",
                f"Few sign-up and purchase events carry an email ({names})",
                "Pass the customer's email when you know it, on purchase and sign-up: "
                'track(request, "Purchase", user={"email": ...}). It is normalized and hashed before '
                "it is stored.",
                "match",
            )
        )
    ip_ua = totals.share("ip_ua") or 0.0
    if ip_ua < LOW_IP_UA_SHARE:
        findings.append(
            Finding(
                "warn",
                f"Only {_percent(ip_ua)} of events carry the visitor's IP address and user agent",
                "Call track() with the visitor's request (not from a background job), and behind a proxy set "
                "TRACKLAYER_TRUSTED_PROXY_HOPS so the client IP is found.",
                "match",
            )
        )
    if not findings:
        findings.append(Finding("ok", "Match signals look healthy", "", "match"))
    return findings


def _warning_findings(report: Report) -> list[Finding]:
    """Question three: "what do Pinterest's warnings mean"."""
    if not report.warnings:
        return []
    top = "; ".join(f'"{item.text}" ({item.count}×)' for item in report.warnings[:3])
    return [
        Finding(
            "warn",
            f"Pinterest warned about {_plural(report.totals.warnings, 'event')}",
            f"Most frequent: {top}. Warnings do not stop an event from counting; they usually name a field "
            "Pinterest ignored or found odd.",
            "warnings",
        )
    ]


def _plural(count: int, one: str, many: str = "") -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _latest_text(report: Report, outcome: str) -> str:
    for message in report.failures:
        if message.outcome == outcome:
            return message.text
    return "(no message)"


def _hours_text(hours: float) -> str:
    return f"{hours:g} hours" if hours != 1 else "hour"


# --- rendering -----------------------------------------------------------------------------------

_LEVEL_MARK = {"ok": "✓", "warn": "!", "error": "✗"}
_COLUMNS = {
    "events": "Events",
    "sent": "Sent",
    "processed": "Processed",
    "failed": "Failed",
    "warnings": "Warnings",
    "retrying": "Retrying",
    "dead": "Dead",
}


def _clock(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def render_text(report: Report) -> str:
    """The report for a terminal: a table per event name, then messages and the verdict."""
    lines = [
        f"TrackLayer diagnostics: the last {_hours_text(report.hours)} (to {_clock(report.generated_at)})",
        f"Pinterest credentials: {'set' if report.has_credentials else 'MISSING'}; "
        f"test mode: {'on' if report.test_mode else 'off'}",
        "",
    ]
    header = ["Event", *_COLUMNS.values(), *SIGNALS.values()]
    table = [header]
    for row in (*report.rows, report.totals):
        table.append(
            [
                row.event_name,
                *(str(getattr(row, name)) for name in _COLUMNS),
                *map(_percent, row.shares.values()),
            ]
        )
    widths = [max(len(line[index]) for line in table) for index in range(len(header))]
    for number, line in enumerate(table):
        cells = [
            line[0].ljust(widths[0]),
            *(cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells).rstrip())
        if number == len(table) - 2:
            lines.append("-" * len(lines[-1]))
    lines += [
        "",
        f"Outbox now: {report.pending} pending, {report.retrying} retrying, {report.in_flight} in flight, "
        f"{report.dead} dead",
    ]
    for title, messages in (
        ("Latest failures", report.failures),
        ("Most frequent warnings", report.warnings),
    ):
        if messages:
            lines += ["", f"{title}:"]
            for item in messages:
                names = ", ".join(item.event_names)
                lines.append(
                    f"  {_clock(item.last_at)}  {item.outcome:<9} {item.count:>4}×  {names}: {item.text}"
                )
    lines += ["", "Verdict:"]
    for finding in report.findings:
        lines.append(f"  {_LEVEL_MARK[finding.level]} {finding.title}")
        if finding.advice:
            lines += textwrap.wrap(finding.advice, 100, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines) + "\n"


_TEMPLATE = """\
{% macro bar(share) -%}
  {% if share is none %}<span class="empty">–</span>{% else -%}
  <span class="bar"><i style="width: {{ "%.1f"|format(share * 100) }}%"></i></span>
  <span class="pct">{{ "%.0f"|format(share * 100) }}%</span>
  {%- endif %}
{%- endmacro %}
{% macro table_row(row) -%}
<tr><td>{{ row.event_name }}</td>
  {%- for name in columns %}<td>{{ row[name] }}</td>{% endfor %}
  {%- for signal in signals %}<td>{{ bar(row.share(signal)) }}</td>{% endfor %}</tr>
{%- endmacro %}
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<meta name="referrer" content="no-referrer">
<title>TrackLayer diagnostics</title>
<style>
  :root { --ok: #1a7f37; --warn: #b35900; --error: #c62828; --line: #e3e5e8; --muted: #636c76; }
  * { box-sizing: border-box; }
  body { margin: 0; color: #1f2328; background: #f6f7f9;
         font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  main { max-width: 1240px; margin: 0 auto; padding: 28px 20px 48px; }
  h1 { font-size: 22px; margin: 0 0 4px; }
  h2 { font-size: 13px; margin: 28px 0 10px; text-transform: uppercase; letter-spacing: .05em;
       color: var(--muted); }
  .sub { color: var(--muted); margin: 0 0 20px; }
  .pill { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 12px;
          font-weight: 600; margin-left: 6px; vertical-align: middle; }
  .pill.ok { background: #dafbe1; color: var(--ok); }
  .pill.warn { background: #fff1e0; color: var(--warn); }
  .pill.error { background: #ffe3e3; color: var(--error); }
  .findings { display: grid; gap: 10px; }
  .finding { background: #fff; border: 1px solid var(--line); border-left: 5px solid var(--ok);
             border-radius: 8px; padding: 12px 16px; }
  .finding.warn { border-left-color: var(--warn); }
  .finding.error { border-left-color: var(--error); }
  .finding h3 { margin: 0; font-size: 15px; }
  .finding p { margin: 6px 0 0; color: #3d444d; }
  .finding .topic { float: right; color: var(--muted); font-size: 12px; }
  .tiles { display: grid; grid-template-columns: repeat(4, 1fr); gap: 10px; }
  .tile { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
  .tile b { display: block; font-size: 24px; }
  .tile span { color: var(--muted); }
  .table-wrap { overflow-x: auto; }
  table { width: 100%; border-collapse: collapse; background: #fff; border: 1px solid var(--line); }
  th, td { padding: 8px 7px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
  th { background: #f0f2f4; font-size: 12px; color: var(--muted); font-weight: 600; }
  th:first-child, td:first-child { text-align: left; }
  tfoot td { font-weight: 600; background: #fafbfc; }
  .bar { display: inline-block; width: 40px; height: 8px; background: #eceef1; border-radius: 4px;
         overflow: hidden; vertical-align: middle; margin-right: 6px; }
  .bar i { display: block; height: 100%; background: #2f6feb; }
  .pct { display: inline-block; min-width: 34px; }
  ul.messages { list-style: none; padding: 0; margin: 0; background: #fff; border: 1px solid var(--line);
                border-radius: 8px; }
  ul.messages li { padding: 8px 14px; border-bottom: 1px solid var(--line); }
  ul.messages li:last-child { border-bottom: 0; }
  .meta { color: var(--muted); font-size: 12px; }
  .empty { color: var(--muted); }
  @media (max-width: 760px) { .tiles { grid-template-columns: repeat(2, 1fr); } }
</style>
</head>
<body>
<main>
  <h1>TrackLayer diagnostics <span class="pill {{ report.level }}">{{ level_words[report.level] }}</span></h1>
  <p class="sub">The last {{ hours_text(report.hours) }}, to {{ clock(report.generated_at) }}.
    Pinterest credentials: {{ "set" if report.has_credentials else "missing" }} ·
    test mode: {{ "on" if report.test_mode else "off" }}</p>

  <h2>Verdict</h2>
  <div class="findings">
  {% for finding in report.findings %}
    <div class="finding {{ finding.level }}">
      <span class="topic">{{ topics[finding.topic] }}</span>
      <h3>{{ marks[finding.level] }} {{ finding.title }}</h3>
      {% if finding.advice %}<p>{{ finding.advice }}</p>{% endif %}
    </div>
  {% endfor %}
  </div>

  <h2>Outbox now</h2>
  <div class="tiles">
    <div class="tile"><b>{{ report.pending }}</b><span>pending</span></div>
    <div class="tile"><b>{{ report.retrying }}</b><span>retrying</span></div>
    <div class="tile"><b>{{ report.in_flight }}</b><span>in flight</span></div>
    <div class="tile"><b>{{ report.dead }}</b><span>dead letters</span></div>
  </div>

  <h2>Events</h2>
  {% if report.rows %}
  <div class="table-wrap">
  <table>
    <thead><tr><th>Event</th>
      {%- for label in columns.values() %}<th>{{ label }}</th>{% endfor %}
      {%- for label in signals.values() %}<th>{{ label }}</th>{% endfor %}</tr></thead>
    <tbody>
    {% for row in report.rows %}
    {{ table_row(row) }}
    {% endfor %}
    </tbody>
    <tfoot>{{ table_row(report.totals) }}</tfoot>
  </table>
  </div>
  {% else %}
  <p class="empty">No events were logged in this window.</p>
  {% endif %}

  {% for title, messages in sections %}
  {% if messages %}
  <h2>{{ title }}</h2>
  <ul class="messages">
    {% for item in messages %}
    <li>{{ item.text }}<br><span class="meta">{{ item.outcome }} · {{ item.count }}× ·
      {{ item.event_names|join(", ") }} · last {{ clock(item.last_at) }}</span></li>
    {% endfor %}
  </ul>
  {% endif %}
  {% endfor %}
</main>
</body>
</html>
"""

# Built once: the middleware may render the page on every request.
_ENVIRONMENT = jinja2.Environment(
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
)
_PAGE = _ENVIRONMENT.from_string(_TEMPLATE)


def render_html(report: Report) -> str:
    """A self-contained page (inline CSS, no scripts, nothing fetched), every value escaped."""
    return _PAGE.render(
        report=report,
        columns=_COLUMNS,
        signals=SIGNALS,
        marks=_LEVEL_MARK,
        level_words={"ok": "all good", "warn": "needs a look", "error": "broken"},
        topics={"delivery": "delivery", "match": "match quality", "warnings": "warnings", "setup": "setup"},
        clock=_clock,
        hours_text=_hours_text,
        sections=(("Latest failures", report.failures), ("Most frequent warnings", report.warnings)),
    )
