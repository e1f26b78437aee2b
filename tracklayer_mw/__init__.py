"""Server-side Pinterest conversion tracking for ASGI and WSGI apps."""

__version__ = "0.1.0"
