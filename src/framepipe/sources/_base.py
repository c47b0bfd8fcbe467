"""The contract between a source and the worker that reads it."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ._packets import PacketRing

#: What ``Source.open`` yields: the image and its media time in seconds.
Captured = tuple[np.ndarray, float]


class SourceContext:
    """What a source's ``open()`` may use while it runs inside its worker.

    - ``buffer(shape)`` hands out a writable array; a source that decodes or
      draws straight into it and yields that same array saves a copy, because
      the array already lives where consumers read frames (shared memory when
      consumers run in other processes).
    - ``stopping`` / ``wait(seconds)``: sources that block (network reads,
      reconnect back-off) must return soon after a stop is asked.
    - ``drop(n)`` counts frames the source decoded but skipped to stay current
      (a live stream read in real time keeps only the newest frame).
    - ``set_state`` / ``count_reconnect`` feed the connection columns of the
      statistics; ``set_health`` reports whether a live input tells the truth
      (``ok``, ``stalled``, ``frozen``, ``clock``: see ``HealthWatch``).
    - ``needed_fps``: in real time, the highest rate any consumer of this
      source selects (``None``: some consumer needs every frame, or offline).
      A decoder may skip frames no consumer will take (``VideoFile`` and
      ``Stream`` skip non-reference frames when it is at most half the rate).
    """

    def __init__(
        self,
        name: str,
        *,
        mode: str = "offline",
        start: float = 0.0,
        stop_event: threading.Event | None = None,
        allocate: Callable[[tuple[int, ...]], np.ndarray] | None = None,
        on_state: Callable[[str, int], None] | None = None,
        on_drop: Callable[[int], None] | None = None,
        on_health: Callable[[str, str], None] | None = None,
        needed_fps: float | None = None,
    ) -> None:
        self.name = name
        self.needed_fps = needed_fps
        self.mode = mode
        self.start = start
        self.logger = logging.getLogger(f"framepipe.source.{name}")
        self._stop_event = stop_event or threading.Event()
        self._allocate = allocate
        self._on_state = on_state
        self._on_drop = on_drop
        self._on_health = on_health
        #: Where a source whose video can be stream-copied keeps its packets, when a
        #: ``Clips`` sink needs them (``framepipe.sources._packets``); else ``None``.
        self.packets: PacketRing | None = None
        self.health = "ok"
        self.dropped = 0
        self.state = "starting"
        self.reconnects = 0

    @property
    def realtime(self) -> bool:
        return self.mode == "realtime"

    @property
    def stopping(self) -> bool:
        """True once the run is stopping: leave the read loop soon."""
        return self._stop_event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True early if the run is stopping."""
        if seconds <= 0:
            return self._stop_event.is_set()
        return self._stop_event.wait(seconds)

    def buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """A writable ``uint8`` array of ``shape`` to decode or draw into, then yield."""
        if self._allocate is not None:
            return self._allocate(tuple(int(s) for s in shape))
        return np.empty(shape, dtype=np.uint8)

    def set_state(self, state: str) -> None:
        """Report the connection state: connecting, connected, reconnecting, ended, failed."""
        self.state = state
        if self._on_state is not None:
            self._on_state(state, self.reconnects)

    def set_health(self, health: str, detail: str = "") -> None:
        """Report the input's health: ``ok``, ``stalled``, ``frozen`` or ``clock``."""
        if health != self.health:
            was, self.health = self.health, health
            if health == "ok":
                self.logger.info("%s is ok again (was %s)", self.name, was)
            else:
                self.logger.warning("%s is %s: %s", self.name, health, detail)
        if self._on_health is not None:
            self._on_health(health, detail)

    def drop(self, count: int = 1) -> None:
        """Count ``count`` frames skipped to stay current (reported as ``late`` drops)."""
        self.dropped += count
        if self._on_drop is not None:
            self._on_drop(count)

    def count_reconnect(self) -> None:
        """Count one reconnect attempt."""
        self.reconnects += 1
        if self._on_state is not None:
            self._on_state(self.state, self.reconnects)


class Source(ABC):
    """A cheap, picklable description of where frames come from.

    Keep ``__init__`` to storing options: the instance is pickled to reach the
    worker that reads it, and ``open()`` opens the file, device or connection
    there.

    ``open(ctx)`` returns an iterator (usually a generator) of
    ``(image, pts)`` pairs: a BGR ``uint8`` image and its media time in
    seconds. Put cleanup in a ``finally`` block: the worker closes the
    generator when the run stops. Raise ``SourceError`` for failures a user
    can act on.

    Class attributes tell the runtime how to treat the source:

    - ``live``: the source keeps its own time (camera, network stream). A
      non-live source (a file) is paced at its media time in real-time mode and
      read as fast as possible in offline mode.
    - ``seekable``: ``open`` honours ``ctx.start``; otherwise the runtime skips
      frames before the start time itself.
    - ``encoded_video``: the source demuxes encoded video and, when ``ctx.packets``
      is set, keeps its packets there for clips (``VideoFile``, ``Stream``).
    """

    live: bool = False
    seekable: bool = False
    encoded_video: bool = False

    @abstractmethod
    def open(self, ctx: SourceContext) -> Iterator[Captured]:
        """Yield ``(image, pts)`` pairs until the source ends."""

    def describe(self) -> dict[str, Any]:
        """A short JSON-friendly description for the web view and ``framepipe info``."""
        return {"type": type(self).__name__}


def monotonic_pts(start: float | None = None) -> Callable[[], float]:
    """A clock for live sources without media time: seconds since the first call."""
    origin = time.monotonic() if start is None else start

    def pts() -> float:
        return time.monotonic() - origin

    return pts
