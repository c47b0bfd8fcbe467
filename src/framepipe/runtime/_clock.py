"""Where the runtime reads time: an injectable clock.

Pacing of file-like sources in real time, frame timestamps and ages
(``max_age``) all come from the run's clock, so tests of them can use
``framepipe.testing.FakeClock`` instead of sleeping.
"""

from __future__ import annotations

import threading
import time as _time
from typing import Protocol


class Clock(Protocol):
    """The time of a run."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (``frame.timestamp``, ages)."""
        ...

    def monotonic(self) -> float:
        """Seconds for intervals and deadlines (pacing)."""
        ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Sleep ``seconds`` unless ``event`` is set first; True if it is set."""
        ...


class SystemClock:
    """The real clock (its methods are the C functions: read on every frame)."""

    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(seconds)


SYSTEM_CLOCK = SystemClock()
