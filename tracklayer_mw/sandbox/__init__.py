"""A local Pinterest Conversions API v5 for tests, demos and ``tracklayer sandbox``.

::

    sandbox = PinterestSandbox()                       # token "sandbox-token", ad account 549755885175
    client = httpx.Client(transport=sandbox.transport(), base_url="https://api.pinterest.com/v5")
    sandbox.inject(Fault("429", count=2))              # the next two requests are rate limited
    app = sandbox.asgi_app()                           # or serve it over HTTP, with a diagnostics page
"""

from .core import AnswerTimedOut, ConnectionDropped, Outcome, PinterestSandbox
from .faults import FAULT_KINDS, Fault
from .records import ReceivedEvent, RejectedRequest

__all__ = [
    "FAULT_KINDS",
    "AnswerTimedOut",
    "ConnectionDropped",
    "Fault",
    "Outcome",
    "PinterestSandbox",
    "ReceivedEvent",
    "RejectedRequest",
    "serve",
]


def serve(host: str = "127.0.0.1", port: int = 8765, **sandbox_kwargs: object) -> None:
    """Run the sandbox over HTTP with uvicorn until interrupted (what ``tracklayer sandbox`` calls)."""
    from .app import serve as run  # imported here: it pulls in Starlette, jinja2 and uvicorn

    run(host, port, **sandbox_kwargs)
