"""Stream against real servers on 127.0.0.1: RTSP (GStreamer), MJPEG over HTTP, HLS, RTMP."""

from __future__ import annotations

import itertools
import pickle
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from clip_fixtures import (
    Clip,
    MjpegServer,
    RtspServer,
    SourceRun,
    free_port,
    read_index,
    record_source,
    strictly_rising,
)
from framepipe import SourceError
from framepipe.sources import Stream, probe
from framepipe.sources._stream import Backoff, Timeline

FAST = {"backoff": (0.1, 0.5)}


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and then never says a word."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


# --- failing fast --------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/live", "srt://127.0.0.1:9000", "camera0"])
def test_unknown_scheme_fails_at_once(url: str) -> None:
    began = time.monotonic()
    with pytest.raises(SourceError, match="'door': unsupported URL"):
        record_source(Stream(url), name="door")
    assert time.monotonic() - began < 1.0


def test_refused_port_without_reconnect_fails_fast() -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/live"
    began = time.monotonic()
    with pytest.raises(SourceError, match=r"'door': cannot open .*: connection refused"):
        record_source(Stream(url, reconnect=False), name="door")
    assert time.monotonic() - began < 5.0


def test_passwords_never_show(caplog: pytest.LogCaptureFixture) -> None:
    url = f"rtsp://admin:hunter2@127.0.0.1:{free_port()}/live"
    run = record_source(Stream(url, max_retries=1, **FAST), name="door", catch=True)
    assert run.error is not None and "admin:***@127.0.0.1" in str(run.error)
    assert "hunter2" not in str(run.error) and "hunter2" not in caplog.text
    assert "hunter2" not in str(Stream(url).describe())


def test_http_not_found(tmp_path: Path, serve_directory: Callable[[Path], str]) -> None:
    url = f"{serve_directory(tmp_path)}/missing.m3u8"
    with pytest.raises(SourceError, match=r"'door': cannot open .*404"):
        record_source(Stream(url, reconnect=False), name="door")


def test_silent_server_times_out(silent_port: int) -> None:
    url = f"http://127.0.0.1:{silent_port}/video.mjpg"
    began = time.monotonic()
    with pytest.raises(SourceError, match="no answer within 1 s"):
        record_source(Stream(url, reconnect=False, open_timeout=1.0), name="door")
    assert time.monotonic() - began < 5.0


def test_refused_port_with_reconnect_retries_with_states_then_gives_up() -> None:
    url = f"http://127.0.0.1:{free_port()}/video.mjpg"
    began = time.monotonic()
    run = record_source(Stream(url, max_retries=2, **FAST), name="door", catch=True)
    assert time.monotonic() - began < 10.0
    assert run.error is not None and run.error.node == "door"
    assert "gave up on" in str(run.error) and "after 3 failed attempts" in str(run.error)
    assert "connection refused" in str(run.error)
    assert run.reconnects == 2
    assert run.states == ["connecting", "reconnecting", "failed"]


def test_stop_during_backoff_returns_quickly() -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/live"
    began = time.monotonic()
    run = record_source(Stream(url, backoff=(30.0, 60.0)), stop_after=0.5)
    assert time.monotonic() - began < 2.5
    assert run.pts == [] and "reconnecting" in run.states


# --- RTSP --------------------------------------------------------------------------------------


def test_rtsp_frames_in_order(rtsp_server: RtspServer) -> None:
    run = record_source(Stream(rtsp_server.url), limit=45)
    assert len(run.images) == 45
    assert run.images[0].shape == (240, 320, 3) and run.images[0].dtype == np.uint8
    assert strictly_rising(run.pts)
    # 45 frames of a 30 fps stream span about 1.5 s of stream time.
    assert 1.0 < run.pts[-1] - run.pts[0] < 2.5
    assert run.states == ["connecting", "connected"]


def test_rtsp_reconnects_after_the_server_restarts(rtsp_server: RtspServer) -> None:
    restarted_at: list[int] = []

    def on_frame(run: SourceRun, image: np.ndarray, pts: float) -> bool:
        if len(run.pts) == 15:
            rtsp_server.stop()  # the stream drops mid-run...
            rtsp_server.start()  # ...and the camera comes back on the same address
            restarted_at.append(len(run.pts))
        return len(run.pts) >= 45

    run = record_source(Stream(rtsp_server.url, **FAST), keep=False, on_frame=on_frame)
    assert len(run.pts) == 45, "frames resume after the restart"
    assert run.reconnects >= 1
    assert run.states[:2] == ["connecting", "connected"]
    assert "reconnecting" in run.states and run.states[-1] == "connected"
    assert strictly_rising(run.pts)


