"""Event clips: the seconds around what happened, cut from the camera's own video."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import SinkError
from .._frame import Frame
from ..sources._packets import EncodedPacket, PacketRing
from ._base import Sink, SinkContext
from ._json import frame_record
from ._jsonl import JsonLines

#: Seconds a source may run ahead of the sink (frames in queues, a slow stage) that the
#: ring keeps on top of ``pre``.
LAG_S = 10.0


@dataclass(frozen=True, slots=True)
class _Moment:
    """What a clip's record says of an event frame: kept as JSON-native values, because
    a frame's data is only lent to ``write()``."""

    source: str
    pts: float
    timestamp: float
    results: dict[str, Any]

    @staticmethod
    def of(frame: Frame) -> _Moment:
        record = frame_record(frame, frame.results)
        return _Moment(
            frame.source, frame.pts, frame.timestamp, record["results"] if record else {}
        )


@dataclass
class _Clip:
    """One clip being written."""

    name: str
    path: Path
    partial: Path
    container: Any
    stream: Any
    segment: int
    base_dts: int
    first_event: _Moment
    last_event_pts: float
    last_event_time: float
    end: float  # pipeline pts the clip runs to
    limit: float  # pts it may not run past (max_length)
    start_at: float
    last_at: float
    last_dts: int
    packets: int = 0


@dataclass
class _Camera:
    """One source's event and clip state."""

    ring: PacketRing
    cursor: int = 0  # packets of the ring already taken
    pending: list[EncodedPacket] = field(default_factory=list)
    since: float | None = None  # pts of the first frame of the current run of event frames
    first_event: _Moment | None = None
    quiet_until: float = -math.inf  # cooldown: no clip starts before this pts
    clip: _Clip | None = None


