"""fp.sinks.VideoFile: encode with PyAV, decode the result back and check it."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import textwrap
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

import framepipe as fp
from framepipe.testing import make_frame, run_sink
from test_sinks_jsonl import ready_process, writer_script


def picture(index: int, width: int = 320, height: int = 240) -> np.ndarray:
    """A frame that differs from the last: a moving bar over a gradient."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = np.linspace(0, 200, width, dtype=np.uint8)[None, :, None]
    left = (index * 7) % max(1, width - 20)
    image[:, left : left + 20] = (255, 255, 255)
    image[: height // 4, :, 2] = (index * 13) % 256
    return image


def frames(
    count: int,
    *,
    width: int = 320,
    height: int = 240,
    pts: list[float] | None = None,
    results: dict[str, object] | None = None,
) -> list[fp.Frame]:
    return [
        make_frame(
            picture(i, width, height), index=i, pts=None if pts is None else pts[i], results=results
        )
        for i in range(count)
    ]


@dataclass
class Decoded:
    images: list[np.ndarray]
    times: list[float]
    duration: float
    width: int
    height: int


def decode(path: Path) -> Decoded:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        images, times = [], []
        for item in container.decode(stream):
            images.append(item.to_ndarray(format="bgr24"))
            times.append(float(item.time or 0.0))
        duration = (container.duration or 0) / 1e6
        return Decoded(images, times, duration, stream.width, stream.height)


def test_frames_decode_back_with_count_size_and_duration(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    sink = fp.sinks.VideoFile(path)
    run_sink(sink, frames(60))
    video = decode(path)
    assert sink.frames == 60
    assert len(video.images) == 60
    assert (video.width, video.height) == (320, 240)
    assert video.duration == pytest.approx(2.0, abs=0.05)
    assert video.times[:3] == pytest.approx([0, 1 / 30, 2 / 30], abs=1e-3)
    with av.open(str(path)) as container:  # tagged with the BT.601 matrix it was converted with
        context = container.streams.video[0].codec_context
        assert (context.colorspace, context.color_range) == (6, 1)  # smpte170m, tv range
    # Lossy, but the content is the frames': the moving bar is where it was drawn.
    for index in (0, 30, 59):
        error = np.abs(video.images[index].astype(int) - picture(index).astype(int)).mean()
        assert error < 6, f"frame {index} differs by {error:.1f} on average"


def test_the_annotated_image_is_recorded_when_one_is_upstream(tmp_path: Path) -> None:
    path = tmp_path / "annotated.mp4"
    annotated = np.zeros((240, 320, 3), np.uint8)
    annotated[..., 2] = 220  # red in BGR
    run_sink(fp.sinks.VideoFile(path), frames(10, results={"detect": [1, 2], "draw": annotated}))
    mean = decode(path).images[5].reshape(-1, 3).mean(axis=0)
    assert mean[2] > 200 and mean[0] < 20 and mean[1] < 20


def test_variable_rate_frames_are_shown_at_their_pts(tmp_path: Path) -> None:
    path = tmp_path / "vfr.mp4"
    pts = [10.0, 10.1, 10.15, 10.5, 11.0, 11.04, 12.0]  # the file starts at the first frame
    run_sink(fp.sinks.VideoFile(path), frames(len(pts), pts=pts))
    times = decode(path).times
    assert [t - times[0] for t in times] == pytest.approx([p - pts[0] for p in pts], abs=1e-3)
    if av.library_versions["libavformat"] >= (61, 7):  # hybrid fragments: no start offset
        assert times[0] == pytest.approx(0.0, abs=1e-3)


def test_fps_gives_a_constant_rate_whatever_the_pts(tmp_path: Path) -> None:
    path = tmp_path / "cfr.mkv"
    run_sink(fp.sinks.VideoFile(path, fps=10), frames(5, pts=[0, 3, 3.1, 7, 20]))
    video = decode(path)
    assert video.times == pytest.approx([0, 0.1, 0.2, 0.3, 0.4], abs=1e-3)


def test_non_increasing_pts_still_give_a_playable_file(tmp_path: Path) -> None:
    path = tmp_path / "repeat.mp4"
    run_sink(fp.sinks.VideoFile(path), frames(6, pts=[0, 0.1, 0.1, 0.05, 0.3, 0.4]))
    times = decode(path).times
    assert len(times) == 6 and times == sorted(set(times))


def test_odd_sizes_are_padded_and_later_sizes_resized(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "odd.mp4"
    odd = frames(4, width=161, height=121)
    other = [make_frame(picture(i, 64, 48), index=4 + i) for i in range(3)]
    with caplog.at_level(logging.WARNING):
        run_sink(fp.sinks.VideoFile(path), odd + other, name="record")
    video = decode(path)
    assert len(video.images) == 7
    assert (video.width, video.height) == (162, 122)  # yuv420p needs even sizes
    assert "'record'" not in caplog.text and "resizing" in caplog.text
    # The padding repeats the last column: it looks like its neighbour, not black.
    last = video.images[0][:, -2:].astype(int)
    assert np.abs(last[:, 0] - last[:, 1]).mean() < 8


def test_other_codecs_and_containers(tmp_path: Path) -> None:
    for name, kwargs in [
        ("a.mkv", {"codec": "vp9"}),
        ("b.avi", {"codec": "mjpeg", "fps": 30}),
        ("c.mkv", {"codec": "ffv1", "pix_fmt": "bgr0"}),
    ]:
        run_sink(fp.sinks.VideoFile(tmp_path / name, **kwargs), frames(5))  # type: ignore[arg-type]
        assert len(decode(tmp_path / name).images) == 5, name
    # ffv1 in bgr0 is lossless: the pixels come back exactly.
    assert np.array_equal(decode(tmp_path / "c.mkv").images[3], picture(3))


def test_crash_safe_false_writes_a_plain_mp4_with_its_index_first(tmp_path: Path) -> None:
    run_sink(fp.sinks.VideoFile(tmp_path / "plain.mp4", crash_safe=False), frames(45))
    run_sink(fp.sinks.VideoFile(tmp_path / "safe.mp4"), frames(45))
    plain = (tmp_path / "plain.mp4").read_bytes()
    assert b"moof" not in plain and plain.index(b"moov") < plain.index(b"mdat")
    assert b"moof" in (tmp_path / "safe.mp4").read_bytes()  # 1.5 s: at least one fragment
    assert len(decode(tmp_path / "plain.mp4").images) == 45


def test_no_frames_leave_no_file(tmp_path: Path) -> None:
    run_sink(fp.sinks.VideoFile(tmp_path / "empty.mp4"), [])
    assert not (tmp_path / "empty.mp4").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"codec": "no-such-codec"}, r"'record': unknown video encoder 'no-such-codec'"),
        ({"codec": "aac"}, r"'record': codec 'aac' encodes audio, not video"),
        ({"pix_fmt": "rgb24"}, r"'record': encoder 'h264' does not take pix_fmt 'rgb24'"),
    ],
)
def test_bad_codec_options_fail_at_open(
    tmp_path: Path, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(fp.SinkError, match=message):
        run_sink(fp.sinks.VideoFile(tmp_path / "x.mp4", **kwargs), [], name="record")  # type: ignore[arg-type]
    assert not (tmp_path / "x.mp4").exists()


def test_bad_paths_fail_at_open(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(fp.SinkError, match=r"'record': cannot write the video file .*file/x.mp4"):
        run_sink(fp.sinks.VideoFile(blocker / "x.mp4"), [], name="record")
    with pytest.raises(fp.SinkError, match=r"'record': cannot tell the container format"):
        run_sink(fp.sinks.VideoFile(tmp_path / "x.unknown"), [], name="record")
    assert not (tmp_path / "x.unknown").exists()


def test_a_codec_the_container_cannot_hold_fails_at_the_first_frame(tmp_path: Path) -> None:
    with pytest.raises(fp.SinkError, match=r"'record': could not encode frame 0 .*png"):
        run_sink(fp.sinks.VideoFile(tmp_path / "x.mkv", codec="png"), frames(2), name="record")
    with pytest.raises(fp.SinkError, match=r"'record': unknown container format 'nope'"):
        run_sink(fp.sinks.VideoFile(tmp_path / "x.mp4", format="nope"), [], name="record")


def test_a_codec_that_needs_a_constant_rate_says_so(tmp_path: Path) -> None:
    with pytest.raises(fp.SinkError, match="pass fps="):
        run_sink(fp.sinks.VideoFile(tmp_path / "x.avi", codec="mpeg4"), frames(2))
    run_sink(fp.sinks.VideoFile(tmp_path / "y.avi", fps=25, codec="mpeg4"), frames(2))
    assert len(decode(tmp_path / "y.avi").images) == 2


def test_bad_arguments_fail_at_construction(tmp_path: Path) -> None:
    for fps in (0, -5, float("nan")):
        with pytest.raises(ValueError, match="fps must be"):
            fp.sinks.VideoFile(tmp_path / "x.mp4", fps=fps)


def test_is_a_picklable_description(tmp_path: Path) -> None:
    sink = pickle.loads(pickle.dumps(fp.sinks.VideoFile(tmp_path / "x.mp4", fps=15)))
    assert (sink.fps, sink.codec) == (15.0, "h264")
    assert not (tmp_path / "x.mp4").exists()


def test_a_writer_killed_with_sigkill_leaves_a_playable_file(tmp_path: Path) -> None:
    path = tmp_path / "killed.mp4"
    script = writer_script(
        "fp.sinks.VideoFile(sys.argv[1])",
        "make_frame(np.roll(ramp, 7 * index, axis=1), index=index)",
        setup="ramp = np.linspace(0, 250, 320).astype(np.uint8)[None, :, None]\n"
        "ramp = np.repeat(np.repeat(ramp, 240, axis=0), 3, axis=2)",
        ready_at=150,  # five seconds of video
    )
    with ready_process(script, str(path)) as writer:
        os.kill(writer.pid, signal.SIGKILL)
        assert writer.wait() == -signal.SIGKILL  # close() never ran
    video = decode(path)
    # All but the last second or two (the encoder's lookahead, the open fragment) survive.
    assert len(video.images) >= 90
    assert (video.width, video.height) == (320, 240)
    # Every frame, in order, at its pts (a fragmented file may start one frame late).
    steps = np.diff(video.times)
    assert steps == pytest.approx(np.full(len(steps), 1 / 30), abs=1e-3)


# -- through a pipeline ---------------------------------------------------------------------


def annotate(frame: fp.Frame) -> np.ndarray:
    canvas = frame.image.copy()
    canvas[10:60, 10:60] = (0, 0, 255)
    return canvas


def recording_pipeline(path: Path, frames: int | None) -> tuple[fp.Pipeline, fp.sinks.VideoFile]:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=320, height=240, fps=30, frames=frames))
    draw = pipe.stage("draw", annotate, after=cam)
    sink = fp.sinks.VideoFile(path)
    pipe.sink("record", sink, after=draw)
    return pipe, sink


