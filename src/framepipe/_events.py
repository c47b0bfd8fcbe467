"""A run's events: what happened to its cameras, as records for people and sinks.

An event is a JSON-ready dict with ``"event"`` naming its kind. Camera health
is the first kind: ``{"event": "health", "source": "door", "health": "frozen",
"was": "ok", "detail": "...", "timestamp": <unix time>, "run_s": <seconds
into the run>}``, one each time a live source's health changes.

Events are decided where the source runs (any executor) and gathered in the
caller's process, which reads the run's statistics a few times a second:
``run.events`` keeps the latest, and every *event sink* (``pipe.events(name,
sink)``: ``JsonLines``, ``Webhook`` or any sink with ``write_record``) gets
each one, opened when the run starts and closed after its last event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import FramepipeError, SinkError
from .sinks._base import Sink, SinkContext
from .stats import RunStats

#: How often the caller's process looks for new events, in seconds.
POLL_S = 0.25
#: Events ``run.events`` keeps.
KEEP = 1000

log = logging.getLogger("framepipe.events")


class EventWatch:
    """Gathers a run's events from its statistics and hands them to event sinks."""

    def __init__(
        self,
        stats: Callable[[], RunStats],
        sinks: Mapping[str, Sink],
        *,
        mode: str,
        sources: tuple[str, ...],
        started: float,
    ) -> None:
        self._stats = stats
        self._sinks = dict(sinks)
        # Events carry the wall time of the change, taken where the source runs.
        self._started_wall = time.time() - (time.monotonic() - started)
        self.events: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self._changes: dict[str, int] = {}  # health changes already made events, per source
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.errors: list[FramepipeError] = []
        for name, sink in self._sinks.items():
            sink.context = SinkContext(
                name=name,
                mode=mode,
                inputs=(),
                sources=sources,
                logger=logging.getLogger(f"framepipe.sink.{name}"),
            )

    def start(self) -> None:
        """Open the event sinks and start watching; a sink that cannot open raises."""
        opened: list[Sink] = []
        try:
            for sink in self._sinks.values():
                sink.open()
                opened.append(sink)
        except BaseException:
            for sink in opened:
                sink.close()
            raise
        self._thread = threading.Thread(target=self._watch, name="framepipe-events", daemon=True)
        self._thread.start()

    def close(self, final: RunStats | None = None) -> None:
        """Take the last events (from ``final``, the run's final statistics) and close the sinks."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if final is not None:
            self.look(final)
        for name, sink in self._sinks.items():
            try:
                sink.close()
            except Exception as exc:
                self.errors.append(SinkError(name, f"close() failed: {exc!r}"))

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.look(self._stats())
            except Exception:  # a run that is ending may not answer: the final look will
                log.debug("could not read the run's statistics", exc_info=True)

    def look(self, stats: RunStats) -> None:
        """Turn what changed in ``stats`` since the last look into events."""
        with self._lock:
            for name, node in stats.items():
                new = node.health_changes - self._changes.get(name, 0)
                if new <= 0:
                    continue
                self._changes[name] = node.health_changes
                if new > len(node.health_log):
                    log.warning("%s: %d health changes came too fast to report", name, new)
                for when, health, was, detail in node.health_log[-new:]:
                    self._emit(
                        {
                            "event": "health",
                            "source": name,
                            "health": health,
                            "was": was,
                            "detail": detail,
                        },
                        when,
                    )

    def _emit(self, event: dict[str, Any], when: float) -> None:
        event["timestamp"] = when
        event["run_s"] = round(when - self._started_wall, 3)
        self.events.append(event)
        for name, sink in self._sinks.items():
            try:
                sink.write_record(event)
            except Exception as exc:
                # An event sink that fails is reported, never the end of the cameras' run.
                log.error("event sink %r failed: %r", name, exc)
                self.errors.append(SinkError(name, f"could not take an event: {exc!r}"))