def test_rtsp_stalled_server_counts_as_lost(rtsp_server: RtspServer) -> None:
    """A frozen server keeps the socket open but sends nothing: read_timeout notices."""

    def on_frame(run: SourceRun, image: np.ndarray, pts: float) -> bool:
        if len(run.pts) == 10:
            rtsp_server.pause()
        return len(run.pts) >= 20

    def on_state(run: SourceRun, state: str) -> None:
        if state == "reconnecting":
            rtsp_server.resume()

    source = Stream(rtsp_server.url, read_timeout=1.0, open_timeout=3.0, **FAST)
    # Real time: no frames buffered ahead, so the stall shows at once.
    run = record_source(source, mode="realtime", keep=False, on_frame=on_frame, on_state=on_state)
    assert len(run.pts) == 20
    assert run.reconnects >= 1
    assert run.states[-2:] == ["reconnecting", "connected"]
    gap = max(np.diff(run.pts))
    assert 1.0 <= gap < 10.0, "the outage shows as a gap in pts"


def test_stop_while_blocked_in_a_read(rtsp_server: RtspServer) -> None:
    asked: list[float] = []

    def stop_soon(run: SourceRun) -> None:
        asked.append(time.monotonic())
        run.stop()

    def on_frame(run: SourceRun, image: np.ndarray, pts: float) -> bool:
        if len(run.pts) == 5:
            rtsp_server.pause()  # the reader now blocks in a network read for up to 30 s
            threading.Timer(0.5, stop_soon, args=(run,)).start()
        return False

    source = Stream(rtsp_server.url, read_timeout=30.0)
    run = record_source(source, mode="realtime", keep=False, on_frame=on_frame)
    assert asked and time.monotonic() - asked[0] < 2.0
    assert len(run.pts) >= 5


def test_rtsp_realtime_keeps_only_the_newest_frame(rtsp_server: RtspServer) -> None:
    def slow_consumer(run: SourceRun, image: np.ndarray, pts: float) -> bool:
        time.sleep(0.15)  # a stage slower than the 30 fps camera
        return len(run.pts) >= 12

    run = record_source(
        Stream(rtsp_server.url), mode="realtime", keep=False, on_frame=slow_consumer
    )
    assert run.dropped >= 12, "frames decoded while the consumer was busy are dropped"
    gaps = np.diff(run.pts[2:])
    assert np.median(gaps) > 0.1, "each frame handed out is the newest, not the next in line"


def test_probe_a_stream(rtsp_server: RtspServer) -> None:
    info = probe(rtsp_server.url, timeout=5.0)
    assert info["reachable"] is True and info["live"] is True
    assert (info["codec"], info["width"], info["height"]) == ("h264", 320, 240)


def test_probe_unreachable() -> None:
    with pytest.raises(SourceError, match=r"'probe': cannot open .*connection refused"):
        probe(f"rtsp://127.0.0.1:{free_port()}/live", timeout=2.0)


# --- MJPEG over HTTP ---------------------------------------------------------------------------


def test_mjpeg_offline_yields_every_frame_in_order() -> None:
    # A counted stream: the live one skips frames itself when this machine is busy.
    server = MjpegServer(frames=100)
    server.start()
    try:
        run = record_source(Stream(server.url), limit=40)
    finally:
        server.stop()
    indices = [read_index(image) for image in run.images]
    assert indices == list(range(40))
    assert strictly_rising(run.pts)
    # No timestamps in MJPEG: pts follow the wall clock, 1/30 s apart on average.
    assert (run.pts[-1] - run.pts[0]) / 39 == pytest.approx(1 / 30, rel=0.5)


def test_mjpeg_realtime_latency_stays_bounded(mjpeg_server: MjpegServer) -> None:
    lags: list[int] = []

    def slow_consumer(run: SourceRun, image: np.ndarray, pts: float) -> bool:
        lags.append(mjpeg_server.latest - read_index(image))
        time.sleep(0.2)  # six frame periods of work per frame
        return len(run.pts) >= 12

    run = record_source(
        Stream(mjpeg_server.url), mode="realtime", keep=False, on_frame=slow_consumer
    )
    # Behind a slow consumer an in-order reader would fall ~6 frames further behind
    # on every frame (~60 after 12); the newest-frame hand-off stays a few frames fresh.
    assert np.median(lags[2:]) <= 2 and max(lags[2:]) <= 10, lags
    assert run.dropped >= 30


def test_mjpeg_reconnects_when_the_camera_comes_back(mjpeg_server: MjpegServer) -> None:
    def on_frame(run: SourceRun, image: np.ndarray, pts: float) -> bool:
        if len(run.pts) == 10:
            mjpeg_server.stop()
            mjpeg_server.start()
        return len(run.pts) >= 25

    run = record_source(Stream(mjpeg_server.url, **FAST), on_frame=on_frame)
    assert len(run.pts) == 25
    assert run.reconnects >= 1 and mjpeg_server.requests >= 2
    assert "reconnecting" in run.states and run.states[-1] == "connected"
    assert strictly_rising(run.pts)


def test_mjpeg_without_reconnect_fails_when_the_server_hangs_up() -> None:
    server = MjpegServer(frames=20)  # a camera that closes the connection after 20 frames
    server.start()
    try:
        run = record_source(Stream(server.url, reconnect=False), name="door", catch=True)
    finally:
        server.stop()
    # Offline mode keeps the frames read while the stream was analysed: none is missed.
    assert [read_index(image) for image in run.images] == list(range(20))
    assert run.error is not None and "'door': lost http://" in str(run.error)
    assert "after 20 frames" in str(run.error)
    assert run.states == ["connecting", "connected", "failed"]


