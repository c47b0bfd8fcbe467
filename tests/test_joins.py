"""Joins by watermark: a slow or silent input never holds the others, offline joins are
exact and deterministic, and every frame is written once (docs/concepts.md, "Joining")."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import numpy as np
import pytest

import framepipe as fp
from framepipe._policy import NodeOptions
from stages_for_tests import EvenOnly, Filled, Sleepy, SlowRead, index_of

#: Every way a pipeline runs on one machine: the three executors, and a replay.
RUNS = ("inline", "threads", "processes", "replay")


def run(pipe: fp.Pipeline, how: str, **options: Any) -> fp.Run:
    if how == "replay":
        options["mode"] = "replay"
        return pipe.run(**options)
    return pipe.run(executor=how, **options)


class Recorder:
    """A sink callback (in the caller's process under every executor): what reached the
    sink, with how long after capture."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[tuple[str, int, tuple[str, ...], bool, float]] = []

    def __call__(self, frame: fp.Frame) -> None:
        lag = time.time() - frame.timestamp
        with self.lock:
            self.records.append(
                (frame.source, frame.index, tuple(sorted(frame.results)), frame.late, lag)
            )

    def lags(self, key: str) -> list[float]:
        return [lag for _, _, keys, _, lag in self.records if key in keys]

    def written(self) -> dict[tuple[str, int], list[tuple[str, ...]]]:
        out: dict[tuple[str, int], list[tuple[str, ...]]] = {}
        for source, index, keys, _, _ in self.records:
            out.setdefault((source, index), []).append(keys)
        return out


def assert_written_once(recorder: Recorder) -> None:
    """No result reaches the sink twice for one frame; a second write is a late one."""
    for key, writes in recorder.written().items():
        seen: list[str] = []
        for keys in writes:
            own = [k for k in keys if k not in ("cam", "cam2")]
            seen.extend(own)
        assert len(seen) == len(set(seen)), f"frame {key} written with {writes}"
    for _, _, keys, late, _ in recorder.records:
        if late:
            assert keys, "a late delivery carries the result that came late"


# -- real time: the fast branch never waits for the slow one ---------------------------------


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_the_readme_shape_does_not_lag_by_its_slow_detector(how: str) -> None:
    """30 fps camera, a 15 fps preview and a 1 s detector at 5 fps into one sink (its
    default join, merge): the preview's records reach the sink at once, not when the
    detector is done (1.47 s late at cadd68f)."""
    recorder = Recorder()
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=160, height=120, fps=30))
    preview = pipe.stage("preview", index_of, after=cam, fps=15)
    detect = pipe.stage("detect", Sleepy(1.0), after=cam, fps=5)
    pipe.sink("out", fp.sinks.Callback(recorder), after=[detect, preview])
    run(pipe, how, mode="realtime", duration=5)
    lags = recorder.lags("preview")
    assert len(lags) > 30
    assert statistics.median(lags) < 0.4, statistics.median(lags)
    detections = [r for r in recorder.records if "detect" in r[2]]
    assert detections, "the slow results reach the sink too"
    assert_written_once(recorder)


@pytest.mark.parametrize("how", RUNS)
def test_a_branch_that_returns_none_is_not_waited_for(how: str, media_video) -> None:  # type: ignore[no-untyped-def]
    """A stage returning ``None`` passes on a watermark: the sink writes the other
    branch's frame at once (2.1 s late at cadd68f, inline too)."""
    recorder = Recorder()
    pipe = fp.Pipeline()
    if how == "replay":
        cam = pipe.source("cam", fp.sources.VideoFile(media_video("slow_traffic_small.mp4")))
    else:
        cam = pipe.source("cam", fp.sources.Synthetic(width=160, height=120, fps=30))
    a = pipe.stage("a", index_of, after=cam)
    b = pipe.stage("b", lambda frame: None, after=cam)
    pipe.sink("out", fp.sinks.Callback(recorder), after=[a, b])
    result = run(pipe, how, mode="realtime", duration=3)
    assert len(recorder.lags("a")) > 30
    age = result.stats["out"].age_ms["p50"]  # on the run's clock (simulated in a replay)
    assert age < 300, age
    assert_written_once(recorder)


@pytest.mark.parametrize("how", ["inline", "threads", "processes"])
def test_two_cameras_into_one_sink_do_not_wait_for_each_other(how: str) -> None:
    """An input that cannot carry a camera's frames is never waited for (2.0 s late at
    cadd68f: 64 frames)."""
    recorder = Recorder()
    pipe = fp.Pipeline()
    one = pipe.source("cam", fp.sources.Synthetic(width=160, height=120, fps=30))
    two = pipe.source("cam2", fp.sources.Synthetic(width=160, height=120, fps=30))
    a = pipe.stage("a", index_of, after=one)
    b = pipe.stage("b", index_of, after=two)
    pipe.sink("out", fp.sinks.Callback(recorder), after=[a, b])
    run(pipe, how, mode="realtime", duration=3)
    for key in ("a", "b"):
        lags = recorder.lags(key)
        assert len(lags) > 30, key
        assert statistics.median(lags) < 0.3, (key, statistics.median(lags))
    assert_written_once(recorder)


