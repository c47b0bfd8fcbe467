"""What an event-clip sink costs on a live H.264 camera: CPU and memory per camera.

A GStreamer RTSP server on 127.0.0.1 (Debian's gst-rtsp-server, run by the
system python3) sends live 1280x720 H.264 at 30 fps and 2 Mbit/s (a noise picture, so that x264
reaches its bitrate). Each
case reads it in a fresh process with ``fp.sources.Stream`` (``executor=
"threads"``, real time) for the same time, into a trivial stage and sink:

- ``none``: just that;
- ``no-op sink``: the same plus a sink that does nothing, where ``Clips`` goes
  (what any further sink node costs: its thread, a handoff per frame);
- ``Clips``: the same plus ``fp.sinks.Clips(pre=10, post=2)``, an event every
  10 s, so the camera keeps a ring of its packets and clips are cut by stream
  copy;
- ``re-encode``: what a user without packet access writes instead: the same
  plus a sink that encodes every frame to H.264 (PyAV, x264 ``veryfast``, as
  ``fp.sinks.VideoFile``) so that clips could be cut from the result.

Reported per case: CPU seconds per second of the process (all its threads:
FFmpeg's decoder threads too), its resident memory at the end, and for Clips
the ring's payload. Targets: Clips within 5% of ``none`` in CPU, and under
5 MB of memory above the ring's own payload.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from . import _rtsp
from ._children import collect
from ._report import Measurement, Target, progress

BENCH = "clips"
WIDTH, HEIGHT, FPS, KBPS = 1280, 720, 30, 2000

SERVER = r"""
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

port, width, height, fps, kbps = sys.argv[1], *map(int, sys.argv[2:6])
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( videotestsrc is-live=true pattern=snow ! "
    f"video/x-raw,width={width},height={height},framerate={fps}/1 ! "
    f"x264enc tune=zerolatency speed-preset=ultrafast bitrate={kbps} key-int-max={2 * fps} ! "
    f"rtph264pay name=pay0 pt=96 config-interval=1 )")
factory.set_shared(True)
server.get_mount_points().add_factory("/live", factory)
server.attach(None)
print("ready", flush=True)
GLib.MainLoop().run()
"""


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class _Reencode:
    """The baseline's sink: every frame encoded to H.264, packets kept nowhere."""

    def __init__(self) -> None:
        self.codec: Any = None

    def __call__(self, frame: Any) -> None:
        import av

        if self.codec is None:
            codec = av.CodecContext.create("libx264", "w")
            codec.width, codec.height = frame.image.shape[1], frame.image.shape[0]
            codec.pix_fmt = "yuv420p"
            codec.time_base = Fraction(1, 90000)
            codec.options = {"preset": "veryfast"}
            codec.open()
            self.codec = codec
        video = av.VideoFrame.from_ndarray(frame.image, format="bgr24").reformat(format="yuv420p")
        video.pts = round(frame.pts * 90000)
        self.codec.encode(video)


def _case(url: str, case: str, seconds: float, folder: str, results: Any) -> None:
    import framepipe as fp

    pipe = fp.Pipeline(f"clips-{case}")
    cam = pipe.source("cam", fp.sources.Stream(url))
    work = pipe.stage("work", lambda frame: frame.index % (10 * FPS) == 5 * FPS, after=cam)
    pipe.sink("out", fp.sinks.Callback(lambda frame: None), after=work)
    if case == "Clips":
        pipe.sink("clips", fp.sinks.Clips(folder, when="work", pre=10, post=2), after=work)
    elif case == "no-op sink":
        pipe.sink("clips", fp.sinks.Callback(lambda frame: None), after=work)
    elif case == "re-encode":
        pipe.sink("encode", fp.sinks.Callback(_Reencode()), after=cam)
    with pipe.start(mode="realtime", executor="threads") as run:
        # The first seconds connect and fill the ring: measure after them.
        deadline = time.monotonic() + 30
        while run.stats["cam"].processed < 3 * FPS and time.monotonic() < deadline:
            time.sleep(0.05)
        if case == "Clips":
            while run.stats["cam"].elapsed_s < 14 and time.monotonic() < deadline + 14:
                time.sleep(0.05)  # the ring holds pre + 10 s: full from then on
        usage, began, frames = (
            resource.getrusage(resource.RUSAGE_SELF),
            time.monotonic(),
            (run.stats["cam"].processed),
        )
        time.sleep(seconds)
        after = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - began
        stats = run.stats["cam"]
        report = {
            "case": case,
            "cpu": (after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime) / wall,
            "fps": (stats.processed - frames) / wall,
            "rss": _rss_bytes(),
            "ring": stats.clip_buffer_bytes,
            "ring_seconds": 10 + 10,
        }
    report["clips"] = len(list(Path(folder).glob("*.mp4")))
    results.put(report)


def _measure(url: str, case: str, seconds: float) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    with TemporaryDirectory(prefix="framepipe-clips-bench-") as folder:
        child = context.Process(target=_case, args=(url, case, seconds, folder, results))
        child.start()
        try:
            report: dict[str, Any] = collect(results, [child], 1, timeout=seconds + 90)[0]
        finally:
            child.join(30)
            if child.is_alive():
                child.kill()
    return report


def run(quick: bool) -> Iterator[Measurement]:
    if not _rtsp.available():
        progress("clips: skipped, GStreamer's RTSP server is not installed")
        return
    seconds = 10.0 if quick else 20.0
    rounds = 1 if quick else 2
    best: dict[str, dict[str, Any]] = {}
    with _rtsp.serving(SERVER, WIDTH, HEIGHT, FPS, KBPS) as url:
        for round_ in range(rounds):
            for case in ("none", "no-op sink", "Clips", "re-encode"):
                progress(f"clips: {case}, {seconds:g} s of live 720p RTSP (round {round_ + 1})")
                report = _measure(url, case, seconds)
                # The least CPU of the rounds: the one least disturbed by the machine.
                if case not in best or report["cpu"] < best[case]["cpu"]:
                    best[case] = report
    detail = f"{WIDTH}x{HEIGHT} H.264 RTSP, {FPS} fps"
    for case, report in best.items():
        yield Measurement(BENCH, case, detail, "fps", report["fps"], "fps")
        yield Measurement(BENCH, case, detail, "CPU", report["cpu"], "cores")
        yield Measurement(BENCH, case, detail, "RSS", report["rss"] / 1e6, "MB")
    none, clips, encode = best["none"], best["Clips"], best["re-encode"]
    yield Measurement(
        BENCH, "Clips/none", detail, "CPU", clips["cpu"] / none["cpu"], "x", Target("<=", 1.05)
    )
    noop = best["no-op sink"]
    yield Measurement(BENCH, "Clips/no-op sink", detail, "CPU", clips["cpu"] / noop["cpu"], "x")
    yield Measurement(BENCH, "re-encode/none", detail, "CPU", encode["cpu"] / none["cpu"], "x")
    ring = clips["ring"]
    yield Measurement(BENCH, "Clips", "pre=10 + 10 s of lag", "ring payload", ring / 1e6, "MB")
    yield Measurement(
        BENCH, "Clips", detail, "stream bitrate", ring * 8 / 1e6 / clips["ring_seconds"], "Mbit/s"
    )
    yield Measurement(
        BENCH,
        "Clips - none - ring",
        detail,
        "memory above the ring",
        (clips["rss"] - none["rss"] - ring) / 1e6,
        "MB",
        Target("<=", 5),
    )
    yield Measurement(BENCH, "Clips", detail, "clips cut", clips["clips"], "clips")