class Clips(Sink):
    """An MP4 clip around each event: from ``pre`` seconds before it to ``post`` after.

    ``when`` decides which frames are events: the name of an input whose result
    marks one (a truthy result; for ``fp.stages.LineCounter``/``ZoneCounter``
    results, a crossing or entry in this frame), or a function ``frame ->
    bool | str`` (a string names the event). An event must last
    ``min_duration`` seconds of frames to count; after a clip ends, no new clip
    starts for ``cooldown`` seconds; events while a clip is being written
    extend it, up to ``max_length`` seconds.

    A clip starts on the keyframe at or before ``pre`` seconds before the first
    event frame, and is the camera's own H.264/H.265 packets muxed by stream
    copy: no encoder time, the camera's quality. The sources keep those packets
    in a bounded ring (``pre`` plus ``LAG_S`` seconds, back to a keyframe), only
    when a ``Clips`` sink needs them; the sink runs in its sources' process. A
    clip ends early where the camera's connection was lost (a new clip starts
    with the next connection while the event goes on). Sources without H.264 or
    H.265 video of their own (``Synthetic``, ``Images``, ``Camera``, a GIF or
    MJPEG input) have their frames encoded to H.264 as they are produced
    (x264 ``veryfast``, a keyframe every second): that costs encoder time in the
    source's thread (about 3 ms a frame at 640x480 on one core), only while a
    ``Clips`` sink needs it.

    Clips are written as ``<name>.partial.mp4`` and renamed to
    ``<source>-<pts>-<event>.mp4`` when finished (at ``close()`` too: a clip
    being written at Ctrl-C or SIGTERM is finished and playable). Each finished
    clip gets a record in ``clips.jsonl`` in the folder, and in ``on_clip`` (a
    sink that takes records, e.g. ``fp.sinks.Webhook``): ``{"event": "clip",
    "source", "name", "path", "start_pts", "end_pts", "duration_s",
    "first_event_pts", "last_event_pts", "first_event_time",
    "last_event_time", "results"}`` (the results of the first event frame).

    Example::

        count = pipe.stage("count", fp.stages.LineCounter((0, 230), (640, 230)), after=track)
        pipe.sink("clips", fp.sinks.Clips("clips/", when="count", pre=5, post=5), after=count)
    """

    reads_pixels = False  # packets and results only

    def __init__(
        self,
        folder: str | os.PathLike[str],
        when: str | Callable[[Frame], bool | str],
        *,
        pre: float = 5.0,
        post: float = 5.0,
        min_duration: float = 0.0,
        cooldown: float = 0.0,
        max_length: float = 60.0,
        on_clip: Sink | None = None,
    ) -> None:
        if not (isinstance(when, str) and when) and not callable(when):
            raise ValueError(
                f"Clips: when must be an input name or a function frame -> bool | str, got {when!r}"
            )
        for name, value in (
            ("pre", pre),
            ("post", post),
            ("min_duration", min_duration),
            ("cooldown", cooldown),
        ):
            if not (isinstance(value, int | float) and 0 <= value < math.inf):
                raise ValueError(f"Clips: {name} must be seconds >= 0, got {value!r}")
        if not (isinstance(max_length, int | float) and max_length > 0):
            raise ValueError(f"Clips: max_length must be seconds > 0, got {max_length!r}")
        if on_clip is not None and not on_clip.takes_records():
            raise ValueError(
                f"Clips: on_clip must be a sink that takes records (fp.sinks.Webhook, "
                f"fp.sinks.JsonLines), got {type(on_clip).__name__}"
            )
        self.folder = Path(folder)
        self.when = when
        self.pre, self.post = float(pre), float(post)
        self.min_duration, self.cooldown = float(min_duration), float(cooldown)
        self.max_length = float(max_length)
        self.on_clip = on_clip
        self.encoded_history_s = self.pre + LAG_S
        self.results_read = (when,) if isinstance(when, str) else ()
        #: Paths of the clips finished by the run (read it after the run, any executor).
        self.clips: list[str] = []

    # -- the worker's side ---------------------------------------------------------------

    def open(self) -> None:
        self.clips = []
        self._cameras: dict[str, _Camera] = {}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(
                self.context.name, f"cannot make the clip folder {str(self.folder)!r}: {exc}"
            ) from exc
        self._records = JsonLines(self.folder / "clips.jsonl", append=True)
        self._records.context = self._child_context("records")
        self._records.open()
        if self.on_clip is not None:
            self.on_clip.context = self._child_context("on_clip")
            self.on_clip.open()

    def _child_context(self, role: str) -> SinkContext:
        context = self.context
        return SinkContext(
            name=f"{context.name}.{role}",
            mode=context.mode,
            inputs=(),
            sources=context.sources,
            logger=context.logger,
        )

    def write(self, frame: Frame) -> None:
        camera = self._camera(frame.source)
        event = self._event_name(frame)
        self._advance(camera, frame, event)

    def close(self) -> None:
        errors = []
        for camera in getattr(self, "_cameras", {}).values():
            if camera.clip is not None:
                try:
                    self._take(camera)
                    self._write_until(camera, camera.clip.end)
                    if camera.clip is not None:
                        self._finish(camera)
                except SinkError as exc:
                    errors.append(exc)
        for sink in (getattr(self, "_records", None), self.on_clip):
            if sink is not None:
                sink.close()
        if errors:
            raise errors[0]

    def final_state(self) -> Any:
        return self.clips

    def adopt_final_state(self, state: Any) -> None:
        self.clips = list(state)

    def describe(self) -> dict[str, Any]:
        return {"type": "Clips", "folder": str(self.folder), "pre": self.pre, "post": self.post}

    # -- events --------------------------------------------------------------------------

    def _camera(self, source: str) -> _Camera:
        camera = self._cameras.get(source)
        if camera is None:
            ring = self.context.packets(source) if self.context.packets is not None else None
            if ring is None:
                raise SinkError(
                    self.context.name,
                    f"source {source!r} keeps no video in this sink's process: it was "
                    f"added to the running pipeline on another worker than the sink's",
                )
            camera = self._cameras[source] = _Camera(ring)
        return camera

    def _event_name(self, frame: Frame) -> str | None:
        when = self.when
        if isinstance(when, str):
            if when not in frame.results:
                return None
            value = frame.results[when]
            events = getattr(value, "events", None)  # the counters: this frame's crossings
            happened = bool(events) if events is not None else bool(value)
            return when if happened else None
        decided = when(frame)
        if isinstance(decided, str):
            return decided or None
        return "event" if decided else None

    def _advance(self, camera: _Camera, frame: Frame, event: str | None) -> None:
        if camera.clip is None and frame.pts < camera.quiet_until:
            event = None  # cooling down: an event must begin after the cooldown to count
        if event is None:
            camera.since, camera.first_event = None, None
        clip = camera.clip
        if clip is not None:
            self._take(camera)  # only while a clip is written: nothing piles up between clips
            extends = event is not None and self._lasting(camera, frame)
            self._write_until(camera, min(frame.pts, clip.limit if extends else clip.end))
            if camera.clip is clip:  # not ended at a gap
                if extends:
                    clip.last_event_pts, clip.last_event_time = frame.pts, frame.timestamp
                    clip.end = min(frame.pts + self.post, clip.limit)
                if frame.pts >= clip.end:
                    self._finish(camera)
        if camera.clip is None and event is not None and self._lasting(camera, frame):
            assert camera.first_event is not None
            self._start(camera, event, camera.first_event, frame)
            if camera.clip is not None:
                self._write_until(camera, frame.pts)

    def _lasting(self, camera: _Camera, frame: Frame) -> bool:
        """Whether the event under way (this frame is one) has lasted ``min_duration``."""
        if camera.since is None:
            camera.since, camera.first_event = frame.pts, _Moment.of(frame)
        return frame.pts - camera.since >= self.min_duration - 1e-9

    # -- packets into files --------------------------------------------------------------

    def _take(self, camera: _Camera) -> None:
        fresh, camera.cursor = camera.ring.since(camera.cursor)
        camera.pending.extend(fresh)

    def _start(self, camera: _Camera, event: str, first: _Moment, now: Frame) -> None:
        packets, camera.cursor = camera.ring.start_for(first.pts - self.pre, first.pts)
        if not packets:
            return  # no keyframe yet: the next event frame tries again
        camera.pending = packets
        head = packets[0]
        stem = f"{first.source}-{first.pts:010.3f}-{event}".replace(os.sep, "_")
        path = self.folder / f"{stem}.mp4"
        partial = self.folder / f"{stem}.partial.mp4"
        container, stream = self._open_file(partial, head)
        camera.clip = _Clip(
            name=event,
            path=path,
            partial=partial,
            container=container,
            stream=stream,
            segment=head.segment,
            base_dts=head.dts,
            first_event=first,
            last_event_pts=now.pts,
            last_event_time=now.timestamp,
            end=now.pts + self.post,
            limit=head.at + self.max_length,
            start_at=head.at,
            last_at=head.at,
            last_dts=head.dts - 1,
        )
        camera.clip.end = min(camera.clip.end, camera.clip.limit)

    def _open_file(self, path: Path, head: EncodedPacket) -> tuple[Any, Any]:
        import av

        video = head.format
        try:
            container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
            stream = container.add_mux_stream(
                video.codec,
                rate=video.rate,
                width=video.width,
                height=video.height,
                time_base=video.time_base,
            )
        except (OSError, av.error.FFmpegError) as exc:
            raise SinkError(
                self.context.name, f"cannot write the clip {str(path)!r}: {exc}"
            ) from exc
        return container, stream

    def _write_until(self, camera: _Camera, until: float) -> None:
        """Mux the pending packets in decode order while they are due by ``until``; a
        packet of another connection or loop pass ends the clip once the frames reach it."""
        clip = camera.clip
        assert clip is not None
        written = 0
        for packet in camera.pending:
            if packet.at > until + 1e-6:
                break
            if packet.segment != clip.segment or packet.dts <= clip.last_dts:
                # The frames have reached the gap: this clip ends at it.
                self._finish(camera)
                break
            self._mux(clip, packet)
            written += 1
        del camera.pending[:written]

    def _mux(self, clip: _Clip, packet: EncodedPacket) -> None:
        import av

        out = av.Packet(packet.data)
        out.pts = packet.pts - clip.base_dts
        out.dts = packet.dts - clip.base_dts
        out.duration = packet.duration
        out.time_base = packet.format.time_base
        out.stream = clip.stream
        out.is_keyframe = packet.key
        try:
            clip.container.mux(out)
        except (OSError, av.error.FFmpegError) as exc:
            self._abandon(clip)
            raise SinkError(
                self.context.name, f"cannot write the clip {str(clip.path)!r}: {exc}"
            ) from exc
        clip.packets += 1
        clip.last_dts = packet.dts
        clip.last_at = max(clip.last_at, packet.at)

    def _finish(self, camera: _Camera) -> None:
        clip = camera.clip
        assert clip is not None
        camera.clip = None
        camera.pending = []
        camera.quiet_until = clip.last_at + self.cooldown
        camera.since, camera.first_event = None, None
        import av

        try:
            clip.container.close()
            clip.partial.replace(clip.path)
        except (OSError, av.error.FFmpegError) as exc:
            self._abandon(clip)
            raise SinkError(
                self.context.name, f"cannot finish the clip {str(clip.path)!r}: {exc}"
            ) from exc
        first = clip.first_event
        record = {
            "event": "clip",
            "source": first.source,
            "name": clip.name,
            "path": str(clip.path),
            "start_pts": round(clip.start_at, 6),
            "end_pts": round(clip.last_at, 6),
            "duration_s": round(clip.last_at - clip.start_at, 6),
            "first_event_pts": round(first.pts, 6),
            "last_event_pts": round(clip.last_event_pts, 6),
            "first_event_time": first.timestamp,
            "last_event_time": clip.last_event_time,
            "results": first.results,
        }
        self.clips.append(str(clip.path))
        self._records.write_record(record)
        if self.on_clip is not None:
            self.on_clip.write_record(record)

    def _abandon(self, clip: _Clip) -> None:
        # A clip that cannot be finished leaves no half file behind.
        with contextlib.suppress(Exception):
            clip.container.close()
        with contextlib.suppress(OSError):
            clip.partial.unlink()
