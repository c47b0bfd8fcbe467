"""Per-node statistics: live recorders, frozen snapshots, a readable table.

A ``StatsRecorder`` lives next to each running node and is written only by
that node's worker. ``snapshot()`` returns a frozen ``NodeStats`` that can be
pickled to the caller's process; ``RunStats`` maps node names to them and
prints as a table.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: Why a frame did not reach a node's ``process``:
#: ``policy`` (its inbox dropped it for a newer one or a full queue), ``rate``
#: (fps/interval/window did not select it), ``age`` (older than ``max_age``),
#: ``late`` (a real-time source fell behind the wall clock), ``error`` (the
#: stage raised), ``buffer`` (a sink's own buffer was full).
DROP_REASONS = ("policy", "rate", "age", "late", "error", "buffer", "stop")

_EMPTY = {"p50": 0.0, "p95": 0.0, "max": 0.0}


@dataclass(frozen=True, slots=True)
class NodeStats:
    """A frozen snapshot of one node's statistics.

    ``fps`` is the processing rate over the last few seconds while running and
    the average over the run in the final snapshot. Latency is the time in
    ``process`` (or ``write``, or producing a frame for a source); ``wait_ms``
    the time a frame spent in the node's inbox; ``age_ms`` is
    ``now - frame.timestamp`` when processing started. Percentiles cover the
    most recent samples; ``max`` covers the whole run.
    """

    name: str
    kind: str
    processed: int = 0
    dropped: int = 0
    dropped_by: Mapping[str, int] = field(default_factory=dict)
    errors: int = 0
    restarts: int = 0
    fps: float = 0.0
    latency_ms: Mapping[str, float] = field(default_factory=lambda: dict(_EMPTY))
    wait_ms: Mapping[str, float] = field(default_factory=lambda: dict(_EMPTY))
    age_ms: Mapping[str, float] = field(default_factory=lambda: dict(_EMPTY))
    state: str = "idle"
    reconnects: int = 0
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("dropped_by", "latency_ms", "wait_ms", "age_ms"):
            data[key] = dict(data[key])
        return data


class RunStats(Mapping[str, NodeStats]):
    """Statistics of every node of a run, by node name; ``print()`` shows a table."""

    def __init__(self, nodes: Mapping[str, NodeStats] | None = None) -> None:
        self._nodes = dict(nodes or {})

    def __getitem__(self, name: str) -> NodeStats:
        try:
            return self._nodes[name]
        except KeyError:
            raise KeyError(f"no node named {name!r}; nodes: {sorted(self._nodes)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: node.to_dict() for name, node in self._nodes.items()}

    def rows(self) -> list[list[str]]:
        """Table rows (header first) shared by the text table and the CLI's rich table."""
        header = [
            "node",
            "kind",
            "state",
            "processed",
            "fps",
            "dropped (reasons)",
            "latency p50/p95/max ms",
            "age p50/p95/max ms",
            "wait p50 ms",
            "errors",
        ]
        rows = [header]
        for node in self._nodes.values():
            reasons = ", ".join(f"{k} {v}" for k, v in node.dropped_by.items() if v)
            state = node.state + (f" ({node.reconnects} reconnects)" if node.reconnects else "")
            rows.append(
                [
                    node.name,
                    node.kind,
                    state,
                    str(node.processed),
                    f"{node.fps:.1f}",
                    f"{node.dropped}" + (f" ({reasons})" if reasons else ""),
                    _triple(node.latency_ms),
                    _triple(node.age_ms),
                    f"{node.wait_ms['p50']:.1f}",
                    str(node.errors),
                ]
            )
        return rows

    def __str__(self) -> str:
        rows = self.rows()
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"RunStats({sorted(self._nodes)})"


def _triple(values: Mapping[str, float]) -> str:
    return f"{values['p50']:.1f}/{values['p95']:.1f}/{values['max']:.1f}"