# --- HLS and RTMP ------------------------------------------------------------------------------


@pytest.fixture
def hls_playlist(
    clip_dir: dict[str, Clip], tmp_path: Path, serve_directory: Callable[[Path], str]
) -> str:
    """``long.mp4`` cut into a 1-second-segment VOD HLS playlist, served over HTTP."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg not on PATH")
    subprocess.run(
        [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(clip_dir["long.mp4"]),
            "-c",
            "copy",
            "-f",
            "hls",
            "-hls_time",
            "1",
            "-hls_playlist_type",
            "vod",
            str(tmp_path / "index.m3u8"),
        ],
        check=True,
        timeout=60,
    )
    return f"{serve_directory(tmp_path)}/index.m3u8"


def test_hls_recording_plays_to_its_end(hls_playlist: str) -> None:
    run = record_source(Stream(hls_playlist))
    assert [read_index(image) for image in run.images] == list(range(300))
    assert run.states == ["connecting", "connected", "ended"]
    assert run.pts[-1] - run.pts[0] == pytest.approx(299 / 30, abs=0.05)


def test_rtmp(rtmp_server: str) -> None:
    run = record_source(Stream(rtmp_server, open_timeout=10.0), limit=30)
    indices = [read_index(image) for image in run.images]
    assert len(indices) == 30 and np.all(np.diff(indices) == 1)


# --- pieces ------------------------------------------------------------------------------------


def test_timeline_prefers_stream_time_and_falls_back_to_the_wall_clock() -> None:
    timeline = Timeline()
    assert timeline.pts(100.0) == pytest.approx(0.0, abs=0.01)
    assert timeline.pts(100.5) == pytest.approx(0.5, abs=0.01)  # stream time, not wall time
    backwards = timeline.pts(50.0)  # a stream clock reset: re-anchored, still rising
    assert 0.5 < backwards < 1.0
    jump = timeline.pts(5000.0)  # a jump: re-anchored
    assert backwards < jump < 1.0
    assert timeline.pts(None) > jump  # no timestamp: the wall clock, still rising
    timeline.reconnected()
    assert timeline.pts(0.0) > jump


def test_backoff_grows_caps_and_jitters() -> None:
    backoff = Backoff(0.5, 4.0, jitter=0.2)
    for attempt, base in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0)]:
        delays = [backoff.delay(attempt) for _ in range(50)]
        assert all(0.8 * base <= delay <= 1.2 * base for delay in delays)
        assert len(set(delays)) > 1
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)


def test_options_and_pickling() -> None:
    with pytest.raises(ValueError, match="timeouts"):
        Stream("rtsp://127.0.0.1/live", read_timeout=0)
    stream = pickle.loads(pickle.dumps(Stream("rtsp://127.0.0.1/x", options={"a": "b"})))
    assert stream.describe() == {"type": "Stream", "url": "rtsp://127.0.0.1/x", "reconnect": True}
    assert stream.live is True and stream.options == {"a": "b"}


# --- through a pipeline ------------------------------------------------------------------------


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_mjpeg_stream_through_a_pipeline_survives_a_restart(
    mjpeg_server: MjpegServer, executor: str
) -> None:
    import framepipe as fp

    pipe = fp.Pipeline()
    cam = pipe.source("cam", Stream(mjpeg_server.url, **FAST))
    seen = pipe.stage("seen", lambda frame: read_index(frame.image), after=cam)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=seen)
    with pipe.start(mode="realtime", executor=executor) as run:
        _wait_for(lambda: pipe.stats()["cam"].processed >= 10)
        mjpeg_server.stop()
        mjpeg_server.start()
        _wait_for(lambda: pipe.stats()["cam"].reconnects >= 1)
        before = pipe.stats()["cam"].processed
        _wait_for(lambda: pipe.stats()["cam"].processed >= before + 10)
        run.stop()
    stats = run.stats["cam"]
    assert stats.reconnects >= 1
    indices = [collect.results["seen"][key] for key in sorted(collect.results["seen"])]
    # The restarted camera counts from 0 again: two rising runs, before and after.
    restarts = sum(1 for a, b in itertools.pairwise(indices) if b <= a)
    assert len(indices) >= 20 and restarts == 1


def test_rtsp_stream_through_a_pipeline(rtsp_server: RtspServer) -> None:
    import framepipe as fp

    pipe = fp.Pipeline()
    cam = pipe.source("cam", Stream(rtsp_server.url))
    shape = pipe.stage("shape", lambda frame: frame.image.shape, after=cam, fps=10)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=shape)
    run = pipe.run(mode="realtime", executor="threads", duration=3.0)
    shapes = set(collect.results["shape"].values())
    assert shapes == {(240, 320, 3)}
    assert 5 <= len(collect.results["shape"]) <= 35
    assert run.stats["cam"].processed >= 20
