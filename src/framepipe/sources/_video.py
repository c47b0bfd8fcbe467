"""Video files decoded with PyAV: ``VideoFile``, and the frame conversion shared with ``Stream``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import av
import av.error
import cv2
import numpy as np
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from .._errors import SourceError
from ._base import Captured, Source, SourceContext
from ._packets import PacketTap
from ._probe import explain, frame_rate, media_origin, open_input, probe, video_stream

# Colour spaces OpenCV's I420 conversion gets right: BT.601 (and "unspecified",
# which FFmpeg's own converter also treats as BT.601), limited range only.
_BT601 = frozenset({2, 5, 6})  # AVCOL_SPC_UNSPECIFIED, BT470BG, SMPTE170M
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


def frame_to_bgr(frame: VideoFrame, ctx: SourceContext) -> np.ndarray:
    """Convert a decoded frame to an ``H x W x 3`` BGR image, as cheaply as possible.

    BT.601 limited-range 4:2:0 video (most SD and web video) is converted by
    OpenCV straight into ``ctx.buffer``: measured at about 3x the frame rate of
    FFmpeg's converter for whole decodes of 640x360 H.264 on two cores, and no
    copy into shared memory downstream. Everything else (full range, BT.709,
    palettes, 10-bit...) goes through FFmpeg's converter, whose output is
    yielded as is: copying it into ``ctx.buffer`` would only move the copy the
    runtime makes anyway, and cost a fresh allocation when no shared memory is
    in use.
    """
    width, height = frame.width, frame.height
    if (
        frame.format.name == "yuv420p"
        and frame.colorspace in _BT601
        and frame.color_range != _FULL_RANGE
        and width % 2 == 0
        and height % 2 == 0
    ):
        out = ctx.buffer((height, width, 3))
        cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGR_I420, dst=out)
        return out
    image: np.ndarray = frame.to_ndarray(format="bgr24")
    return image


class ReferenceOnly:
    """Skips decoding non-reference frames when no consumer would take them.

    When every consumer of a real-time source selects at most half its frame
    rate (``ctx.needed_fps``), the decoder is told to skip non-reference
    frames (FFmpeg's ``skip_frame=NONREF``): they cost decoding and colour
    conversion, and a rate selector would drop them anyway. Most H.264/H.265
    streams with B-frames lose every other frame that way, evenly spaced. If
    over the first second the frames left come slower than consumers need
    (a GOP whose non-reference frames are not evenly spread), every frame is
    decoded again. Never used when some consumer needs every frame.
    """

    __slots__ = ("_codec", "_count", "_first", "active", "needed", "skipped_from")

    #: Media seconds over which the kept rate is checked.
    CHECK_OVER = 1.0

    def __init__(self, ctx: SourceContext, stream: VideoStream, fps: float | None) -> None:
        self._codec = stream.codec_context
        self.needed = ctx.needed_fps
        # 2% of slack: 15 fps of a 29.97 fps camera is half its frames.
        self.active = bool(self.needed and fps and self.needed <= fps / 2 * 1.02)
        self._first: float | None = None
        self._count = 0
        if self.active:
            self._codec.skip_frame = "NONREF"
            ctx.logger.info(
                "consumers take at most %.3g of %.3g fps: skipping non-reference frames",
                self.needed,
                fps,
            )

    def kept(self, ctx: SourceContext, pts: float) -> None:
        """Count one decoded frame; decode every frame again if too few are left."""
        if not self.active or self.needed is None:
            return
        if self._first is None:
            self._first = pts
        self._count += 1
        span = pts - self._first
        if span < self.CHECK_OVER:
            return
        rate = (self._count - 1) / span
        self.active = False  # checked once: keep skipping, or stop for good
        if rate < self.needed * 0.98:
            self._codec.skip_frame = "DEFAULT"
            ctx.logger.info(
                "only %.3g fps left without non-reference frames (%.3g needed): decoding all",
                rate,
                self.needed,
            )
        else:
            self.active = True
            self.needed = None  # enough frames: no more checks


class _Damaged(Exception):
    """The demuxer failed part-way through the file."""


class VideoFile(Source):
    """Frames of a local video file (MP4, MKV, AVI, MOV, WebM, GIF...), decoded with PyAV.

    ``open`` runs in the worker: it decodes the first video stream with
    FFmpeg's threaded decoder (audio and other streams are skipped unread) and
    yields BGR frames with their presentation time in seconds, measured from
    the start of the file, so variable-frame-rate files keep their true timing.
    Frames without a timestamp get the previous one plus one frame period.

    - ``ctx.start`` seeks to the keyframe before ``start`` and discards frames
      until ``pts >= start``.
    - ``loop=True`` starts again from the beginning of the file at the end,
      with ``pts`` still increasing.
    - A damaged file: corrupt packets are skipped; if the file breaks off
      (truncated, unreadable part-way) the source ends cleanly with what it
      decoded and logs a warning. Missing, unreadable, non-video or unopenable
      files raise ``SourceError`` at once.

    The cheap header facts are available before a run, from a probe in the
    calling process: ``fps`` (average rate), ``frames`` (``None`` when the
    container does not say, as in many MKV files), ``width``, ``height``,
    ``duration``; ``describe()`` has them all.

    Example::

        pipe.source("cam", fp.sources.VideoFile("traffic.mp4", loop=True))
    """

    live = False
    seekable = True
    encoded_video = True

    def __init__(self, path: str | os.PathLike[str], loop: bool = False) -> None:
        self.path = os.fspath(path)
        self.loop = bool(loop)
        self._info: dict[str, Any] | None = None

    # Header facts, probed lazily in the caller's process and cached.

    def _header(self) -> dict[str, Any]:
        if self._info is None:
            self._info = probe(self.path, name=type(self).__name__)
        return self._info

    @property
    def fps(self) -> float | None:
        """Average frame rate from the header (``None`` when unknown)."""
        return self._header()["fps"]

    @property
    def frames(self) -> int | None:
        """Frame count from the header, ``None`` when the container does not record it."""
        return self._header()["frames"]

    @property
    def width(self) -> int | None:
        return self._header()["width"]

    @property
    def height(self) -> int | None:
        return self._header()["height"]

    @property
    def duration(self) -> float | None:
        """Duration in seconds from the header (``None`` when unknown)."""
        return self._header()["duration"]

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"type": "VideoFile", "path": self.path, "loop": self.loop}
        try:
            header = self._header()
        except SourceError as exc:
            info["error"] = exc.detail
            return info
        for key in ("codec", "width", "height", "fps", "frames", "duration"):
            info[key] = header[key]
        return info

    # Decoding, inside the worker.

    def open(self, ctx: SourceContext) -> Iterator[Captured]:
        # Opened here, not in the generator, so a bad file fails at open().
        container = open_input(self.path, ctx.name)
        return self._frames(ctx, container)

    def _frames(self, ctx: SourceContext, container: InputContainer) -> Iterator[Captured]:
        try:
            stream = video_stream(container, ctx.name, self.path)
            # Frame and slice threads: several times the single-thread throughput.
            stream.thread_type = "AUTO"
            skip = ReferenceOnly(ctx, stream, frame_rate(stream))
            tap = PacketTap.of(ctx.packets, stream)
            yield from self._passes(ctx, container, stream, skip, tap)
        finally:
            container.close()

    def _passes(
        self,
        ctx: SourceContext,
        container: InputContainer,
        stream: VideoStream,
        skip: ReferenceOnly,
        tap: PacketTap | None = None,
    ) -> Iterator[Captured]:
        origin = media_origin(container, stream)
        fps = frame_rate(stream)
        period = 1.0 / fps if fps else 1.0 / 30.0
        offset = 0.0  # added to file time on later loop passes
        last: float | None = None  # last pts yielded, loop offset included
        start = max(0.0, float(ctx.start))
        passes = 0
        while True:
            count = 0
            if tap is not None and passes:
                tap.next_pass(offset - origin)
            elif tap is not None:
                tap.learn(offset - origin)
            passes += 1
            timed = self._timed(ctx, container, stream, origin, period, start, tap=tap)
            for frame, file_time in timed:
                pts = offset + file_time
                if last is not None and pts <= last:
                    # A loop pass whose first timestamp is not above zero.
                    offset += last + period - pts
                    pts = last + period
                    if tap is not None:
                        tap.learn(offset - origin)
                count += 1
                last = pts
                skip.kept(ctx, pts)
                yield frame_to_bgr(frame, ctx), pts
                if ctx.stopping:
                    return
            if count == 0:
                if last is not None:
                    return
                if start > 0:
                    ctx.logger.warning(
                        "start %.3f s is past the end of %s: no frames", start, self.path
                    )
                    return
                raise SourceError(ctx.name, f"{self.path}: no decodable video frames")
            if not self.loop or ctx.stopping:
                return
            # The next pass plays the whole file again, one frame period after this one.
            assert last is not None
            offset = last + period
            start = 0.0
            self._rewind(ctx, container)

    def _timed(
        self,
        ctx: SourceContext,
        container: InputContainer,
        stream: VideoStream,
        origin: float,
        period: float,
        start: float,
        seek: bool = True,
        tap: PacketTap | None = None,
    ) -> Iterator[tuple[VideoFrame, float]]:
        """One pass from ``start``: each frame with its time in seconds from the file's start."""
        if start > 0 and seek:
            self._seek(ctx, container, stream, start + origin)
        file_time: float | None = None
        first = True
        for frame in self._decode(ctx, container, stream, whole_file=start == 0, tap=tap):
            if frame.time is not None:
                file_time = frame.time - origin
            else:
                file_time = file_time + period if file_time is not None else 0.0
            if first and seek and start > 0 and file_time > start + 1.5 * period:
                # The seek landed past ``start`` (a sparse index): decode from the top.
                self._rewind(ctx, container)
                yield from self._timed(
                    ctx, container, stream, origin, period, start, seek=False, tap=tap
                )
                return
            first = False
            if file_time >= start - 1e-9:
                yield frame, file_time

    def _seek(
        self, ctx: SourceContext, container: InputContainer, stream: VideoStream, seconds: float
    ) -> None:
        assert stream.time_base is not None
        try:
            container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
        except (av.error.FFmpegError, OSError):
            # Not seekable (some GIFs, damaged indexes): decode from the top and discard.
            self._rewind(ctx, container)

    def _rewind(self, ctx: SourceContext, container: InputContainer) -> None:
        try:
            container.seek(0)
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(
                ctx.name, f"cannot go back to the start of {self.path}: {explain(exc)}"
            ) from exc

    def _decode(
        self,
        ctx: SourceContext,
        container: InputContainer,
        stream: VideoStream,
        whole_file: bool,
        tap: PacketTap | None = None,
    ) -> Iterator[VideoFrame]:
        """Decode the video stream, skipping corrupt packets, ending early on a broken file."""
        decoded = 0
        corrupt = 0
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except (av.error.FFmpegError, OSError) as exc:
                if decoded == 0:
                    raise SourceError(ctx.name, f"cannot read {self.path}: {explain(exc)}") from exc
                ctx.logger.warning(
                    "%s is damaged after %d frames (%s); ending there",
                    self.path,
                    decoded,
                    explain(exc),
                )
                return
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                # One bad packet: skip it, as FFmpeg's own tools do; later keyframes recover.
                corrupt += 1
                continue
            if tap is not None:  # after decoding: the tap's filter takes the packet's data
                tap.add(packet)
            for frame in frames:
                decoded += 1
                yield frame
        if corrupt:
            ctx.logger.warning("%s: skipped %d corrupt packets", self.path, corrupt)
        expected = stream.frames
        skipping = stream.codec_context.skip_frame != "DEFAULT"  # ReferenceOnly: by design
        if whole_file and expected and decoded < expected and not skipping:
            ctx.logger.warning(
                "%s ended after %d of the %d frames its header lists (damaged or truncated?)",
                self.path,
                decoded,
                expected,
            )
