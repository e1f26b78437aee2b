"""``python -m example_app.demo`` (what ``make demo`` runs): the whole example on one local port.

One uvicorn server answers for every host name, routing on the Host header:

- ``www.shop.localhost``, ``checkout.shop.localhost``, ``pay.localhost``: the store (Starlette);
- ``lead.shop.localhost``: the styling-session page (Flask, behind `TrackLayerWSGIMiddleware`);
- ``sandbox.localhost``: the local Pinterest sandbox and its diagnostics page.

Without Pinterest credentials in the environment the store delivers to that sandbox (in-process,
token ``sandbox-token``, ad account ``549755885175``). With ``TRACKLAYER_PINTEREST_AD_ACCOUNT_ID``
and ``TRACKLAYER_PINTEREST_ACCESS_TOKEN`` set it delivers to Pinterest, always in test mode. The
outbox, a generated secret key and the diagnostics token live in ``.demo/`` unless the matching
``TRACKLAYER_*`` variables are set. Tests start the same app with :func:`start_in_thread`.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from example_app.flask_page import create_lead_app
from example_app.store import Hosts, Store, create_app
from example_app.wsgi_bridge import WSGIBridge
from tracklayer_mw import Engine, Settings
from tracklayer_mw.sandbox import PinterestSandbox

SANDBOX_TOKEN = "sandbox-token"  # the local sandbox's well-known token, not a secret
SANDBOX_ACCOUNT = "549755885175"
DEFAULT_PORT = 8000
PORT_ATTEMPTS = 20


class HostRouter:
    """Pure ASGI: pick an app by the Host header; lifespan goes to the store (it runs delivery)."""

    def __init__(self, default: ASGIApp, by_host: Mapping[str, ASGIApp]) -> None:
        self.default = default
        self.by_host = dict(by_host)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.default(scope, receive, send)
            return
        host = ""
        for name, value in scope.get("headers", []):
            if name == b"host":
                host = value.decode("latin-1").rsplit(":", 1)[0].lower()
                break
        await self.by_host.get(host, self.default)(scope, receive, send)


@dataclass
class Demo:
    """The assembled demo: the ASGI app to serve and the parts tests look into."""

    app: HostRouter
    store_app: Starlette
    engine: Engine
    sandbox: PinterestSandbox
    settings: Settings
    hosts: Hosts
    uses_sandbox: bool
    data_dir: Path
    port: int

    @property
    def store(self) -> Store:
        store: Store = self.store_app.state.store
        return store

    def origin(self, key: str) -> str:
        """``www``, ``checkout``, ``pay``, ``lead`` or ``sandbox``: that host's origin on this port."""
        return self.hosts.urls("http", self.port)[key]

    def urls(self, epik: str | None = None) -> dict[str, str]:
        epik = epik or secrets.token_urlsafe(18)
        www = self.origin("www")
        prefix = self.settings.path_prefix
        return {
            "store": f"{www}/",
            "ad_click": f"{www}/?epik={epik}&utm_source=pinterest&utm_medium=paid&utm_campaign=autumn-demo",
            "lead": f"{self.origin('lead')}/",
            "sandbox": f"{self.origin('sandbox')}/_sandbox/",
            "diagnostics": f"{www}{prefix}/diagnostics?token={self.settings.diagnostics_token}",
        }


def _saved_secret(path: Path) -> str:
    """A random value kept in `path` (created 0600 on first use) so it survives restarts."""
    if path.is_file():
        value = path.read_text(encoding="utf-8").strip()
        if len(value) >= 16:
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return value


def has_real_credentials(environ: Mapping[str, str]) -> bool:
    return bool(
        environ.get("TRACKLAYER_PINTEREST_AD_ACCOUNT_ID", "").strip()
        and environ.get("TRACKLAYER_PINTEREST_ACCESS_TOKEN", "").strip()
    )


def demo_settings(data_dir: Path, environ: Mapping[str, str], hosts: Hosts, port: int) -> Settings:
    """The store's settings: the environment, plus what the demo's hosts need, plus embedded defaults."""
    overrides: dict[str, object] = {
        # What the store's host layout needs, whatever the environment says.
        "cookie_domain": f".{hosts.shop_domain}",
        "linked_domains": hosts.pay,
        "consent": "tl_consent=granted",
    }
    if not environ.get("TRACKLAYER_SECRET_KEY", "").strip():
        overrides["secret_key"] = _saved_secret(data_dir / "secret")
    if not environ.get("TRACKLAYER_OUTBOX", "").strip():
        overrides["outbox"] = f"sqlite:///{data_dir / 'outbox.sqlite3'}"
    if not environ.get("TRACKLAYER_DIAGNOSTICS_TOKEN", "").strip():
        overrides["diagnostics_token"] = _saved_secret(data_dir / "diagnostics-token")
    if has_real_credentials(environ):
        overrides["pinterest_test_mode"] = True  # the demo's made-up orders never count as conversions
    else:
        overrides.update(
            pinterest_ad_account_id=SANDBOX_ACCOUNT,
            pinterest_access_token=SANDBOX_TOKEN,
            pinterest_api_base=f"http://{hosts.sandbox}:{port}/v5",
        )
    return Settings.from_env(environ, **overrides)


