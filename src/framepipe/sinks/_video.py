"""Record frames (annotated when an annotator is upstream) to a video file with PyAV."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from .._errors import SinkError
from .._frame import Frame
from ._base import Sink

if TYPE_CHECKING:
    import av.container
    import av.video.stream

# Time base of variable-rate files: the MPEG clock, exact for 24, 25, 30, 60 and 29.97 fps.
_VFR_TIME_BASE = Fraction(1, 90_000)
# Muxers of the MP4 family, which can be written in fragments that survive a killed writer.
_MP4_FAMILY = ("mp4", "mov", "ipod")
# A fragment is closed at least this often (microseconds), so a killed writer loses little.
_FRAGMENT_US = 1_000_000
# FFmpeg's AVColorSpace and AVColorRange values for BT.601 YUV in limited or full range.
_AVCOL_SPC_SMPTE170M = 6
_AVCOL_RANGE_MPEG, _AVCOL_RANGE_JPEG = 1, 2
# Encoder options when the caller gives none: real-time pipelines need an encoder that keeps
# up, and x264/x265's default "medium" preset falls behind at 720p on small machines.
_FAST_PRESETS = {"libx264": {"preset": "veryfast"}, "libx265": {"preset": "veryfast"}}


def _release_freed_memory() -> None:
    """Hand the memory an encoder freed back to the operating system (glibc only).

    An encoder allocates tens of megabytes of frame buffers and frees them at close;
    glibc keeps the freed pages in its arenas, so a process that records run after run
    (a service) would see its resident size creep up by megabytes a run without leaking.
    """
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = False
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


class VideoFile(Sink):
    """Encode every frame that reaches the sink into a video file.

    Writes ``frame.display_image``: the annotated image when an annotating stage
    is upstream, else the frame itself. The frame size is taken from the first
    frame; a later frame of another size is resized to it (with one warning in
    the log). Sizes the pixel format cannot hold (odd sizes for 4:2:0) are padded
    by repeating the last row or column.

    Timing: with ``fps=None`` each frame is shown at its own ``pts`` (counted from
    the first frame), so variable-rate input, dropped frames and a sink that
    samples every n-th frame all play back at the right speed. A frame whose pts
    does not increase is shown one frame interval after the previous one (so feed
    one source to a ``VideoFile``: frames of several would interleave). With
    ``fps`` set the file has a constant rate: frame ``i`` is shown at ``i / fps``
    whatever its pts (a time-lapse, or encoders such as ``mpeg4`` that only
    accept a constant rate).

    The file is opened when the run starts (a bad path or codec fails there with
    a ``SinkError``) and finalized by ``close()``, which the runtime calls on a
    normal end, ``stop()``, Ctrl-C and SIGTERM. For ``.mp4``, ``.m4v`` and ``.mov``
    the file is also written in fragments flushed to disk at least every second
    (``crash_safe=True``): when the worker is killed outright (SIGKILL, power cut)
    the file still plays, up to the last second or two before the kill (what the
    encoder's lookahead still held is lost). On FFmpeg 7.1 and later a finished
    file is an ordinary MP4 with its index; on older versions it stays a
    fragmented MP4, which every current player reads. Other containers get every
    packet to disk as it is encoded; Matroska (``.mkv``) and MPEG-TS (``.ts``) need
    nothing more to survive a kill. A run that wrote no frame leaves no file.

    Args:
        path: output file; the container format follows the extension unless
            ``format`` is given. Parent directories are created.
        fps: constant frame rate, or ``None`` to time frames by their pts.
        codec: an encoder name PyAV knows: ``"h264"`` (libx264), ``"hevc"``,
            ``"vp9"``, ``"av1"``, ``"mjpeg"``, ``"ffv1"``...
        pix_fmt: pixel format; by default the encoder's first 8-bit 4:2:0 format
            (``yuv420p`` for h264, which every player can show).
        options: encoder options, e.g. ``{"crf": "20", "preset": "slow"}``. By
            default x264/x265 use ``preset=veryfast`` to keep up in real time.
        format: container format (``"mp4"``, ``"matroska"``...) when the
            extension does not say it.
        crash_safe: write MP4/MOV in fragments as described above; ``False``
            writes a plain MP4 with its index at the front (``faststart``), which
            is unreadable if the writer dies before ``close()``.

    Example::

        pipe.sink("record", fp.sinks.VideoFile("out/annotated.mp4"), after=[annotate])
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float | None = None,
        codec: str = "h264",
        *,
        pix_fmt: str | None = None,
        options: dict[str, str] | None = None,
        format: str | None = None,
        crash_safe: bool = True,
    ) -> None:
        if fps is not None and not (float(fps) > 0 and np.isfinite(fps)):
            raise ValueError(f"VideoFile: fps must be a number > 0 or None, got {fps!r}")
        if not codec:
            raise ValueError("VideoFile: codec must name a video encoder, e.g. 'h264'")
        self.path = Path(path)
        self.fps = None if fps is None else float(fps)
        self.codec = codec
        self.pix_fmt = pix_fmt
        self.options = None if options is None else {str(k): str(v) for k, v in options.items()}
        self.format = format
        self.crash_safe = crash_safe
        #: Frames encoded by the run (read it after the run, whatever the executor).
        self.frames = 0
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        # Why the file stopped taking frames (a full disk...): later writes fail with it.
        self._broken: str | None = None
        # File size after the last frame that reached the disk whole; a failed write is cut
        # back to it, so a full disk leaves a file that plays up to its last complete fragment.
        self._good_size = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        # PyAV is imported here, in the worker, so that importing framepipe stays quick.
        import av

        name = self.context.name
        try:
            codec = av.codec.Codec(self.codec, "w")
        except Exception as exc:  # UnknownCodecError, or a decoder-only name
            raise SinkError(
                name,
                f"unknown video encoder {self.codec!r}; expected one PyAV's "
                "FFmpeg provides, e.g. 'h264', 'hevc', 'vp9', 'mjpeg'",
            ) from exc
        if codec.type != "video":
            raise SinkError(name, f"codec {self.codec!r} encodes {codec.type}, not video")
        self._codec_name = codec.name
        self._pix_fmt = self._choose_pix_fmt(name, [f.name for f in codec.video_formats or ()])
        container_options = self._container_options(av)

        self.frames = 0
        self._stream = None
        self._broken = None
        self._good_size = 0
        self._warned: set[str] = set()
        # Create (and truncate) the file now: av.open() only touches it at the first frame,
        # and a bad path must fail when the run starts, not minutes later.
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "wb"):
                pass
        except OSError as exc:
            raise SinkError(name, f"cannot write the video file {str(self.path)!r}: {exc}") from exc
        try:
            self._container = av.open(
                str(self.path), "w", format=self.format, container_options=container_options
            )
        except ValueError as exc:
            self.path.unlink(missing_ok=True)
            if self.format is not None:
                raise SinkError(name, f"unknown container format {self.format!r}") from exc
            raise SinkError(
                name,
                f"cannot tell the container format of {str(self.path)!r}: "
                "use an extension such as .mp4, .mkv, .mov, .avi, or pass format=",
            ) from exc

    def write(self, frame: Frame) -> None:
        import av

        if self._broken is not None:
            raise SinkError(self.context.name, self._broken)
        if self._container is None:
            raise SinkError(self.context.name, "write() before open() or after close()")
        if frame.late:
            return  # its picture is already in the video: a late result adds no frame
        image = frame.display_image
        if self._stream is None:
            try:
                self._stream = self._start(image)
            except (av.error.FFmpegError, ValueError) as exc:  # the container refuses the codec
                self._abandon(self._encode_error(exc, frame.index))
                raise SinkError(self.context.name, str(self._broken)) from exc
        image = self._fit(image, frame.index)
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        picture.pts, picture.duration = self._timestamp(frame.pts)
        picture.time_base = self._time_base
        try:
            for packet in self._stream.encode(picture):
                self._container.mux(packet)
        except OSError as exc:  # av.error.OSError: the disk is full, the device is gone
            self._abandon(f"cannot write {str(self.path)!r}: {exc.strerror or exc}")
            raise SinkError(self.context.name, str(self._broken)) from exc
        except av.error.FFmpegError as exc:
            self._abandon(self._encode_error(exc, frame.index))
            raise SinkError(self.context.name, str(self._broken)) from exc
        self.frames += 1
        self._good_size = self._size_on_disk()

    def close(self) -> None:
        container, self._container = self._container, None
        if container is None:
            return
        import av

        error: Exception | None = None
        try:
            if self._stream is not None:
                for packet in self._stream.encode(None):  # drain the encoder's lookahead
                    container.mux(packet)
        except av.error.FFmpegError as exc:
            error = exc
        try:
            container.close()  # writes the trailer: the index of a non-fragmented file
        except av.error.FFmpegError as exc:
            error = error or exc
        self._stream = None
        _release_freed_memory()
        if error is not None and self.frames:
            self._cut_to_good_size()
        if self.frames == 0:
            # Only the empty file open() created, or a header with no picture: leave nothing
            # that looks like a video. A failed first write() has already raised its error.
            self._discard(error)
        elif error is not None:
            raise SinkError(
                self.context.name, f"could not finish {str(self.path)!r}: {error}"
            ) from error

    def _abandon(self, reason: str) -> None:
        """Stop using the file after a failed write, keeping what reached the disk whole.

        FFmpeg's muxer must not be called again after a failed write (PyAV crashes on it):
        the container is closed at once, its errors ignored, and later writes raise.
        """
        import av

        self._broken = f"{reason}; the sink stopped writing"
        container, self._container = self._container, None
        if container is None:
            return
        with contextlib.suppress(av.error.FFmpegError):  # the same full disk again
            container.close()
        if self.frames:
            self._cut_to_good_size()
            self.context.logger.warning(
                "%s: %s cut back to what reached the disk whole (%d frames encoded)",
                self.context.name,
                self.path,
                self.frames,
            )
        else:
            self._discard(None)

    def _size_on_disk(self) -> int:
        try:
            return os.stat(self.path).st_size
        except OSError:
            return self._good_size

    def _cut_to_good_size(self) -> None:
        try:
            if os.stat(self.path).st_size > self._good_size:
                os.truncate(self.path, self._good_size)
        except OSError:
            pass  # nothing more can be done for the file; the error is reported already

    def _discard(self, error: Exception | None) -> None:
        self.path.unlink(missing_ok=True)
        self.context.logger.warning(
            "%s: no frame was encoded; %s not written%s",
            self.context.name,
            self.path,
            f" ({error})" if error else "",
        )

    def final_state(self) -> Any:
        return self.frames

    def adopt_final_state(self, state: Any) -> None:
        self.frames = int(state)

    def describe(self) -> dict[str, Any]:
        return {"type": "VideoFile", "path": str(self.path), "fps": self.fps, "codec": self.codec}

    # -- helpers -----------------------------------------------------------------------------

    def _choose_pix_fmt(self, name: str, formats: list[str]) -> str:
        if self.pix_fmt is not None:
            if formats and self.pix_fmt not in formats:
                raise SinkError(
                    name,
                    f"encoder {self.codec!r} does not take pix_fmt "
                    f"{self.pix_fmt!r}; it takes {', '.join(formats)}",
                )
            return self.pix_fmt
        # 8-bit 4:2:0 is what players expect; FFmpeg lists an encoder's preferred format first
        # (yuvj420p for mjpeg, which rejects plain yuv420p).
        for fmt in formats:
            if fmt in ("yuv420p", "yuvj420p", "nv12"):
                return fmt
        return formats[0] if formats else "yuv420p"

    def _container_options(self, av: Any) -> dict[str, str]:
        if self.format is not None:
            mp4 = self.format in _MP4_FAMILY
        else:
            suffix = self.path.suffix.lower().lstrip(".")
            mp4 = any(suffix in av.format.ContainerFormat(f, "w").extensions for f in _MP4_FAMILY)
        if not mp4:
            # Every muxer: hand each packet to the OS at once, so a killed writer loses
            # only what the encoder still held.
            return {"flush_packets": "1"}
        if not self.crash_safe:
            return {"movflags": "+faststart"}
        # hybrid_fragmented (libavformat 61.7, FFmpeg 7.1) writes fragments while running and
        # an ordinary indexed MP4 at close; before that, a fragmented MP4 throughout.
        # empty_moov: without it, a killed hybrid file loses the last frame of its first second.
        # negative_cts_offsets: the first frame is shown at 0, not after the B-frame delay.
        hybrid = av.library_versions.get("libavformat", (0,)) >= (61, 7)
        movflags = "+empty_moov+default_base_moof+negative_cts_offsets"
        if hybrid:
            movflags = "+hybrid_fragmented+empty_moov+negative_cts_offsets"
        return {"movflags": movflags, "frag_duration": str(_FRAGMENT_US), "flush_packets": "1"}

    def _start(self, image: np.ndarray) -> av.video.stream.VideoStream:
        import av

        assert self._container is not None
        height, width = image.shape[:2]
        fmt = av.VideoFormat(self._pix_fmt)
        # Subsampled chroma needs even sizes: pad by one row/column rather than scale.
        self._size = (height, width)
        self._padding = (
            height % 2 if fmt.chroma_height(2) < 2 else 0,
            width % 2 if fmt.chroma_width(2) < 2 else 0,
        )
        rate = Fraction(self.fps).limit_denominator(1001) if self.fps else Fraction(30)
        self._time_base = 1 / rate if self.fps else _VFR_TIME_BASE
        self._first_pts: float | None = None
        self._last_ticks = -1
        self._last_step = 0
        stream = self._container.add_stream(self._codec_name, rate=rate)
        assert isinstance(stream, av.video.stream.VideoStream)  # open() checked the codec type
        stream.width = width + self._padding[1]
        stream.height = height + self._padding[0]
        stream.pix_fmt = self._pix_fmt
        stream.time_base = self._time_base
        stream.codec_context.time_base = self._time_base
        options = (
            self.options if self.options is not None else _FAST_PRESETS.get(self._codec_name, {})
        )
        stream.codec_context.options = dict(options)
        if not fmt.is_rgb:
            # FFmpeg converts BGR to YUV with BT.601 coefficients. Say so in the file: players
            # guess BT.709 for an untagged HD video, and would shift its colours.
            stream.codec_context.colorspace = _AVCOL_SPC_SMPTE170M
            full = self._pix_fmt.startswith("yuvj")  # the JPEG formats use the full range
            stream.codec_context.color_range = _AVCOL_RANGE_JPEG if full else _AVCOL_RANGE_MPEG
        return stream

    def _fit(self, image: np.ndarray, index: int) -> np.ndarray:
        if image.shape[:2] != self._size:
            height, width = self._size
            self._warn_once(
                "size",
                "%s: frame %d is %dx%d, the video is %dx%d; resizing (warned once)",
                self.context.name,
                index,
                image.shape[1],
                image.shape[0],
                width,
                height,
            )
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        if any(self._padding):
            image = cv2.copyMakeBorder(
                image, 0, self._padding[0], 0, self._padding[1], cv2.BORDER_REPLICATE
            )
        return image

    def _timestamp(self, pts: float) -> tuple[int, int]:
        """(pts, duration) of the next picture in ticks of the stream's time base."""
        if self.fps is not None:
            return self.frames, 1
        if self._first_pts is None:
            self._first_pts = pts
        ticks = round((pts - self._first_pts) / self._time_base)
        if ticks <= self._last_ticks:
            self._warn_once(
                "pts",
                "%s: frame pts %.3f s does not increase; showing it one "
                "frame after the previous one (warned once)",
                self.context.name,
                pts,
            )
            ticks = self._last_ticks + (self._last_step or round(1 / (30 * self._time_base)))
        else:
            self._last_step = ticks - self._last_ticks if self._last_ticks >= 0 else 0
        self._last_ticks = ticks
        # The duration of a picture is not known until the next one; the previous interval is
        # the best guess, and it sets how long the last picture shows.
        return ticks, self._last_step or round(1 / (30 * self._time_base))

    def _encode_error(self, exc: Exception, index: int) -> str:
        text = f"could not encode frame {index} with {self._codec_name!r} into {self.path}: {exc}"
        if self.frames == 0 and self.fps is None:
            text += "; if this encoder only takes a constant frame rate (mpeg4...), pass fps="
        return text

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.context.logger.warning(message, *args)
