"""VideoFile and probe() on real media (../shared/media) and on clips made here with PyAV."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import stat
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pytest

from clip_fixtures import (
    Clip,
    make_clip,
    patch_colors,
    read_index,
    record_source,
    strictly_rising,
    vfr_times,
)
from framepipe import SourceError
from framepipe.sources import SourceContext, VideoFile, probe
from framepipe.sources._video import frame_to_bgr
from framepipe.testing import run_source

#: Frame counts documented in ../shared/media/README.md.
MEDIA_FRAMES = {
    "slow_traffic_small.mp4": 914,
    "car-detection.mp4": 377,
    "bottle-detection.mp4": 1189,
    "one-by-one-person-detection.mp4": 1394,
    "face-demographics-walking-and-pause.gif": 41,
    "head-pose-face-detection-female-and-male.gif": 56,
    "asl_gestures_book.mkv": 109,
}


def fails_fast(source: VideoFile, name: str = "cam") -> SourceError:
    """Open ``source``, expect a SourceError naming the node, within a generous bound."""
    began = time.monotonic()
    with pytest.raises(SourceError) as caught:
        run_source(source, name=name, limit=5)
    assert time.monotonic() - began < 5.0
    assert f"'{name}'" in str(caught.value)
    assert caught.value.node == name
    return caught.value


# --- real media --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MEDIA_FRAMES))
def test_decodes_the_documented_frame_count(media_video, name: str) -> None:
    run = record_source(VideoFile(media_video(name)), keep=False)
    assert len(run.pts) == MEDIA_FRAMES[name]
    assert run.pts[0] == pytest.approx(0.0, abs=1e-6)
    assert strictly_rising(run.pts)


def test_real_frames_are_bgr_images(media_video) -> None:
    frames = run_source(VideoFile(media_video("slow_traffic_small.mp4")), limit=3)
    image, _ = frames[0]
    assert image.shape == (360, 640, 3) and image.dtype == np.uint8
    # Same pixels as FFmpeg's own converter (OpenCV's fast path within rounding).
    with av.open(os.fspath(media_video("slow_traffic_small.mp4"))) as container:
        reference = next(container.decode(video=0)).to_ndarray(format="bgr24")
    assert np.abs(image.astype(int) - reference.astype(int)).mean() < 2.0


def test_header_facts_before_a_run(media_video) -> None:
    traffic = VideoFile(media_video("slow_traffic_small.mp4"))
    assert traffic.fps == pytest.approx(29.97, abs=0.01)
    assert traffic.frames == 914
    assert (traffic.width, traffic.height) == (640, 360)
    assert traffic.duration == pytest.approx(30.5, abs=0.05)
    # Matroska without a frame count in its header: unknown, not a guess.
    webcam = VideoFile(media_video("asl_gestures_book.mkv"))
    assert webcam.frames is None
    assert webcam.fps == pytest.approx(30.0)
    assert webcam.describe()["frames"] is None
    assert probe(media_video("asl_gestures_book.mkv"), count_frames=True)["frames"] == 109


def test_start_seeks_into_real_media(media_video) -> None:
    path = media_video("slow_traffic_small.mp4")
    run = record_source(VideoFile(path), start=10.0, keep=False)
    period = 1001 / 30000
    assert 10.0 <= run.pts[0] < 10.0 + period
    assert len(run.pts) == 914 - round(run.pts[0] / period)


def test_gif_and_mkv_timestamps(media_video) -> None:
    gif = record_source(
        VideoFile(media_video("face-demographics-walking-and-pause.gif")), keep=False
    )
    assert gif.pts[:3] == pytest.approx([0.0, 0.08, 0.17])
    mkv = record_source(VideoFile(media_video("asl_gestures_book.mkv")), keep=False)
    # The file starts at 33 ms; pts count from the start of the file.
    assert mkv.pts[:2] == pytest.approx([0.0, 0.0333], abs=1e-3)


def test_probe_real_media(media_video) -> None:
    info = probe(media_video("car-detection.mp4"))
    assert info["codec"] == "h264"
    assert (info["width"], info["height"], info["frames"]) == (768, 432, 377)
    assert info["fps"] == pytest.approx(12.5)
    assert info["audio"] and info["audio"][0]["codec"] == "aac"
    assert info["reachable"] is True and info["live"] is False


# --- generated clips ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["h264.mp4", "h264.mkv", "vp8.webm", "vp9.webm", "mpeg4.avi", "h264.mov", "anim.gif"]
)
def test_every_container_decodes_in_order_with_true_pts(
    clip_dir: dict[str, Clip], name: str
) -> None:
    clip = clip_dir[name]
    frames = run_source(VideoFile(clip))
    assert [read_index(image) for image, _ in frames] == list(range(clip.frames))
    assert [pts for _, pts in frames] == pytest.approx(list(clip.times), abs=2e-3)
    width, height = clip.size
    assert frames[0][0].shape == (height, width, 3)
    red, blue = patch_colors(frames[0][0])
    assert red[2] > 200 and red[0] < 40, "bottom-left patch should be red in BGR order"
    assert blue[0] > 200 and blue[2] < 40, "bottom-right patch should be blue in BGR order"


def test_audio_track_is_skipped(clip_dir: dict[str, Clip]) -> None:
    clip = clip_dir["audio.mp4"]
    assert probe(clip)["audio"], "the clip should really have an audio track"
    frames = run_source(VideoFile(clip))
    assert [read_index(image) for image, _ in frames] == list(range(clip.frames))


def test_variable_frame_rate_keeps_true_timestamps(clip_dir: dict[str, Clip]) -> None:
    clip = clip_dir["vfr.mkv"]
    run = record_source(VideoFile(clip), keep=False)
    assert run.pts == pytest.approx(list(vfr_times(clip.frames, clip.fps)), abs=1e-3)
    gaps = {round(b - a, 3) for a, b in zip(run.pts, run.pts[1:], strict=False)}
    assert len(gaps) == 3


def test_frames_without_timestamps_get_one_period_each(
    tmp_path: Path, clip_dir: dict[str, Clip]
) -> None:
    raw = tmp_path / "dump.h264"  # a raw H.264 elementary stream: no timestamps at all
    with av.open(str(clip_dir["h264.mp4"])) as source, av.open(str(raw), "w", format="h264") as out:
        video = source.streams.video[0]
        copy = out.add_stream_from_template(video)
        for packet in source.demux(video):
            if packet.dts is not None:
                packet.stream = copy
                out.mux(packet)
    with av.open(str(raw)) as container:
        assert next(container.decode(video=0)).pts is None
    frames = run_source(VideoFile(raw))
    assert [read_index(image) for image, _ in frames] == list(range(60))
    fps = VideoFile(raw).fps
    assert fps
    assert [pts for _, pts in frames] == pytest.approx([i / fps for i in range(60)])


@pytest.mark.parametrize("start, first", [(5.0, 150), (4.5, 135), (0.01, 1)])
def test_start_seeks_to_the_first_frame_at_or_after_it(
    clip_dir: dict[str, Clip], start: float, first: int
) -> None:
    clip = clip_dir["long.mp4"]  # a keyframe every 30 frames
    frames = run_source(VideoFile(clip), start=start)
    assert read_index(frames[0][0]) == first
    assert frames[0][1] == pytest.approx(first / 30)
    assert len(frames) == clip.frames - first


def test_start_past_the_end_yields_nothing(
    clip_dir: dict[str, Clip], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert run_source(VideoFile(clip_dir["h264.mp4"]), start=60.0) == []
    assert "past the end" in caplog.text


def test_start_in_a_gif(clip_dir: dict[str, Clip]) -> None:
    frames = run_source(VideoFile(clip_dir["anim.gif"]), start=0.5)
    assert read_index(frames[0][0]) == 10
    assert frames[0][1] == pytest.approx(0.5)


def test_loop_restarts_with_rising_pts(clip_dir: dict[str, Clip]) -> None:
    clip = clip_dir["h264.mp4"]
    frames = run_source(VideoFile(clip, loop=True), limit=150)
    indices = [read_index(image) for image, _ in frames]
    assert indices == list(range(60)) * 2 + list(range(30))
    pts = [pts for _, pts in frames]
    assert strictly_rising(pts)
    assert pts[60] - pts[59] == pytest.approx(1 / 30)
    assert pts[120] == pytest.approx(4.0)


def test_loop_after_a_start_plays_the_whole_file_next(clip_dir: dict[str, Clip]) -> None:
    frames = run_source(VideoFile(clip_dir["h264.mp4"], loop=True), start=1.0, limit=40)
    indices = [read_index(image) for image, _ in frames]
    assert indices == list(range(30, 60)) + list(range(10))


def test_stops_when_asked(clip_dir: dict[str, Clip]) -> None:
    began = time.monotonic()
    frames = run_source(VideoFile(clip_dir["h264.mp4"], loop=True), stop_after=0.3)
    assert time.monotonic() - began < 2.0
    assert frames


def test_decodes_into_the_context_buffer(clip_dir: dict[str, Clip]) -> None:
    """BT.601 H.264 is converted straight into ctx.buffer: the worker yields that very array."""
    handed_out: list[np.ndarray] = []

    def allocate(shape: tuple[int, ...]) -> np.ndarray:
        handed_out.append(np.zeros(shape, np.uint8))
        return handed_out[-1]

    ctx = SourceContext("cam", allocate=allocate)
    images = [image for image, _ in VideoFile(clip_dir["h264.mp4"]).open(ctx)]
    assert len(images) == 60
    assert all(image is buffer for image, buffer in zip(images, handed_out, strict=True))


def test_full_range_video_uses_ffmpeg_conversion(media_video) -> None:
    with av.open(os.fspath(media_video("asl_gestures_book.mkv"))) as container:
        frame = next(container.decode(video=0))
        assert frame.format.name == "yuvj420p"
        image = frame_to_bgr(frame, SourceContext("cam"))
        assert np.array_equal(image, frame.to_ndarray(format="bgr24"))


def test_is_picklable_before_and_after_probing(clip_dir: dict[str, Clip]) -> None:
    source = VideoFile(clip_dir["h264.mp4"], loop=True)
    assert pickle.loads(pickle.dumps(source)).loop is True
    assert source.frames == 60
    copy = pickle.loads(pickle.dumps(source))
    assert copy.frames == 60 and copy.fps == 30.0


# --- bad input ---------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    error = fails_fast(VideoFile(tmp_path / "nope.mp4"))
    assert "file not found" in str(error) and "nope.mp4" in str(error)


def test_a_directory(tmp_path: Path) -> None:
    assert "is a directory" in str(fails_fast(VideoFile(tmp_path)))


def test_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("these are not the frames you are looking for\n" * 200)
    assert "invalid data" in str(fails_fast(VideoFile(path)))


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mkv"
    path.write_bytes(b"")
    fails_fast(VideoFile(path))


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w") as out:
        sound = out.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 48000
        frame.pts = 0
        out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    assert "has no video stream" in str(fails_fast(VideoFile(path)))


def test_truncated_mp4_without_its_index(tmp_path: Path, clip_dir: dict[str, Clip]) -> None:
    # A plain MP4 keeps its index (moov) at the end: a cut copy cannot be opened at all.
    source = Path(clip_dir["long.mp4"])
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    assert "cut.mp4" in str(fails_fast(VideoFile(cut)))


@pytest.mark.parametrize(
    "name, make",
    [
        ("faststart.mp4", {"faststart": True}),
        ("cut.mkv", {}),
    ],
)
def test_file_cut_part_way_keeps_what_decodes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, make: dict[str, bool]
) -> None:
    clip = make_clip(tmp_path, name, frames=300, gop=30, **make)
    data = clip.path.read_bytes()
    clip.path.write_bytes(data[: len(data) * 6 // 10])
    with caplog.at_level(logging.WARNING):
        frames = run_source(VideoFile(clip), name="cam")
    indices = [read_index(image) for image, _ in frames]
    assert 100 < len(indices) < 300
    assert indices == list(range(len(indices)))
    if name.endswith(".mp4"):  # the header listed 300 frames
        assert "truncated" in caplog.text


def test_corrupt_bytes_in_the_middle_are_skipped(tmp_path: Path) -> None:
    clip = make_clip(tmp_path, "damaged.mkv", frames=300, gop=30)
    data = bytearray(clip.path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = os.urandom(2000)
    clip.path.write_bytes(bytes(data))
    frames = run_source(VideoFile(clip))
    indices = [read_index(image) for image, _ in frames]
    # Frames on both sides of the damage come through; a few around it may be lost.
    assert len(indices) > 200
    assert indices[0] == 0 and indices[-1] == 299


def test_permission_denied(clip_dir: dict[str, Clip]) -> None:
    folder = Path(tempfile.mkdtemp())
    try:
        folder.chmod(0o755)  # others may enter the folder, but not read the file
        locked = folder / "locked.mp4"
        shutil.copy(clip_dir["h264.mp4"], locked)
        locked.chmod(0)
        message = _error_without_root(locked)
    finally:
        shutil.rmtree(folder)
    assert message.startswith("SourceError:"), message
    assert "permission denied" in message and "'cam'" in message


def _error_without_root(path: Path) -> str:
    """Open ``path`` with VideoFile as an unprivileged user; return ``"Type:message"``.

    Root reads any file, so as root the attempt runs in a forked child that
    drops to ``nobody`` first.
    """

    def attempt() -> str:
        try:
            run_source(VideoFile(path), name="cam", limit=1)
        except Exception as exc:
            return f"{type(exc).__name__}:{exc}"
        return "no error"

    if os.geteuid() != 0:
        return attempt()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, try, report, leave without cleanup
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, attempt().encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, message
    return message


def test_header_facts_of_a_missing_file(tmp_path: Path) -> None:
    source = VideoFile(tmp_path / "gone.mp4")
    assert "file not found" in source.describe()["error"]
    with pytest.raises(SourceError, match="file not found"):
        _ = source.fps


def test_probe_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"'info': cannot open .*: file not found"):
        probe(tmp_path / "nothing.mp4", name="info")
    with pytest.raises(SourceError, match="unsupported URL scheme 'ftp'"):
        probe("ftp://127.0.0.1/clip.mp4")
    text = tmp_path / "text.avi"
    text.write_text("hello")
    with pytest.raises(SourceError, match="invalid data"):
        probe(text)


def test_probe_without_read_permission_as_owner(tmp_path: Path, clip_dir: dict[str, Clip]) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file; test_permission_denied covers this as 'nobody'")
    locked = tmp_path / "locked.mp4"
    shutil.copy(clip_dir["h264.mp4"], locked)
    locked.chmod(stat.S_IWUSR)
    with pytest.raises(SourceError, match="permission denied"):
        probe(locked)


# --- through a pipeline ------------------------------------------------------------------------


def test_video_file_through_a_pipeline(clip_dir: dict[str, Clip], executor: str) -> None:
    import framepipe as fp

    clip = clip_dir["h264.mp4"]
    pipe = fp.Pipeline()
    cam = pipe.source("cam", VideoFile(clip))
    seen = pipe.stage("seen", lambda frame: (read_index(frame.image), frame.pts), after=cam)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=seen)
    run = pipe.run(mode="offline", executor=executor)
    results = collect.results["seen"]
    assert sorted(results) == list(range(clip.frames))
    assert [results[i][0] for i in range(clip.frames)] == list(range(clip.frames))
    assert [results[i][1] for i in range(clip.frames)] == pytest.approx(list(clip.times))
    assert run.stats["cam"].processed == clip.frames
    assert run.stats["cam"].state == "ended"