def build_demo(
    port: int,
    *,
    data_dir: Path | str = ".demo",
    environ: Mapping[str, str] | None = None,
    hosts: Hosts | None = None,
) -> Demo:
    """Everything the demo serves on `port`; `environ` defaults to `os.environ`."""
    environ = os.environ if environ is None else environ
    hosts = hosts or Hosts()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = demo_settings(data_dir, environ, hosts, port)
    sandbox = PinterestSandbox(token=SANDBOX_TOKEN, ad_account_ids=(SANDBOX_ACCOUNT,))
    uses_sandbox = not has_real_credentials(environ)
    engine = Engine(settings, transport=sandbox.transport() if uses_sandbox else None)
    store_app = create_app(settings, engine=engine, hosts=hosts)
    lead = WSGIBridge(create_lead_app(store_app.state.store))
    router = HostRouter(store_app, {hosts.lead: lead, hosts.sandbox: sandbox.asgi_app()})
    return Demo(router, store_app, engine, sandbox, settings, hosts, uses_sandbox, data_dir, port)


def bind(host: str, port: int, *, exact: bool) -> socket.socket:
    """A listening socket on `port`, or (unless `exact`) the next free one after it; port 0 picks any."""
    candidates = [port] if exact or port == 0 else list(range(port, port + PORT_ATTEMPTS))
    last_error: OSError | None = None
    for candidate in candidates:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        return sock
    raise OSError(
        f"no free port at {host}:{port}" + ("" if exact else f"-{port + PORT_ATTEMPTS - 1}")
    ) from last_error


def make_server(app: ASGIApp, *, log_level: str = "info", access_log: bool = False) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=3,
        server_header=False,
    )
    return uvicorn.Server(config)


class RunningDemo:
    """The demo served by uvicorn in a background thread (for tests and the screenshot script)."""

    def __init__(self, demo: Demo, server: uvicorn.Server, sock: socket.socket) -> None:
        self.demo = demo
        self.server = server
        self._sock = sock
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="demo-uvicorn", daemon=True
        )

    @property
    def port(self) -> int:
        return self.demo.port

    def start(self, timeout: float = 10.0) -> RunningDemo:
        self._thread.start()
        started = threading.Event()

        def poll() -> None:
            while not self.server.started and self._thread.is_alive():
                started.wait(0.01)

        poll_thread = threading.Thread(target=poll, daemon=True)
        poll_thread.start()
        poll_thread.join(timeout)
        if not self.server.started:
            self.stop()
            raise RuntimeError("the demo server did not start")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> RunningDemo:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def start_in_thread(
    data_dir: Path | str,
    *,
    environ: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    hosts: Hosts | None = None,
) -> RunningDemo:
    """The demo's app on `host:port` (0: any free port) in a thread; `environ` defaults to none at all."""
    sock = bind(host, port, exact=True)
    demo = build_demo(
        sock.getsockname()[1], data_dir=data_dir, environ={} if environ is None else environ, hosts=hosts
    )
    return RunningDemo(demo, make_server(demo.app, log_level="warning"), sock).start()


def describe(demo: Demo, bound_host: str) -> str:
    urls = demo.urls()
    if demo.uses_sandbox:
        mode = "events go to the local Pinterest sandbox (no credentials needed)"
    else:
        account = demo.settings.pinterest_ad_account_id
        mode = f"events go to Pinterest ad account {account} in TEST mode (test=true: nothing is counted)"
    rows = [
        ("Store", urls["store"]),
        ("Simulate a Pinterest ad click", urls["ad_click"]),
        ("Styling session page (Flask)", urls["lead"]),
    ]
    if demo.uses_sandbox:
        rows.append(("Pinterest sandbox diagnostics", urls["sandbox"]))
    rows.append(("tracklayer diagnostics", urls["diagnostics"]))
    width = max(len(label) for label, _ in rows)
    lines = [f"tracklayer_mw demo: Maple & Moss, {mode}", ""]
    lines += [f"  {label.ljust(width)}  {url}" for label, url in rows]
    lines += [
        "",
        f"  Outbox: {demo.settings.outbox}",
        f"  Listening on {bound_host}:{demo.port}; *.localhost names reach it from Chromium and Firefox"
        " with no setup.",
        "  Accept the cookie banner to start tracking. Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_app.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port to listen on (default: {DEFAULT_PORT} or the next free one)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--data-dir", default=".demo", help="outbox, secret key and diagnostics token (default .demo)"
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:  %(name)s: %(message)s")
    try:
        sock = bind(args.host, DEFAULT_PORT if args.port is None else args.port, exact=args.port is not None)
    except OSError as exc:
        print(f"demo: {exc}; choose another with --port", file=sys.stderr)
        return 2
    demo = build_demo(sock.getsockname()[1], data_dir=args.data_dir)
    print(describe(demo, args.host), flush=True)
    server = make_server(demo.app, access_log=args.access_log)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn already shut down cleanly (it re-raises the signal afterwards)
    finally:
        sock.close()
    print("demo: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
