"""Fault injection: what users' own sources, stages and sinks do wrong, under every executor.

Every case ends the run (never a hang), with an error that names the node, and leaves
nothing behind in shared memory.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import framepipe as fp


def small(frames: int = 20) -> fp.sources.Synthetic:
    return fp.sources.Synthetic(width=64, height=48, fps=30, frames=frames)


def finish(run: fp.Run, timeout: float = 60.0) -> None:
    """Wait for a started run; a run that does not end is the bug, so stop it and fail."""
    if not run.wait(timeout):
        run.stop(5.0)
        pytest.fail(f"the run did not end within {timeout:.0f} s")


# -- sources ---------------------------------------------------------------------------------


class BareArrays(fp.sources.Source):
    """Yields images without their pts: a malformed yield."""

    def open(self, ctx: fp.sources.SourceContext) -> Iterator[Any]:
        for _ in range(5):
            yield np.zeros((48, 64, 3), np.uint8)


class FailsAfterFirst(fp.sources.Source):
    def open(self, ctx: fp.sources.SourceContext) -> Iterator[Any]:
        yield np.zeros((48, 64, 3), np.uint8), 0.0
        raise OSError("camera unplugged")


class OwnArrays(fp.sources.Source):
    """Yields arrays it allocated itself (how users wrap cv2.VideoCapture or a vendor SDK)."""

    def __init__(self, frames: int, height: int, width: int) -> None:
        self.frames, self.height, self.width = frames, height, width

    def open(self, ctx: fp.sources.SourceContext) -> Iterator[Any]:
        buffers = [np.full((self.height, self.width, 3), i, np.uint8) for i in range(3)]
        for i in range(self.frames):
            yield buffers[i % 3], i / 30


def test_a_malformed_yield_is_a_source_error(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", BareArrays())
    pipe.sink("out", fp.sinks.Collect(), after=pipe.stage("a", lambda f: 1, after=cam))
    run = pipe.start(mode="offline", executor=executor)
    finish(run)
    assert isinstance(run.error or run.errors[0], fp.SourceError)
    message = str(run.errors[0])
    assert "'cam'" in message and "(image, pts)" in message
    assert run.stats["cam"].state == "failed"


def test_a_source_failing_after_its_first_frame(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", FailsAfterFirst())
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=pipe.stage("a", lambda f: f.index, after=cam))
    with pytest.raises(fp.SourceError, match=r"'cam'.*camera unplugged"):
        pipe.run(mode="offline", executor=executor)
    assert collect.results["a"] == {0: 0}


def test_generator_from_a_callable_returning_images(executor: str) -> None:
    count = iter(range(12))

    def next_image() -> np.ndarray | None:
        i = next(count, None)
        return None if i is None else np.full((48, 64, 3), i, np.uint8)

    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Generator(next_image))
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=pipe.stage("v", lambda f: int(f.image[0, 0, 0]), after=cam))
    pipe.run(mode="offline", executor=executor)
    assert collect.results["v"] == {i: i for i in range(12)}


def segment_bytes(prefix: str) -> int:
    total = 0
    for name in os.listdir("/dev/shm"):
        if name.startswith(prefix):
            with contextlib.suppress(FileNotFoundError):  # unlinked meanwhile
                total += os.stat(os.path.join("/dev/shm", name)).st_size
    return total


def run_own_arrays(mode: str, frames: int, duration: float | None = None) -> tuple[fp.Run, int]:
    """A user source's own 1080p arrays through a process boundary; the run and the peak
    size of its shared memory."""
    peak = [0]
    prefix: list[str] = []

    def check(frame: fp.Frame) -> None:
        assert frame.image[0, 0, 0] == frame.index % 3
        if prefix and frame.index % 10 == 0:
            peak[0] = max(peak[0], segment_bytes(prefix[0]))

    pipe = fp.Pipeline()
    cam = pipe.source("cam", OwnArrays(frames, 1080, 1920))
    pipe.sink("check", fp.sinks.Callback(check), after=cam)
    run = pipe.start(mode=mode, executor="processes", duration=duration)
    prefix.append(run._executor.prefix)  # type: ignore[union-attr]  # this run's segments only
    finish(run, 180)
    assert segment_bytes(prefix[0]) == 0
    return run, peak[0]


def test_own_1080p_arrays_offline_keep_shared_memory_bounded() -> None:
    run, peak = run_own_arrays("offline", 2000)
    run.raise_error()
    assert run.stats["check"].processed == 2000
    assert 0 < peak < 200 * 2**20, f"shared memory reached {peak / 2**20:.0f} MB"


def test_own_1080p_arrays_in_real_time_keep_shared_memory_bounded() -> None:
    run, peak = run_own_arrays("realtime", 100_000, duration=3.0)
    assert run.error is None and run.errors == []
    assert run.stats["check"].processed > 20
    assert 0 < peak < 200 * 2**20, f"shared memory reached {peak / 2**20:.0f} MB"


# -- stages and results ----------------------------------------------------------------------


def _refuse() -> None:
    raise ValueError("this result cannot be rebuilt here")


class Unloadable:
    """Pickles, but cannot be unpickled by its consumer."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse, ())


