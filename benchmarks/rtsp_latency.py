"""RTSP end-to-end latency: from the server sending a frame to a stage seeing it.

A GStreamer RTSP server on 127.0.0.1 (Debian's gst-rtsp-server, run by the
system python3) encodes live 640x360 H.264 at 30 fps; every frame carries the
wall-clock time it was made, drawn as a 32-bit block code. framepipe reads the
stream with ``fp.sources.Stream`` under ``executor="processes"``: a stage
decodes the code and reports ``now - sent``, while a second consumer spends
1 s on every frame beside it. Both ends share the machine's clock.

Target: under two frame intervals (66 ms), and no growth over the run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

import framepipe as fp

from . import _rtsp
from ._report import Measurement, Target, progress

BENCH = "rtsp_latency"
WIDTH, HEIGHT, FPS = 640, 360, 30
BITS, BLOCK = 32, 16

SERVER = r"""
import sys, time
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

port, width, height, fps, bits, block = sys.argv[1], *map(int, sys.argv[2:7])
Gst.init(None)

def make_frame():
    now_ms = int(time.time() * 1000) & 0xFFFFFFFF
    image = bytearray(b"\x80" * (width * height * 3))
    for bit in range(bits):
        value = b"\xff" if (now_ms >> bit) & 1 else b"\x00"
        y, x = divmod(bit, width // block)
        for row in range(y * block, (y + 1) * block):
            start = (row * width + x * block) * 3
            image[start:start + block * 3] = value * (block * 3)
    return bytes(image)

def push(state):
    # Frames are made and stamped when they are due, so the measured latency
    # starts when the server sends, not when a frame waited in its queues.
    src = state.get("src")
    if src is not None:
        buf = Gst.Buffer.new_wrapped(make_frame())
        buf.duration = Gst.SECOND // fps
        src.emit("push-buffer", buf)
    return True

state = {}

def on_configure(factory, media):
    state["src"] = media.get_element().get_child_by_name("src")

GLib.timeout_add(1000 // fps, push, state)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( appsrc name=src is-live=true do-timestamp=true format=time "
    f"caps=video/x-raw,format=BGR,width={width},height={height},framerate={fps}/1 "
    f"! videoconvert ! video/x-raw,format=I420 "
    f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
    f"! rtph264pay name=pay0 pt=96 config-interval=1 )")
factory.set_shared(True)
factory.connect("media-configure", on_configure)
server.get_mount_points().add_factory("/live", factory)
server.attach(None)
print("ready", flush=True)
GLib.MainLoop().run()
"""


def read_sent_ms(image: np.ndarray) -> int:
    """The send time drawn by the server (milliseconds, 32 bits)."""
    per_row = image.shape[1] // BLOCK
    value = 0
    for bit in range(BITS):
        y, x = divmod(bit, per_row)
        cell = image[y * BLOCK + 4 : (y + 1) * BLOCK - 4, x * BLOCK + 4 : (x + 1) * BLOCK - 4]
        if cell.mean() > 128:
            value |= 1 << bit
    return value


def latency_ms(frame: fp.Frame) -> float:
    now_ms = int(time.time() * 1000) & 0xFFFFFFFF
    return float((now_ms - read_sent_ms(frame.image)) & 0xFFFFFFFF)


def bare_pyav(url: str, seconds: float) -> np.ndarray:
    """What a user writes without framepipe: open the stream and decode in a loop
    (the same low-latency options, no slow consumer: nothing holds it back)."""
    import av

    latencies = []
    options = {"rtsp_transport": "tcp", "fflags": "nobuffer", "flags": "low_delay"}
    with av.open(url, options=options, timeout=10) as container:
        stream = container.streams.video[0]
        stream.codec_context.flags |= int(av.codec.context.Flags.low_delay)
        began = time.monotonic()
        for frame in container.decode(stream):
            image = frame.to_ndarray(format="bgr24")
            now_ms = int(time.time() * 1000) & 0xFFFFFFFF
            latencies.append((now_ms - read_sent_ms(image)) & 0xFFFFFFFF)
            if time.monotonic() - began > seconds:
                break
    return np.array(latencies[FPS * 2 :], dtype=float)


def slow(frame: fp.Frame) -> int:
    time.sleep(1.0)
    return frame.index


def run(quick: bool) -> Iterator[Measurement]:
    if not _rtsp.available():
        progress("rtsp_latency: skipped, GStreamer's RTSP server is not installed")
        return
    with _rtsp.serving(SERVER, WIDTH, HEIGHT, FPS, BITS, BLOCK) as url:
        duration = 20 if quick else 60
        progress(f"rtsp_latency: {duration} s of live RTSP with a 1 s consumer beside")
        pipe = fp.Pipeline("rtsp")
        cam = pipe.source("cam", fp.sources.Stream(url))
        measure = pipe.stage("latency", latency_ms, after=cam)
        beside = pipe.stage("slow", slow, after=cam)
        collect = fp.sinks.Collect()
        pipe.sink("out", collect, after=[measure, beside])
        run_ = pipe.run(mode="realtime", executor="processes", duration=duration)
        values = [v for _, v in sorted(collect.results["latency"].items())]
        # The first seconds include connecting and the first keyframe.
        steady = np.array(values[FPS * 3 :], dtype=float)
        baseline = bare_pyav(url, seconds=duration / 2)
        if steady.size < FPS:
            progress("rtsp_latency: too few frames arrived")
            return
        tenth = max(1, steady.size // 10)
        first, last = np.median(steady[:tenth]), np.median(steady[-tenth:])
        yield Measurement(BENCH, "framepipe", "processes", "frames seen", len(values), "frames")
        yield Measurement(BENCH, "framepipe", "processes", "fps", run_.stats["latency"].fps, "fps")
        yield Measurement(
            BENCH,
            "framepipe",
            "server to stage",
            "latency p50",
            float(np.median(steady)),
            "ms",
            Target("<=", 2000 / FPS),
        )
        yield Measurement(
            BENCH,
            "framepipe",
            "server to stage",
            "latency p95",
            float(np.percentile(steady, 95)),
            "ms",
        )
        yield Measurement(
            BENCH, "PyAV loop", "server to frame", "latency p50", float(np.median(baseline)), "ms"
        )
        yield Measurement(
            BENCH,
            "framepipe - PyAV loop",
            "server to stage",
            "added latency p50",
            float(np.median(steady) - np.median(baseline)),
            "ms",
        )
        yield Measurement(
            BENCH,
            "framepipe",
            "last tenth - first tenth",
            "latency growth",
            float(last - first),
            "ms",
            Target("<=", 1000 / FPS),
        )
        yield Measurement(
            BENCH,
            "framepipe",
            "slow consumer",
            "frame age p50",
            run_.stats["slow"].age_ms["p50"],
            "ms",
        )
