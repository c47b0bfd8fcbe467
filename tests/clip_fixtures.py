"""Test media made on the spot, and real video servers on 127.0.0.1 (a pytest plugin).

Registered in ``conftest.py`` (``pytest_plugins``), so any test module can use:

Functions (import them: ``from clip_fixtures import make_clip, read_index``):

- ``make_clip(directory, "clip.mp4", frames=60, fps=30, size=(320, 240), ...)``
  writes a small clip with PyAV (H.264 MP4/MKV/MOV, MPEG-4 AVI, VP8/VP9 WebM,
  GIF; optional audio track; optional variable frame rate) and returns a
  ``Clip`` (usable as a path) that knows its frame count and timestamps.
- ``draw_frame(index, size)`` / ``read_index(image)``: every generated frame
  carries its index as a 16-bit block code that survives lossy codecs, so a
  test can tell which frame it got. A red patch sits bottom-left and a blue
  patch bottom-right, to check BGR channel order.
- ``record_source(source, mode=..., on_frame=...)``: drive a source like a
  worker does, keeping the states, reconnects and drops its context saw.
- ``strictly_rising(pts)``, ``free_port()``, ``wait_listening(port)``.

Fixtures:

- ``clip_dir``: a session-wide folder of standard clips (see ``CLIPS``).
- ``rtsp_server``: a GStreamer RTSP server (gst-rtsp-server) in a child
  process, streaming live H.264; ``stop()``, ``start()`` (same port),
  ``pause()``/``resume()`` (freeze it, to simulate a stalled camera).
  Skips when GStreamer's RTSP server is not installed.
- ``mjpeg_server``: multipart MJPEG over HTTP, like an IP camera, in a thread;
  frames carry their index, ``latest`` is the newest index sent.
- ``serve_directory``: ``serve_directory(path) -> base URL`` over HTTP (HLS).
- ``rtmp_server``: ``ffmpeg -listen 1`` serving a clip over RTMP to one client.

Every server listens on 127.0.0.1 only and is stopped at teardown.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import itertools
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from framepipe import SourceError
from framepipe.sources import Source, SourceContext

# ---------------------------------------------------------------------------
# Frames that say which frame they are

_BITS = 16
_COLUMNS = 8


def _block(size: tuple[int, int]) -> int:
    width, height = size
    return max(8, min(width // _COLUMNS, height // 5))


def draw_frame(index: int, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """A BGR test frame showing ``index`` (mod 65536) as two rows of black/white blocks.

    Below the code: a colour gradient that moves with the index (so codecs see
    motion), a pure red patch bottom-left and a pure blue patch bottom-right.
    """
    width, height = size
    if width < 64 or height < 48:
        raise ValueError(f"test frames need at least 64x48 pixels, got {width}x{height}")
    x = np.arange(width, dtype=np.int32)[None, :]
    y = np.arange(height, dtype=np.int32)[:, None]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (x * 2 + index * 3) % 256
    image[..., 1] = (y * 2 + index * 5) % 256
    image[..., 2] = 128
    block = _block(size)
    image[: 2 * block, : _COLUMNS * block] = 0
    for bit in range(_BITS):
        if (index >> bit) & 1:
            row, column = divmod(bit, _COLUMNS)
            image[row * block : (row + 1) * block, column * block : (column + 1) * block] = 255
    patch = block
    image[height - patch :, :patch] = (0, 0, 255)
    image[height - patch :, width - patch :] = (255, 0, 0)
    return image


def read_index(image: np.ndarray) -> int:
    """The index ``draw_frame`` wrote into ``image`` (after any lossy round trip)."""
    height, width = image.shape[:2]
    block = _block((width, height))
    index = 0
    margin = block // 4
    for bit in range(_BITS):
        row, column = divmod(bit, _COLUMNS)
        cell = image[
            row * block + margin : (row + 1) * block - margin,
            column * block + margin : (column + 1) * block - margin,
        ]
        if float(cell.mean()) > 128:
            index |= 1 << bit
    return index


def patch_colors(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean BGR of the bottom-left (red) and bottom-right (blue) patches."""
    height, width = image.shape[:2]
    block = _block((width, height))
    inner = block // 4
    left = image[height - block + inner : height - inner, inner : block - inner]
    right = image[height - block + inner : height - inner, width - block + inner : width - inner]
    return left.reshape(-1, 3).mean(axis=0), right.reshape(-1, 3).mean(axis=0)


