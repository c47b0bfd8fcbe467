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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from itertools import islice
from operator import itemgetter
from typing import Any

import numpy as np

#: Why a frame did not reach a node's ``process``:
#: ``policy`` (its inbox dropped it for a newer one or a full queue), ``rate``
#: (fps/interval/window did not select it), ``age`` (older than ``max_age``),
#: ``late`` (a real-time source fell behind the wall clock), ``error`` (the
#: stage raised), ``buffer`` (a sink's own buffer was full).
DROP_REASONS = ("policy", "rate", "age", "late", "error", "buffer", "stop")

#: A live source's health, worst first (see ``framepipe.sources._health``).
HEALTH_STATES = ("stalled", "frozen", "clock", "ok")

#: Health changes a node's statistics keep (``NodeStats.health_log``).
HEALTH_LOG = 32

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
    #: A live source's health: ``ok``, ``stalled``, ``frozen`` or ``clock`` ("" elsewhere).
    health: str = ""
    #: What the health means now ("no frame for 5 s").
    health_detail: str = ""
    #: How many times the health changed, and the latest changes, oldest first:
    #: ``(unix time, health, was, detail)`` (the event watch reads them, so a
    #: state shorter than its polling is never missed).
    health_changes: int = 0
    health_log: tuple[tuple[float, str, str, str], ...] = ()
    #: Bytes of encoded video a source keeps for ``Clips`` sinks (0 when none needs it).
    clip_buffer_bytes: int = 0
    elapsed_s: float = 0.0
    #: Where the node ran: ``"host/ray-node-id"`` under ``executor="ray"``, else ``""``.
    machine: str = ""

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
            if node.health not in ("", "ok"):
                state += f", {node.health}"
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
        machines = [node.machine for node in self._nodes.values()]
        if any(machines):  # executor="ray": where each node runs
            for row, machine in zip(rows, ["machine", *machines], strict=True):
                row.append(machine)
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


def _summary(values: list[float], run_max: float) -> dict[str, float]:
    """p50 and p95 of ``values`` and the larger of their maximum and ``run_max``, in ms."""
    if not values:
        return dict(_EMPTY)
    array = np.maximum(np.asarray(values, dtype=float), 0.0) * 1000.0
    p50, p95 = np.percentile(array, [50, 95])
    return {
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "max": round(max(float(array.max()), run_max * 1000.0, 0.0), 3),
    }


#: Frames between two folds of the recent samples into the whole-run figures.
FOLD_EVERY = 256