class _Samples:
    """The most recent samples of one measure (seconds), plus the all-time maximum."""

    __slots__ = ("max", "recent")

    def __init__(self, keep: int) -> None:
        self.recent: deque[float] = deque(maxlen=keep)
        self.max = 0.0

    def add(self, value: float) -> None:
        self.recent.append(value)
        if value > self.max:
            self.max = value

    def summary(self) -> dict[str, float]:
        """p50, p95 and max, in milliseconds."""
        recent = list(self.recent)  # one C call: safe against the writer thread
        if not recent:
            return dict(_EMPTY)
        values = np.maximum(np.asarray(recent, dtype=float), 0.0) * 1000.0
        p50, p95 = np.percentile(values, [50, 95])
        return {
            "p50": round(float(p50), 3),
            "p95": round(float(p95), 3),
            "max": round(max(self.max, 0.0) * 1000.0, 3),
        }


class StatsRecorder:
    """Counters and samples for one node, written by its worker only.

    Times are recorded in seconds and reported in milliseconds.
    """

    def __init__(self, name: str, kind: str, *, keep: int = 512, fps_window: float = 3.0) -> None:
        self.name, self.kind = name, kind
        self.processed = 0
        self.dropped_by = dict.fromkeys(DROP_REASONS, 0)
        self.errors = 0
        self.restarts = 0
        self.state = "idle"
        self.reconnects = 0
        self._latency = _Samples(keep)
        self._wait = _Samples(keep)
        self._age = _Samples(keep)
        self._done_times: deque[float] = deque(maxlen=4096)
        self._fps_window = fps_window
        self._started = time.perf_counter()
        self._first: float | None = None
        self._last = 0.0
        self._ended: float | None = None
        self._lock = threading.Lock()

    def record(
        self, latency: float, age: float | None = None, wait: float | None = None, count: int = 1
    ) -> None:
        """Count ``count`` processed frames that took ``latency`` seconds in all.

        Called by the node's own worker only, on every frame: no lock (readers
        copy the sample deques in one C call, under the GIL).
        """
        now = time.perf_counter()
        self.processed += count
        self._latency.add(latency)
        if age is not None:
            self._age.add(age)
        if wait is not None:
            self._wait.add(wait)
        if count == 1:
            self._done_times.append(now)
        else:
            self._done_times.extend([now] * count)
        if self._first is None:
            self._first = now - latency
        self._last = now

    def record_one(self, now: float, latency: float, age: float) -> None:
        """``record`` for one frame, with ``now`` from ``time.perf_counter()``: the
        inline executor's hot path, which has just read the clock."""
        self.processed += 1
        samples = self._latency
        samples.recent.append(latency)
        if latency > samples.max:
            samples.max = latency
        samples = self._age
        samples.recent.append(age)
        if age > samples.max:
            samples.max = age
        self._done_times.append(now)
        if self._first is None:
            self._first = now - latency
        self._last = now

    def drop(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self.dropped_by[reason] = self.dropped_by.get(reason, 0) + count

    def error(self) -> None:
        with self._lock:
            self.errors += 1
            self.dropped_by["error"] += 1

    def set_state(self, state: str, reconnects: int | None = None) -> None:
        with self._lock:
            self.state = state
            if reconnects is not None:
                self.reconnects = reconnects

    def finish(self) -> None:
        if self._ended is None:
            self._ended = time.perf_counter()

    def snapshot(self) -> NodeStats:
        with self._lock:
            now = self._ended or time.perf_counter()
            elapsed = now - self._started
            if self._ended is not None:
                # Over the span that frames were processed: setup time is not throughput.
                span = self._last - self._first if self._first is not None else 0.0
                fps = self.processed / span if span > 0 else 0.0
            else:
                window = min(self._fps_window, elapsed)
                recent = sum(1 for t in list(self._done_times) if t >= now - window)
                fps = recent / window if window > 0.2 else 0.0
            return NodeStats(
                name=self.name,
                kind=self.kind,
                processed=self.processed,
                dropped=sum(self.dropped_by.values()),
                dropped_by=dict(self.dropped_by),
                errors=self.errors,
                restarts=self.restarts,
                fps=round(fps, 2),
                latency_ms=self._latency.summary(),
                wait_ms=self._wait.summary(),
                age_ms=self._age.summary(),
                state=self.state,
                reconnects=self.reconnects,
                elapsed_s=round(elapsed, 3),
            )
