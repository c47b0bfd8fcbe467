"""Look inside a video file or stream without decoding it, and open inputs with PyAV.

``probe()`` backs ``framepipe info``. The helpers below it are what
``VideoFile`` and ``Stream`` open their inputs with, so that a probe reaches a
stream exactly the way the source will, and every PyAV failure reaches the
user as a ``SourceError`` that says what went wrong.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from fractions import Fraction
from typing import Any

import av
import av.error
from av.container import InputContainer
from av.video.stream import VideoStream

from .._errors import SourceError

#: URL schemes ``Stream`` and ``probe`` accept (the ones this FFmpeg build can open).
STREAM_SCHEMES = frozenset({"http", "https", "rtmp", "rtmps", "rtsp", "rtsps", "tcp", "udp"})

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


def scheme_of(target: str) -> str | None:
    """The lower-case URL scheme of ``target``, or ``None`` for a file path."""
    match = _SCHEME.match(target)
    return match.group(1).lower() if match else None


def redact(target: str) -> str:
    """``target`` with the password of a URL replaced by ``***``, for messages and logs."""
    parts = urllib.parse.urlsplit(target)
    if not parts.scheme or "@" not in parts.netloc:
        return target
    userinfo, _, host = parts.netloc.rpartition("@")
    if ":" not in userinfo:
        return target
    user = userinfo.split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def network_options(url: str, read_timeout: float, *, low_latency: bool = True) -> dict[str, str]:
    """FFmpeg options for reading ``url`` live.

    ``low_latency`` drops the packets read while the stream is analysed at open
    (``fflags=nobuffer``) so the first frame handed out is a current one; without
    it those packets are kept, so no frame is missed. Every blocking step is also
    bounded by PyAV's own timeout (``open_input``); these socket timeouts make
    FFmpeg notice a dead peer by itself too.
    """
    micros = str(max(1, int(read_timeout * 1_000_000)))
    options = {
        # Bound the stream analysis at open (FFmpeg's default waits up to 5 s
        # for streams whose parameters arrive late, e.g. an audio track).
        "analyzeduration": "1000000",
    }
    if low_latency:
        options["fflags"] = "nobuffer"
    scheme = scheme_of(url)
    if scheme in ("rtsp", "rtsps"):
        # TCP-interleaved RTP: no lost or reordered packets, works through NAT.
        # The RTSP demuxer's "timeout" is its socket I/O timeout in microseconds;
        # only the video track is set up, so no bandwidth goes to audio.
        options.update(rtsp_transport="tcp", timeout=micros, allowed_media_types="video")
    elif scheme in ("rtmp", "rtmps"):
        # The RTMP protocol's own "timeout" means "listen as a server": never set it.
        options["rw_timeout"] = micros
    else:
        # http(s) and tcp read through FFmpeg's tcp protocol, whose "timeout" is
        # the socket I/O timeout in microseconds; rw_timeout covers udp.
        options.update(timeout=micros, rw_timeout=micros)
    return options


def explain(exc: BaseException, timeout: float | None = None) -> str:
    """A short human reason for a PyAV or OS failure."""
    if isinstance(exc, av.error.ExitError):
        # PyAV's interrupt callback fired: its open or read timeout ran out.
        return f"no answer within {timeout:g} s" if timeout is not None else "timed out"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a video file"
    if isinstance(exc, av.error.InvalidDataError):
        return "invalid data: not a video FFmpeg can read, or the file is damaged"
    if isinstance(exc, av.error.ProtocolNotFoundError):
        return "this FFmpeg build cannot open that kind of URL"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(reason)


def open_input(
    target: str,
    node: str,
    *,
    options: dict[str, str] | None = None,
    timeout: float | tuple[float, float] | None = None,
) -> InputContainer:
    """Open ``target`` (a path or URL) for reading, or raise ``SourceError`` naming ``node``.

    Local files are checked first so a missing or unreadable file fails with
    the real cause rather than FFmpeg's guess.
    """
    if scheme_of(target) is None:
        try:
            os.stat(target)
        except OSError as exc:
            raise SourceError(node, f"cannot open {target}: {explain(exc)}") from exc
        if os.path.isdir(target):
            raise SourceError(node, f"cannot open {target}: is a directory, not a video file")
        # FFmpeg would read "name:rest" as a protocol; the file: prefix prevents that.
        url = f"file:{os.path.abspath(target)}" if ":" in target else target
    else:
        url = target
    try:
        container = av.open(url, mode="r", options=options, timeout=timeout)
    except (av.error.FFmpegError, OSError) as exc:
        limit = timeout[0] if isinstance(timeout, tuple) else timeout
        reason = explain(exc, limit).replace(url, redact(url))
        raise SourceError(node, f"cannot open {redact(target)}: {reason}") from exc
    return container


def video_stream(container: InputContainer, node: str, target: str) -> VideoStream:
    """The first video stream of ``container``, or ``SourceError`` when it has none."""
    if not container.streams.video:
        kinds = ", ".join(sorted({str(stream.type) for stream in container.streams})) or "none"
        raise SourceError(node, f"{redact(target)} has no video stream (streams: {kinds})")
    return container.streams.video[0]


def frame_rate(stream: VideoStream) -> float | None:
    """The stream's average frame rate in frames per second, when the container knows it."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < float(rate) < 1000:
            return float(rate)
    return None


