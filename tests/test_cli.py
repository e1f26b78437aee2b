"""The `tracklayer` command, driven through `main([...], environ=..., transport=...)`.

Pinterest is the in-process sandbox (or an httpx.MockTransport for network failures); the outbox
is a real SQLite file in tmp_path. Every body the CLI sends is checked against the official schema.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pinterest_schema import validate_request_body
from tracklayer_mw.cli import TEST_IP, TEST_URL, main
from tracklayer_mw.events import EVENT_NAMES
from tracklayer_mw.outbox import LogEntry, NewEvent, Outbox, open_outbox
from tracklayer_mw.sandbox import Fault, PinterestSandbox

SECRET = "cli-test-secret-key-0123456789"
ACCOUNT = "549755885175"
TOKEN = "pina_cli-SECRET-token-0123456789"
API_BASE = "https://api.pinterest.com/v5"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


class Recorder(httpx.BaseTransport):
    """Forwards to another transport and keeps every request it saw."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.inner.handle_request(request)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request.content) for request in self.requests]


@pytest.fixture
def sandbox() -> PinterestSandbox:
    return PinterestSandbox(token=TOKEN, ad_account_ids=(ACCOUNT,))


@pytest.fixture
def outbox_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'outbox.sqlite3'}"


@pytest.fixture
def env(outbox_url: str) -> dict[str, str]:
    return {
        "TRACKLAYER_SECRET_KEY": SECRET,
        "TRACKLAYER_PINTEREST_AD_ACCOUNT_ID": ACCOUNT,
        "TRACKLAYER_PINTEREST_ACCESS_TOKEN": TOKEN,
        "TRACKLAYER_PINTEREST_API_BASE": API_BASE,
        "TRACKLAYER_OUTBOX": outbox_url,
    }


Run = Callable[..., Result]


@pytest.fixture
def run(env: dict[str, str], sandbox: PinterestSandbox) -> Run:
    """`run("check", env=..., transport=...)`: the sandbox and the fixture's environment by default."""

    def runner(*argv: str, env: dict[str, str] = env, transport: httpx.BaseTransport | None = None) -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = main(
            list(argv), environ=env, transport=transport or sandbox.transport(), stdout=out, stderr=err
        )
        result = Result(code, out.getvalue(), err.getvalue())
        assert TOKEN not in result.text  # never, whatever happened
        assert "Traceback" not in result.text
        return result

    return runner


