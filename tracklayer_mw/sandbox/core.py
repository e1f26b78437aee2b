"""The sandbox itself: request handling and the state it keeps, independent of any HTTP stack.

``PinterestSandbox.dispatch`` turns one request into an ``Outcome``: the reply plus how to deliver
it (at once, late, never, or by dropping the connection). The httpx transports and the ASGI app
realise outcomes; tests may also call ``handle`` directly. All state sits behind one lock because
a delivery worker thread and the test thread use the sandbox at the same time.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from . import answers
from .answers import Reply
from .checks import check_event
from .diagnostics import summarize
from .faults import Fault, FaultQueue
from .records import ReceivedEvent, RejectedRequest, Row, pack
from .schema import validate_request_body

if TYPE_CHECKING:
    import httpx
    from starlette.applications import Starlette

# The spec's server is https://api.pinterest.com/v5; accept the path with and without "/v5" so
# both `http://host/v5` and `http://host` work as the API base.
_EVENTS_PATH = re.compile(r"^(?:/v5)?/ad_accounts/([^/]*)/events/?$")
# [CAPI_V5 §1] path_ad_account_id: digits only, at most 18.
_AD_ACCOUNT_ID = re.compile(r"^\d{1,18}$")
# [CAPI_V5 §6] dedup window (third-party, "only effective within a 48-hour window").
DEDUP_WINDOW_SECONDS = 48 * 3600
MAX_REMEMBERED = 1_000_000  # event ids kept for dedup; the oldest go first beyond it


class ConnectionDropped(Exception):
    """The injected "drop" fault: the connection closed without a (complete) answer."""


class AnswerTimedOut(Exception):
    """The injected "timeout" fault: no answer within the client's timeout."""


@dataclass(frozen=True)
class Outcome:
    """How to deliver a reply.

    ``kind`` is ``None`` (answer), ``"slow"`` (answer after ``delay``), ``"timeout"`` (the client
    must time out; a server holds the request ``delay`` seconds then answers ``reply``, a 504) or
    ``"drop"`` (close the connection; ``reply`` is unused). ``delay`` includes the sandbox latency.
    """

    reply: Reply
    kind: str | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class _Call:
    """One events request, as ``dispatch`` parsed it. ``test`` is None when ``?test=`` is garbage."""

    method: str
    account: str
    test: bool | None
    headers: Mapping[str, str]
    body: bytes
    now: float


