"""What every section hands back (tables, goals, raw figures) and how the whole run is printed."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        widths = [
            max(len(str(cell)) for cell in column) for column in zip(self.headers, *self.rows, strict=True)
        ]

        def line(cells: Sequence[str]) -> str:
            return (
                "| "
                + " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True))
                + " |"
            )

        out = [
            f"### {self.title}",
            "",
            line(self.headers),
            "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        ]
        out += [line(row) for row in self.rows]
        if self.notes:
            out += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(out)


@dataclass
class Goal:
    name: str
    target: str
    measured: str
    met: bool


@dataclass
class SectionResult:
    name: str
    tables: list[Table]
    goals: list[Goal] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def fmt_rps(value: float) -> str:
    return f"{value:,.0f}"


def fmt_ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 100 else f"{value:.0f} ms"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}"


def _version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except OSError:
        return "not found"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "?"


def machine() -> dict[str, Any]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.partition(":")[2].strip()
            break
    packages = {}
    for name in (
        "tracklayer_mw",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "flask",
        "gunicorn",
        "httpx",
    ):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "-"
    root = Path(__file__).resolve().parent.parent
    commit = _version(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    dirty = _version(["git", "-C", str(root), "status", "--porcelain", "--", "tracklayer_mw", "static"])
    return {
        "commit": commit
        + (" + uncommitted changes (tracklayer_mw/, static/)" if dirty not in ("", "?") else ""),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": packages,
        "wrk": _version(["wrk", "--version"]),
        "chromium": _version(["chromium", "--version"]),
        "load_average_at_start": os.getloadavg(),
    }


def render(sections: Sequence[SectionResult], info: dict[str, Any]) -> str:
    packages = ", ".join(f"{name} {version}" for name, version in info["packages"].items())
    out = [
        f"Library at {info['commit']}. "
        f"Machine: {info['cores']} cores ({info['cpu']}), Python {info['python']}; {packages}; "
        f"{info['wrk']}; {info['chromium']}. Load average at start: "
        f"{', '.join(f'{x:.2f}' for x in info['load_average_at_start'])}.",
        "",
    ]
    for section in sections:
        for table in section.tables:
            out += [table.markdown(), ""]
    goals = [goal for section in sections for goal in section.goals]
    if goals:
        summary = Table("Goals", ["goal", "target", "measured", "met"])
        summary.rows = [[g.name, g.target, g.measured, "met" if g.met else "MISSED"] for g in goals]
        out += [summary.markdown(), ""]
    return "\n".join(out)


def save(sections: Sequence[SectionResult], info: dict[str, Any], quick: bool, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    document = {
        "when": stamp,
        "quick": quick,
        "machine": info,
        "sections": {section.name: {**asdict(section)} for section in sections},
    }
    path = directory / f"{stamp}{'-quick' if quick else ''}.json"
    text = json.dumps(document, indent=2, default=str)
    path.write_text(text)
    (directory / "latest.json").write_text(text)
    return path