@pytest.mark.parametrize("on_error", ["skip", "stop"])
def test_an_unpicklable_result_is_fatal(on_error: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", small())
    lock = pipe.stage("lock", lambda f: threading.Lock(), after=cam, on_error=on_error)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=lock)
    with pytest.raises(fp.StageError, match=r"'lock'.*could not be sent.*'out'"):
        pipe.run(mode="offline", executor="processes")


def test_an_undecodable_result_is_fatal() -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", small())
    odd = pipe.stage("odd", lambda f: Unloadable(), after=cam)
    pipe.sink("out", fp.sinks.Collect(), after=odd)
    with pytest.raises(fp.FramepipeError, match=r"'out'.*from 'odd'.*cannot be rebuilt"):
        pipe.run(mode="offline", executor="processes")


class FailingClose(fp.sinks.Sink):
    def write(self, frame: fp.Frame) -> None:
        pass

    def close(self) -> None:
        raise OSError("could not finalize the video")


@pytest.mark.parametrize("on_error", ["skip", "stop", "restart"])
def test_a_failing_close_fails_the_run(executor: str, on_error: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", small())
    pipe.sink("video", FailingClose(), after=cam, on_error=on_error)
    with pytest.raises(fp.SinkError, match=r"'video'.*close\(\) failed.*finalize"):
        pipe.run(mode="offline", executor=executor)


class FailingTeardown(fp.Stage):
    def process(self, frame: fp.Frame) -> int:
        return frame.index

    def teardown(self) -> None:
        raise RuntimeError("could not release the model")


def test_a_failing_teardown_is_in_run_errors(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", small())
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=pipe.stage("model", FailingTeardown(), after=cam))
    run = pipe.start(mode="offline", executor=executor)
    finish(run)
    assert len(collect.results["model"]) == 20  # the rest of the run was not cut short
    assert any(
        isinstance(e, fp.StageError) and "teardown() failed" in str(e) for e in run.errors
    ), run.errors


# -- many edges ------------------------------------------------------------------------------


def test_three_hundred_consumers_of_one_source(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", small(5))
    collect = fp.sinks.Collect()
    # Under processes the consumers stay in the caller: 300 edges across one process boundary.
    where = {"executor": "threads"} if executor == "processes" else {}
    last = None
    for i in range(300):
        last = pipe.stage(f"c{i}", lambda f: f.index, after=cam, **where)
    pipe.sink("out", collect, after=last)
    run = pipe.start(mode="offline", executor=executor)
    finish(run, 120)
    run.raise_error()
    assert collect.results[f"c{299}"] == {i: i for i in range(5)}
    assert all(run.stats[f"c{i}"].processed == 5 for i in range(300))


def test_a_hundred_hot_add_remove_cycles(executor: str) -> None:
    """Three edges per added source: 300 edges over the run, flag columns reused."""
    arrived: dict[str, threading.Event] = {}
    guard = threading.Lock()

    def seen(frame: fp.Frame) -> None:
        with guard:
            event = arrived.setdefault(frame.results["s2"], threading.Event())
        event.set()

    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=32, height=24, fps=30))
    stages = [pipe.stage(f"s{i}", lambda f: f.source, after=cam) for i in range(3)]
    pipe.sink("seen", fp.sinks.Callback(seen), after=stages[2])
    run = pipe.start(mode="realtime", executor=executor)
    try:
        for i in range(100):
            name = f"extra{i}"
            with guard:
                event = arrived.setdefault(name, threading.Event())
            pipe.add_source(name, fp.sources.Synthetic(width=32, height=24, fps=200), to=stages)
            assert event.wait(30), f"nothing arrived from {name}: {run.errors}"
            pipe.remove_source(name)
        assert run.running and run.error is None
    finally:
        run.stop()
    run.raise_error()
    assert all(run.stats[f"extra{i}"].state == "ended" for i in range(100))
    assert run.stats["s0"].errors == 0
