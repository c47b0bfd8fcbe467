"""Helpers for testing sources, stages and sinks outside a pipeline.

They drive one component the way a worker does (``open``/``setup`` inside,
``close``/``teardown`` always called), so a user's own stage or sink can be
tested in a few lines::

    from framepipe.testing import make_frame, run_stage

    assert run_stage(Brightness(), [make_frame()]) == [114.0]
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ._frame import Frame
from ._stage import FunctionStage, Stage, StageContext
from .sinks._base import Sink, SinkContext
from .sources._base import Source, SourceContext

__all__ = ["FakeClock", "make_frame", "run_sink", "run_source", "run_stage"]


class FakeClock:
    """A clock for tests of pacing, ages and rates that never sleeps.

    Pass it to a run (``pipe.run(mode="realtime", clock=clock)``): waits return
    at once and move the clock forward by what they would have slept
    (``autojump``), so a 30 s real-time run of a file takes milliseconds and its
    frame timestamps are exactly paced. ``advance(seconds)`` moves it by hand
    (a stage that "takes" time). With ``executor="processes"`` each worker gets
    its own copy.

    Example::

        clock = FakeClock()
        run = pipe.run(mode="realtime", executor="threads", clock=clock)
        assert clock.monotonic() >= 30.0
    """

    def __init__(self, start: float = 1_000_000.0, *, autojump: bool = True) -> None:
        self.epoch = start
        self.autojump = autojump
        self._offset = 0.0
        self._lock = threading.Lock()

    def time(self) -> float:
        return self.epoch + self._offset

    def monotonic(self) -> float:
        return self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock only goes forward, got {seconds!r}")
        with self._lock:
            self._offset += seconds

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        if not self.autojump:
            return event.wait(seconds)
        self.advance(max(seconds, 0.0))
        return event.is_set()

    def __getstate__(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "autojump": self.autojump, "_offset": self._offset}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def make_frame(
    image: np.ndarray | None = None,
    *,
    index: int = 0,
    pts: float | None = None,
    source: str = "test",
    results: dict[str, Any] | None = None,
    width: int = 64,
    height: int = 48,
) -> Frame:
    """A read-only frame (grey 114 by default), as a stage would receive it."""
    if image is None:
        image = np.full((height, width, 3), 114, np.uint8)
    image = np.asarray(image)
    image.flags.writeable = False
    return Frame(
        image=image,
        index=index,
        pts=index / 30 if pts is None else pts,
        timestamp=time.time(),
        source=source,
        results=dict(results or {}),
    )


def run_source(
    source: Source,
    *,
    name: str = "source",
    mode: str = "offline",
    start: float = 0.0,
    limit: int | None = None,
    stop_after: float | None = None,
    on_state: Callable[[str, int], None] | None = None,
    on_drop: Callable[[int], None] | None = None,
) -> list[tuple[np.ndarray, float]]:
    """Open ``source`` and collect up to ``limit`` ``(image copy, pts)`` pairs.

    ``stop_after`` seconds sets the stop flag the way a stopping run does; the
    source must then end on its own soon after. ``on_state(state, reconnects)``
    and ``on_drop(n)`` receive what the source reports, as the statistics do.
    """
    stop = threading.Event()
    ctx = SourceContext(
        name, mode=mode, start=start, stop_event=stop, on_state=on_state, on_drop=on_drop
    )
    timer = threading.Timer(stop_after, stop.set) if stop_after is not None else None
    if timer is not None:
        timer.start()
    out: list[tuple[np.ndarray, float]] = []
    iterator = source.open(ctx)
    try:
        for image, pts in iterator:
            out.append((np.array(image, copy=True), float(pts)))
            if limit is not None and len(out) >= limit:
                break
            if stop.is_set():
                break
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
        if timer is not None:
            timer.cancel()
    return out


def run_stage(stage: Stage | Any, frames: Iterable[Frame], *, name: str = "stage") -> list[Any]:
    """Call ``setup``, ``process`` for each frame, then ``teardown``; return the results.

    Like the pipeline, each result is also attached as ``frame.results[name]`` so
    stages can be chained by calling ``run_stage`` again on the same frames.
    """
    if not isinstance(stage, Stage):
        stage = FunctionStage(stage)
    stage.context = StageContext(
        name=name, mode="offline", logger=logging.getLogger(f"framepipe.stage.{name}")
    )
    results: list[Any] = []
    stage.setup()
    try:
        for frame in frames:
            value = stage.process(frame)
            if value is not None and isinstance(frame, Frame):
                frame.results[name] = value
            results.append(value)
    finally:
        stage.teardown()
    return results


def run_sink(
    sink: Sink,
    frames: Sequence[Frame],
    *,
    name: str = "sink",
    inputs: Sequence[str] = ("stage",),
    sources: Sequence[str] = ("test",),
    on_drop: Callable[[int], None] | None = None,
) -> Sink:
    """Open ``sink``, write ``frames``, close it (always), and return it.

    ``on_drop(n)`` receives what the sink reports through ``context.drop(n)``.
    """
    sink.context = SinkContext(
        name=name,
        mode="offline",
        inputs=tuple(inputs),
        sources=tuple(sources),
        logger=logging.getLogger(f"framepipe.sink.{name}"),
        on_drop=on_drop,
    )
    sink.open()
    try:
        for frame in frames:
            sink.write(frame)
    finally:
        sink.close()
    return sink
