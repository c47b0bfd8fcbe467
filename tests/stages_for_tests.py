"""Stages used by the behaviour tests; importable so spawned workers can load them."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import framepipe as fp


class Sleepy(fp.Stage):
    """Sleeps ``seconds`` per frame; returns the frame's index."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def process(self, frame: fp.Frame) -> int:
        time.sleep(self.seconds)
        return frame.index


class Spin(fp.Stage):
    """Pure-Python CPU work for ``seconds`` per frame (holds the GIL)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def process(self, frame: fp.Frame) -> int:
        deadline = time.perf_counter() + self.seconds
        n = 0
        while time.perf_counter() < deadline:
            n += 1
        return frame.index


class FailOn(fp.Stage):
    """Raises on the frame indices given; counts setups (visible through results)."""

    def __init__(self, indices: set[int], delay: float = 0.0) -> None:
        self.indices = set(indices)
        self.delay = delay
        self.setups = 0

    def setup(self) -> None:
        self.setups += 1

    def process(self, frame: fp.Frame) -> Any:
        if self.delay:
            time.sleep(self.delay)
        if frame.index in self.indices:
            raise ValueError(f"bad frame {frame.index}")
        return {"index": frame.index, "setups": self.setups}


class KillSelf(fp.Stage):
    """Kills its own worker process with SIGKILL on the given frame."""

    def __init__(self, at: int) -> None:
        self.at = at

    def process(self, frame: fp.Frame) -> int:
        if frame.index == self.at:
            os.kill(os.getpid(), signal.SIGKILL)
        return frame.index


class RecordTeardown(fp.Stage):
    """Writes a marker file in teardown(), to prove it ran in the worker."""

    def __init__(self, path: str, fail_at: int | None = None) -> None:
        self.path, self.fail_at = path, fail_at

    def process(self, frame: fp.Frame) -> int:
        if frame.index == self.fail_at:
            raise RuntimeError("boom")
        return frame.index

    def teardown(self) -> None:
        with open(self.path, "w") as fh:
            fh.write("teardown")


def index_of(frame: fp.Frame) -> int:
    return frame.index


def mean_of(frame: fp.Frame) -> float:
    return float(frame.image.mean())


class MarkerSink(fp.sinks.Sink):
    """Appends one line per frame (flushed) and 'closed' when close() runs."""

    def __init__(self, path: str) -> None:
        self.path = path

    def open(self) -> None:
        self.fh = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed in close()

    def write(self, frame: fp.Frame) -> None:
        self.fh.write(f"{frame.index}\n")

    def close(self) -> None:
        self.fh.write("closed\n")
        self.fh.close()


class EvenOnly(fp.Stage):
    """The frame's index on even frames; ``None`` (nothing passed on) on odd ones."""

    def process(self, frame: fp.Frame) -> int | None:
        return frame.index if frame.index % 2 == 0 else None


class Filled(fp.Stage):
    """A 64 KiB array filled with a value of the frame's index (``salt`` varies it): large
    enough to travel through shared memory between processes."""

    def __init__(self, salt: int) -> None:
        self.salt = salt

    def process(self, frame: fp.Frame) -> object:
        import numpy as np

        return np.full((128, 128, 4), (frame.index * self.salt) % 251, np.uint8)


class SlowRead:
    """A file-like frame callable that takes ``seconds`` to read each frame (a decoder
    slower than its video's frame rate)."""

    def __init__(self, seconds: float, frames: int) -> None:
        self.seconds, self.frames, self.read = seconds, frames, 0

    def __call__(self) -> object:
        import numpy as np

        if self.read >= self.frames:
            return None
        time.sleep(self.seconds)
        self.read += 1
        return np.zeros((48, 64, 3), np.uint8)


class OneBuffer(fp.sources.Source):
    """A source that asks ``ctx.buffer()`` once and draws every frame into it."""

    def __init__(self, frames: int) -> None:
        self.frames = frames

    def open(self, ctx: fp.sources.SourceContext) -> Any:
        buffer = ctx.buffer((48, 64, 3))
        for index in range(self.frames):
            buffer[...] = index % 251
            yield buffer, index / 30


class SlowPixel(fp.Stage):
    """Reads the frame's first pixel after a pause (while the source goes on)."""

    def process(self, frame: fp.Frame) -> int:
        time.sleep(0.005)
        return int(frame.image[0, 0, 0])