def raising(kind: type[httpx.TransportError], message: str) -> httpx.MockTransport:
    """A network that fails the way httpx reports it: DNS, refused, TLS, timeouts, dropped connections."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise kind(message, request=request)

    return httpx.MockTransport(handler)


def answering(status: int, payload: Any) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, json=payload))


# --- check ---------------------------------------------------------------------------------------


def test_check_passes_with_one_valid_test_event(run: Run, sandbox: PinterestSandbox) -> None:
    recorder = Recorder(sandbox.transport())
    result = run("check", transport=recorder)

    assert result.code == 0, result.text
    assert result.out.splitlines()[:5] == [
        "✓ settings are valid",
        f"✓ credentials: ad account {ACCOUNT}, access token set",
        f"✓ Pinterest API reachable at {API_BASE}",
        f"✓ access token accepted for ad account {ACCOUNT}",
        result.out.splitlines()[4],
    ]
    assert result.out.splitlines()[4].startswith(
        "✓ test event processed (PageVisit, event id tracklayer-check-"
    )
    assert len(result.out.splitlines()) == 5  # no warning either
    assert result.err == ""

    [request] = recorder.requests
    assert str(request.url) == f"{API_BASE}/ad_accounts/{ACCOUNT}/events?test=true"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    [body] = recorder.bodies()
    validate_request_body(body)
    [event] = body["data"]
    assert event["event_name"] == "page_visit"
    assert event["event_id"].startswith("tracklayer-check-")
    assert event["user_data"]["client_ip_address"] == TEST_IP
    assert event["user_data"]["client_user_agent"]
    assert abs(event["event_time"] - time.time()) < 60
    assert event["event_source_url"] == TEST_URL

    [received] = sandbox.received
    assert received.test is True
    assert received.status == "processed"


def test_check_explains_a_wrong_token(run: Run, env: dict[str, str]) -> None:
    result = run("check", env={**env, "TRACKLAYER_PINTEREST_ACCESS_TOKEN": "pina_wrong-token-987654321"})
    assert result.code == 1
    last = result.out.splitlines()[-1]
    assert last.startswith("✗ access token refused (HTTP 401): the access token is wrong or expired")
    assert "generate a Conversion Access Token in Ads Manager" in last
    assert "TRACKLAYER_PINTEREST_ACCESS_TOKEN" in last
    assert "pina_wrong-token-987654321" not in result.text


def test_check_explains_another_ad_account(run: Run, env: dict[str, str]) -> None:
    result = run("check", env={**env, "TRACKLAYER_PINTEREST_AD_ACCOUNT_ID": "123456789"})
    assert result.code == 1
    last = result.out.splitlines()[-1]
    assert last.startswith("✗ no access to ad account 123456789 (HTTP 403): the token's user has no access")
    assert "TRACKLAYER_PINTEREST_AD_ACCOUNT_ID" in last


@pytest.mark.parametrize("account", ["act_549755885175", "5497-5588-5175", "my shop"])
def test_check_explains_a_malformed_ad_account_id(run: Run, env: dict[str, str], account: str) -> None:
    recorder = Recorder(httpx.MockTransport(lambda request: httpx.Response(500)))
    result = run("check", env={**env, "TRACKLAYER_PINTEREST_AD_ACCOUNT_ID": account}, transport=recorder)
    assert result.code == 2
    assert result.out == (
        "✗ settings: TRACKLAYER_PINTEREST_AD_ACCOUNT_ID: must be the digits of the ad account id "
        "(at most 18), as shown in Ads Manager; got a value with other characters\n"
    )
    assert recorder.requests == []


@pytest.mark.parametrize(
    ("missing", "expected"),
    [
        pytest.param(
            ("TRACKLAYER_PINTEREST_ACCESS_TOKEN",), ["TRACKLAYER_PINTEREST_ACCESS_TOKEN"], id="token"
        ),
        pytest.param(
            ("TRACKLAYER_PINTEREST_AD_ACCOUNT_ID",), ["TRACKLAYER_PINTEREST_AD_ACCOUNT_ID"], id="account"
        ),
        pytest.param(
            ("TRACKLAYER_PINTEREST_AD_ACCOUNT_ID", "TRACKLAYER_PINTEREST_ACCESS_TOKEN"),
            ["TRACKLAYER_PINTEREST_AD_ACCOUNT_ID", "TRACKLAYER_PINTEREST_ACCESS_TOKEN"],
            id="both",
        ),
    ],
)
def test_check_names_missing_credentials(
    run: Run, env: dict[str, str], missing: tuple[str, ...], expected: list[str]
) -> None:
    recorder = Recorder(httpx.MockTransport(lambda request: httpx.Response(500)))
    result = run("check", env={k: v for k, v in env.items() if k not in missing}, transport=recorder)
    assert result.code == 2
    failures = [line for line in result.out.splitlines() if line.startswith("✗")]
    assert [line.split()[2] for line in failures] == expected
    assert all(" is not set; it takes " in line for line in failures)
    if "TRACKLAYER_PINTEREST_ACCESS_TOKEN" in missing:
        assert "Conversion Access Token" in result.out
    assert recorder.requests == []


def test_check_explains_a_missing_secret_key(run: Run, env: dict[str, str]) -> None:
    result = run("check", env={k: v for k, v in env.items() if k != "TRACKLAYER_SECRET_KEY"})
    assert result.code == 2
    assert (
        result.out == "✗ settings: TRACKLAYER_SECRET_KEY is required (it signs cookies and linker tokens)\n"
    )


@pytest.mark.parametrize(
    ("kind", "message", "expected"),
    [
        pytest.param(
            httpx.ConnectError,
            "[Errno 111] Connection refused",
            "the connection was refused (nothing listens at that address and port)",
            id="refused",
        ),
        pytest.param(
            httpx.ConnectError,
            "[Errno -2] Name or service not known",
            "its host name does not resolve (DNS)",
            id="dns",
        ),
        pytest.param(
            httpx.ConnectError,
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
            "the TLS handshake failed",
            id="tls",
        ),
        pytest.param(
            httpx.RemoteProtocolError,
            "Server disconnected without sending a response.",
            "RemoteProtocolError: Server disconnected without sending a response.",
            id="dropped",
        ),
    ],
)
def test_check_explains_an_unreachable_api(
    run: Run, kind: type[httpx.TransportError], message: str, expected: str
) -> None:
    result = run("check", transport=raising(kind, message))
    assert result.code == 1
    last = result.out.splitlines()[-1]
    assert last.startswith(f"✗ cannot reach the Pinterest API at {API_BASE}: {expected}")
    assert "TRACKLAYER_PINTEREST_API_BASE" in last


@pytest.mark.parametrize(
    "transport",
    [
        pytest.param(raising(httpx.ConnectTimeout, "timed out"), id="connect"),
        pytest.param(raising(httpx.ReadTimeout, "timed out"), id="read"),
    ],
)
def test_check_explains_a_timeout(run: Run, env: dict[str, str], transport: httpx.BaseTransport) -> None:
    result = run("check", env={**env, "TRACKLAYER_REQUEST_TIMEOUT": "3"}, transport=transport)
    assert result.code == 1
    assert result.out.splitlines()[-1].startswith(
        f"✗ no answer from {API_BASE} within 3 s (TRACKLAYER_REQUEST_TIMEOUT)"
    )


def test_check_explains_a_sandbox_timeout(run: Run, sandbox: PinterestSandbox) -> None:
    sandbox.inject(Fault("timeout", count=1))
    result = run("check")
    assert result.code == 1
    assert "✗ no answer from" in result.out


def test_check_explains_a_404(run: Run, env: dict[str, str]) -> None:
    result = run("check", env={**env, "TRACKLAYER_PINTEREST_API_BASE": "https://api.pinterest.com/v4"})
    assert result.code == 1
    last = result.out.splitlines()[-1]
    assert last.startswith("✗ not found (HTTP 404): no such ad account or endpoint")
    assert "TRACKLAYER_PINTEREST_API_BASE" in last


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        pytest.param(
            "503", "✗ Pinterest had a server error (HTTP 503: The endpoint has been ramped down", id="503"
        ),
        pytest.param("429", "✗ rate limited (HTTP 429)", id="429"),
    ],
)
def test_check_explains_server_trouble(run: Run, sandbox: PinterestSandbox, kind: str, expected: str) -> None:
    sandbox.inject(Fault(kind, count=1))
    result = run("check")
    assert result.code == 1
    assert result.out.splitlines()[-1].startswith(expected)


def test_check_reports_a_failed_event_with_pinterests_message(run: Run) -> None:
    # A sandbox clock 8 days ahead: the test event is too old for Pinterest, which fails it.
    late = PinterestSandbox(token=TOKEN, ad_account_ids=(ACCOUNT,), clock=lambda: time.time() + 8 * 86400)
    result = run("check", transport=late.transport())
    assert result.code == 1
    assert f"✓ access token accepted for ad account {ACCOUNT}" in result.out
    [failure] = late.received
    assert failure.status == "failed"
    assert failure.error
    assert result.out.splitlines()[-1] == f"✗ test event failed: {failure.error}"


def test_check_shows_a_warning(run: Run) -> None:
    payload = {
        "num_events_received": 1,
        "num_events_processed": 1,
        "events": [
            {"status": "processed", "error_message": "", "warning_message": "user_data.ph is ignored"}
        ],
    }
    result = run("check", transport=answering(200, payload))
    assert result.code == 0
    assert result.out.splitlines()[-1] == "! Pinterest warned: user_data.ph is ignored"


def test_check_never_prints_the_token_even_when_echoed(run: Run) -> None:
    echo = answering(401, {"code": 2, "message": f"Authentication failed for token {TOKEN}."})
    result = run("check", transport=echo)
    assert result.code == 1
    assert "Authentication failed for token ***." in result.out


def test_check_mentions_test_mode(run: Run, env: dict[str, str]) -> None:
    result = run("check", env={**env, "TRACKLAYER_PINTEREST_TEST_MODE": "true"})
    assert result.code == 0
    assert "! test mode is on: every delivery carries test=true" in result.out


# --- send-test-event -----------------------------------------------------------------------------


def test_send_test_event_default_page_visit(run: Run, sandbox: PinterestSandbox) -> None:
    recorder = Recorder(sandbox.transport())
    result = run("send-test-event", transport=recorder)
    assert result.code == 0, result.text
    lines = result.out.splitlines()
    assert lines[0] == f"POST {API_BASE}/ad_accounts/{ACCOUNT}/events?test=true"
    assert lines[1].startswith("  PageVisit (Pinterest event_name page_visit), event id tracklayer-test-")
    assert lines[2:4] == ["HTTP 200", "  received 1, processed 1"]
    assert lines[4].startswith("✓ test event processed (PageVisit")
    validate_request_body(recorder.bodies()[0])


@pytest.mark.parametrize("name", list(EVENT_NAMES))
def test_send_test_event_every_name(run: Run, sandbox: PinterestSandbox, name: str) -> None:
    recorder = Recorder(sandbox.transport())
    result = run("send-test-event", name, transport=recorder)
    assert result.code == 0, result.text
    [body] = recorder.bodies()
    validate_request_body(body)
    assert body["data"][0]["event_name"] == EVENT_NAMES[name][0]
    assert recorder.requests[0].url.params["test"] == "true"


def test_send_test_event_purchase_carries_custom_data(run: Run, sandbox: PinterestSandbox) -> None:
    recorder = Recorder(sandbox.transport())
    assert run("send-test-event", "purchase", transport=recorder).code == 0  # any case
    [event] = recorder.bodies()[0]["data"]
    assert event["event_name"] == "checkout"
    assert event["custom_data"]["currency"] == "USD"
    assert event["custom_data"]["value"] == "1"


def test_send_test_event_unknown_name(run: Run) -> None:
    result = run("send-test-event", "Purchased")
    assert result.code == 2
    assert result.out == ""
    assert result.err == f"tracklayer: unknown event 'Purchased'; expected one of {', '.join(EVENT_NAMES)}\n"


def test_send_test_event_json_is_the_raw_answer(run: Run) -> None:
    result = run("send-test-event", "Lead", "--json")
    assert result.code == 0
    answer = json.loads(result.out)
    assert answer == {
        "num_events_received": 1,
        "num_events_processed": 1,
        "events": [{"status": "processed", "error_message": "", "warning_message": ""}],
    }


def test_send_test_event_json_on_refusal(run: Run, env: dict[str, str]) -> None:
    result = run(
        "send-test-event", "--json", env={**env, "TRACKLAYER_PINTEREST_ACCESS_TOKEN": "pina_other-token"}
    )
    assert result.code == 1
    assert json.loads(result.out) == {"code": 2, "message": "Authentication failed."}


def test_send_test_event_json_when_unreachable(run: Run) -> None:
    result = run(
        "send-test-event", "--json", transport=raising(httpx.ConnectError, "[Errno 111] Connection refused")
    )
    assert result.code == 1
    assert json.loads(result.out)["error"].startswith(f"cannot reach the Pinterest API at {API_BASE}")


def test_send_test_event_failure_lines(run: Run) -> None:
    details = {
        "num_events_received": 1,
        "num_events_processed": 0,
        "events": [{"status": "failed", "error_message": "event_time is invalid", "warning_message": ""}],
    }
    payload = {"code": 953, "message": "Not all events were processed.", "details": details}
    result = run("send-test-event", "Signup", transport=answering(422, payload))
    assert result.code == 1
    assert result.out.splitlines()[2:] == [
        "HTTP 422: Not all events were processed.",
        "  received 1, processed 0",
        "✗ test event failed: event_time is invalid",
    ]


def test_send_test_event_refusal_lines(run: Run, env: dict[str, str]) -> None:
    result = run("send-test-event", env={**env, "TRACKLAYER_PINTEREST_AD_ACCOUNT_ID": "42"})
    assert result.code == 1
    assert result.out.splitlines()[2] == "HTTP 403: You are not permitted to access that resource."
    assert result.out.splitlines()[3].startswith("✗ no access to ad account 42 (HTTP 403)")


def test_send_test_event_needs_credentials(run: Run, env: dict[str, str]) -> None:
    result = run("send-test-event", env={k: v for k, v in env.items() if "ACCESS_TOKEN" not in k})
    assert result.code == 2
    assert "no Pinterest credentials" in result.err


# --- outbox --------------------------------------------------------------------------------------


@pytest.fixture
def outbox(outbox_url: str) -> Iterator[Outbox]:
    box = open_outbox(outbox_url)
    yield box
    box.close()


def queue(box: Outbox, *names: str, age: float = 60) -> None:
    now = int(time.time() - age)
    box.put([NewEvent(f"{name}-{i}", name, now, {"event": name}) for i, name in enumerate(names)])


def test_outbox_counts(run: Run, outbox: Outbox) -> None:
    queue(outbox, "PageVisit", "AddToCart", "Purchase", "Lead", "Signup")
    now = time.time()
    claimed = outbox.claim(3, now=now, lease=30)
    outbox.retry([claimed[0].id], at=now + 600, error="HTTP 503")
    outbox.bury([(claimed[1].id, "HTTP 401: bad token")], now=now)

    result = run("outbox")
    assert result.code == 0
    assert result.out.splitlines()[1:] == [
        "  pending           2",
        "  retrying          1",
        "  in flight         1",
        "  dead              1",
        "  `tracklayer outbox dead` lists the dead letters and their reasons",
    ]
    data = json.loads(run("outbox", "--json").out)
    assert {k: data[k] for k in ("pending", "retrying", "in_flight", "dead")} == {
        "pending": 2,
        "retrying": 1,
        "in_flight": 1,
        "dead": 1,
    }


def test_outbox_dead_and_retry_dead(run: Run, outbox: Outbox) -> None:
    queue(outbox, "Purchase", "Lead", "PageVisit", age=3600 * 5)
    now = time.time()
    claimed = {row.event_name: row for row in outbox.claim(3, now=now, lease=30)}
    outbox.bury(
        [(claimed["Purchase"].id, "HTTP 401: token"), (claimed["Lead"].id, "currency is invalid")], now=now
    )
    outbox.ack([claimed["PageVisit"].id])

    result = run("outbox", "dead")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split() == ["ID", "EVENT", "EVENT", "ID", "AGE", "ATTEMPTS", "DIED", "REASON"]
    rows = {line.split()[1]: line for line in lines[1:3]}
    assert rows.keys() == {"Purchase", "Lead"}
    purchase = rows["Purchase"].split()
    assert purchase[:2] == [str(claimed["Purchase"].id), "Purchase"]
    assert purchase[2] == "Purchase-0"
    assert purchase[3:5] == ["5h", "1"]  # age, attempts
    assert rows["Purchase"].endswith("HTTP 401: token")
    assert rows["Lead"].endswith("currency is invalid")
    assert lines[-1].startswith("2 dead letters; `tracklayer outbox retry-dead` queues them again")

    limited = run("outbox", "dead", "--limit", "1").out.splitlines()
    assert len(limited) == 3
    assert limited[-1].startswith("1 of 2 dead letters")

    as_json = json.loads(run("outbox", "dead", "--json").out)
    assert sorted(item["reason"] for item in as_json) == ["HTTP 401: token", "currency is invalid"]
    assert {"id", "event_id", "event_name", "event_time", "attempts", "reason", "died_at"} == set(as_json[0])

    retried = run("outbox", "retry-dead")
    assert retried.code == 0
    assert retried.out.startswith("queued 2 dead letters again")
    counts = outbox.counts(now=time.time())
    assert (counts.pending, counts.dead) == (2, 0)
    assert run("outbox", "retry-dead").out == "no dead letters to retry\n"
    assert run("outbox", "dead").out == "no dead letters\n"


def test_outbox_flags_dead_letters_too_old_to_send(run: Run, outbox: Outbox) -> None:
    queue(outbox, "Purchase", age=8 * 86400)
    [row] = outbox.claim(1, now=time.time(), lease=30)
    outbox.bury([(row.id, "older than 7 days before it could be sent")], now=time.time())
    line = run("outbox", "dead").out.splitlines()[1]
    assert "8d (too old to send)" in line


def test_outbox_needs_no_secret_key(run: Run, env: dict[str, str], outbox: Outbox) -> None:
    queue(outbox, "Lead")
    result = run("outbox", env={k: v for k, v in env.items() if k != "TRACKLAYER_SECRET_KEY"})
    assert result.code == 0
    assert "  pending           1" in result.out


def test_outbox_flag_overrides_the_environment(run: Run, env: dict[str, str], tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    box = open_outbox(other)
    queue(box, "Lead", "Lead")
    box.close()
    assert "  pending           2" in run("outbox", "--outbox", other).out
    assert run("outbox", "--outbox", other, "--json", "dead").out == "[]\n"
    assert run("outbox", "dead", "--outbox", other).out == "no dead letters\n"


def test_outbox_missing_file_is_not_created(run: Run, tmp_path: Path, env: dict[str, str]) -> None:
    missing = tmp_path / "nowhere" / "outbox.sqlite3"
    result = run("outbox", env={**env, "TRACKLAYER_OUTBOX": f"sqlite:///{missing}"})
    assert result.code == 1
    assert result.err.startswith(f"tracklayer: no outbox at {missing} (sqlite:///{missing})")
    assert not missing.exists()


def test_outbox_memory_url_is_explained(run: Run, env: dict[str, str]) -> None:
    result = run("outbox", env={**env, "TRACKLAYER_OUTBOX": "memory://"})
    assert result.code == 2
    assert "the memory:// outbox lives inside the app's process" in result.err


def test_outbox_bad_url_is_a_settings_error(run: Run) -> None:
    result = run("outbox", "--outbox", "postgres://db")
    assert result.code == 2
    assert result.err.startswith("tracklayer: invalid settings: TRACKLAYER_OUTBOX: use 'sqlite:///PATH'")


def test_outbox_dead_limit_must_be_positive(run: Run, outbox: Outbox) -> None:
    assert run("outbox", "dead", "--limit", "0").code == 2


# --- diagnostics ---------------------------------------------------------------------------------


def log_entry(
    event_id: str, outcome: str, *, name: str = "PageVisit", ago: float = 60, **flags: Any
) -> LogEntry:
    values: dict[str, Any] = {"message": "", "warning": "", "click_id": False, "email": False, "ip_ua": True}
    values.update({"pixel": False, "test": False, **flags})
    return LogEntry(at=time.time() - ago, event_id=event_id, event_name=name, outcome=outcome, **values)


def test_diagnostics_report(run: Run, outbox: Outbox) -> None:
    outbox.log(
        [
            log_entry("pv-1", "retry", message="timed out waiting for Pinterest", ago=120),
            log_entry("pv-1", "processed", click_id=True, pixel=True),
            log_entry("pv-2", "processed", warning="unknown field"),
            log_entry("p-1", "failed", name="Purchase", message="invalid currency"),
            log_entry("p-2", "processed", name="Purchase", email=True, ago=3 * 3600),
        ]
    )
    queue(outbox, "Lead")

    result = run("diagnostics")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].startswith("TrackLayer diagnostics: the last 24 hours")
    assert next(line for line in lines if line.startswith("PageVisit")).split() == [
        "PageVisit", "2", "2", "2", "0", "1", "0", "0", "50%", "0%", "100%", "50%",
    ]  # fmt: skip
    assert next(line for line in lines if line.startswith("Purchase")).split()[1:5] == ["2", "2", "1", "1"]
    assert "Outbox now: 1 pending, 0 retrying, 0 in flight, 0 dead" in lines
    assert "  ! Pinterest failed 1 of 4 events" in lines

    data = json.loads(run("diagnostics", "--json").out)
    assert data["totals"]["events"] == 4
    assert data["totals"]["sent"] == 4
    assert data["outbox"]["pending"] == 1
    assert data["failures"][0]["text"] == "invalid currency"

    recent = json.loads(run("diagnostics", "--hours", "1", "--json").out)
    assert recent["hours"] == 1
    assert recent["totals"]["events"] == 3  # p-2 is three hours old


def test_diagnostics_without_credentials(run: Run, env: dict[str, str], outbox: Outbox) -> None:
    queue(outbox, "Lead", "Signup")
    bare = {k: v for k, v in env.items() if "PINTEREST" not in k and k != "TRACKLAYER_SECRET_KEY"}
    data = json.loads(run("diagnostics", "--json", env=bare).out)
    assert data["verdict"] == "error"
    assert data["findings"][0]["title"] == "No Pinterest credentials: nothing can be sent"
    assert "2 queued" in data["findings"][0]["advice"]


def test_diagnostics_hours_must_be_positive(run: Run, outbox: Outbox) -> None:
    result = run("diagnostics", "--hours", "0")
    assert result.code == 2
    assert result.err == "tracklayer: --hours: must be positive\n"


# --- the parser, the sandbox verb and `python -m` ------------------------------------------------


def test_usage_errors_return_2(run: Run) -> None:
    result = run("frobnicate")
    assert result.code == 2
    assert "invalid choice: 'frobnicate'" in result.err
    assert run().code == 2  # a verb is required


def test_help_goes_to_stdout(run: Run) -> None:
    result = run("--help")
    assert result.code == 0
    for verb in ("check", "send-test-event", "outbox", "diagnostics", "sandbox"):
        assert verb in result.out


def test_sandbox_rejects_a_bad_ad_account(run: Run) -> None:
    result = run("sandbox", "--ad-account", "act_1")
    assert result.code == 2
    assert result.err == "tracklayer: --ad-account: digits only\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_python_m_runs_the_sandbox_and_check_passes_against_it(env: dict[str, str]) -> None:
    """End to end over real HTTP: `python -m tracklayer_mw sandbox` in a subprocess, then `check`."""
    port = _free_port()
    child_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "tracklayer_mw", "sandbox", "--port", str(port), "--token", "cli-e2e-token"],
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith(f"Pinterest sandbox on http://127.0.0.1:{port}")
        api_base = f"http://127.0.0.1:{port}/v5"
        deadline = time.monotonic() + 15
        while True:  # the banner is printed before uvicorn binds: wait until it answers
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the sandbox did not start"
                time.sleep(0.05)
        check_env = {
            **env,
            "TRACKLAYER_PINTEREST_API_BASE": api_base,
            "TRACKLAYER_PINTEREST_ACCESS_TOKEN": "cli-e2e-token",
        }
        out = io.StringIO()
        assert main(["check"], environ=check_env, stdout=out) == 0, out.getvalue()
        assert f"✓ Pinterest API reachable at {api_base}" in out.getvalue()
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()


def test_python_m_version() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "tracklayer_mw", "--version"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0
    assert completed.stdout.startswith("tracklayer_mw ")
