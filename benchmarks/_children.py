"""Child processes of the hand-written baselines: collect what they report, reap them."""

from __future__ import annotations

import queue
import time
from multiprocessing.process import BaseProcess
from typing import Any


def collect(
    results: Any, processes: list[BaseProcess], count: int, timeout: float = 300.0
) -> list[Any]:
    """``count`` reports from the ``results`` queue; raises if a child fails first."""
    reports: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(reports) < count:
        try:
            reports.append(results.get(timeout=0.5))
            continue
        except queue.Empty:
            pass
        failed = [p for p in processes if p.exitcode not in (None, 0)]
        if failed:
            raise RuntimeError(
                f"baseline process {failed[0].name} exited with code {failed[0].exitcode}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"baseline processes reported {len(reports)} of {count} results "
                f"within {timeout:g} s"
            )
    return reports


def reap(processes: list[BaseProcess], grace: float = 10.0) -> None:
    """Join every child; terminate, then kill, any still running after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    for process in processes:
        if process.pid is not None:
            process.join(max(0.1, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)
