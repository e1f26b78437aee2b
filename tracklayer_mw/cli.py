"""The `tracklayer` command (also `python -m tracklayer_mw`): check the setup, send a test event,
look into the outbox, read the delivery diagnostics, run the local Pinterest sandbox.

Configured by the same `TRACKLAYER_*` variables as the library. `main()` takes the environment,
an httpx transport and the output streams as arguments so tests drive it without monkeypatching.

Exit codes: 0 success; 1 the check or the test event failed (Pinterest refused or could not be
reached, the outbox could not be read); 2 a usage or configuration error (unknown verb or event
name, invalid settings, missing credentials).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, NoReturn, TextIO

import httpx

from tracklayer_mw import __version__
from tracklayer_mw.config import ENV_PREFIX, Settings
from tracklayer_mw.diagnostics import build_report, render_text
from tracklayer_mw.events import EVENT_NAMES, MAX_AGE_SECONDS, Event, parse_event
from tracklayer_mw.outbox import Outbox, open_outbox
from tracklayer_mw.pinterest import PinterestAdapter, SendOutcome, build_body, classify, explain

logger = logging.getLogger("tracklayer_mw")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# The test event's match keys: an RFC 5737 documentation address and a recognisable user agent,
# enough for the schema's "IP + user agent" rule without any personal data. The page is on an
# RFC 2606 example domain (Pinterest recommends a source URL on every web event).
TEST_IP = "192.0.2.1"
TEST_URL = "https://example.com/tracklayer-test"
TEST_USER_AGENT = f"Mozilla/5.0 (compatible; tracklayer-check/{__version__})"
# Plausible custom data so a test event looks like the real thing in Pinterest's event history.
_TEST_CUSTOM: dict[str, dict[str, Any]] = {
    "Search": {"search_string": "tracklayer test"},
    "ViewCategory": {"content_category": "tracklayer-test"},
    **{
        name: {"value": "1.00", "currency": "USD", "content_ids": ["tracklayer-test"], "num_items": 1}
        for name in ("AddToCart", "AddToWishlist", "AddPaymentInfo", "Checkout", "Purchase")
    },
}
# Settings fields whose environment variable is not simply TRACKLAYER_<FIELD>.
_ENV_NAMES = {"consent": "CONSENT_COOKIE"}
_CREDENTIAL_HELP = {
    "TRACKLAYER_PINTEREST_AD_ACCOUNT_ID": "the digits of the ad account id, as Ads Manager shows them",
    "TRACKLAYER_PINTEREST_ACCESS_TOKEN": "a Conversion Access Token, generated in Ads Manager under "
    "Conversions > Set up API (Conversions API)",
}
_DNS_FAILURES = (
    "name or service not known",
    "nodename nor servname",
    "name resolution",
    "getaddrinfo",
    "no address",
)
# Used only to read settings for commands that never sign anything (outbox, diagnostics), so they
# work on a server where TRACKLAYER_SECRET_KEY is not exported to the shell.
_UNUSED_SECRET = "tracklayer-cli-unused-secret"  # noqa: S105 - not a credential


class _Failure(Exception):
    """An expected failure: printed in words, never as a traceback."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


