"""wrk on the client core: run it, parse requests/s, p50, p99 and errors from its `--latency` output."""

from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.servers import CLIENT_CORE

CONNECTIONS = 50
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_LATENCY_RE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors plus non-2xx/3xx answers

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse(output: str) -> WrkResult:
    percentiles = {int(p): float(v) * _UNITS[unit] for p, v, unit in _LATENCY_RE.findall(output)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    if rps is None or total is None or 50 not in percentiles or 99 not in percentiles:
        raise RuntimeError(f"could not parse wrk output:\n{output}")
    errors = 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    return WrkResult(float(rps.group(1)), percentiles[50], percentiles[99], int(total.group(1)), errors)


def run(
    url: str,
    seconds: float,
    *,
    headers: Mapping[str, str] | None = None,
    script: Path | None = None,
    connections: int = CONNECTIONS,
    extra: Sequence[str] = (),
) -> WrkResult:
    argv = [
        "taskset",
        "-c",
        CLIENT_CORE,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
    ]
    argv += extra
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if script is not None:
        argv += ["-s", str(script)]
    done = subprocess.run([*argv, url], capture_output=True, text=True, check=True, timeout=seconds + 60)
    if done.stderr.strip():
        raise RuntimeError(f"wrk complained: {done.stderr.strip()[:500]}")
    return parse(done.stdout)


def median(results: Sequence[WrkResult]) -> WrkResult:
    """Per-figure medians of repeated runs (requests and errors are summed)."""
    return WrkResult(
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        requests=sum(r.requests for r in results),
        errors=sum(r.errors for r in results),
    )


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def post_script(directory: Path, body_template: str, headers: Mapping[str, str]) -> Path:
    """A wrk Lua script POSTing `body_template` with `@ID@` replaced by a unique id per request.

    Every request gets new event ids (a fresh prefix per script, a counter per request): repeated
    ids would make the outbox merge events instead of inserting them.
    """
    prefix = uuid.uuid4().hex[:12]
    lines = [
        'wrk.method = "POST"',
        *(f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items()),
        f"local template = {_lua_string(body_template)}",
        "local counter = 0",
        "function request()",
        "  counter = counter + 1",
        f'  local body = string.gsub(template, "@ID@", "{prefix}-" .. counter)',
        "  return wrk.format(nil, nil, nil, body)",
        "end",
    ]
    handle, name = tempfile.mkstemp(suffix=".lua", dir=directory)
    path = Path(name)
    with open(handle, "w") as file:
        file.write("\n".join(lines) + "\n")
    return path
