"""Waits wake on their event: a release, a stop, a worker's report or death; none polls."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import framepipe as fp
from framepipe.runtime._remote import Waker
from framepipe.transport import _shm
from framepipe.transport._seam import Stopping
from framepipe.transport._shm import SharedFrames, unlink
from stages_for_tests import Sleepy

SHAPE = (64, 64, 3)
#: A thread asleep on an event uses next to no CPU; one re-checking every few ms uses more.
IDLE_CPU_S = 0.005


class Owner:
    """A producer's shared memory with one segment of 4 slots and no room for more."""

    def __init__(self, socket_dir: Path) -> None:
        self.segments: list[str] = []
        self.stop = threading.Event()
        self.stopped = Waker()
        self.frames = SharedFrames(
            f"fp_waits_{os.getpid()}_{id(self)}",
            on_segment=self.segments.append,
            stop=self.stop,
            max_bytes=1,  # the first segment only
            stopped=self.stopped,
            socket_dir=str(socket_dir),
        )

    def fill(self) -> list[_shm.Handle]:
        """Every slot held: the next ``allocate`` waits."""
        handles = []
        while not self.segments or len(handles) < 4:
            handles.append(self.frames.allocate(SHAPE)[1])
        assert len(self.segments) == 1
        return handles

    def allocate_timed(self) -> tuple[float, float]:
        """Allocate (waiting for a release): when it returned, and this thread's CPU time."""
        cpu = time.thread_time()
        self.frames.allocate(SHAPE)
        return time.monotonic(), time.thread_time() - cpu

    def close(self) -> None:
        self.frames.close()
        self.stopped.close()
        for name in self.segments:
            unlink(name)


@pytest.fixture
def owner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Owner]:
    # Only a release may end the wait: the backstop re-check would come far too late.
    monkeypatch.setattr(_shm, "RECHECK", 60.0)
    made = Owner(tmp_path)
    yield made
    made.close()


def test_a_release_in_this_process_wakes_a_producer_waiting_for_a_slot(owner: Owner) -> None:
    handles = owner.fill()
    released: list[float] = []

    def consumer() -> None:
        time.sleep(1.0)  # the producer waits meanwhile
        released.append(time.monotonic())
        owner.frames.release_owner(handles[2])

    thread = threading.Thread(target=consumer)
    thread.start()
    returned, cpu = owner.allocate_timed()
    thread.join()
    assert returned - released[0] < 1.0
    assert cpu < IDLE_CPU_S, f"the waiting producer used {cpu * 1000:.1f} ms of CPU"


def _hold_then_release(handles: list[_shm.Handle], column: int, queue: Any, done: Any) -> None:
    frames = SharedFrames("fp_waits_child")
    for handle in handles:
        frames.view(handle)
    queue.put("holding")
    time.sleep(1.0)  # the producer waits meanwhile
    queue.put(time.monotonic())
    frames.release(handles[1], column)
    done.wait(30)  # hold the mapping until the producer has its slot
    frames.close()


def test_a_release_in_another_process_wakes_a_producer_waiting_for_a_slot(owner: Owner) -> None:
    column = 1
    handles = owner.fill()
    for handle in handles:
        owner.frames.lease(handle, column)
        owner.frames.release_owner(handle)
    ctx = mp.get_context("spawn")
    queue, done = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=_hold_then_release, args=(handles, column, queue, done))
    child.start()
    try:
        assert queue.get(timeout=60) == "holding"
        returned, cpu = owner.allocate_timed()
        released = queue.get(timeout=5)
        done.set()
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
    assert returned - released < 1.0
    assert cpu < IDLE_CPU_S, f"the waiting producer used {cpu * 1000:.1f} ms of CPU"


class HereSynthetic(fp.sources.Synthetic):
    """A source that runs in the caller's process, so the test sees its shared memory."""

    in_caller_process = True


class CountedWaits(SharedFrames):
    """Shared memory of the caller's host with room for 4 frames; counts the waits for a slot."""

    waits = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "max_bytes": 1})

    def _begin_waiting(self) -> None:
        CountedWaits.waits += 1
        super()._begin_waiting()


