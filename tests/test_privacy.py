"""Secrets and privacy: after a run with known raw emails and phone numbers, nothing the library wrote
holds them, and the access token appears in no log line, repr, page or error message.

The run: both adapters over one engine and a real SQLite outbox, browser events through ingest and
server events through track(), all carrying raw personal data; part of them delivered to the
sandbox, part refused (dead letters with Pinterest's message), part still queued when the engine
stops (so the WAL holds fresh rows too). Every log record of every logger is captured at DEBUG.
Then the bytes of every file under the run's directory and the text of every log line are searched
for the raw values, their normalized forms, the token and the secret key.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from tracklayer_mw import Engine, Settings, TrackLayerMiddleware, TrackLayerWSGIMiddleware, track
from tracklayer_mw.cli import main as cli_main
from tracklayer_mw.sandbox import Fault, PinterestSandbox

TOKEN = "pina_PRIVACYtestTOKEN0123456789abcdefXYZ"  # a recognisable fake, searched for below
SECRET_KEY = "privacy-secret-KEY-0123456789abcdef"
DIAGNOSTICS_TOKEN = "diag-PRIVACY-0123456789"
ACCOUNT = "549755885175"
SHOP = "http://www.shop.localhost"
CLIENT = ("203.0.113.9", 50000)
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"

PEOPLE: list[dict[str, str]] = [
    {
        "email": "Ann.Privacy@Example.com",
        "phone": "+1 (650) 555-1234",
        "first_name": "Zenobia",
        "last_name": "Quillfeather",
        "date_of_birth": "1987-03-14",
        "city": "Springfield Gardens",
        "zip": "94025-1234",
        "external_id": "cust-PRIVACY-42",
    },
    {
        "email": " BOB.Secretive+tag@Example.ORG ",
        "phone": "+44 20 7946 0958",
        "first_name": "Bartholomew",
        "last_name": "Xylander",
        "date_of_birth": "05/17/1979",
        "city": "Little Whinging",
        "zip": "SW1A 1AA",
        "external_id": "cust-PRIVACY-43",
    },
    {
        "email": "carol.hidden@example.net",
        "phone": "650 555 9876",
    },  # a national number: default_phone_country
]


def forbidden_strings() -> dict[str, str]:
    """Every raw value, and the forms normalization makes of it, that must never be written down."""
    found: dict[str, str] = {"token": TOKEN, "secret key": SECRET_KEY, "diagnostics token": DIAGNOSTICS_TOKEN}
    for person in PEOPLE:
        for field, value in person.items():
            found[f"{field} raw"] = value.strip()
        found[f"email {person['email'].strip()} normalized"] = person["email"].strip().lower()
        digits = "".join(ch for ch in person["phone"] if ch.isdigit())
        found[f"phone {person['phone']} digits"] = digits if person["phone"].startswith("+") else "1" + digits
    found["dob normalized"] = "19870314"
    found["name normalized"] = "quillfeather"
    found["city normalized"] = "springfieldgardens"
    found["zip normalized"] = "sw1a1aa"
    found["external id"] = "cust-PRIVACY-4"
    return found


def assert_free_of_secrets(where: str, text: str | bytes) -> None:
    blob = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    lowered = blob.lower()
    leaks = [name for name, value in forbidden_strings().items() if value.lower().encode() in lowered]
    assert leaks == [], f"{where} holds {leaks}"


# --- the run ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    directory: Path
    settings: Settings
    engine: Engine
    sandbox: PinterestSandbox
    asgi: TrackLayerMiddleware
    wsgi: TrackLayerWSGIMiddleware
    pages: dict[str, str]
    answers: list[str]


def _asgi_host() -> Starlette:
    async def page(request: Request) -> Response:
        return HTMLResponse("<html><head><title>Shop</title></head><body>Thank you</body></html>")

    async def buy(request: Request) -> Response:
        person = await request.json()
        event_id = track(
            request, "Purchase", user=person, custom={"value": 49.99, "currency": "USD", "order_id": "A-1"}
        )
        signup = track(request, "Signup", user={"email": person["email"], "phone": "call me maybe"})
        return JSONResponse({"event_ids": [event_id, signup]})

    return Starlette(routes=[Route("/", page), Route("/buy", buy, methods=["POST"])])


def _wsgi_host(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    person = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"{}")
    event_id = track(environ, "Lead", user=person) if person else None
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"event_id": event_id}).encode()]


@pytest.fixture
def run(
    make_settings: Callable[..., Settings], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> Iterator[Run]:
    caplog.set_level(logging.DEBUG)  # every logger: tracklayer_mw, httpx, httpcore, starlette, ...
    directory = tmp_path / "run"
    settings = make_settings(
        secret_key=SECRET_KEY,
        pinterest_access_token=TOKEN,
        outbox=f"sqlite:///{directory / 'outbox.sqlite3'}",
        default_phone_country="US",
        diagnostics_token=DIAGNOSTICS_TOKEN,
        ingest_rate_per_minute=100_000,
    )
    sandbox = PinterestSandbox(token=TOKEN, ad_account_ids=(ACCOUNT,))
    engine = Engine(settings, transport=sandbox.transport())
    the_run = Run(
        directory,
        settings,
        engine,
        sandbox,
        TrackLayerMiddleware(_asgi_host(), engine=engine),
        TrackLayerWSGIMiddleware(_wsgi_host, engine=engine),
        {},
        [],
    )
    client = TestClient(the_run.asgi, base_url=SHOP, client=CLIENT)
    wsgi = httpx.Client(transport=httpx.WSGITransport(app=the_run.wsgi, remote_addr=CLIENT[0]), base_url=SHOP)
    headers = {"user-agent": UA, "content-type": "application/json"}

    def ingest(target: httpx.Client | TestClient, person: dict[str, str], event: str) -> None:
        body = {"events": [{"event": event, "user": person, "url": f"{SHOP}/p/1"}, {"event": "PageVisit"}]}
        answer = target.post("/_tl/ingest", content=json.dumps(body).encode(), headers=headers)
        assert answer.status_code == 202, answer.text
        the_run.answers.append(answer.text)

    # 1. Delivered: browser and server events with raw personal data.
    for person in PEOPLE:
        ingest(client, person, "AddToCart")
        ingest(wsgi, person, "Checkout")
        answer = client.post("/buy", content=json.dumps(person).encode(), headers=headers)
        assert answer.status_code == 200
        assert None not in answer.json()["event_ids"]
        assert wsgi.post("/", content=json.dumps(person).encode(), headers=headers).json()["event_id"]
    # Invalid personal data: a 400 naming the field, never echoing the value into a log.
    bad = {"event": "Lead", "user": {"email": "Ann.Privacy@Example", "phone": "+1 650"}}
    refused = client.post("/_tl/ingest", content=json.dumps(bad).encode(), headers=headers)
    assert refused.status_code == 400
    the_run.answers.append(refused.text)
    assert engine.deliverer.flush(10.0)

    # 2. Refused by Pinterest (401: a dead letter with its message), then 3. retried (503), then queued.
    sandbox.inject(Fault("401", count=1))
    ingest(client, PEOPLE[0], "Lead")
    assert engine.deliverer.flush(10.0)
    sandbox.inject(Fault("503"))
    ingest(client, PEOPLE[1], "Search")
    ingest(wsgi, PEOPLE[2], "Signup")
    engine.deliverer.flush(3.0)  # the 503 keeps them queued

    the_run.pages["page"] = client.get("/").text
    the_run.pages["t.js"] = client.get("/_tl/t.js").text
    # In the header: a `?token=` would be in the test client's own request log (and a server's access log).
    bearer = {"authorization": f"Bearer {DIAGNOSTICS_TOKEN}"}
    the_run.pages["diagnostics"] = client.get("/_tl/diagnostics", headers=bearer).text
    the_run.pages["diagnostics refused"] = client.get("/_tl/diagnostics?token=wrong").text
    the_run.pages["unknown endpoint"] = client.get("/_tl/nope").text
    yield the_run
    wsgi.close()
    engine.stop(1.0)


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    lines = []
    # The run happens in the fixture: its records belong to the "setup" phase.
    for record in [*caplog.get_records("setup"), *caplog.get_records("call")]:
        lines.append(f"{record.name} {record.levelname} {record.getMessage()} {record.args!r}")
        if record.exc_info:
            lines.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(lines)


def test_the_run_left_events_in_every_state(run: Run) -> None:
    """The premise: the files below hold delivered, dead and still-queued events."""
    run.engine.stop(1.0)
    counts = run.engine.outbox.counts(now=run.engine.clock())
    assert counts.dead >= 2
    assert counts.pending + counts.retrying >= 4
    assert len(run.sandbox.received) >= 15
    assert (run.directory / "outbox.sqlite3").stat().st_size > 0


def test_no_file_the_library_wrote_holds_personal_data_or_secrets(run: Run) -> None:
    wal = run.directory / "outbox.sqlite3-wal"
    assert wal.exists()
    assert wal.stat().st_size > 0  # fresh rows still in the WAL, not only in the main file
    files = sorted(path for path in run.directory.rglob("*") if path.is_file())
    assert files
    for path in files:
        assert_free_of_secrets(str(path.name), path.read_bytes())
    run.engine.stop(1.0)
    run.engine.outbox.close()
    # After the stop, checkpointed into the main file too.
    with sqlite3.connect(run.directory / "outbox.sqlite3") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        dump = "\n".join(conn.iterdump())
    conn.close()
    assert_free_of_secrets("the database dump", dump)
    for path in sorted(path for path in run.directory.rglob("*") if path.is_file()):
        assert_free_of_secrets(str(path.name), path.read_bytes())


def test_no_log_line_holds_personal_data_or_secrets(run: Run, caplog: pytest.LogCaptureFixture) -> None:
    run.engine.stop(1.0)
    text = _log_text(caplog)
    assert "tracklayer" in text  # the capture works: the library did log (dropped fields, retries, ...)
    assert any(record.name.startswith("httpx") for record in caplog.get_records("setup"))
    assert_free_of_secrets("the logs", text)


def test_the_access_token_is_in_no_repr(run: Run) -> None:
    objects: list[object] = [
        run.settings,
        run.engine,
        run.engine.deliverer,
        run.engine.deliverer.adapter,
        run.engine.outbox,
        run.engine.cookies,
        run.engine.linker,
        run.asgi,
        run.asgi.endpoints,
        run.wsgi,
    ]
    for item in objects:
        assert_free_of_secrets(f"repr({type(item).__name__})", repr(item))
        assert_free_of_secrets(f"str({type(item).__name__})", str(item))
    assert_free_of_secrets("format(settings)", f"{run.settings}")
    assert "pinterest_access_token" in repr(run.settings)  # the field is shown, masked


def test_no_page_or_answer_holds_the_token_or_personal_data(run: Run) -> None:
    assert "data-tl" in run.pages["page"]
    assert "Event" in run.pages["diagnostics"]
    for name, text in run.pages.items():
        assert_free_of_secrets(f"the {name} page", text)
    for text in run.answers:
        assert_free_of_secrets("an ingest answer", text)


def test_dead_letter_reasons_hold_no_token(run: Run) -> None:
    letters = run.engine.outbox.dead_letters()
    assert letters
    assert any("401" in letter.reason or "token" in letter.reason for letter in letters)
    for letter in letters:
        assert_free_of_secrets("a dead letter", repr(letter))


def _cli(args: list[str], env: dict[str, str], transport: httpx.BaseTransport | None = None) -> str:
    out, err = io.StringIO(), io.StringIO()
    cli_main(args, environ=env, transport=transport, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def test_the_command_line_never_prints_the_token(run: Run, caplog: pytest.LogCaptureFixture) -> None:
    run.engine.stop(1.0)
    env = {
        "TRACKLAYER_SECRET_KEY": SECRET_KEY,
        "TRACKLAYER_PINTEREST_AD_ACCOUNT_ID": ACCOUNT,
        "TRACKLAYER_PINTEREST_ACCESS_TOKEN": TOKEN,
        "TRACKLAYER_PINTEREST_API_BASE": "https://api.pinterest.com/v5",
        "TRACKLAYER_OUTBOX": run.settings.outbox,
        "TRACKLAYER_DIAGNOSTICS_TOKEN": DIAGNOSTICS_TOKEN,
    }
    outputs = {
        "check": _cli(["check"], env, run.sandbox.transport()),
        "send-test-event": _cli(["send-test-event", "Purchase"], env, run.sandbox.transport()),
        "outbox": _cli(["outbox"], env),
        "outbox dead": _cli(["outbox", "dead"], env),
        "diagnostics": _cli(["diagnostics"], env),
        "--help": _cli(["--help"], env),
    }
    # A token Pinterest refuses, and one that is malformed: the error says so, without the token.
    wrong = PinterestSandbox(token="some-other-token", ad_account_ids=(ACCOUNT,))
    outputs["check with a refused token"] = _cli(["check"], env, wrong.transport())
    outputs["check with a malformed token"] = _cli(
        ["check"], {**env, "TRACKLAYER_PINTEREST_ACCESS_TOKEN": TOKEN + " é"}, run.sandbox.transport()
    )
    assert "✓" in outputs["check"]
    assert "✗" in outputs["check with a refused token"]
    for name, text in outputs.items():
        assert_free_of_secrets(f"`tracklayer {name}`", text)
    assert_free_of_secrets("the logs of the commands", _log_text(caplog))


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"pinterest_access_token": TOKEN + " with a space"}, id="token-with-space"),
        pytest.param({"pinterest_access_token": TOKEN + "é"}, id="token-non-ascii"),
        pytest.param({"pinterest_ad_account_id": "act_" + TOKEN}, id="account-id-holding-the-token"),
        pytest.param({"pinterest_api_base": TOKEN}, id="api-base-holding-the-token"),
        pytest.param({"request_timeout": 0}, id="other-error"),
    ],
)
def test_settings_errors_never_echo_the_token(overrides: dict[str, Any]) -> None:
    values: dict[str, Any] = {"secret_key": SECRET_KEY, "pinterest_access_token": TOKEN, **overrides}
    with pytest.raises(ValueError) as caught:
        Settings(**values)
    assert_free_of_secrets("a settings error", str(caught.value))


def test_settings_from_env_errors_never_echo_the_token() -> None:
    env = {"TRACKLAYER_SECRET_KEY": SECRET_KEY, "TRACKLAYER_PINTEREST_ACCESS_TOKEN": TOKEN + " x"}
    with pytest.raises(ValueError) as caught:
        Settings.from_env(env)
    assert_free_of_secrets("a from_env error", str(caught.value))


def test_a_send_that_fails_to_connect_logs_no_token(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused: {request.url}", request=request)

    engine = Engine(
        make_settings(secret_key=SECRET_KEY, pinterest_access_token=TOKEN),
        transport=httpx.MockTransport(refuse),
    )
    app = TrackLayerMiddleware(_asgi_host(), engine=engine)
    body = json.dumps(PEOPLE[0]).encode()
    TestClient(app, base_url=SHOP, client=CLIENT).post("/buy", content=body, headers={"user-agent": UA})
    engine.deliverer.flush(2.0)
    engine.stop(1.0)
    assert "could not reach Pinterest" in _log_text(caplog)
    assert_free_of_secrets("the logs", _log_text(caplog))


def test_an_email_in_the_page_url_is_not_stored_raw(run: Run) -> None:
    """Found here: the page URL (query string included) was stored and sent as given."""
    client = TestClient(run.asgi, base_url=SHOP, client=CLIENT)
    person = {"email": "dora.inurl@example.com"}
    answer = client.post(
        "/buy?newsletter=1&email=dora.inurl%40example.com",
        content=json.dumps(person).encode(),
        headers={"user-agent": UA},
    )
    assert answer.status_code == 200
    run.sandbox.clear_faults()
    run.engine.stop(1.0)
    for path in run.directory.rglob("*"):
        assert b"dora.inurl" not in path.read_bytes()
