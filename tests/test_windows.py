"""Windows: ``window=(count, step)`` over source frames, with ``fps=``/``interval=`` deciding calls.

The comparison with stream-infer computes its side from its documented rule
(``load_algo(algo, frame_count, frame_step, interval)``: every ``interval``
seconds the algorithm gets the last ``frame_count`` frames taken every
``frame_step`` frames of the source, ending at the current frame) and from its
``Dispatcher.get_frames``: it keeps a buffer of recent frames and answers a call
with nothing (the call is skipped) while fewer than ``frame_count * frame_step``
frames are buffered; ``frame_step=0`` means consecutive frames, and then the
first calls get fewer than ``frame_count`` frames.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import pytest

import framepipe as fp
from framepipe._policy import NodeOptions, Queue, Window, WindowSampler, parse_window
from framepipe.config import parse_pipeline
from framepipe.runtime._inbox import EMPTY, Inbox, Mark
from framepipe.stats import StatsRecorder
from framepipe.testing import make_frame

SLOW_TRAFFIC = "slow_traffic_small.mp4"  # 914 frames at 30000/1001 fps
BOTTLES = "bottle-detection.mp4"  # 1189 frames at 29.83 fps


def frame_indices(frames: list[fp.Frame]) -> list[int]:
    return [f.index for f in frames]


def stream_infer_calls(
    pts: list[float], frame_count: int, frame_step: int, interval: float
) -> dict[int, list[int]]:
    """stream-infer's calls on a clip whose frame ``i`` is at ``pts[i]``: call frame -> frames.

    A call falls due on the first frame of every ``interval`` seconds of media
    time (its real-time timer fires at once, then every ``interval``).
    """
    calls: dict[int, list[int]] = {}
    slot = -1
    for current, t in enumerate(pts):
        due = math.floor((t - pts[0]) / interval + 1e-6)
        if due <= slot:
            continue
        slot = due
        buffered = current + 1
        if frame_step == 0:
            frames = list(range(current + 1))[-frame_count:]
        elif buffered < frame_count * frame_step:
            continue  # get_frames() returns [], the algorithm is not run
        else:
            frames = list(range(current - (frame_count - 1) * frame_step, current + 1, frame_step))
        calls[current] = frames
    return calls


# -- the rule, on synthetic frames -------------------------------------------------------------


def test_parse_window_accepts_frames_and_seconds() -> None:
    assert parse_window((5, 6)) == Window(5, 6) == (5, 6)
    assert parse_window([5, "1s"]) == Window(5, 1.0)
    assert parse_window((2, "0.5s")).seconds == 0.5
    assert Window(3, 2).seconds is None
    for bad in [(0, 1), (1, 0), (1, "1"), (1, "0s"), (1, "xs"), (1, 1.5), (1,), 3, (True, 1)]:
        with pytest.raises(ValueError, match="count an int >= 1"):
            parse_window(bad)


def test_a_bad_window_names_the_node() -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=32, height=32, fps=30, frames=3))
    with pytest.raises(fp.GraphError, match=r"node 'w': window must be .*got \(5, '1 sec'\)"):
        pipe.stage("w", frame_indices, after=cam, window=(5, "1 sec"))


def test_sampler_counts_source_frames_and_tolerates_gaps() -> None:
    sampler = WindowSampler(Window(2, 3))
    sampled = [i for i in (0, 1, 2, 4, 5, 6, 7, 11, 12) if sampler.sample("s", i, i / 30)]
    assert sampled == [0, 4, 6, 11, 12]  # the first frame of each slot of 3 frames


def test_step_in_seconds_samples_on_media_time() -> None:
    sampler = WindowSampler(parse_window((2, "1s")))
    rate = 29.97
    sampled = [i for i in range(100) if sampler.sample("s", i, i / rate)]
    assert sampled == [0, 30, 60, 90]


def test_interval_picks_calls_window_picks_frames(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=30, frames=91))
    win = pipe.stage("win", frame_indices, after=cam, window=(3, 5), interval=1)
    secs = pipe.stage("secs", frame_indices, after=cam, window=(2, "0.5s"), fps=2)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=[win, secs])
    run = pipe.run(mode="offline", executor=executor)
    # One call a second; the call at frame 0 is skipped (its window is not full yet).
    assert collect.results["win"] == {30: [20, 25, 30], 60: [50, 55, 60], 90: [80, 85, 90]}
    assert collect.results["secs"] == {i: [i - 15, i] for i in range(15, 91, 15)}
    assert run.stats["win"].processed == 3
    assert run.stats["win"].dropped_by["rate"] == 91 - 19  # frames that were never samples


def test_calls_land_on_samples() -> None:
    """With a step that does not divide the interval, the call waits for the next sample."""
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=32, height=32, fps=10, frames=31))
    win = pipe.stage("win", frame_indices, after=cam, window=(2, 4), interval=1)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=win)
    pipe.run(mode="offline", executor="inline")
    # Samples 0, 4, 8, ..., 28; calls due at 0 s (window not full), 1 s and 2 s land on the
    # first sample at or after them; the clip ends before a sample of the 3 s slot.
    assert collect.results["win"] == {12: [8, 12], 20: [16, 20]}


def test_a_window_holds_only_its_samples() -> None:
    """Far-apart samples keep only ``count`` frames alive (plus the windows waiting)."""
    recorder = StatsRecorder("w", "stage")
    box = Inbox("w", NodeOptions.build("w", window=(3, "1s"), interval=2), recorder)
    box.add_edge(1, "cam", Queue(100, "block"))
    released: list[int] = []
    calls = []
    for i in range(300):
        box.put(1, make_frame(index=i, pts=i / 30), lambda i=i: released.append(i))
        alive = i + 1 - len(released)
        assert alive <= 3, (i, alive)
        while (item := box.take(0)) is not EMPTY:
            if isinstance(item, Mark):  # no call on this frame: a watermark
                continue
            calls.append(frame_indices(item.payload))
            item.done()
    assert calls == [[0, 30, 60], [60, 90, 120], [120, 150, 180], [180, 210, 240]]
    box.close()
    assert sorted(released) == list(range(300))


# -- stream-infer's documented examples on a real clip -------------------------------------------


@pytest.fixture(scope="module")
def traffic_pts(media_video: Any) -> list[float]:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(media_video(SLOW_TRAFFIC)))
    pts = pipe.stage("pts", lambda f: f.pts, after=cam)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=pts)
    pipe.run(mode="offline", executor="inline")
    values = collect.results["pts"]
    assert len(values) == 914
    return [values[i] for i in range(914)]


# frame_count, frame_step, interval as in stream-infer's README; frame_step=fps is "one
# frame a second" (30 frames at 29.97 fps); the last one is the example of the issue.
EXAMPLES = {  # frame_count/frame_step/interval: 1/0/1, 1/fps/1, 5/6/60, 30/1/1, 5/6/1
    "every_second": (1, 0, 1.0),
    "one_a_second": (1, 30, 1.0),
    "five_every_minute": (5, 6, 60.0),
    "thirty_every_second": (30, 1, 1.0),
    "five_by_six_every_second": (5, 6, 1.0),
}


def test_stream_infer_examples(executor: str, media_video: Any, traffic_pts: list[float]) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(media_video(SLOW_TRAFFIC)))
    nodes = [
        pipe.stage(name, frame_indices, after=cam, window=(count, max(step, 1)), interval=interval)
        for name, (count, step, interval) in EXAMPLES.items()
    ]
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=nodes)
    pipe.run(mode="offline", executor=executor)

    for name, (count, step, interval) in EXAMPLES.items():
        ours = collect.results[name]
        theirs = stream_infer_calls(traffic_pts, count, step, interval)
        # Every call both make receives the same frames.
        for current in ours.keys() & theirs.keys():
            assert ours[current] == theirs[current], (name, current)
        # Where they differ, it is the documented start of the video: stream-infer waits
        # for count * step buffered frames, framepipe for the window's own frames.
        only_ours = sorted(ours.keys() - theirs.keys())
        assert all(count * max(step, 1) > c + 1 >= (count - 1) * max(step, 1) for c in only_ours)
        assert theirs.keys() - ours.keys() == set(), name

    assert len(collect.results["every_second"]) == 31  # 0 s .. 30 s of a 30.5 s clip
    assert collect.results["one_a_second"][0] == [0]  # stream-infer skips this one call
    assert len(collect.results["one_a_second"]) == 31
    assert collect.results["five_every_minute"] == {}  # due at frame 0 only, before 5 samples exist
    assert collect.results["thirty_every_second"][30] == list(range(1, 31))
    calls = collect.results["five_by_six_every_second"]
    assert len(calls) == 30 and calls[30] == [6, 12, 18, 24, 30]


def test_interval_does_not_drift_on_a_non_integer_rate(media_video: Path) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(media_video(BOTTLES)))
    every = pipe.stage("every", lambda f: f.pts, after=cam)
    second = pipe.stage("second", lambda f: f.pts, after=cam, interval=1)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=[every, second])
    pipe.run(mode="offline", executor="threads")
    pts = collect.results["every"]
    calls = sorted(collect.results["second"].items())
    duration = pts[max(pts)] - pts[0]
    assert len(calls) == math.floor(duration) + 1
    for k, (index, t) in enumerate(calls):
        # The first frame at or after k seconds, at the 40th second as at the first.
        assert t - pts[0] >= k - 1e-6
        assert index == 0 or pts[index - 1] - pts[0] < k
    # A frame-count interval (int(29.83) = 29 frames, as stream-infer's offline player
    # counts) is off by more than a second at the end of the same clip.
    frame_count_calls = list(range(0, len(pts), int(1 * 29.83)))
    assert abs((pts[frame_count_calls[-1]] - pts[0]) - (len(frame_count_calls) - 1)) > 1.0


def test_pipeline_files_take_a_step_in_seconds() -> None:
    text = """
    sources:
      - {name: cam, type: Synthetic, width: 32, height: 32, frames: 3}
    stages:
      - {name: w, type: "builtins:len", window: [5, 1s], interval: 2}
    """
    pipe, _ = parse_pipeline(textwrap.dedent(text), where="p.yaml")
    assert pipe.nodes["w"].options.window == Window(5, 1.0)
    with pytest.raises(fp.ConfigError, match=r"window.*seconds like '1s', got \(5, '1'\)"):
        parse_pipeline(textwrap.dedent(text).replace("1s]", "'1']"), where="p.yaml")
