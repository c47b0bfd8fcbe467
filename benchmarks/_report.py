"""Measurements, their JSON lines, and the table printed at the end of a run."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import psutil

#: How a target compares a value with its bound.
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda value, bound: value >= bound,
    "<=": lambda value, bound: value <= bound,
}


@dataclass(frozen=True, slots=True)
class Target:
    """A bound a measurement should meet: ``Target(">=", 1000)``."""

    op: str
    bound: float

    def met_by(self, value: float) -> bool:
        return _COMPARE[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measured figure: which benchmark, which case, what, how much.

    ``case`` names what ran (``framepipe``, ``mp.Queue``, ``framepipe/mp.Queue``
    for a ratio...); ``detail`` the variant (frame size, work, executor).
    """

    bench: str
    case: str
    detail: str
    metric: str
    value: float
    unit: str
    target: Target | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # NaN (a ratio to zero) is not JSON: write null.
        data["value"] = _rounded(self.value) if self.value == self.value else None
        data["target"] = str(self.target) if self.target is not None else None
        data["met"] = self.target.met_by(self.value) if self.target is not None else None
        return data


def _rounded(value: float) -> float:
    """Four significant digits: enough for timings, short in JSON."""
    if isinstance(value, int) or value == 0 or not abs(value) < float("inf"):
        return value
    return float(f"{value:.4g}") if abs(value) < 1e4 else round(value, 1)


def _shown(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _git(*args: str) -> str:
    """Output of a read-only git command, or "" when git is not there."""
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return ""


def environment(args: dict[str, Any]) -> dict[str, Any]:
    """The first JSON line of a run: what ran, where, and how busy the machine was."""
    import framepipe as fp  # here, not at the top: spawned children import this module

    commit = _git("rev-parse", "--short", "HEAD").strip() or None
    # Uncommitted changes under src/ change what was measured: say so.
    src_modified = bool(_git("status", "--porcelain", "--", "src").strip())
    return {
        "kind": "environment",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "framepipe": fp.__version__,
        "commit": commit,
        "src_modified": src_modified,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "args": args,
    }


class Report:
    """Writes each measurement as a JSON line (stdout and ``out``) and keeps it for the table."""

    def __init__(self, out: IO[str] | None) -> None:
        self.out = out
        self.measurements: list[Measurement] = []

    def line(self, data: dict[str, Any]) -> None:
        text = json.dumps(data)
        print(text, flush=True)
        if self.out is not None:
            self.out.write(text + "\n")
            self.out.flush()

    def add(self, measurement: Measurement) -> None:
        self.measurements.append(measurement)
        self.line({"kind": "measurement", **measurement.to_dict()})

    def table(self, stream: IO[str] = sys.stderr) -> None:
        """Print every measurement as a table, targets marked met or missed."""
        from rich.console import Console
        from rich.table import Table

        table = Table(title="framepipe benchmarks", title_justify="left")
        for column in ("bench", "case", "detail", "metric"):
            table.add_column(column)
        table.add_column("value", justify="right")
        table.add_column("unit")
        table.add_column("target")
        bench = None
        for m in self.measurements:
            if bench is not None and m.bench != bench:
                table.add_section()
            bench = m.bench
            if m.target is None:
                verdict = ""
            elif m.target.met_by(m.value):
                verdict = f"[green]{m.target}  met[/green]"
            else:
                verdict = f"[red]{m.target}  MISSED[/red]"
            table.add_row(m.bench, m.case, m.detail, m.metric, _shown(m.value), m.unit, verdict)
        Console(file=stream, width=140).print(table)


_STARTED = time.monotonic()


def markdown(measurements: list[Measurement]) -> str:
    """The measurements as a Markdown table, for benchmarks/README.md."""
    lines = [
        "| bench | case | detail | metric | value | unit | target |",
        "|---|---|---|---|---:|---|---|",
    ]
    for m in measurements:
        verdict = ""
        if m.target is not None:
            verdict = f"{m.target}: {'met' if m.target.met_by(m.value) else '**missed**'}"
        lines.append(
            f"| {m.bench} | {m.case} | {m.detail} | {m.metric} | {_shown(m.value)} "
            f"| {m.unit} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def progress(message: str) -> None:
    """Say what runs now (stderr, so stdout stays JSON lines)."""
    print(
        f"[benchmarks {time.monotonic() - _STARTED:5.0f}s] {message}", file=sys.stderr, flush=True
    )


def shared_media() -> Path | None:
    """../shared/media beside the repository (or ``FRAMEPIPE_SHARED_MEDIA``), if there."""
    default = Path(__file__).resolve().parents[2] / "shared" / "media"
    root = Path(os.environ.get("FRAMEPIPE_SHARED_MEDIA", default))
    return root if (root / "videos").is_dir() else None
