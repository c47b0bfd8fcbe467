"""Many streams per box: sources skip frames no consumer takes; light nodes share workers."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import pytest

import framepipe as fp

FPS = 30
FRAMES = 90


def encode(path: Path, x264_params: str) -> Path:
    """A 3 s, 30 fps H.264 clip with a fixed GOP (``x264_params``), moving bars."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        video.options = {"preset": "veryfast", "x264-params": x264_params}
        for i in range(FRAMES):
            image = np.full((120, 160, 3), 64, np.uint8)
            image[i % 110 : i % 110 + 10, :] = 255
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gops")
    fixed = "b-adapt=0:b-pyramid=none:keyint=30:scenecut=0"
    return {
        # I P B P B ...: every other frame is a non-reference B-frame.
        "ipb": encode(folder / "ipb.mp4", f"bframes=1:{fixed}"),
        # I B B P B B P ...: without its B-frames only a third is left.
        "ibbp": encode(folder / "ibbp.mp4", f"bframes=2:{fixed}"),
    }


def camera(path: Path, *rates: float | None) -> tuple[fp.Pipeline, fp.sinks.Collect]:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(path))
    stages = [
        pipe.stage(f"s{i}", lambda f: f.pts, after=cam, fps=rate) for i, rate in enumerate(rates)
    ]
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=stages, policy=fp.Queue(1000, "drop_oldest"))
    return pipe, collect


def test_consumers_at_half_the_rate_let_the_source_skip_non_reference_frames(clips) -> None:
    pipe, collect = camera(clips["ipb"], 15)
    stats = pipe.run(mode="replay").stats
    # The B-frames were never decoded (each GOP ends on two P-frames: 16 of 30 are left)...
    assert stats["cam"].processed == 3 * 16
    # ...and the stage got a frame in every 1/15 s, as when every frame is decoded.
    assert stats["s0"].processed == FRAMES // 2
    times = sorted(collect.results["s0"].values())
    assert np.allclose(np.diff(times), 2 / FPS, atol=1e-3)  # evenly spaced


@pytest.mark.parametrize(
    ("rates", "why"),
    [
        ((15, None), "a consumer takes every frame"),
        ((20,), "the consumer wants more than half"),
    ],
)
def test_no_skipping_when_a_consumer_needs_the_frames(clips, rates, why) -> None:
    pipe, _ = camera(clips["ipb"], *rates)
    stats = pipe.run(mode="replay").stats
    assert stats["cam"].processed == FRAMES, why


def test_offline_runs_decode_every_frame(clips) -> None:
    pipe, _ = camera(clips["ipb"], 15)
    stats = pipe.run(mode="offline").stats
    assert stats["cam"].processed == FRAMES
    assert stats["s0"].processed == FRAMES // 2


def test_too_few_reference_frames_turns_skipping_off(
    clips, caplog: pytest.LogCaptureFixture
) -> None:
    pipe, collect = camera(clips["ibbp"], 15)
    with caplog.at_level(logging.INFO, logger="framepipe"):
        stats = pipe.run(mode="replay").stats
    assert "decoding all" in caplog.text
    # The first second came at 11 fps (I and P frames); the rest at the full rate.
    assert FRAMES // 3 < stats["cam"].processed < FRAMES
    times = sorted(collect.results["s0"].values())
    late = [t for t in times if t > 1.2]
    assert np.allclose(np.diff(late), 2 / FPS, atol=1e-3)  # 15 fps again


def test_skipping_in_a_real_time_run(clips, executor: str) -> None:
    pipe, _ = camera(clips["ipb"], 15)
    run = pipe.run(mode="realtime", executor=executor)
    stats = run.stats
    assert stats["cam"].processed + stats["cam"].dropped_by["late"] == 3 * 16, stats
    assert stats["s0"].processed >= FRAMES // 2 - 3, stats
    assert stats["s0"].fps == pytest.approx(15, rel=0.2), stats


def test_workers_bound_the_processes_and_keep_each_camera_together(clips) -> None:
    from framepipe import planner

    one, _ = camera(clips["ipb"], 15)
    four = planner.replicate(one, 4)
    with four.start(mode="offline", executor="processes", workers=2) as run:
        pids = run.worker_pids()
        run.wait(60)
    assert len(set(pids.values())) == 2
    for k in range(1, 5):  # a camera, its stage and its sink share a process
        assert pids[f"cam-{k}"] == pids[f"s0-{k}"] == pids[f"out-{k}"]
    for k in range(1, 5):
        assert run.stats[f"s0-{k}"].processed == FRAMES // 2
        assert len(four.nodes[f"out-{k}"].obj.results[f"s0-{k}"]) == FRAMES // 2


def test_workers_split_one_camera_across_processes(clips) -> None:
    pipe, collect = camera(clips["ipb"], 15, 10, 5)
    with pipe.start(mode="offline", executor="processes", workers=3) as run:
        pids = run.worker_pids()
        run.wait(60)
    assert len(set(pids.values())) == 3
    assert len(collect.results["s2"]) == 15


def test_bad_workers_are_named(clips) -> None:
    pipe, _ = camera(clips["ipb"], 15)
    with pytest.raises(fp.GraphError, match="workers= is for executor='processes'"):
        pipe.run(executor="threads", workers=2)
    with pytest.raises(fp.GraphError, match="workers must be an int >= 1, got 0"):
        pipe.run(executor="processes", workers=0)


def test_a_network_stream_skips_non_reference_frames_too(
    clips, serve_directory, caplog: pytest.LogCaptureFixture
) -> None:
    base = serve_directory(clips["ipb"].parent)
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Stream(f"{base}/ipb.mp4", reconnect=False))
    pipe.stage("s0", lambda f: f.pts, after=cam, fps=15)
    with caplog.at_level(logging.INFO, logger="framepipe"):
        run = pipe.run(mode="realtime", executor="threads", duration=20)
    assert "skipping non-reference frames" in caplog.text
    assert "decoding all" not in caplog.text
    assert run.stats["s0"].processed > 0
