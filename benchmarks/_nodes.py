"""Stages, sinks and work shared by the benchmarks.

They live in an importable module because ``executor="processes"`` runs every
node in a spawned process, which imports them by name.
"""

from __future__ import annotations

import time
from typing import Any

import framepipe as fp


def frame_index(frame: fp.Frame) -> int:
    """Trivial work: a stage that passes frames on and computes nothing."""
    return frame.index


def spin(loops: int) -> int:
    """Pure-Python CPU work: holds the GIL for the whole loop, like a heavy model would."""
    total = 0
    for i in range(loops):
        total += i
    return total


def calibrate_spin(seconds: float) -> int:
    """How many ``spin`` loops take about ``seconds`` on this machine, now."""
    loops = 100_000
    while True:
        began = time.perf_counter()
        spin(loops)
        took = time.perf_counter() - began
        if took >= 0.2:
            return max(1, int(loops * seconds / took))
        loops *= 2


def work(kind: str, loops: int) -> None:
    """One second of ``kind`` work: ``sleep`` (waiting) or ``cpu`` (calibrated ``spin``)."""
    if kind == "sleep":
        time.sleep(1.0)
    else:
        spin(loops)


class SlowWork(fp.Stage):
    """About one second per frame of sleeping or of pure-Python CPU work."""

    def __init__(self, kind: str, loops: int) -> None:
        if kind not in ("sleep", "cpu"):
            raise ValueError(f"SlowWork: kind must be 'sleep' or 'cpu', got {kind!r}")
        self.kind, self.loops = kind, loops

    def process(self, frame: fp.Frame) -> int:
        work(self.kind, self.loops)
        return frame.index


class Discard(fp.sinks.Sink):
    """A sink that drops what it receives, so only the pipeline is measured."""

    def write(self, frame: fp.Frame) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"type": "Discard"}