class StatsRecorder:
    """Counters and samples for one node, written by its worker only.

    Each processed frame adds one sample, ``(done, latency, age, wait)``: when it
    was done (``time.perf_counter()``), how long it took, how old its frame was and
    how long it waited in the inbox (0 where there is none: a source's frames have
    no age, frames called directly never wait). The samples of the most recent
    ``keep`` frames give the percentiles and the live fps; every ``FOLD_EVERY``
    frames the worker folds them into the whole-run maxima, before any of them
    leaves. Times are recorded in seconds and reported in milliseconds.
    """

    def __init__(self, name: str, kind: str, *, keep: int = 512, fps_window: float = 3.0) -> None:
        self.name, self.kind = name, kind
        self.processed = 0
        self.dropped_by = dict.fromkeys(DROP_REASONS, 0)
        self.errors = 0
        self.restarts = 0
        self.state = "idle"
        self.reconnects = 0
        self.health = ""
        self.health_detail = ""
        self.health_changes = 0
        self._health_log: deque[tuple[float, str, str, str]] = deque(maxlen=HEALTH_LOG)
        #: Reads a source's clip buffer size, when it keeps one (``set_clip_buffer``).
        self._clip_buffer: Callable[[], int] | None = None
        self._recent: deque[tuple[float, float, float, float]] = deque(maxlen=keep)
        #: The per-frame path, for a worker that inlines ``record_one``: add the
        #: sample, count it in ``processed``, and ``fold()`` once that reaches ``fold_at``.
        self.sample = self._recent.append
        self._max_wait = 0.0
        self._max_latency = 0.0
        self._max_age = 0.0
        self._fold_every = max(1, min(FOLD_EVERY, keep // 2))
        self._folded = 0  # ``processed`` at the last fold
        self.fold_at = self._fold_every
        self._fps_window = fps_window
        self._started = time.perf_counter()
        self._first: float | None = None  # when the first frame's processing began
        self._ended: float | None = None
        self._lock = threading.Lock()

    def record(
        self,
        latency: float,
        age: float = 0.0,
        wait: float = 0.0,
        count: int = 1,
        done: float | None = None,
    ) -> None:
        """Count ``count`` processed frames that took ``latency`` seconds in all
        (a batch: each of its frames waited for the whole batch).

        Called by the node's own worker only: no lock (readers copy the samples
        in one C call, under the GIL).
        """
        sample = (time.perf_counter() if done is None else done, latency, age, wait)
        if count == 1:
            self.sample(sample)
        else:
            if self.processed > self._folded:  # a large batch must not push out unfolded ones
                self.fold()
            self._recent.extend([sample] * count)
        self.processed += count
        if self.processed >= self.fold_at:
            self.fold()

    def record_one(self, done: float, latency: float, age: float, wait: float = 0.0) -> None:
        """``record`` for one frame, with ``done`` from ``time.perf_counter()``: the
        per-frame path of workers, which have just read the clock."""
        self.processed += 1
        self.sample((done, latency, age, wait))
        if self.processed >= self.fold_at:
            self.fold()

    def fold(self) -> None:
        """Carry the samples since the last fold into the whole-run figures (worker only)."""
        fresh = list(islice(reversed(self._recent), self.processed - self._folded))
        self._folded, self.fold_at = self.processed, self.processed + self._fold_every
        if not fresh:
            return
        if self._first is None:
            self._first = fresh[-1][0] - fresh[-1][1]
        self._max_latency = max(self._max_latency, max(map(_LATENCY, fresh)))
        self._max_age = max(self._max_age, max(map(_AGE, fresh)))
        self._max_wait = max(self._max_wait, max(map(_WAIT, fresh)))

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

    def set_clip_buffer(self, size: Callable[[], int]) -> None:
        self._clip_buffer = size

    def set_health(self, health: str, detail: str = "") -> None:
        with self._lock:
            if self.health and health != self.health:
                self.health_changes += 1
                self._health_log.append((time.time(), health, self.health, detail))
            self.health, self.health_detail = health, detail

    def finish(self) -> None:
        if self._ended is None:
            self._ended = time.perf_counter()

    def _fps(
        self, recent: list[tuple[float, float, float, float]], now: float, elapsed: float
    ) -> float:
        if not recent:
            return 0.0
        if self._ended is not None:
            # Over the span that frames were processed: setup time is not throughput.
            first = self._first if self._first is not None else recent[0][0] - recent[0][1]
            span = recent[-1][0] - first
            return self.processed / span if span > 0 else 0.0
        window = min(self._fps_window, elapsed)
        if window <= 0.2:
            return 0.0
        inside = sum(1 for sample in recent if sample[0] >= now - window)
        if inside == len(recent) == self._recent.maxlen:
            # Fast nodes: the samples kept span less than the window.
            span = now - recent[0][0]
            return inside / span if span > 0 else 0.0
        return inside / window

    def snapshot(self) -> NodeStats:
        with self._lock:
            now = self._ended or time.perf_counter()
            elapsed = now - self._started
            recent = list(self._recent)  # one C call: safe against the writer thread
            return NodeStats(
                name=self.name,
                kind=self.kind,
                processed=self.processed,
                dropped=sum(self.dropped_by.values()),
                dropped_by=dict(self.dropped_by),
                errors=self.errors,
                restarts=self.restarts,
                fps=round(self._fps(recent, now, elapsed), 2),
                latency_ms=_summary([s[1] for s in recent], self._max_latency),
                wait_ms=_summary([s[3] for s in recent], self._max_wait),
                age_ms=_summary([s[2] for s in recent], self._max_age),
                state=self.state,
                reconnects=self.reconnects,
                health=self.health,
                health_detail=self.health_detail,
                health_changes=self.health_changes,
                health_log=tuple(self._health_log),
                clip_buffer_bytes=self._clip_buffer() if self._clip_buffer is not None else 0,
                elapsed_s=round(elapsed, 3),
            )


_LATENCY = itemgetter(1)
_AGE = itemgetter(2)
_WAIT = itemgetter(3)
