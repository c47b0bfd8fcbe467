"""Network video streams: ``Stream`` (RTSP, RTMP, HTTP MJPEG, HLS...), with reconnects.

Also the machinery every live source shares (``Camera`` uses it too): a reader
thread that connects, reads and reconnects with back-off, and hands frames to
the worker's generator either newest-only (real time) or all in order (offline).
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import av
import av.codec.context
import av.error
import numpy as np
from av.container import InputContainer

from .._errors import SourceError
from ._base import Captured, Source, SourceContext
from ._health import HealthOptions, HealthWatch, health_options
from ._packets import PacketTap
from ._probe import (
    STREAM_SCHEMES,
    explain,
    frame_rate,
    network_options,
    open_input,
    redact,
    scheme_of,
    video_stream,
)
from ._video import ReferenceOnly, frame_to_bgr


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off with jitter between reconnect attempts.

    Attempt ``n`` (from 0) waits ``min(maximum, initial * 2**n)``, scaled by a
    random factor in ``[1 - jitter, 1 + jitter]`` so that many clients of one
    server do not all come back at the same instant.
    """

    initial: float = 0.5
    maximum: float = 10.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(
                f"backoff: need 0 < initial <= maximum, got ({self.initial}, {self.maximum})"
            )
        if not 0 <= self.jitter < 1:
            raise ValueError(f"backoff: jitter must be in [0, 1), got {self.jitter}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        base = min(self.maximum, self.initial * 2.0 ** min(attempt, 60))
        return base * random.uniform(1.0 - self.jitter, 1.0 + self.jitter)


class Timeline:
    """Presentation times for a live input, in seconds since its first frame.

    The input's own timestamps are used while they are sane (present, rising,
    no jump of more than ``max_gap``, and for a live input not running
    ``max_gap`` ahead of the wall clock); otherwise the wall clock takes over
    and the input's timestamps are re-anchored to it. Times never go
    backwards, across reconnects too, so an outage shows as a gap.
    """

    max_gap = 5.0

    def __init__(self) -> None:
        #: False for a recording, which may be read faster than real time.
        self.live = True
        self._origin: float | None = None
        self._anchor: tuple[float, float] | None = None  # (media time, pts) pair
        self._previous: float | None = None
        self.last: float | None = None

    def reconnected(self) -> None:
        """Forget the previous connection's timestamps."""
        self._anchor = None
        self._previous = None

    def pts(self, media: float | None = None) -> float:
        """The pts for a frame arriving now with media time ``media`` (``None``: unknown)."""
        now = time.monotonic()
        if self._origin is None:
            self._origin = now
        wall = now - self._origin
        if media is None or not math.isfinite(media):
            value = wall
            self._anchor = None
        else:
            previous = self._previous
            if (
                self._anchor is None
                or previous is None
                or media <= previous
                or media - previous > self.max_gap
            ):
                self._anchor = (media, wall if self.last is None else max(wall, self.last))
            self._previous = media
            value = self._anchor[1] + (media - self._anchor[0])
            if self.live and value - wall > self.max_gap:
                # Frames cannot arrive from the future: the timestamps are wrong.
                self._anchor = (media, wall if self.last is None else max(wall, self.last))
                value = self._anchor[1]
        if self.last is not None and value <= self.last:
            value = self.last + 1e-6
        self.last = value
        return value


class Handoff:
    """Frames from a reader thread to the worker's generator.

    ``latest_only`` (real-time mode) keeps just the newest frame and counts the
    ones it replaced; otherwise frames queue in order and the reader waits for
    room (so back-pressure reaches the network). Context calls (states,
    reconnect counts, drops) are queued as events and made by the worker's
    thread, which owns the ``SourceContext``.
    """

    def __init__(self, latest_only: bool, capacity: int = 4) -> None:
        self.latest_only = latest_only
        self.capacity = capacity
        self.halt = threading.Event()
        self._cond = threading.Condition()
        self._frames: deque[tuple[Any, float, float | None]] = deque()
        #: Set by the worker to make the reader drop its connection and reconnect.
        self.renew = threading.Event()
        self._events: list[str] = []
        self._replaced = 0
        self._done = False
        self.error: SourceError | None = None

    def put(self, payload: Any, pts: float, media: float | None = None) -> bool:
        """Hand over a frame (``media``: the input's own timestamp); False once the
        worker has gone."""
        with self._cond:
            if self.latest_only:
                if self._frames:
                    self._frames.clear()
                    self._replaced += 1
            else:
                while len(self._frames) >= self.capacity and not self.halt.is_set():
                    self._cond.wait(0.1)
            if self.halt.is_set():
                return False
            self._frames.append((payload, pts, media))
            self._cond.notify_all()
        return True

    def note(self, event: str) -> None:
        """Queue a state name, or ``"+reconnect"``, for the worker to report."""
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def finish(self, error: SourceError | None = None) -> None:
        """The reader is done; ``error`` is raised in the worker after the last frame."""
        with self._cond:
            self._done = True
            self.error = error
            self._cond.notify_all()

    def stop(self) -> None:
        """The worker is done: the reader leaves at its next step."""
        with self._cond:
            self.halt.set()
            self._cond.notify_all()

    def take(
        self, timeout: float
    ) -> tuple[tuple[Any, float, float | None] | None, list[str], int, bool]:
        """``(frame or None, events, frames replaced since the last call, finished)``."""
        with self._cond:
            if not self._frames and not self._events and not self._done:
                self._cond.wait(timeout)
            item = self._frames.popleft() if self._frames else None
            events, self._events = self._events, []
            replaced, self._replaced = self._replaced, 0
            finished = self._done and not self._frames
            self._cond.notify_all()
        return item, events, replaced, finished


@dataclass(slots=True)
class Progress:
    """What a live source carries from one connection to the next."""

    timeline: Timeline = field(default_factory=Timeline)
    #: Media time of the last frame delivered from a recording (resume point).
    media: float | None = None


@dataclass(slots=True)
class Session:
    """One connection of a live source: where its frames go, and how it ended."""

    handoff: Handoff
    progress: Progress
    frames: int = 0
    eof: bool = False
    #: The input has a known end (a recording): its end of file ends the source.
    recording: bool = False
    error: BaseException | None = None

    @property
    def halted(self) -> bool:
        """The worker has gone, or wants a new connection: stop reading."""
        return self.handoff.halt.is_set() or self.handoff.renew.is_set()

    def deliver(self, payload: Any, media: float | None = None) -> bool:
        """Hand a frame with media time ``media`` (if known) to the worker; False if halted."""
        if self.handoff.renew.is_set():
            return False
        if not self.handoff.put(payload, self.progress.timeline.pts(media), media):
            return False
        self.frames += 1
        return True


class LiveSource(Source):
    """Base of sources read by a background thread that reconnects: ``Stream``, ``Camera``.

    Subclasses say how to connect, read one connection and close it; this
    class runs the reader thread, the back-off, the states and the hand-off.
    ``open`` raises ``SourceError`` when connecting fails for good (or at once
    for ``permanent_errors`` and, with ``retry_first_connect=False``, for a
    first connection that fails), and when ``max_retries`` consecutive
    attempts have failed.
    """

    live = True
    seekable = False

    #: Causes of a failed connection that no retry can fix.
    permanent_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: Keep trying when the very first connection fails (a stream may come up later).
    retry_first_connect: ClassVar[bool] = True

    reconnect: bool
    backoff: Backoff
    max_retries: int | None
    health: HealthOptions = HealthOptions()

    def _target(self) -> str:
        """What the source reads, for messages."""
        raise NotImplementedError

    def _check(self, ctx: SourceContext) -> None:
        """Fail fast (``SourceError``) on what no connection attempt can fix."""

    def _connect(self, ctx: SourceContext) -> Any:
        """Open the input; raise ``SourceError`` (with the cause chained) on failure."""
        raise NotImplementedError

    def _read_connection(self, ctx: SourceContext, handle: Any, session: Session) -> None:
        """Read one connection into ``session.deliver`` until it ends, fails or halts."""
        raise NotImplementedError

    def _disconnect(self, handle: Any) -> None:
        """Release a connection ``_connect`` returned."""

    def _convert(self, payload: Any, ctx: SourceContext) -> np.ndarray:
        """Turn a payload the reader handed over into a BGR image (in the worker's thread)."""
        image: np.ndarray = payload
        return image

    def open(self, ctx: SourceContext) -> Iterator[Captured]:
        # Checked here, not in the generator, so a hopeless configuration fails at open().
        self._check(ctx)
        return self._frames(ctx)

    def _frames(self, ctx: SourceContext) -> Iterator[Captured]:
        handoff = Handoff(latest_only=ctx.realtime)
        reader = threading.Thread(
            target=self._read_guarded,
            args=(ctx, handoff),
            daemon=True,
            name=f"framepipe-{ctx.name}",
        )
        reader.start()
        connected = False
        watch = HealthWatch(self.health, time.monotonic())
        try:
            while not ctx.stopping:
                # A short wait so that a stop is noticed within a tenth of a second.
                item, events, replaced, finished = handoff.take(0.1)
                for event in events:
                    if event == "+reconnect":
                        ctx.count_reconnect()
                    elif event != ctx.state:
                        connected = connected or event == "connected"
                        ctx.set_state(event)
                        if event == "connected":
                            watch.reconnected(time.monotonic())
                if replaced:
                    ctx.drop(replaced)
                now = time.monotonic()
                if item is not None:
                    payload, pts, media = item
                    image = self._convert(payload, ctx)
                    self._judge(ctx, handoff, watch.frame(image, media, now), watch)
                    yield image, pts
                elif finished:
                    if handoff.error is not None:
                        raise handoff.error
                    return
                elif ctx.state == "connected":
                    self._judge(ctx, handoff, watch.idle(now), watch)
        finally:
            handoff.stop()
            # A reader blocked in a read leaves by itself within its read timeout and
            # closes its own connection, so the worker need not wait for it.
            reader.join(timeout=0.5)
            if not connected and ctx.state != "failed":
                # Stopped (a duration, Ctrl-C) before the input ever answered: a run that
                # saw nothing of it must not pass for a good one. "failed" says so.
                ctx.logger.error("%s: never connected to %s", ctx.name, self._target())
                ctx.set_state("failed")

    def _judge(
        self, ctx: SourceContext, handoff: Handoff, state: str | None, watch: HealthWatch
    ) -> None:
        """Report a change of health; a frozen picture may ask for a new connection."""
        if state is not None:
            ctx.set_health(state, watch.detail())
        if watch.renew_due(time.monotonic()):
            handoff.renew.set()

    def _read_guarded(self, ctx: SourceContext, handoff: Handoff) -> None:
        try:
            self._reconnect_loop(ctx, handoff)
        except Exception as exc:  # a bug in a reader must still end the source, not hang it
            handoff.note("failed")
            handoff.finish(SourceError(ctx.name, f"reader of {self._target()} failed: {exc!r}"))

    def _fail(self, handoff: Handoff, error: SourceError) -> None:
        handoff.note("failed")
        handoff.finish(error)

    def _reconnect_loop(self, ctx: SourceContext, handoff: Handoff) -> None:
        progress = Progress()
        failures = 0  # consecutive attempts that delivered no frame
        attempts = 0
        ever_connected = False
        while not handoff.halt.is_set():
            # Before a retry the state is already "reconnecting" (set before the back-off).
            handoff.note("+reconnect" if attempts else "connecting")
            attempts += 1
            session = Session(handoff, progress)
            try:
                handle = self._connect(ctx)
            except SourceError as exc:
                first = attempts == 1 and not self.retry_first_connect
                if first or not self.reconnect or isinstance(exc.__cause__, self.permanent_errors):
                    return self._fail(handoff, exc)
                reason = exc.detail
                # Said once per outage; every attempt is counted in the statistics.
                log = ctx.logger.warning if failures == 0 else ctx.logger.debug
                log("%s; retrying", reason)
            else:
                if ever_connected:
                    ctx.logger.warning("reconnected to %s", self._target())
                ever_connected = True
                try:
                    handoff.note("connected")
                    progress.timeline.reconnected()
                    self._read_connection(ctx, handle, session)
                except SourceError as exc:  # e.g. no video stream: a retry will not help
                    return self._fail(handoff, exc)
                finally:
                    self._disconnect(handle)
                if handoff.halt.is_set():
                    return None
                if session.eof and (session.recording or not self.reconnect):
                    handoff.note("ended")
                    return handoff.finish()
                if handoff.renew.is_set():
                    handoff.renew.clear()
                    reason = "its picture froze"
                elif session.eof:
                    reason = "the input ended"
                elif session.error is not None:
                    reason = explain(session.error)
                else:
                    reason = "no frames"
                if not self.reconnect:
                    return self._fail(
                        handoff,
                        SourceError(
                            ctx.name,
                            f"lost {self._target()} after {session.frames} frames: {reason}",
                        ),
                    )
                ctx.logger.warning("lost %s (%s); reconnecting", self._target(), reason)
            failures = 0 if session.frames else failures + 1
            if self.max_retries is not None and failures > self.max_retries:
                return self._fail(
                    handoff,
                    SourceError(
                        ctx.name,
                        f"gave up on {self._target()} after {failures} failed attempts: {reason}",
                    ),
                )
            handoff.note("reconnecting")
            if handoff.halt.wait(self.backoff.delay(max(0, failures - 1))):
                return None
        return None


# The password of a URL that urllib cannot parse, for messages about it.
_PASSWORD = re.compile(r"(//[^/:@]*:)[^/@]*@")


def check_url(url: str) -> None:
    """Raise ``ValueError`` saying what is wrong with a stream URL that cannot be parsed.

    Checked when a ``Stream`` is made, so that ``rtsp://[::1/live`` fails at once
    instead of when the first connection times out.

    Example::

        check_url("rtsp://[::1/live")  # ValueError: malformed URL 'rtsp://[::1/live': ...
    """
    shown = _PASSWORD.sub(r"\1***@", url)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (parses the port: "rtsp://cam:99999/" fails here)
    except ValueError as exc:
        raise ValueError(f"malformed URL {shown!r}: {exc}") from None
    if parts.scheme.lower() in ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https") and not (
        parts.hostname
    ):
        raise ValueError(f"malformed URL {shown!r}: no host after {parts.scheme}://")


