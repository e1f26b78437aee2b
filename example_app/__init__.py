"""Maple & Moss, the example store for tracklayer_mw: ``python -m example_app.demo`` runs it all.

- :mod:`example_app.store`: the Starlette store (``create_app(settings)``) on three hosts;
- :mod:`example_app.flask_page`: one page in Flask, behind ``TrackLayerWSGIMiddleware``;
- :mod:`example_app.demo`: the demo command, and ``start_in_thread`` for tests;
- :mod:`example_app.screenshots`: the pictures in ``docs/screenshots/``.
"""