def test_a_late_result_goes_on_alone_marked_late() -> None:
    """A result later than the join's wait is written on its own, marked ``late``, with
    only its own result: never a second time with the results already written (case 2
    of the core issue: a 1.3 s branch)."""
    recorder = Recorder()
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=160, height=120, fps=30))
    fast = pipe.stage("fast", index_of, after=cam)
    slow = pipe.stage("slow", Sleepy(1.3), after=cam, fps=2)
    pipe.sink("out", fp.sinks.Callback(recorder), after=[fast, slow], join_wait=50)
    pipe.run(mode="realtime", executor="threads", duration=5)
    late = [r for r in recorder.records if r[3]]
    assert late, "the slow results came after their frames were written"
    assert all(keys == ("slow",) for _, _, keys, _, _ in late)
    assert_written_once(recorder)
    fast_frames = [r[1] for r in recorder.records if "fast" in r[2]]
    assert len(fast_frames) == len(set(fast_frames))


def test_join_wait_is_checked() -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(frames=1))
    a = pipe.stage("a", index_of, after=cam)
    with pytest.raises(fp.GraphError, match="'out': join_wait must be milliseconds"):
        pipe.sink("out", fp.sinks.Collect(), after=[cam, a], join_wait=-1)
    with pytest.raises(fp.GraphError, match="applies to join='merge'"):
        pipe.stage("b", index_of, after=[cam, a], join_wait=10)


# -- offline: exact, lossless, deterministic -----------------------------------------------


def offline_merge(how: str, frames: int = 400) -> dict[tuple[str, int], list[tuple[str, ...]]]:
    recorder = Recorder()
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=30, frames=frames))
    a = pipe.stage("a", index_of, after=cam)
    b = pipe.stage("b", EvenOnly(), after=cam)
    # One call every 10 s of video: 300 frames apart, far beyond any queue or bound.
    c = pipe.stage("c", Sleepy(0.3), after=cam, interval=10)  # slow, and far apart
    pipe.sink("out", fp.sinks.Callback(recorder), after=[a, b, c])
    run(pipe, how, mode="offline" if how != "replay" else "replay")
    return recorder.written()


@pytest.mark.parametrize("how", RUNS)
def test_offline_merge_is_exact_whatever_the_inputs_skip(how: str) -> None:
    """Each frame is written once, with exactly the results of the inputs that carried
    it, however far apart the inputs' calls are (no bound releases a frame early)."""
    written = offline_merge(how)
    assert len(written) == 400
    for (_, index), writes in written.items():
        expected = (
            {"a"} | ({"b"} if index % 2 == 0 else set()) | ({"c"} if index % 300 == 0 else set())
        )
        assert writes == [tuple(sorted(expected))], (index, writes)


@pytest.mark.parametrize("how", ["inline", "threads", "processes"])
def test_offline_max_age_has_no_effect(how: str) -> None:
    """Offline is lossless: ``max_age`` drops nothing (18/60 processed under threads at
    cadd68f, by the wall clock)."""
    collect = fp.sinks.Collect()
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, frames=60))
    slow = pipe.stage("slow", Sleepy(0.01), after=cam, max_age=30)
    pipe.sink("out", collect, after=slow)
    result = pipe.run(mode="offline", executor=how)
    assert sorted(collect.results["slow"]) == list(range(60))
    assert result.stats["slow"].dropped_by.get("age", 0) == 0


def latest_across_sources(how: str) -> dict[Any, Any]:
    collect = fp.sinks.Collect()
    pipe = fp.Pipeline()
    one = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=30, frames=90))
    two = pipe.source("cam2", fp.sources.Synthetic(width=64, height=48, fps=30, frames=90))
    det = pipe.stage("det", Sleepy(0.002), after=two)
    pipe.stage("draw", lambda f: f.results.get("det"), after=[one, det], join="latest")
    pipe.sink("out", collect, after="draw")
    pipe.run(mode="offline", executor=how)
    return dict(collect.results["draw"])


def test_offline_latest_from_another_source_is_deterministic() -> None:
    """The result attached from another source's input is the newest with a media time
    not after the frame's, whatever the timing (three threads runs gave three outputs at
    cadd68f)."""
    expected = {("cam", i): i for i in range(90)}  # both cameras at 30 fps: the same instant
    for how in ("threads", "threads", "threads", "inline", "processes"):
        assert latest_across_sources(how) == expected, how