def media_origin(container: InputContainer, stream: VideoStream) -> float:
    """Seconds to subtract from raw timestamps so the file starts at 0.

    Uses the container's start time (the earliest of all streams), as FFmpeg's
    ``-ss`` does, so audio/video offsets inside the file are kept.
    """
    if container.start_time is not None:
        return container.start_time / av.time_base
    if stream.start_time is not None and stream.time_base is not None:
        return float(stream.start_time * stream.time_base)
    return 0.0


def _seconds(value: int | None, base: Fraction | None) -> float | None:
    if value is None or base is None or value <= 0:
        return None
    return float(value * base)


def probe(
    path_or_url: str | os.PathLike[str],
    *,
    timeout: float = 10.0,
    count_frames: bool = False,
    name: str = "probe",
) -> dict[str, Any]:
    """Describe the video of a file or stream without decoding it (``framepipe info``).

    Reads the container header; a stream is opened the way ``Stream`` opens
    it, so a successful probe also means the stream is reachable. Blocks for at
    most about ``timeout`` seconds.

    ``frames`` is the frame count from the header (``None`` when the header
    has none, as in many Matroska files); with ``count_frames=True`` a file's
    video packets are counted instead, which reads the whole file but decodes
    nothing. ``frames_estimated`` is ``duration * fps`` when ``frames`` is
    unknown.

    Raises ``SourceError`` (naming ``name``) for a missing, unreadable or
    invalid file, an unreachable stream, or an input without video.

    Example::

        >>> probe("clip.mp4")["fps"]
        29.97002997002997
    """
    target = os.fspath(path_or_url)
    scheme = scheme_of(target)
    if scheme is not None and scheme not in STREAM_SCHEMES:
        raise SourceError(
            name,
            f"unsupported URL scheme {scheme!r} in {redact(target)} "
            f"(expected one of {', '.join(sorted(STREAM_SCHEMES))})",
        )
    options = network_options(target, timeout) if scheme else None
    container = open_input(target, name, options=options, timeout=timeout if scheme else None)
    try:
        stream = video_stream(container, name, target)
        codec = stream.codec_context
        fps = frame_rate(stream)
        duration = _seconds(stream.duration, stream.time_base)
        if duration is None and container.duration and container.duration > 0:
            duration = container.duration / av.time_base
        frames: int | None = stream.frames or None
        if frames is None and count_frames and scheme is None:
            frames = sum(1 for packet in container.demux(stream) if packet.size)
        estimated = None
        if frames is None and duration and fps:
            estimated = round(duration * fps)
        audio = [
            {
                "codec": a.codec_context.name,
                "sample_rate": a.codec_context.sample_rate,
                "channels": a.codec_context.channels,
            }
            for a in container.streams.audio
        ]
        return {
            "source": redact(target),
            "reachable": True,
            "live": scheme is not None and not duration,
            "format": container.format.name,
            "codec": codec.name,
            "profile": codec.profile,
            "pix_fmt": codec.format.name if codec.format else None,
            "width": codec.width or None,
            "height": codec.height or None,
            "fps": fps,
            "duration": duration,
            "frames": frames,
            "frames_estimated": estimated,
            "start_time": media_origin(container, stream),
            "bit_rate": container.bit_rate or None,
            "audio": audio,
        }
    finally:
        container.close()