# Demuxers whose timestamps are made up (a frame counter at a guessed rate).
_UNTIMED_FORMATS = frozenset({"mpjpeg", "mjpeg", "image2pipe"})


class Stream(LiveSource):
    """A network video stream (RTSP, RTMP, HTTP(S) MJPEG or HLS, ...) decoded with PyAV.

    ``open`` runs in the worker and starts a reader thread that demuxes and
    decodes continuously with low-latency settings (RTSP over TCP, the
    decoder's low-delay mode, bounded stream analysis). What the pipeline sees
    depends on ``ctx.mode``:

    - ``"realtime"``: only the newest decoded frame is kept; frames replaced
      before the pipeline took them are counted with ``ctx.drop``, so latency
      never builds up behind a slow consumer. Packets read while the stream is
      analysed at open are dropped too (FFmpeg's ``nobuffer``).
    - ``"offline"``: every frame from the moment of connection, in order; a
      slow consumer slows the reader.

    ``pts`` is the stream's own time while it is sane, otherwise the wall clock,
    in seconds since the first frame; it keeps rising across reconnects.

    When the connection drops, fails to open, or sends nothing for
    ``read_timeout`` seconds, the reader reconnects (``reconnect=True``) after
    an exponential back-off with jitter, reporting ``connecting``,
    ``connected``, ``reconnecting`` and ``ended``/``failed`` through
    ``ctx.set_state`` and each attempt through ``ctx.count_reconnect``.
    Its health (``run.stats[name].health``, ``/metrics``, the web view and the
    run's events) says whether the picture can be trusted: ``stalled`` (no
    frame for ``stall_after`` seconds), ``frozen`` (the picture unchanged for
    ``frozen_after`` seconds), ``clock`` (its timestamps stopped), else ``ok``.
    ``max_retries`` consecutive failed attempts end the source with a
    ``SourceError`` (``None``: retry for as long as the run lasts). A recording
    (an input with a known duration, such as a VOD playlist) ends at its end
    instead of being reconnected, and resumes where it was after a loss. A stop
    ends the source within a fraction of a second, during back-off or a
    blocked read too.

    Args:
        url: ``rtsp://``, ``rtsps://``, ``rtmp://``, ``rtmps://``, ``http://``,
            ``https://``, ``tcp://`` or ``udp://``. Any other scheme raises
            ``SourceError`` at once; a URL that cannot be parsed
            (``rtsp://[::1/live``) raises ``ValueError`` when the ``Stream`` is
            made. A password in the URL
            (``rtsp://user:pass@host/...``) is shown as ``***`` in messages,
            logs and ``describe()``.
        reconnect: reconnect after a loss, and keep trying when the first
            connection fails. With ``False`` a failure raises ``SourceError``
            and a clean end of stream ends the source.
        backoff: ``(initial, maximum)`` seconds between attempts.
        jitter: relative random spread of each back-off delay.
        max_retries: consecutive failed attempts before giving up.
        open_timeout: seconds allowed to connect and read the stream header.
        read_timeout: seconds without data after which the connection counts as lost.
        options: extra FFmpeg options, overriding framepipe's defaults
            (e.g. ``{"rtsp_transport": "udp"}``).
        stall_after: seconds without a frame, the connection open or not, after
            which the source's health is ``stalled`` (``None``: never).
        frozen_after: seconds of an unchanged picture after which it is
            ``frozen`` (``None``: never checked, no cost).
        frozen_threshold: the mean absolute difference, in grey levels of 255, of
            a strided sample of the picture at or below which a frame counts as
            unchanged (0 treats only identical frames as unchanged). Sensor noise
            of a still scene differs by 1 or more.
        clock_after: seconds of frames whose own timestamps do not advance (or go
            back) after which the health is ``clock``.
        reconnect_when_frozen: drop the connection and reconnect when the
            picture freezes.

    Example::

        pipe.source("door", fp.sources.Stream("rtsp://10.0.0.7:554/stream1"))
    """

    encoded_video = True
    permanent_errors = (
        av.error.ProtocolNotFoundError,
        av.error.HTTPUnauthorizedError,
        av.error.HTTPForbiddenError,
    )

    def __init__(
        self,
        url: str,
        *,
        reconnect: bool = True,
        backoff: tuple[float, float] = (0.5, 10.0),
        jitter: float = 0.2,
        max_retries: int | None = None,
        open_timeout: float = 10.0,
        read_timeout: float = 5.0,
        options: dict[str, str] | None = None,
        stall_after: float | None = 5.0,
        frozen_after: float | None = 10.0,
        frozen_threshold: float = 0.5,
        clock_after: float | None = 2.0,
        reconnect_when_frozen: bool = False,
    ) -> None:
        if open_timeout <= 0 or read_timeout <= 0:
            raise ValueError(
                f"Stream: timeouts must be > 0, got open_timeout={open_timeout}, "
                f"read_timeout={read_timeout}"
            )
        if max_retries is not None and max_retries < 0:
            raise ValueError(f"Stream: max_retries must be >= 0 or None, got {max_retries}")
        check_url(str(url))
        self.url = str(url)
        self.reconnect = bool(reconnect)
        self.backoff = Backoff(float(backoff[0]), float(backoff[1]), float(jitter))
        self.max_retries = max_retries
        self.open_timeout = float(open_timeout)
        self.read_timeout = float(read_timeout)
        self.options = dict(options or {})
        self.health = health_options(
            "Stream",
            stall_after=stall_after,
            frozen_after=frozen_after,
            frozen_threshold=frozen_threshold,
            clock_after=clock_after,
            reconnect_when_frozen=bool(reconnect_when_frozen),
        )

    def describe(self) -> dict[str, Any]:
        return {"type": "Stream", "url": redact(self.url), "reconnect": self.reconnect}

    def _target(self) -> str:
        return redact(self.url)

    def _check(self, ctx: SourceContext) -> None:
        if scheme_of(self.url) not in STREAM_SCHEMES:
            ctx.set_state("failed")
            raise SourceError(
                ctx.name,
                f"unsupported URL {redact(self.url)!r}: expected one of "
                f"{', '.join(s + '://' for s in sorted(STREAM_SCHEMES))}",
            )

    def _connect(self, ctx: SourceContext) -> InputContainer:
        # Real time wants the newest frames at once; offline wants every frame.
        defaults = network_options(self.url, self.read_timeout, low_latency=ctx.realtime)
        options = {**defaults, **self.options}
        return open_input(
            self.url, ctx.name, options=options, timeout=(self.open_timeout, self.read_timeout)
        )

    def _disconnect(self, handle: Any) -> None:
        handle.close()

    def _convert(self, payload: Any, ctx: SourceContext) -> np.ndarray:
        # Converting here, in the worker, costs nothing for frames real-time mode drops.
        return frame_to_bgr(payload, ctx)

    def _read_connection(self, ctx: SourceContext, handle: Any, session: Session) -> None:
        container: InputContainer = handle
        stream = video_stream(container, ctx.name, self.url)
        codec = stream.codec_context
        codec.thread_type = "AUTO"
        # Low delay turns off frame threading, whose pipeline holds frames back.
        codec.flags |= int(av.codec.context.Flags.low_delay)
        skip = ReferenceOnly(ctx, stream, frame_rate(stream))
        session.recording = bool(container.duration and container.duration > 0)
        progress = session.progress
        progress.timeline.live = not session.recording
        resume = progress.media if session.recording else None
        if resume is not None and stream.time_base is not None:
            # A recording resumes where the lost connection stopped; where it
            # cannot seek, the frames up to there are skipped below instead.
            with contextlib.suppress(av.error.FFmpegError, OSError):
                container.seek(int(resume / stream.time_base), stream=stream)
        timed = container.format.name not in _UNTIMED_FORMATS
        tap = PacketTap.of(ctx.packets if timed else None, stream)
        if ctx.packets is not None and not timed:
            ctx.packets.uncopyable = f"{container.format.name} without timestamps"

        try:
            for packet in container.demux(stream):
                if session.halted:
                    return
                try:
                    frames = packet.decode()
                except (av.error.InvalidDataError, av.error.UndefinedError):
                    # Damaged packets are common where a live stream is joined
                    # mid-GOP; the next keyframe recovers.
                    continue
                if tap is not None:  # after decoding: the tap's filter takes the packet's data
                    tap.add(packet)
                for frame in frames:
                    media = frame.time if timed else None
                    if media is not None:
                        skip.kept(ctx, media)
                    if session.recording and media is not None:
                        if resume is not None and media <= resume:
                            continue
                        progress.media = media
                    if not session.deliver(frame, media):
                        return
                    placed = progress.timeline.last
                    if tap is not None and media is not None and placed is not None:
                        # Where the timeline put this frame: the packets' times follow it.
                        tap.learn(placed - media)
            session.eof = True
        except (av.error.FFmpegError, OSError) as exc:
            session.error = exc
