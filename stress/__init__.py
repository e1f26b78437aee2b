"""Long-running reliability checks for tracklayer_mw, each with a bounded run time.

- ``python -m stress.crash``  kill -9 the app server during delivery, restart, repeat; count ids.
- ``python -m stress.faults`` 429 storms, 5xx, slow answers, timeouts, dropped connections.
- ``python -m stress.load``   sustained ingest with wrk against ``uvicorn --workers 2``.

Every script takes ``--quick``, prints a summary and writes JSON under ``stress/results/``.
The servers are subprocesses: the sandbox (``stress.sandbox_server``) and the host app
(``stress.app``) under uvicorn. See RELIABILITY.md for the figures and the commands.
"""
