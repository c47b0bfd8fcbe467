"""Windows: ``window=(count, step)`` over source frames, with ``fps=``/``interval=`` deciding calls.

The comparison with stream-infer computes its side from its offline code
(``Inference.auto_run_specific`` and ``Dispatcher.get_frames``): after each
frame is buffered, an algorithm loaded with ``load_algo(algo, frame_count,
frame_step, interval)`` runs when the number of frames played is a multiple of
``max(1, int(interval * fps))``, on the last ``frame_count`` frames taken every
``frame_step`` frames, ending at the current frame; while fewer than
``frame_count * frame_step`` frames are buffered it gets nothing and is not
run; ``frame_step=0`` means consecutive frames.
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
    frames: int, fps: int, frame_count: int, frame_step: int, interval: float
) -> dict[int, list[int]]:
    """stream-infer's offline calls on ``frames`` frames at ``fps``: call frame -> frames."""
    every = max(1, int(interval * fps))
    calls: dict[int, list[int]] = {}
    for current in range(frames):
        played = current + 1  # its frame index, counted after the frame is buffered
        if played % every:
            continue
        if frame_step == 0:
            calls[current] = list(range(played))[-frame_count:]
        elif played >= frame_count * frame_step:
            first = current - (frame_count - 1) * frame_step
            calls[current] = list(range(first, played, frame_step))
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
    # The first frame to complete each slot of 3 frames: 2 ends 0-2, 5 ends 3-5; 8 is
    # missing, so 11 completes 6-8 and 9-11 at once.
    assert sampled == [2, 5, 11]


def test_step_in_seconds_samples_on_media_time() -> None:
    sampler = WindowSampler(parse_window((2, "1s")))
    rate = 29.97
    sampled = [i for i in range(100) if sampler.sample("s", i, i / rate)]
    assert sampled == [29, 59, 89]  # the frames that end each media second


def test_interval_picks_calls_window_picks_frames(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=30, frames=91))
    win = pipe.stage("win", frame_indices, after=cam, window=(3, 5), interval=1)
    secs = pipe.stage("secs", frame_indices, after=cam, window=(2, "0.5s"), fps=2)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=[win, secs])
    run = pipe.run(mode="offline", executor=executor)
    # One call each time a second of video has been seen, on the frame that ends it.
    assert collect.results["win"] == {29: [19, 24, 29], 59: [49, 54, 59], 89: [79, 84, 89]}
    # The call due when the first half second ends (frame 14) is skipped: one sample only.
    assert collect.results["secs"] == {i: [i - 15, i] for i in range(29, 91, 15)}
    assert run.stats["win"].processed == 3
    assert run.stats["win"].dropped_by["rate"] == 91 - 18  # frames that were never samples


def test_calls_land_on_samples() -> None:
    """With a step that does not divide the interval, the call waits for the next sample."""
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=32, height=32, fps=10, frames=31))
    win = pipe.stage("win", frame_indices, after=cam, window=(2, 4), interval=1)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=win)
    pipe.run(mode="offline", executor="inline")
    # Samples 3, 7, 11, ..., 27 (each ends 4 frames); the calls due when 1 s and 2 s of
    # video have been seen land on the first sample that ends at or after them.
    assert collect.results["win"] == {11: [7, 11], 19: [15, 19]}


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
    # Samples end each second (29, 59, ...); the call after 2 s has two only: skipped.
    assert calls == [[59, 89, 119], [119, 149, 179], [179, 209, 239], [239, 269, 299]]
    box.close()
    assert sorted(released) == list(range(300))


# -- stream-infer's documented examples on a real clip -------------------------------------------


# frame_count, frame_step, interval as in stream-infer's README (frame_step=fps is "one frame
# a second"); the last one is the example ported users compare.
def stream_infer_examples(fps: int) -> dict[str, tuple[int, int, float]]:
    return {
        "every_second": (1, 0, 1.0),
        "one_a_second": (1, fps, 1.0),
        "five_every_minute": (5, 6, 60.0),
        "all_of_a_second": (fps, 1, 1.0),
        "five_by_six_every_second": (5, 6, 1.0),
        "five_by_six_every_two_seconds": (5, 6, 2.0),
    }


@pytest.mark.parametrize(
    ("clip", "fps", "frames"),
    [("asl_gestures_book.mkv", 30, 109), ("one-by-one-person-detection.mp4", 10, 1394)],
)
def test_stream_infer_examples_get_the_same_calls_and_frames(
    executor: str, media_video: Any, clip: str, fps: int, frames: int
) -> None:
    examples = stream_infer_examples(fps)
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(media_video(clip)))
    nodes = [
        pipe.stage(name, frame_indices, after=cam, window=(count, max(step, 1)), interval=interval)
        for name, (count, step, interval) in examples.items()
    ]
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=nodes)
    pipe.run(mode="offline", executor=executor)
    for name, (count, step, interval) in examples.items():
        theirs = stream_infer_calls(frames, fps, count, step, interval)
        ours = collect.results.get(name, {})
        every = int(interval * fps)
        if step <= 1 or every % step == 0:
            assert ours == theirs, name
            continue
        # A step that does not divide the interval: stream-infer steps back from each call
        # frame (so it holds count * step frames); framepipe keeps its grid of samples and
        # calls on the next one, at most step - 1 frames later, with the same spacing.
        assert len(ours) == len(theirs), name
        for (call, got), (their_call, their_frames) in zip(
            sorted(ours.items()), sorted(theirs.items()), strict=True
        ):
            assert 0 <= call - their_call < step, (name, call, their_call)
            assert got == [i + call - their_call for i in their_frames], name
    if fps == 30:
        # The example of the port: the first call on frame 29 with frames 5..29.
        assert collect.results["five_by_six_every_second"][29] == [5, 11, 17, 23, 29]
    else:
        assert collect.results["five_every_minute"] == {
            599: [575, 581, 587, 593, 599],
            1199: [1175, 1181, 1187, 1193, 1199],
        }


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