# -- processes: a merged frame keeps every input's shared memory ------------------------------


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_merged_arrays_are_their_frames_own(how: str) -> None:
    """Two array results of 64 KiB (shared memory between processes) merged for a sink in
    the caller's process: each belongs to its frame (89 of 300 frames read another
    frame's array at cadd68f)."""
    wrong: list[int] = []

    def check(frame: fp.Frame) -> None:
        a, b = frame.results.get("a"), frame.results.get("b")
        if a is None or b is None:
            wrong.append(frame.index)
            return
        time.sleep(0.005)  # the slots would be reused meanwhile if they were released
        if (
            int(a[0, 0, 0]) != (frame.index * 3) % 251
            or int(b[-1, -1, -1]) != (frame.index * 7) % 251
        ):
            wrong.append(frame.index)

    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, frames=300))
    a = pipe.stage("a", Filled(3), after=cam)
    b = pipe.stage("b", Filled(7), after=cam)
    pipe.sink("out", fp.sinks.Callback(check), after=[a, b])
    # A merge stage in the caller's process, whose frame goes on to a sink there too.
    both = pipe.stage("both", index_of, after=[a, b], join="merge", executor="threads")
    pipe.sink("after", fp.sinks.Callback(check), after=both)
    pipe.run(mode="offline", executor=how)
    assert wrong == []


def test_a_merged_frame_carries_every_inputs_handles() -> None:
    from framepipe.runtime._inbox import Inbox
    from framepipe.stats import StatsRecorder
    from framepipe.testing import make_frame

    box = Inbox("m", NodeOptions.build("m", join="merge"), StatsRecorder("m", "sink"), ordered=True)
    box.add_edge(1, "a", fp.Queue(4, "block"), sources=("test",))
    box.add_edge(2, "b", fp.Queue(4, "block"), sources=("test",))
    first = make_frame(index=0, results={"a": 1})
    second = make_frame(index=0, results={"b": 2})
    first._handles, second._handles = (
        (Handle("", 1), Handle("a", 2)),
        (Handle("", 1), Handle("b", 3)),
    )
    box.put(1, first)
    box.put(2, second)
    item = box.take(0)
    assert dict(item.frame.results) == {"a": 1, "b": 2}
    assert sorted(h.key for h in item.frame._handles) == ["", "a", "b"]


class Handle:
    """A stand-in for the transport's handle: what the join reads of it is ``key``."""

    def __init__(self, key: str, slot: int) -> None:
        self.key, self.slot = key, slot


# -- pacing: a source slower than its frame rate -------------------------------------------


def test_a_file_source_slower_than_its_rate_delivers_at_its_own_rate() -> None:
    """50 ms reads of a 30 fps file: about 20 fps in real time (3 frames in 4 s at
    cadd68f, its lateness never re-based)."""
    collect = fp.sinks.Collect()
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Generator(SlowRead(0.05, 1000), fps=30))
    pipe.sink("out", collect, after=pipe.stage("i", index_of, after=cam))
    result = pipe.run(mode="realtime", executor="threads", duration=4)
    delivered = len(collect.results["i"])
    assert delivered >= 40, (delivered, result.stats["cam"].dropped_by)


def test_a_sources_latency_is_its_own_work() -> None:
    """Inline, consumers run inside the source's delivery: its latency leaves them out
    (a 64x64 Synthetic source was charged its consumer's 20 ms at cadd68f)."""
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=64, frames=30))
    pipe.sink("out", fp.sinks.Collect(), after=pipe.stage("slow", Sleepy(0.02), after=cam))
    result = pipe.run(mode="offline", executor="inline")
    assert result.stats["cam"].latency_ms["p50"] < 5, result.stats["cam"].latency_ms


def test_merge_in_real_time_holds_a_frame_one_interval_at_most() -> None:
    """The join's own clock decides: a frame whose other input is silent goes on once
    ``join_wait`` has passed (here on a clock the test moves)."""
    from framepipe.runtime._inbox import EMPTY, Inbox
    from framepipe.stats import StatsRecorder
    from framepipe.testing import make_frame

    class Clock:
        now = 100.0

        def time(self) -> float:
            return self.now

    clock = Clock()
    options = NodeOptions.build("m", join="merge", join_wait=40)
    box = Inbox("m", options, StatsRecorder("m", "sink"), clock=clock)  # type: ignore[arg-type]
    box.add_edge(1, "a", fp.Queue(4, "drop_oldest"), sources=("test",))
    box.add_edge(2, "b", fp.Queue(4, "drop_oldest"), sources=("test",))
    box.put(1, make_frame(index=0, results={"a": 0}))
    assert box.take(0) is EMPTY
    assert box.deadline == pytest.approx(100.04)
    clock.now = 100.05
    item = box.take(0)
    assert dict(item.frame.results) == {"a": 0} and not item.frame.late
    item.done()
    box.put(2, make_frame(index=0, results={"b": 0}))  # b's result, after the wait
    late = box.take(0)
    assert dict(late.frame.results) == {"b": 0} and late.frame.late


def test_an_array_result_is_read_only_after_a_merge() -> None:
    seen: list[bool] = []
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, frames=5))
    a = pipe.stage("a", lambda f: np.zeros(3), after=cam)
    b = pipe.stage("b", index_of, after=cam)
    pipe.sink(
        "out",
        fp.sinks.Callback(lambda f: seen.append(f.results["a"].flags.writeable)),
        after=[a, b],
    )
    pipe.run(mode="offline", executor="inline")
    assert seen == [False] * 5
