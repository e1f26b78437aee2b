"""Server-side Pinterest conversion tracking for ASGI and WSGI apps.

app = TrackLayerMiddleware(app, settings=Settings.from_env())
event_id = track(request, "Purchase", user={...}, custom={...})
"""

from tracklayer_mw.asgi import TrackLayerMiddleware
from tracklayer_mw.config import Settings
from tracklayer_mw.engine import Engine
from tracklayer_mw.events import EVENT_NAMES
from tracklayer_mw.tracking import snippet_tag, track
from tracklayer_mw.wsgi import TrackLayerWSGIMiddleware

__version__ = "0.1.0"
__all__ = [
    "EVENT_NAMES",
    "Engine",
    "Settings",
    "TrackLayerMiddleware",
    "TrackLayerWSGIMiddleware",
    "snippet_tag",
    "track",
]
