"""`python -m bench` (`make bench`): every benchmark in one run, one table on stdout, JSON in bench/results/.

    python -m bench                 # the full run (about 10 minutes)
    python -m bench --quick         # a smoke check (about a minute; figures are not meaningful)
    python -m bench --only overhead,ingest

Sections: overhead, naive, ingest, delivery, snippet, memory. Servers run on core 0, load
generators on core 1 (taskset); see BENCHMARKS.md for the method and the latest figures.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import delivery_section, ingest, memory, overhead, snippet
from bench.common import Context, note_noise, wait_quiet
from bench.report import SectionResult, machine, render, save

SECTIONS = ("overhead", "naive", "ingest", "delivery", "snippet", "memory")
RESULTS = Path(__file__).resolve().parent / "results"


def _runners(only: set[str]) -> list[tuple[str, Callable[[Context], list[SectionResult]]]]:
    runners: list[tuple[str, Callable[[Context], list[SectionResult]]]] = []
    if only & {"overhead", "naive"}:
        runners.append(
            (
                "overhead+naive",
                lambda ctx: overhead.run(ctx, overhead="overhead" in only, naive="naive" in only),
            )
        )
    if "ingest" in only:
        runners.append(("ingest", lambda ctx: [ingest.run(ctx)]))
    if "delivery" in only:
        runners.append(("delivery", lambda ctx: [delivery_section.run(ctx)]))
    if "snippet" in only:
        runners.append(("snippet", lambda ctx: [snippet.run(ctx)]))
    if "memory" in only:
        runners.append(("memory", lambda ctx: [memory.run(ctx)]))
    return runners


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="short runs: a smoke check, not figures to quote"
    )
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated, from: {', '.join(SECTIONS)}"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server logs, outboxes)")
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            parser.error(
                f"{tool} is required (apt-get install -y {'wrk' if tool == 'wrk' else 'util-linux'})"
            )

    # Stop cleanly (servers included) on SIGTERM, and on Ctrl-C even when started in the background.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="tracklayer-bench-"))
    ctx = Context(quick=args.quick, workdir=workdir)
    results: list[SectionResult] = []
    started = time.monotonic()
    failed = False
    try:
        for name, runner in _runners(only):
            calm = wait_quiet(ctx.pick(30, 0))
            print(
                f"[bench] {name} ... (other processes: {calm:.0%} of the machine)",
                file=sys.stderr,
                flush=True,
            )
            section_started = time.monotonic()
            ctx.noise = []
            try:
                produced = runner(ctx)
                for section in produced:
                    note_noise(section, ctx.noise)
                results.extend(produced)
            except Exception as exc:
                failed = True
                print(
                    f"[bench] {name} FAILED: {exc!r} (logs in {workdir / 'logs'})",
                    file=sys.stderr,
                    flush=True,
                )
                args.keep = True
            print(f"[bench] {name}: {time.monotonic() - section_started:.0f} s", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    info["total_seconds"] = time.monotonic() - started
    order = {name: index for index, name in enumerate(SECTIONS)}
    results.sort(key=lambda section: order[section.name])
    print(render(results, info))
    path = save(results, info, args.quick, RESULTS)
    print(f"[bench] {info['total_seconds']:.0f} s in all; results in {path}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
