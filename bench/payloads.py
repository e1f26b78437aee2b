"""Ingest bodies and headers shaped like what the snippet sends (`sendBeacon`, `text/plain`)."""

from __future__ import annotations

import json
import time
from typing import Any

from bench.apps import USER_AGENT

INGEST_PATH = "/_tl/ingest"
ID_MARK = "@ID@"


def browser_event(event_id: str, host: str) -> dict[str, Any]:
    """One AddToCart as `tracklayer.track("AddToCart", {...})` builds it (time in ms, like Date.now())."""
    return {
        "event": "AddToCart",
        "event_id": event_id,
        "event_time": int(time.time() * 1000),
        "url": f"http://{host}/p/sku-1?utm_source=pinterest",
        "custom": {
            "value": 49.99,
            "currency": "USD",
            "content_ids": ["sku-1"],
            "contents": [{"id": "sku-1", "quantity": 1, "item_price": 49.99}],
            "num_items": 1,
        },
        "pixel": True,
    }


def ingest_body(batch: int, host: str, id_prefix: str) -> str:
    """`{"events": [...]}` of `batch` events, ids `{id_prefix}-{k}` (the snippet always sends a list)."""
    return json.dumps(
        {"events": [browser_event(f"{id_prefix}-{k}", host) for k in range(batch)]}, separators=(",", ":")
    )


def ingest_template(batch: int, host: str) -> str:
    """The same body with `@ID@` where the load generator puts a unique id per request."""
    return ingest_body(batch, host, ID_MARK)


def ingest_headers(host: str) -> dict[str, str]:
    return {
        "Content-Type": "text/plain;charset=UTF-8",
        "Origin": f"http://{host}",
        "Referer": f"http://{host}/p/sku-1",
        "User-Agent": USER_AGENT,
        "Sec-Fetch-Site": "same-origin",
        "Accept": "*/*",
        "Accept-Language": "en-US,en;q=0.9",
    }


def page_headers() -> dict[str, str]:
    """What a browser sends for a page (no cookies: a first visit)."""
    return {
        "User-Agent": USER_AGENT,
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "Accept-Language": "en-US,en;q=0.9",
    }