class _Exit(Exception):
    """argparse wants to stop (help, version, usage error): we return its status instead of exiting."""

    def __init__(self, status: int, message: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Console:
    """Output lines with every secret masked: the token must never reach a terminal or a log file."""

    def __init__(self, stream: TextIO, secrets: Sequence[str]) -> None:
        self._stream = stream
        # A very short "secret" would mask ordinary words; a real token is dozens of characters.
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def write(self, text: str) -> None:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        self._stream.write(text)
        self._stream.flush()

    def line(self, text: str = "") -> None:
        self.write(text + "\n")

    def ok(self, text: str) -> None:
        self.line(f"✓ {text}")

    def fail(self, text: str) -> None:
        self.line(f"✗ {text}")

    def warn(self, text: str) -> None:
        self.line(f"! {text}")


@dataclass(frozen=True)
class _Context:
    env: Mapping[str, str]
    transport: httpx.BaseTransport | None
    out: _Console


# --- settings ------------------------------------------------------------------------------------


def _settings_error(exc: ValueError) -> str:
    """Name the environment variable: CLI users set variables, not keyword arguments."""
    text = str(exc)
    match = re.match(r"^([a-z_]+): ", text)
    if match and match.group(1) in Settings.__dataclass_fields__:
        field = match.group(1)
        return f"{ENV_PREFIX}{_ENV_NAMES.get(field, field.upper())}: {text[match.end() :]}"
    return text


def _load_settings(env: Mapping[str, str], *, need_secret: bool = True, **overrides: Any) -> Settings:
    if not need_secret and not (env.get(ENV_PREFIX + "SECRET_KEY") or "").strip():
        overrides["secret_key"] = _UNUSED_SECRET
    try:
        return Settings.from_env(env, **overrides)
    except ValueError as exc:
        raise _Failure(f"invalid settings: {_settings_error(exc)}", EXIT_USAGE) from None


# --- the test event ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    """What Pinterest said to one test event, or why it could not be asked."""

    event: Event
    url: str
    status: int | None = None
    body: bytes = b""
    outcome: SendOutcome | None = None
    unreachable: str = ""  # in words, when no answer came

    @property
    def data(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def message(self) -> str:
        """Pinterest's own `message`, when the body has one."""
        data = self.data
        return str(data.get("message") or "").strip() if isinstance(data, dict) else ""

    @property
    def processed(self) -> bool:
        return (
            self.outcome is not None and self.outcome.kind == "results" and self.outcome.results[0].processed
        )


def _test_event(name: str, prefix: str) -> Event:
    raw = {
        "event": name,
        "event_id": f"{prefix}-{uuid.uuid4()}",
        "url": TEST_URL,
        "custom": _TEST_CUSTOM.get(name, {}),
    }
    event = parse_event(raw, now=time.time(), source="server")
    return event.with_context(client_ip=TEST_IP, user_agent=TEST_USER_AGENT)


def _unreachable(exc: Exception, settings: Settings) -> str:
    base = settings.pinterest_api_base
    if isinstance(exc, httpx.TimeoutException):
        return (
            f"no answer from {base} within {settings.request_timeout:g} s (TRACKLAYER_REQUEST_TIMEOUT): "
            "the network, a firewall or a proxy holds the connection, or Pinterest is slow"
        )
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return f"TRACKLAYER_PINTEREST_API_BASE={base} is not a URL httpx can use ({exc})"
    text = str(exc).strip()
    lowered = text.lower()
    if any(marker in lowered for marker in _DNS_FAILURES):
        why = "its host name does not resolve (DNS)"
    elif "refused" in lowered:
        why = "the connection was refused (nothing listens at that address and port)"
    elif "certificate" in lowered or "ssl" in lowered:
        why = f"the TLS handshake failed ({text})"
    else:
        why = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return (
        f"cannot reach the Pinterest API at {base}: {why}. Check TRACKLAYER_PINTEREST_API_BASE, the network, "
        "the firewall and any proxy"
    )


def _send_test_event(settings: Settings, event: Event, transport: httpx.BaseTransport | None) -> _Answer:
    """POST one event with test=true and keep the raw answer (the worker's adapter keeps only its verdict)."""
    assert settings.pinterest_ad_account_id is not None
    assert settings.pinterest_access_token is not None
    # The adapter owns the endpoint URL; the request itself is made here to keep the raw answer and
    # the transport exception, which the adapter folds into a verdict.
    adapter = PinterestAdapter(
        ad_account_id=settings.pinterest_ad_account_id,
        access_token=settings.pinterest_access_token,
        api_base=settings.pinterest_api_base,
        test_mode=True,
    )
    headers = {
        "Authorization": f"Bearer {settings.pinterest_access_token}",
        "Content-Type": "application/json",
        "User-Agent": f"tracklayer_mw/{__version__} (cli)",
    }
    body = json.dumps(build_body([event]), separators=(",", ":"), ensure_ascii=False).encode()
    try:
        with httpx.Client(transport=transport, timeout=settings.request_timeout) as client:
            response = client.post(adapter.url, content=body, headers=headers, params={"test": "true"})
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        logger.info("tracklayer: test event could not reach Pinterest (%s)", type(exc).__name__)
        return _Answer(event, adapter.url, unreachable=_unreachable(exc, settings))
    outcome = classify(response.status_code, response.headers, response.content, 1)
    return _Answer(event, adapter.url, response.status_code, response.content, outcome)


def _refusal(answer: _Answer, settings: Settings) -> str:
    """A whole-request refusal (not a per-event result) in words."""
    status, message = answer.status or 0, answer.message
    account = settings.pinterest_ad_account_id
    if status == 401:
        return f"access token refused (HTTP 401): {explain(401, message)}"
    if status == 403:
        return f"no access to ad account {account} (HTTP 403): {explain(403, message)}"
    if status == 404:
        return f"not found (HTTP 404): {explain(404, message)}"
    if status == 429:
        return "rate limited (HTTP 429): too many requests for this ad account; try again in a minute"
    if status >= 500:
        detail = f": {message}" if message else ""
        return f"Pinterest had a server error (HTTP {status}{detail}); try again later"
    return f"Pinterest refused the request (HTTP {status}): {explain(status, message)}"


def _event_lines(answer: _Answer, out: _Console) -> None:
    """The per-event verdict: processed, or Pinterest's error; its warning either way."""
    assert answer.outcome is not None
    result = answer.outcome.results[0]
    if result.processed:
        out.ok(f"test event processed ({answer.event.event}, event id {answer.event.event_id})")
    else:
        out.fail(f"test event failed: {result.error or answer.outcome.message or 'Pinterest gave no reason'}")
    if result.warning:
        out.warn(f"Pinterest warned: {result.warning}")


# --- verbs ---------------------------------------------------------------------------------------


def _check(args: argparse.Namespace, ctx: _Context) -> int:
    out = ctx.out
    try:
        settings = Settings.from_env(ctx.env)
    except ValueError as exc:
        out.fail(f"settings: {_settings_error(exc)}")
        return EXIT_USAGE
    out.ok("settings are valid")
    missing = [
        name
        for name, value in (
            ("TRACKLAYER_PINTEREST_AD_ACCOUNT_ID", settings.pinterest_ad_account_id),
            ("TRACKLAYER_PINTEREST_ACCESS_TOKEN", settings.pinterest_access_token),
        )
        if not value
    ]
    for name in missing:
        out.fail(f"credentials: {name} is not set; it takes {_CREDENTIAL_HELP[name]}")
    if missing:
        out.line("  Without credentials events wait in the outbox; nothing reaches Pinterest.")
        return EXIT_USAGE
    out.ok(f"credentials: ad account {settings.pinterest_ad_account_id}, access token set")
    if settings.pinterest_test_mode:
        out.warn(
            "test mode is on: every delivery carries test=true "
            "(unset TRACKLAYER_PINTEREST_TEST_MODE in production)"
        )

    answer = _send_test_event(settings, _test_event("PageVisit", "tracklayer-check"), ctx.transport)
    if answer.unreachable:
        out.fail(answer.unreachable)
        return EXIT_FAILED
    out.ok(f"Pinterest API reachable at {settings.pinterest_api_base}")
    assert answer.outcome is not None
    if answer.outcome.kind != "results":
        out.fail(_refusal(answer, settings))
        return EXIT_FAILED
    out.ok(f"access token accepted for ad account {settings.pinterest_ad_account_id}")
    _event_lines(answer, out)
    return EXIT_OK if answer.processed else EXIT_FAILED


def _resolve_event_name(name: str) -> str:
    if name in EVENT_NAMES:
        return name
    folded = {known.lower(): known for known in EVENT_NAMES}
    if name.lower() in folded:
        return folded[name.lower()]
    raise _Failure(f"unknown event {name!r}; expected one of {', '.join(EVENT_NAMES)}", EXIT_USAGE)


def _send_test(args: argparse.Namespace, ctx: _Context) -> int:
    name = _resolve_event_name(args.event)
    settings = _load_settings(ctx.env)
    if not settings.has_credentials:
        raise _Failure(
            "no Pinterest credentials: set TRACKLAYER_PINTEREST_AD_ACCOUNT_ID and "
            "TRACKLAYER_PINTEREST_ACCESS_TOKEN (`tracklayer check` explains each)",
            EXIT_USAGE,
        )
    answer = _send_test_event(settings, _test_event(name, "tracklayer-test"), ctx.transport)
    if args.json:
        raw: Any = answer.data
        if answer.unreachable:
            raw = {"error": answer.unreachable}
        elif raw is None:
            raw = {"status": answer.status, "body": answer.body.decode(errors="replace")}
        ctx.out.line(json.dumps(raw, indent=2, ensure_ascii=False))
        return EXIT_OK if answer.processed else EXIT_FAILED

    out = ctx.out
    out.line(f"POST {answer.url}?test=true")
    out.line(f"  {name} (Pinterest event_name {EVENT_NAMES[name][0]}), event id {answer.event.event_id}")
    if answer.unreachable:
        out.fail(answer.unreachable)
        return EXIT_FAILED
    data = answer.data
    out.line(f"HTTP {answer.status}" + (f": {answer.message}" if answer.message else ""))
    assert answer.outcome is not None
    if answer.outcome.kind != "results":
        out.fail(_refusal(answer, settings))
        return EXIT_FAILED
    summary = data.get("details", data) if isinstance(data, dict) else None
    if isinstance(summary, dict) and "num_events_received" in summary:
        received, processed = summary.get("num_events_received"), summary.get("num_events_processed")
        out.line(f"  received {received}, processed {processed}")
    _event_lines(answer, out)
    return EXIT_OK if answer.processed else EXIT_FAILED


@contextmanager
def _opened_outbox(args: argparse.Namespace, ctx: _Context) -> Iterator[tuple[Settings, Outbox]]:
    """The app's SQLite outbox, opened only when it exists: a typo must not create an empty one."""
    overrides = {"outbox": args.outbox} if args.outbox else {}
    settings = _load_settings(ctx.env, need_secret=False, **overrides)
    path = settings.outbox_path
    if path is None:
        raise _Failure(
            "the memory:// outbox lives inside the app's process and the command line cannot see it; "
            "point TRACKLAYER_OUTBOX (or --outbox) at the app's sqlite:///PATH",
            EXIT_USAGE,
        )
    if not os.path.isfile(path):
        raise _Failure(
            f"no outbox at {os.path.abspath(path)} ({settings.outbox}). Nothing has been queued there "
            "yet, or the app uses another TRACKLAYER_OUTBOX (a relative path is relative to the current "
            "directory)"
        )
    try:
        outbox = open_outbox(settings.outbox)
    except (sqlite3.Error, OSError, RuntimeError) as exc:
        raise _Failure(f"cannot open the outbox at {os.path.abspath(path)}: {exc}") from None
    try:
        yield settings, outbox
    except sqlite3.Error as exc:
        raise _Failure(f"cannot read the outbox at {os.path.abspath(path)}: {exc}") from None
    finally:
        outbox.close()


_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def _duration(seconds: float) -> str:
    """`3d 4h`, `5h`, `12m 3s`: the largest unit and the next one, enough to read an age at a glance."""
    left = max(0, int(seconds))
    for index, (unit, size) in enumerate(_UNITS):
        if left >= size or size == 1:
            text = f"{left // size}{unit}"
            if index + 1 < len(_UNITS):
                next_unit, next_size = _UNITS[index + 1]
                if (left % size) // next_size:
                    text += f" {(left % size) // next_size}{next_unit}"
            return text
    raise AssertionError("unreachable: the last unit is one second")


def _outbox(args: argparse.Namespace, ctx: _Context) -> int:
    now = time.time()
    with _opened_outbox(args, ctx) as (settings, outbox):
        counts = outbox.counts(now=now)
        if args.json:
            ctx.out.line(json.dumps({"outbox": settings.outbox, **asdict(counts)}, indent=2))
            return EXIT_OK
        ctx.out.line(f"outbox {settings.outbox}")
        for label, value in (
            ("pending", counts.pending),
            ("retrying", counts.retrying),
            ("in flight", counts.in_flight),
            ("dead", counts.dead),
        ):
            ctx.out.line(f"  {label:<10} {value:>8}")
        if counts.dead:
            ctx.out.line("  `tracklayer outbox dead` lists the dead letters and their reasons")
    return EXIT_OK


def _outbox_dead(args: argparse.Namespace, ctx: _Context) -> int:
    if args.limit < 1:
        raise _Failure("--limit: at least 1", EXIT_USAGE)
    now = time.time()
    with _opened_outbox(args, ctx) as (_, outbox):
        letters = outbox.dead_letters(limit=args.limit)
        total = outbox.counts(now=now).dead
    if args.json:
        ctx.out.line(json.dumps([asdict(letter) for letter in letters], indent=2, ensure_ascii=False))
        return EXIT_OK
    if not letters:
        ctx.out.line("no dead letters")
        return EXIT_OK
    table = [("ID", "EVENT", "EVENT ID", "AGE", "ATTEMPTS", "DIED", "REASON")]
    for letter in letters:
        age = now - letter.event_time
        table.append(
            (
                str(letter.id),
                letter.event_name,
                letter.event_id,
                _duration(age) + (" (too old to send)" if age > MAX_AGE_SECONDS else ""),
                str(letter.attempts),
                _duration(now - letter.died_at) + " ago",
                letter.reason or "-",
            )
        )
    widths = [max(len(row[index]) for row in table) for index in range(len(table[0]) - 1)]
    for row in table:
        ctx.out.line(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
        )
    shown = f"{len(letters)} of {total}" if total > len(letters) else str(len(letters))
    ctx.out.line(
        f"{shown} dead letters; `tracklayer outbox retry-dead` queues them again once the cause is fixed"
    )
    return EXIT_OK


def _outbox_retry_dead(args: argparse.Namespace, ctx: _Context) -> int:
    with _opened_outbox(args, ctx) as (_, outbox):
        queued = outbox.retry_dead(now=time.time())
    if not queued:
        ctx.out.line("no dead letters to retry")
    else:
        ctx.out.line(
            f"queued {queued} dead letters again; the app's delivery worker sends them within seconds "
            "while it runs (events older than 7 days die again)"
        )
    logger.info("tracklayer: %d dead letters queued again from the command line", queued)
    return EXIT_OK


def _diagnostics(args: argparse.Namespace, ctx: _Context) -> int:
    if not args.hours > 0:
        raise _Failure("--hours: must be positive", EXIT_USAGE)
    now = time.time()
    with _opened_outbox(args, ctx) as (settings, outbox):
        entries = outbox.log_since(now - args.hours * 3600)
        counts = outbox.counts(now=now)
    report = build_report(
        entries,
        counts,
        now=now,
        hours=args.hours,
        has_credentials=settings.has_credentials,
        test_mode=settings.pinterest_test_mode,
    )
    if args.json:
        ctx.out.line(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        ctx.out.write(render_text(report))
    return EXIT_OK


def _sandbox(args: argparse.Namespace, ctx: _Context) -> int:
    try:
        from tracklayer_mw.sandbox import serve
    except ImportError as exc:  # uvicorn and starlette are demo/test extras
        raise _Failure(
            f"the sandbox needs the demo extras (pip install 'tracklayer_mw[demo]'): {exc}"
        ) from None
    accounts = tuple(args.ad_account or ("549755885175",))
    if not all(account.isascii() and account.isdigit() for account in accounts):
        raise _Failure("--ad-account: digits only", EXIT_USAGE)
    try:
        serve(args.host, args.port, token=args.token, ad_account_ids=accounts)
    except ImportError as exc:
        raise _Failure(
            f"the sandbox needs the demo extras (pip install 'tracklayer_mw[demo]'): {exc}"
        ) from None
    except OSError as exc:  # the port is taken, or the host is not ours
        raise _Failure(f"cannot serve on {args.host}:{args.port}: {exc}") from None
    except KeyboardInterrupt:
        pass
    return EXIT_OK


# --- the parser ----------------------------------------------------------------------------------

Handler = Callable[[argparse.Namespace, _Context], int]


def _build_parser(out: _Console) -> argparse.ArgumentParser:
    class Parser(argparse.ArgumentParser):
        # Help and usage go to the injected stream, and nothing calls sys.exit: main() returns.
        def _print_message(self, message: str, file: Any = None) -> None:
            if message:
                out.write(message)

        def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
            raise _Exit(status, message)

        def error(self, message: str) -> NoReturn:
            raise _Exit(EXIT_USAGE, f"{self.format_usage()}{self.prog}: error: {message}\n")

    parser = Parser(
        prog="tracklayer",
        description="Pinterest Conversions API tracking: check the setup, inspect the outbox and the "
        "diagnostics. Configured by the TRACKLAYER_* environment variables.",
    )
    parser.add_argument("--version", action="version", version=f"tracklayer_mw {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    verb("check", _check, "validate the settings and the credentials with one test=true event")

    send = verb("send-test-event", _send_test, "send one test=true event and print Pinterest's answer")
    send.add_argument(
        "event", nargs="?", default="PageVisit", help="a TrackLayer event name (default PageVisit)"
    )
    send.add_argument("--json", action="store_true", help="print Pinterest's raw answer as JSON")

    def outbox_options(sub: argparse.ArgumentParser, *, suppress: bool) -> None:
        # `outbox --json dead` and `outbox dead --json` both work: the action's own options default
        # to SUPPRESS so they never reset what was given before the action's name.
        unset: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
        sub.add_argument(
            "--outbox", metavar="URL", help="sqlite:///PATH (default: TRACKLAYER_OUTBOX)", **unset
        )
        sub.add_argument("--json", action="store_true", help="print JSON", **unset)

    outbox = verb("outbox", _outbox, "outbox counts; `dead` lists dead letters, `retry-dead` requeues them")
    outbox_options(outbox, suppress=False)
    actions = outbox.add_subparsers(dest="action", metavar="ACTION")
    dead = actions.add_parser("dead", help="list dead letters with their reasons")
    outbox_options(dead, suppress=True)
    dead.add_argument(
        "--limit", type=int, default=100, metavar="N", help="at most N dead letters (default 100)"
    )
    dead.set_defaults(handler=_outbox_dead)
    retry = actions.add_parser("retry-dead", help="queue every dead letter again")
    outbox_options(retry, suppress=True)
    retry.set_defaults(handler=_outbox_retry_dead)

    diag = verb(
        "diagnostics", _diagnostics, "per event: sent, processed, failed, warnings, match signals; a verdict"
    )
    diag.add_argument("--hours", type=float, default=24.0, metavar="N", help="the window (default 24)")
    diag.add_argument("--outbox", metavar="URL", help="sqlite:///PATH (default: TRACKLAYER_OUTBOX)")
    diag.add_argument("--json", action="store_true", help="print the report as JSON")

    sandbox = verb("sandbox", _sandbox, "run a local Pinterest Conversions API sandbox")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8765)
    sandbox.add_argument("--token", default="sandbox-token", help="the bearer token it accepts")
    sandbox.add_argument(
        "--ad-account",
        action="append",
        metavar="ID",
        help="an ad account it knows (repeatable; default 549755885175)",
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one command; returns the exit status (the console script passes it to sys.exit)."""
    env = os.environ if environ is None else environ
    secrets = [
        (env.get(ENV_PREFIX + name) or "").strip() for name in ("PINTEREST_ACCESS_TOKEN", "DIAGNOSTICS_TOKEN")
    ]
    secrets += [key.strip() for key in (env.get(ENV_PREFIX + "SECRET_KEY") or "").split(",")]
    out = _Console(stdout or sys.stdout, secrets)
    err = _Console(stderr or sys.stderr, secrets)
    try:
        args = _build_parser(out).parse_args(argv)
    except _Exit as exc:
        if exc.message:
            err.write(exc.message)
        return exc.status
    handler: Handler = args.handler
    try:
        return handler(args, _Context(env, transport, out))
    except _Failure as exc:
        err.line(f"tracklayer: {exc}")
        return exc.status
    except KeyboardInterrupt:
        return 130  # the shell's code for "stopped by Ctrl-C", without a traceback