def test_a_processes_run_whose_source_waits_for_slots_is_woken_by_releases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from framepipe.runtime import _host

    monkeypatch.setattr(_shm, "RECHECK", 60.0)  # a release not announced stalls the run
    monkeypatch.setattr(_host, "SharedFrames", CountedWaits)
    monkeypatch.setattr(CountedWaits, "waits", 0)
    out = tmp_path / "out.jsonl"
    pipe = fp.Pipeline("few-slots")
    cam = pipe.source("cam", HereSynthetic(width=64, height=48, fps=30, frames=40))
    slow = pipe.stage("slow", Sleepy(0.02), after=cam)  # in a worker: 8 frames in flight
    pipe.sink("out", fp.sinks.JsonLines(out), after=slow)  # releases from that worker
    run = pipe.start(mode="offline", executor="processes")
    if not run.wait(30):
        run.stop(5.0)
        pytest.fail("the source was not woken by the releases of another process")
    run.raise_error()
    assert len(out.read_text().splitlines()) == 40
    assert CountedWaits.waits > 0, "the source never had to wait: the test proves nothing"


def test_a_stop_wakes_a_producer_waiting_for_a_slot_at_once(owner: Owner) -> None:
    owner.fill()
    stopped_at: list[float] = []

    def stop() -> None:
        time.sleep(0.5)
        stopped_at.append(time.monotonic())
        owner.stop.set()
        owner.stopped.set()

    thread = threading.Thread(target=stop)
    thread.start()
    with pytest.raises(Stopping):
        owner.frames.allocate(SHAPE)
    returned = time.monotonic()
    thread.join()
    assert returned - stopped_at[0] < 1.0


def test_every_waiting_producer_wakes_on_releases(owner: Owner) -> None:
    handles = owner.fill()
    got: list[_shm.Handle] = []

    def producer() -> None:
        got.append(owner.frames.allocate(SHAPE)[1])

    threads = [threading.Thread(target=producer) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # both wait
    owner.frames.release_owner(handles[0])
    owner.frames.release_owner(handles[3])
    for thread in threads:
        thread.join(5.0)
    assert sorted(h.slot for h in got) == [handles[0].slot, handles[3].slot]


# -- worker start-up -----------------------------------------------------------------------


class SlowSetup(fp.Stage):
    """Says it is setting up (a marker file), then takes ``seconds`` to do it."""

    def __init__(self, marker: str, seconds: float) -> None:
        self.marker, self.seconds = marker, seconds

    def setup(self) -> None:
        Path(self.marker).touch()
        time.sleep(self.seconds)

    def process(self, frame: fp.Frame) -> int:
        return frame.index


class DiesInSetup(fp.Stage):
    def setup(self) -> None:
        os._exit(3)

    def process(self, frame: fp.Frame) -> int:
        return frame.index


class FailsInSetup(fp.Stage):
    def setup(self) -> None:
        raise RuntimeError("no model here")

    def process(self, frame: fp.Frame) -> int:
        return frame.index


def small() -> fp.sources.Synthetic:
    return fp.sources.Synthetic(width=64, height=48, fps=30, frames=10)


def test_a_stop_during_worker_start_up_returns_at_once(tmp_path: Path) -> None:
    marker = tmp_path / "setting-up"
    pipe = fp.Pipeline("slow-start")
    pipe.stage("slow", SlowSetup(str(marker), 60.0), after=pipe.source("cam", small()))
    started: list[float] = []

    def start() -> None:
        pipe.start(executor="processes")
        started.append(time.monotonic())

    thread = threading.Thread(target=start)
    thread.start()
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:  # the worker is setting up
        time.sleep(0.05)
    assert marker.exists(), "the worker never started setting up"
    stopping = time.monotonic()
    pipe.stop(timeout=1.0)  # the worker is still in setup(): it is killed after 1 s
    thread.join(30)
    assert started, "start() did not return after the stop"
    assert started[0] - stopping < 1.0


def test_a_worker_dying_during_start_up_is_reported_at_once() -> None:
    pipe = fp.Pipeline("dies-starting")
    pipe.stage("dies", DiesInSetup(), after=pipe.source("cam", small()))
    began = time.monotonic()
    with pytest.raises(fp.WorkerError, match=r"'dies'.*exited with code 3"):
        pipe.run(executor="processes")
    assert time.monotonic() - began < 30  # far from START_TIMEOUT


def test_a_failed_setup_in_the_callers_process_ends_a_processes_run(tmp_path: Path) -> None:
    pipe = fp.Pipeline("fails-here")
    cam = pipe.source("cam", small())
    pipe.stage("here", FailsInSetup(), after=cam, executor="threads")
    pipe.stage("there", SlowSetup(str(tmp_path / "set-up"), 0.0), after=cam)
    began = time.monotonic()
    with pytest.raises(fp.StageError, match="no model here"):
        pipe.run(executor="processes")
    assert time.monotonic() - began < 30