class PinterestSandbox:
    """A local stand-in for ``POST /v5/ad_accounts/{ad_account_id}/events``.

    Checks the bearer token and ad account, validates bodies against the official schema extract,
    applies Pinterest's per-event rules and 48-hour dedup, records everything, and injects faults
    on request. ``clock`` returns Unix seconds (inject a fake one in tests); ``latency`` is added to
    every answer by the transports and the app.
    """

    def __init__(
        self,
        token: str = "sandbox-token",  # noqa: S107 - the sandbox's well-known test token, not a secret
        ad_account_ids: Iterable[str] = ("549755885175",),
        *,
        clock: Callable[[], float] = time.time,
        latency: float = 0.0,
        max_records: int = 100_000,
    ) -> None:
        self.token = token
        self.ad_account_ids = tuple(str(account) for account in ad_account_ids)
        self.clock = clock
        self.latency = latency
        self._lock = threading.RLock()
        self._faults = FaultQueue()
        # Bounded so a long-running `tracklayer sandbox` does not grow without end; seq numbers
        # keep counting so `received_since` stays meaningful when old records fall off. Rows, not
        # ReceivedEvent objects: the garbage collector ignores them (see records.Row).
        self._records: deque[Row] = deque(maxlen=max_records)
        self._rejected: deque[RejectedRequest] = deque(maxlen=1000)
        self._requests: Counter[int | str] = Counter()
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._seq = 0

    # -- control ---------------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Queue a fault; faults apply to events requests one at a time, oldest first."""
        with self._lock:
            self._faults.add(fault, self.clock())

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Forget everything: records, request counts, dedup memory and faults."""
        with self._lock:
            self._faults.clear()
            self._records.clear()
            self._rejected.clear()
            self._requests.clear()
            self._seen.clear()
            self._seq = 0

    # -- inspection ------------------------------------------------------------------------

    @property
    def faults(self) -> list[dict[str, Any]]:
        """The active faults, oldest first, with what is left of each."""
        with self._lock:
            return self._faults.describe(self.clock())

    @property
    def received(self) -> list[ReceivedEvent]:
        """Every event received (live and ``test=true``), oldest first."""
        with self._lock:
            return list(map(ReceivedEvent.from_row, self._records))

    def received_since(self, seq: int) -> list[ReceivedEvent]:
        """The records whose ``seq`` is at least ``seq`` (``seq`` counts from 0 since the last reset)."""
        with self._lock:
            # The kept rows have consecutive seqs ending at self._seq - 1: take the newest ones from
            # the right, so a poller pays for what is new, not for everything kept (up to millions).
            newer = min(len(self._records), max(0, self._seq - seq))
            rows = list(islice(reversed(self._records), newer))
            return list(map(ReceivedEvent.from_row, reversed(rows)))

    @property
    def rejected(self) -> list[RejectedRequest]:
        """Requests answered as a whole with an error (the latest 1000)."""
        with self._lock:
            return list(self._rejected)

    @property
    def requests(self) -> Counter[int | str]:
        """Events requests per answer status; ``"drop"`` and ``"timeout"`` for unanswered ones."""
        with self._lock:
            return Counter(self._requests)

    def diagnostics(self) -> dict[str, Any]:
        """The figures of the diagnostics page (see ``diagnostics.summarize``), plus recent traffic."""
        with self._lock:
            records = list(map(ReceivedEvent.from_row, self._records))
            return {
                **summarize(records),
                "recent": [record.to_json() for record in records[-50:]][::-1],
                "rejected": [rejection.to_json() for rejection in list(self._rejected)[-20:]][::-1],
                "requests": {str(status): count for status, count in sorted(self._requests.items(), key=str)},
                "faults": self._faults.describe(self.clock()),
            }

    # -- front ends (imported lazily: each pulls in its own stack) -------------------------

    def transport(self) -> httpx.BaseTransport:
        """A sync httpx transport answering from this sandbox: ``httpx.Client(transport=...)``."""
        from .transport import SandboxTransport

        return SandboxTransport(self)

    def async_transport(self) -> httpx.AsyncBaseTransport:
        """The same for ``httpx.AsyncClient``."""
        from .transport import AsyncSandboxTransport

        return AsyncSandboxTransport(self)

    def asgi_app(self) -> Starlette:
        """A Starlette app serving the events endpoint, the control endpoints and the diagnostics page."""
        from .app import create_app

        return create_app(self)

    # -- requests --------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one request at once, as ``(status, headers, body)``.

        Delays are not waited for here; a "drop" fault raises ``ConnectionDropped`` and a "timeout"
        fault ``AnswerTimedOut``.
        """
        outcome = self.dispatch(method, path, query, headers or {}, body)
        if outcome.kind == "drop":
            raise ConnectionDropped("sandbox: connection dropped (injected fault)")
        if outcome.kind == "timeout":
            raise AnswerTimedOut("sandbox: no answer in time (injected fault)")
        return outcome.reply.status, dict(outcome.reply.headers), outcome.reply.body

    def dispatch(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> Outcome:
        """Decide the answer to one request, recording it, and say how to deliver it."""
        with self._lock:
            now = self.clock()
            match = _EVENTS_PATH.match(path)
            if match is None:
                return Outcome(self._count(answers.error_reply(404, answers.NOT_FOUND), now, False))
            call = _Call(method.upper(), match.group(1), _test_flag(query), headers, body, now)
            fault = self._faults.take(now)
            if fault is None:
                return Outcome(self._count(self._answer(call), now, call.test is True), delay=self.latency)
            return self._faulty(fault, call)

    def _faulty(self, fault: Fault, call: _Call) -> Outcome:
        kind = fault.kind
        test = call.test is True
        if kind == "slow":
            reply = self._count(self._answer(call), call.now, test)
            return Outcome(reply, "slow", self.latency + fault.slow_delay)
        if fault.after_processing:
            self._answer(call)  # recorded as usual; the client just never learns the result
        if kind in ("timeout", "drop"):
            self._requests[kind] += 1
            self._rejected.append(RejectedRequest(call.now, 0, f"{kind} (injected fault)", test))
            hold = fault.timeout_hold if kind == "timeout" else 0.0
            return Outcome(answers.gateway_reply(504, "Gateway Timeout"), kind, self.latency + hold)
        return Outcome(self._count(_fault_reply(fault), call.now, test), delay=self.latency)

    def _count(self, reply: Reply, now: float, test: bool) -> Reply:
        self._requests[reply.status] += 1
        if reply.status not in (200, 422):
            self._rejected.append(RejectedRequest(now, reply.status, _message_of(reply), test))
        return reply

    def _answer(self, call: _Call) -> Reply:
        # Order: method, token (401), ad account (400/403), query, body (400), then per event.
        if call.method != "POST":
            return answers.error_reply(405, answers.METHOD_NOT_ALLOWED, headers={"allow": "POST"})
        if not self._authorized(call.headers):
            return answers.error_reply(401, answers.AUTH_FAILED)
        if not _AD_ACCOUNT_ID.match(call.account):
            return answers.error_reply(400, answers.INVALID_REQUEST, "ad_account_id must be 1 to 18 digits.")
        if call.account not in self.ad_account_ids:
            return answers.error_reply(403, answers.NOT_PERMITTED)
        if call.test is None:
            return answers.error_reply(400, answers.INVALID_REQUEST, "test must be true or false.")
        try:
            data = _parse_json(call.body)
        except ValueError as exc:
            return answers.error_reply(400, answers.INVALID_REQUEST, f"body is not valid JSON: {exc}")
        errors = validate_request_body(data)
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            return answers.error_reply(400, answers.INVALID_REQUEST, errors[0] + more)
        return answers.events_reply(self._process_all(data["data"], call.account, call.test, call.now))

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        lowered = {name.lower(): value for name, value in headers.items()}
        scheme, _, credentials = lowered.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and credentials.strip() == self.token

    def _process_all(
        self, events: list[dict[str, Any]], account: str, test: bool, now: float
    ) -> list[dict[str, str]]:
        """Judge, fold and record each event of a schema-valid request; the per-event results."""
        if not test:
            # Once per request, not per event: every event of it is remembered at the same `now`,
            # so nothing remembered during the request can expire before it ends.
            self._forget_expired(now)
        results = []
        for event in events:
            verdict = check_event(event, now)
            errors, warnings = verdict.errors, verdict.warnings
            duplicate = not errors and self._fold(event, test, now)
            error = " ".join(errors) if errors else None
            warning = " ".join(warnings) if warnings else None
            status = "failed" if errors else "processed"
            row = pack(
                event,
                seq=self._seq,
                time=now,
                test=test,
                ad_account_id=account,
                status=status,
                error=error,
                warning=warning,
                duplicate=duplicate,
            )
            self._records.append(row)
            self._seq += 1
            # Pinterest writes "" rather than null for "no message" (CAPI_V5 §5, observed 422).
            results.append({"status": status, "error_message": error or "", "warning_message": warning or ""})
        return results

    def _fold(self, event: dict[str, Any], test: bool, now: float) -> bool:
        """Whether the event repeats one processed within the dedup window; remembers it if not."""
        # [CAPI_V5 §6] "events that took place offline cannot be deduplicated".
        if event["action_source"] == "offline":
            return False
        key = (event["event_name"], event["event_id"])
        first_seen = self._seen.get(key)
        if first_seen is not None and now - first_seen < DEDUP_WINDOW_SECONDS:
            return True
        # Test events are "not recorded" by Pinterest, so they never become the original.
        if not test:
            self._seen[key] = now
            if first_seen is not None:
                self._seen.move_to_end(key)  # remembered again after it expired: now the newest
            if len(self._seen) > MAX_REMEMBERED:
                self._seen.popitem(last=False)
        return False

    def _forget_expired(self, now: float) -> None:
        # Oldest first, so forgetting costs only the entries that expired, never a scan of all.
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if now - oldest < DEDUP_WINDOW_SECONDS:
                return
            self._seen.popitem(last=False)


def _test_flag(query: str) -> bool | None:
    """``?test=true`` -> True, absent/false -> False, anything else -> None (a 400)."""
    values = parse_qs(query, keep_blank_values=True).get("test")
    if not values:
        return False
    value = values[-1].lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    return None


def _parse_json(body: bytes) -> Any:
    def reject(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(body.decode("utf-8"), parse_constant=reject)


def _fault_reply(fault: Fault) -> Reply:
    kind = fault.kind
    if kind == "429":
        headers = None if fault.retry_after is None else {"retry-after": str(fault.retry_after)}
        return answers.error_reply(429, answers.RATE_LIMITED, headers=headers)
    if kind == "503":
        return answers.error_reply(503, answers.RAMPED_DOWN)
    if kind == "502":
        return answers.gateway_reply(502, "Bad Gateway")
    if kind == "401":
        return answers.error_reply(401, answers.AUTH_FAILED)
    if kind == "403":
        return answers.error_reply(403, answers.NOT_PERMITTED)
    return answers.error_reply(500, answers.SERVER_ERROR)


def _message_of(reply: Reply) -> str:
    try:
        return str(json.loads(reply.body)["message"])
    except (ValueError, KeyError, TypeError):
        return reply.body.decode("utf-8", "replace")[:200]