def test_records_a_pipeline_under_every_executor(tmp_path: Path, executor: str) -> None:
    path = tmp_path / "out.mp4"
    pipe, sink = recording_pipeline(path, frames=60)
    pipe.run(mode="offline", executor=executor)
    video = decode(path)
    assert len(video.images) == 60 == sink.frames
    assert video.duration == pytest.approx(2.0, abs=0.05)
    assert np.abs(video.images[30][35, 35].astype(int) - (0, 0, 255)).max() < 30  # annotated


def test_a_stopped_run_leaves_a_finished_file(tmp_path: Path, executor: str) -> None:
    path = tmp_path / "live.mp4"
    pipe, sink = recording_pipeline(path, frames=None)
    pipe.run(mode="realtime", executor=executor, duration=1.0)
    with av.open(str(path)) as container:
        indexed = container.streams.video[0].frames  # written by close(): the file is final
    video = decode(path)
    assert 5 <= len(video.images) == indexed == sink.frames
    assert video.times == sorted(video.times)


RUNNER = textwrap.dedent(
    """
    import sys
    import framepipe as fp

    def annotate(frame):
        return frame.image.copy()

    def tick(frame):  # runs while the main thread waits in run(), where SIGTERM is handled
        if frame.index == 20:
            print("ready", flush=True)

    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=320, height=240, fps=30))
    pipe.stage("draw", annotate, after=cam)
    pipe.sink("record", fp.sinks.VideoFile(sys.argv[1]), after="draw")
    pipe.sink("tick", fp.sinks.Callback(tick), after=cam)
    pipe.run(mode="realtime", executor="threads")
    """
)


def test_sigterm_stops_the_run_and_finalizes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "terminated.mp4"
    with ready_process(RUNNER, str(path)) as runner:
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(30) == 128 + signal.SIGTERM  # handled: the run stopped, then exited
    with av.open(str(path)) as container:
        indexed = container.streams.video[0].frames  # written by close(): the file is final
    # "ready" came at the 20th frame of another branch: the recording has about as many (the
    # exact count depends on the machine's load); every one of them is in the final file.
    assert indexed >= 10 and len(decode(path).images) == indexed