# ---------------------------------------------------------------------------
# Clips


@dataclass(frozen=True)
class Clip:
    """A generated clip; usable wherever a path is (``os.fspath(clip)``)."""

    path: Path
    frames: int
    fps: float
    size: tuple[int, int]
    codec: str
    #: The presentation time of each frame in seconds, as written.
    times: tuple[float, ...] = field(repr=False)
    has_audio: bool = False

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


_DEFAULT_CODECS = {
    ".mp4": "libx264",
    ".mkv": "libx264",
    ".mov": "libx264",
    ".ts": "libx264",
    ".avi": "mpeg4",
    ".webm": "libvpx-vp9",
    ".gif": "gif",
}
_AUDIO_CODECS = {
    ".webm": "libopus",
    ".mkv": "aac",
    ".mp4": "aac",
    ".mov": "aac",
    ".ts": "aac",
    ".avi": "aac",
}
_ENCODER_OPTIONS = {
    "libx264": {"preset": "ultrafast"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
}


def vfr_times(frames: int, fps: float) -> tuple[float, ...]:
    """Variable-rate timestamps: frame gaps cycle through 1, 2 and 3 periods of ``fps``."""
    times, t = [], 0
    for index in range(frames):
        times.append(t)
        t += (index % 3) + 1
    return tuple(value / fps for value in times)


def make_clip(
    directory: str | os.PathLike[str],
    name: str = "clip.mp4",
    *,
    frames: int = 60,
    fps: float = 30,
    size: tuple[int, int] = (320, 240),
    codec: str | None = None,
    audio: bool = False,
    vfr: bool = False,
    gop: int | None = None,
    faststart: bool = False,
) -> Clip:
    """Write ``frames`` frames of ``draw_frame`` into ``directory/name`` with PyAV.

    The container comes from the name's suffix (.mp4 .mkv .mov .avi .webm .gif
    .ts); ``codec`` defaults to H.264 (MPEG-4 Part 2 for AVI, VP9 for WebM).
    ``audio=True`` adds a sine-wave track (AAC, Opus in WebM). ``vfr=True``
    writes variable frame gaps (``vfr_times``) with a millisecond time base.
    ``gop`` sets the keyframe interval; ``faststart=True`` puts an MP4's index
    first (so a truncated copy still opens). GIF delays are in 1/100 s, so pick
    an ``fps`` that divides 100 for exact GIF timestamps.
    """
    path = Path(directory) / name
    suffix = path.suffix.lower()
    codec = codec or _DEFAULT_CODECS[suffix]
    width, height = size
    rate = Fraction(fps).limit_denominator(1001)
    times = vfr_times(frames, fps) if vfr else tuple(i / fps for i in range(frames))
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        video = out.add_stream(codec, rate=rate)
        video.width, video.height = width, height
        if codec == "gif":
            video.pix_fmt = "rgb8"
        else:
            video.pix_fmt = "yuv420p"
        video.options = dict(_ENCODER_OPTIONS.get(codec, {}))
        if gop:
            video.codec_context.gop_size = gop
        time_base = Fraction(1, 1000) if vfr else 1 / rate
        video.codec_context.time_base = time_base
        sound = None
        if audio:
            sound = out.add_stream(_AUDIO_CODECS[suffix], rate=48000)
            sound.layout = "mono"
        written_audio = 0
        for index, seconds in enumerate(times):
            frame = av.VideoFrame.from_ndarray(draw_frame(index, size), format="bgr24")
            frame.pts = round(seconds / time_base)
            frame.time_base = time_base
            out.mux(video.encode(frame))
            if sound is not None:
                written_audio = _write_audio(
                    out, sound, written_audio, seconds + (times[1] - times[0] if frames > 1 else 0)
                )
        out.mux(video.encode(None))
        if sound is not None:
            out.mux(sound.encode(None))
    return Clip(
        path=path,
        frames=frames,
        fps=float(fps),
        size=size,
        codec=codec,
        times=times,
        has_audio=audio,
    )


def _write_audio(out: Any, sound: Any, written: int, until: float) -> int:
    """Encode sine samples up to ``until`` seconds; return the new sample count."""
    rate = 48000
    chunk = 960  # 20 ms: a frame size every audio encoder here accepts
    while written < until * rate:
        t = (np.arange(written, written + chunk) / rate).astype(np.float32)
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        fmt = "fltp" if sound.codec_context.name == "aac" else "flt"
        frame = av.AudioFrame.from_ndarray(samples, format=fmt, layout="mono")
        frame.sample_rate = rate
        frame.pts = written
        frame.time_base = Fraction(1, rate)
        out.mux(sound.encode(frame))
        written += chunk
    return written


#: The clips ``clip_dir`` holds: file name -> make_clip keyword arguments.
CLIPS: dict[str, dict[str, Any]] = {
    "h264.mp4": {"frames": 60, "fps": 30},
    "h264.mkv": {"frames": 45, "fps": 25},
    "vp8.webm": {"frames": 30, "fps": 30, "codec": "libvpx"},
    "vp9.webm": {"frames": 30, "fps": 30, "codec": "libvpx-vp9"},
    "mpeg4.avi": {"frames": 30, "fps": 25},
    "h264.mov": {"frames": 30, "fps": 30},
    "anim.gif": {"frames": 20, "fps": 20, "size": (160, 120)},
    "audio.mp4": {"frames": 50, "fps": 25, "audio": True},
    "vfr.mkv": {"frames": 40, "fps": 30, "vfr": True},
    "long.mp4": {"frames": 300, "fps": 30, "gop": 30},
}


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    """A session-wide set of small clips: ``clip_dir["h264.mp4"]`` -> ``Clip`` (see ``CLIPS``)."""
    directory = tmp_path_factory.mktemp("clips")
    return {name: make_clip(directory, name, **kwargs) for name, kwargs in CLIPS.items()}


# ---------------------------------------------------------------------------
# Driving a source and watching its context


@dataclass
class SourceRun:
    """What ``record_source`` saw: frames, pts, states, and the context itself."""

    ctx: SourceContext
    stop_event: threading.Event
    images: list[np.ndarray] = field(default_factory=list)
    pts: list[float] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: The ``SourceError`` the source raised (with ``catch=True``).
    error: SourceError | None = None

    @property
    def reconnects(self) -> int:
        return self.ctx.reconnects

    @property
    def dropped(self) -> int:
        return self.ctx.dropped

    def stop(self) -> None:
        """Ask the source to stop, as a stopping run does (safe from any thread)."""
        self.stop_event.set()


def record_source(
    source: Source,
    *,
    name: str = "src",
    mode: str = "offline",
    start: float = 0.0,
    limit: int | None = None,
    stop_after: float | None = None,
    keep: bool = True,
    catch: bool = False,
    on_frame: Callable[[SourceRun, np.ndarray, float], bool | None] | None = None,
    on_state: Callable[[SourceRun, str], None] | None = None,
) -> SourceRun:
    """Open ``source`` as a worker would and iterate it until it ends on its own.

    Unlike ``framepipe.testing.run_source`` this records the states, reconnect
    counts and drops the source reports. ``on_frame(run, image, pts)`` runs
    after each frame (return True to stop there); ``on_state(run, state)``
    runs on each state change; ``stop_after`` sets the stop flag after that
    many seconds, and the source must then return by itself. With
    ``catch=True`` a ``SourceError`` is kept in ``run.error`` instead of raised.
    """
    stop = threading.Event()
    run: SourceRun

    def state_changed(state: str, reconnects: int) -> None:
        # The context also calls this to report a new reconnect count: keep changes only.
        if run.states and run.states[-1] == state:
            return
        run.states.append(state)
        if on_state is not None:
            on_state(run, state)

    ctx = SourceContext(name, mode=mode, start=start, stop_event=stop, on_state=state_changed)
    run = SourceRun(ctx=ctx, stop_event=stop)
    timer = threading.Timer(stop_after, stop.set) if stop_after is not None else None
    began = time.monotonic()
    iterator = source.open(ctx)
    if timer is not None:
        timer.start()
    try:
        for image, pts in iterator:
            if keep:
                run.images.append(np.array(image, copy=True))
            run.pts.append(float(pts))
            if on_frame is not None and on_frame(run, image, pts):
                break
            if limit is not None and len(run.pts) >= limit:
                break
    except SourceError as exc:
        if not catch:
            raise
        run.error = exc
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
        if timer is not None:
            timer.cancel()
        run.seconds = time.monotonic() - began
    return run


def strictly_rising(values: list[float]) -> bool:
    """True when every value is greater than the one before (pts must be)."""
    return all(b > a for a, b in itertools.pairwise(values))


# ---------------------------------------------------------------------------
# Ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening(port: int) -> bool:
    # /proc/net/tcp lists sockets without connecting to them: a one-client
    # server (ffmpeg -listen 1) would otherwise serve its one client to the check.
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp", encoding="ascii") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == wanted and fields[3] == "0A":  # 0A = LISTEN
                return True
    return False


def wait_listening(
    port: int, timeout: float = 20.0, process: subprocess.Popen[Any] | None = None
) -> None:
    """Wait until something listens on 127.0.0.1:``port`` (or ``process`` exits)."""
    deadline = time.monotonic() + timeout
    while not _listening(port):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
        time.sleep(0.02)


def _end_process(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
            process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


# ---------------------------------------------------------------------------
# RTSP: GStreamer's RTSP server in a child process

_GI_PYTHON = "/usr/bin/python3"  # Debian's python3-gi lives here, not in the venv

_RTSP_SERVER_SCRIPT = r"""
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

port, width, height, fps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
picture, frozen_clock_after, encoder = sys.argv[5], int(sys.argv[6]), sys.argv[7]
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( {picture} "
    f"! video/x-raw,width={width},height={height},framerate={fps}/1 "
    f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} {encoder} "
    "! rtph264pay name=pay0 pt=96 config-interval=1 )"
)
factory.set_shared(True)


seen, fixed = [0], []


def stop_the_clock(pad, info):
    # From buffer N on, every buffer carries the same timestamps: a camera whose clock stopped.
    buffer = info.get_buffer()
    seen[0] += 1
    if seen[0] > frozen_clock_after:
        if not fixed:
            fixed.extend([buffer.pts, buffer.dts])
        buffer.pts, buffer.dts = fixed
    return Gst.PadProbeReturn.OK


def on_configure(factory, media):
    if frozen_clock_after >= 0:
        pay = media.get_element().get_by_name("pay0")
        pay.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, stop_the_clock)


factory.connect("media-configure", on_configure)
server.get_mount_points().add_factory("/live", factory)
if server.attach(None) == 0:
    print("failed", flush=True)
    sys.exit(1)
print("ready", flush=True)
GLib.MainLoop().run()
"""


def _gst_rtsp_missing() -> str | None:
    if not os.path.exists(_GI_PYTHON):
        return f"{_GI_PYTHON} not found"
    check = subprocess.run(
        [
            _GI_PYTHON,
            "-c",
            "import gi; gi.require_version('GstRtspServer', '1.0'); "
            "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
            "assert Gst.ElementFactory.find('x264enc')",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check.returncode != 0:
        return check.stderr.strip().splitlines()[-1] if check.stderr.strip() else "import failed"
    return None


#: A moving picture (a bouncing ball), what every RTSP test gets unless it asks otherwise.
MOVING = "videotestsrc is-live=true pattern=ball"
#: The same picture, repeated with advancing timestamps: a frozen encoder or relay.
FROZEN = "videotestsrc num-buffers=1 pattern=smpte ! imagefreeze is-live=true"
#: A still scene seen by a real sensor: a fixed picture with faint noise on it.
STILL_WITH_NOISE = (
    "videotestsrc num-buffers=1 pattern=smpte ! imagefreeze is-live=true ! mix. "
    "videotestsrc is-live=true pattern=snow ! mix. "
    "compositor name=mix sink_1::alpha=0.04 ! videoconvert"
)


class RtspServer:
    """A live H.264 RTSP stream at ``url`` (``rtsp://127.0.0.1:PORT/live``).

    ``picture`` is the GStreamer source of its video (``MOVING``, ``FROZEN``,
    ``STILL_WITH_NOISE``); with ``stop_clock_after=N`` every buffer after the
    N-th carries the same timestamps; ``encoder`` adds x264enc properties.
    """

    def __init__(
        self,
        *,
        size: tuple[int, int] = (320, 240),
        fps: int = 30,
        picture: str = MOVING,
        stop_clock_after: int = -1,
        encoder: str = "",
    ) -> None:
        self.port = free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/live"
        self.size, self.fps = size, fps
        self.picture, self.stop_clock_after, self.encoder = picture, stop_clock_after, encoder
        self.process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 20.0) -> None:
        """Start (or restart, on the same port) and return once it accepts connections."""
        self.stop()
        width, height = self.size
        self.process = subprocess.Popen(
            [
                _GI_PYTHON,
                "-c",
                _RTSP_SERVER_SCRIPT,
                str(self.port),
                str(width),
                str(height),
                str(self.fps),
                self.picture,
                str(self.stop_clock_after),
                self.encoder,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline().strip() if ready else ""
        if line != "ready":
            self.stop()
            raise RuntimeError(f"RTSP server did not start on port {self.port}: {line!r}")

    def stop(self) -> None:
        """Kill the server (clients see the connection drop) and wait for it to exit."""
        if self.process is not None:
            _end_process(self.process)
            for pipe in (self.process.stdout, self.process.stderr):
                if pipe is not None:
                    pipe.close()
            self.process = None

    def pause(self) -> None:
        """Freeze the server process: connections stay open but no data flows."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@functools.cache
def _rtsp_skip_reason() -> str | None:
    return _gst_rtsp_missing()


@pytest.fixture
def rtsp_server() -> Iterator[RtspServer]:
    """A running GStreamer RTSP server on 127.0.0.1 (live 320x240 H.264 at 30 fps).

    Needs Debian's ``python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
    gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly``; skips without them.
    """
    reason = _rtsp_skip_reason()
    if reason is not None:
        pytest.skip(f"GStreamer RTSP server unavailable ({reason})")
    server = RtspServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------
# MJPEG over HTTP, like an IP camera


class MjpegServer:
    """``multipart/x-mixed-replace`` JPEG frames over HTTP at ``url``, paced at ``fps``.

    Frames are ``draw_frame(index)``, where ``index`` counts from the server's
    start at ``fps`` (a live clock shared by all clients); ``latest`` is the
    newest index sent to any client. With ``frames`` set, each client gets
    frames ``0..frames-1`` and then the response ends.
    """

    def __init__(
        self,
        *,
        fps: float = 30.0,
        size: tuple[int, int] = (320, 240),
        frames: int | None = None,
        quality: int = 85,
    ) -> None:
        self.fps, self.size, self.frames, self.quality = fps, size, frames, quality
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/video.mjpg"
        self.latest = -1
        self.requests = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start (or restart, on the same port) serving."""
        self.stop()
        self._halt = threading.Event()
        owner, halt = self, self._halt
        began = time.monotonic()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                began_client = time.monotonic()
                sent, index = 0, -1
                while not halt.is_set():
                    if owner.frames is not None:
                        if sent >= owner.frames:
                            return
                        index, due = sent, began_client + sent / owner.fps
                    else:
                        # A live clock: the newest frame now, never one already sent.
                        index = max(index + 1, int((time.monotonic() - began) * owner.fps))
                        due = began + index / owner.fps
                    delay = due - time.monotonic()
                    if delay > 0 and halt.wait(delay):
                        return
                    ok, jpeg = cv2.imencode(
                        ".jpg",
                        draw_frame(index, owner.size),
                        [cv2.IMWRITE_JPEG_QUALITY, owner.quality],
                    )
                    assert ok
                    try:
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\n"
                            + f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                            + jpeg.tobytes()
                            + b"\r\n"
                        )
                        self.wfile.flush()
                    except OSError:
                        return  # the client went away
                    with owner._lock:
                        owner.latest = max(owner.latest, index)
                    sent += 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="mjpeg-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and drop every open connection."""
        if self._server is None:
            return
        self._halt.set()
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(timeout=5)
        self._server = None


@pytest.fixture
def mjpeg_server() -> Iterator[MjpegServer]:
    """A live MJPEG-over-HTTP camera on 127.0.0.1 (320x240, 30 fps, indexed frames)."""
    server = MjpegServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------
# Static files over HTTP (HLS playlists and segments)


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def serve_directory() -> Iterator[Callable[[Path], str]]:
    """``serve_directory(folder) -> "http://127.0.0.1:PORT"``: a static file server."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(folder: Path) -> str:
        handler = functools.partial(_QuietFiles, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    try:
        yield serve
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


# ---------------------------------------------------------------------------
# RTMP: ffmpeg in listen mode serves one client


@pytest.fixture
def rtmp_server(clip_dir: dict[str, Clip]) -> Iterator[str]:
    """``rtmp://127.0.0.1:PORT/live/test``: ffmpeg serving ``long.mp4`` in a loop to one client."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg not on PATH")
    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/live/test"
    process = subprocess.Popen(
        [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
            os.fspath(clip_dir["long.mp4"]),
            "-c",
            "copy",
            "-f",
            "flv",
            "-listen",
            "1",
            url,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(port, process=process)
        yield url
    finally:
        _end_process(process)
        if process.stderr is not None:
            process.stderr.close()
