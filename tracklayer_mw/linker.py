"""The linker: the click context carried to another domain in a signed, expiring, host-bound token.

A token is minted only for hosts listed in `linked_domains`, expires after 10 minutes, names the
one host it is good for, and is accepted once per process (a replay is ignored, like a bad token).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

from tracklayer_mw.context import ClickContext
from tracklayer_mw.signing import CLOCK_SKEW, LINKER_SALT, SignedCodec

TOKEN_PARAM = "_tlx"  # noqa: S105 - a query parameter name, not a password
TOKEN_MAX_AGE = 600
_SEEN_LIMIT = 50_000


class Linker:
    def __init__(self, keys: Sequence[str], *, clock: Callable[[], float] = time.time) -> None:
        self._codec = SignedCodec(keys, salt=LINKER_SALT, clock=clock)
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def mint(self, context: ClickContext, host: str) -> str:
        return self._codec.dumps({"h": host, "n": secrets.token_urlsafe(9), "c": context.to_dict()})

    def verify(self, token: str, host: str | None) -> ClickContext | None:
        """The context a token carries, or None when it is forged, expired, for another host or replayed."""
        loaded = self._codec.loads(token, max_age=TOKEN_MAX_AGE)
        if loaded is None or host is None:
            return None
        data, _ = loaded
        if not isinstance(data, dict) or data.get("h") != host or not isinstance(data.get("n"), str):
            return None
        context = ClickContext.from_dict(data.get("c"))
        if context is None or not self._first_use(data["n"]):
            return None
        return context.adopted_as("linker")

    def _first_use(self, nonce: str) -> bool:
        now = self._clock()
        with self._lock:
            while self._seen and (next(iter(self._seen.values())) < now or len(self._seen) > _SEEN_LIMIT):
                self._seen.popitem(last=False)
            if nonce in self._seen:
                return False
            self._seen[nonce] = now + TOKEN_MAX_AGE + CLOCK_SKEW  # as long as the token can be valid
            return True


def with_param(url: str, name: str, value: str) -> str:
    """`url` with `name=value` set in its query (an existing value replaced), all else kept byte for byte.

    Only the one pair is touched: a destination may sign its query as written (`%20`, `flag`).
    """
    parts = urlsplit(url)
    kept = [pair for pair in parts.query.split("&") if pair and pair.partition("=")[0] != name]
    return urlunsplit(parts._replace(query="&".join([*kept, f"{name}={quote(value, safe='')}"])))


def without_param(query_string: str, name: str) -> tuple[str, str | None]:
    """The query string without `name`, and the last value it had (None when absent)."""
    kept, found = [], None
    for pair in query_string.split("&"):
        key = pair.partition("=")[0]
        if key == name:
            found = unquote_plus(pair.partition("=")[2])
        elif pair:
            kept.append(pair)
    return "&".join(kept), found
