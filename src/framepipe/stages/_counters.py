"""Counting tracked objects: crossings of a line, entries into and exits from a zone."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import supervision as sv

from .._frame import Frame
from .._stage import Stage
from ._tracker import find_detections, same_result

EventKind = Literal["in", "out", "enter", "exit"]
Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class CountEvent:
    """One tracked object crossing a line (``in``/``out``) or a zone's edge (``enter``/``exit``)."""

    kind: EventKind
    tracker_id: int
    frame_index: int
    pts: float
    class_name: str | None = None


@dataclass(frozen=True, slots=True)
class LineCount:
    """What ``LineCounter`` returns for a frame: totals so far, this frame's events, the line.

    ``in_count`` counts crossings from the right of ``start -> end`` to its left as
    seen on screen (for a line drawn left to right: moving up the image),
    ``out_count`` the other way.
    """

    start: Point
    end: Point
    in_count: int
    out_count: int
    events: tuple[CountEvent, ...] = ()

    @property
    def total(self) -> int:
        """Crossings in both directions."""
        return self.in_count + self.out_count


@dataclass(frozen=True, slots=True)
class ZoneCount:
    """What ``ZoneCounter`` returns for a frame.

    ``current_count`` objects are inside now (their ids in ``inside``);
    ``entered``/``exited`` are totals since the start; ``events`` are this frame's.
    """

    polygon: tuple[Point, ...]
    current_count: int
    entered: int
    exited: int
    inside: tuple[int, ...] = ()
    events: tuple[CountEvent, ...] = ()


_ANCHORS = {p.value.lower(): p for p in sv.Position}


def _positions(anchors: str | Sequence[str]) -> list[sv.Position]:
    items = [anchors] if isinstance(anchors, str) else list(anchors)
    try:
        return [_ANCHORS[a.lower()] for a in items]
    except KeyError as exc:
        raise ValueError(
            f"unknown anchor {exc.args[0]!r}; use one of {', '.join(sorted(_ANCHORS))}"
        ) from None


def _point(value: Sequence[float], what: str) -> Point:
    if len(value) != 2:
        raise ValueError(f"{what} must be an (x, y) pair, got {value!r}")
    return (float(value[0]), float(value[1]))


@dataclass(slots=True)
class _TrackSide:
    side: bool  # the side the track was last counted on (or first seen on)
    counted_at: float  # media time of its last count
    seen_at: float  # media time of its last detection
    run: int = 0  # detections in a row on the other side


#: A track not detected for this long is forgotten (a tracker has long dropped it),
#: so a counter running for days does not keep every id it ever saw.
_FORGET_SECONDS = 60.0


class _Sides:
    """Which side of a boundary each track is on, moved only by detections.

    The rule both counters document: a track changes side (and is counted) when
    ``min_crossing`` detections in a row put it on the other side, and not
    within ``settle_seconds`` of media time after its last count: detections on
    the old side in that time are taken for jitter, so a track is never counted
    back and forth, nor twice in one direction, within a settle time.
    """

    def __init__(self, min_crossing: int, settle_seconds: float) -> None:
        self.min_crossing, self.settle_seconds = min_crossing, settle_seconds
        self.tracks: dict[int, _TrackSide] = {}
        self._swept = -math.inf

    def observe(self, track_id: int, side: bool, now: float, start: bool | None) -> bool:
        """Whether this detection of ``track_id`` on ``side`` completes a crossing.

        ``start`` is the side a track is taken to come from when first seen
        (``None``: wherever it is first seen, without counting).
        """
        self._forget_before(now - _FORGET_SECONDS)
        state = self.tracks.get(track_id)
        if state is None:
            state = self.tracks[track_id] = _TrackSide(
                side if start is None else start, -math.inf, now
            )
        state.seen_at = now
        if side == state.side or now - state.counted_at < self.settle_seconds:
            state.run = 0
            return False
        state.run += 1
        if state.run < self.min_crossing:
            return False
        state.side, state.counted_at, state.run = side, now, 0
        return True

    def move(self, track_id: int, side: bool, now: float) -> None:
        """Put a track on ``side`` as if counted now (a zone exit by timeout)."""
        self.tracks[track_id] = _TrackSide(side, now, now)

    def _forget_before(self, when: float) -> None:
        if when - self._swept < _FORGET_SECONDS:
            return  # sweep about once a minute of media time
        self._swept = when
        for track_id in [t for t, state in self.tracks.items() if state.seen_at < when]:
            del self.tracks[track_id]


class _Counter(Stage):
    """What both counters share: finding new detected boxes and skipping repeats."""

    detections: str | None
    classes: frozenset[str] | None
    min_crossing: int
    settle_seconds: float
    _last: Any = None
    _ready = False

    def process(self, frame: Frame) -> Any:
        """The counter's state after ``frame``."""
        if not self._ready:
            self.setup()
        return self._count(frame, self._tracked(frame))

    def setup(self) -> None:
        self._last = None
        self._sides_of = _Sides(self.min_crossing, self.settle_seconds)
        self._ready = True

    def __getstate__(self) -> dict[str, Any]:
        # Counting state belongs to one run in one worker; setup() starts it afresh.
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def _count(self, frame: Frame, detections: sv.Detections | None) -> Any:
        """Update the counts with this frame's new detected boxes (``None``: nothing new)."""
        raise NotImplementedError

    def _tracked(self, frame: Frame) -> sv.Detections | None:
        """This frame's new *detected* tracked boxes, or ``None`` when nothing new arrived.

        Boxes a tracker only predicted (``data["predicted"]``, or a whole result
        with ``metadata["predicted"]``) are left out: they show where an object
        probably is, never that it crossed.
        """
        name, detections = find_detections(frame, self.detections, tracked=True)
        if detections is None:
            _, untracked = find_detections(frame, self.detections)
            if untracked is not None:
                raise ValueError(
                    f"{self._who()} needs tracked detections (with tracker_id), but "
                    f"{name or 'the newest detections'} have none: put "
                    f"fp.stages.Tracker between the detector and the counter"
                )
            return None
        # A result carried forward from a slower upstream stage was counted already.
        if same_result(detections, self._last):
            return None
        self._last = detections
        predicted = detections.data.get("predicted")
        if predicted is None and detections.metadata.get("predicted"):
            return None
        keep = np.ones(len(detections), bool) if predicted is None else ~np.asarray(predicted, bool)
        if self.classes is not None and len(detections):
            names = detections.data.get("class_name")
            if names is not None:
                keep &= np.isin(names, list(self.classes))
        if not keep.all():
            kept = detections[keep]
            assert isinstance(kept, sv.Detections)
            detections = kept
        return detections

    def _who(self) -> str:
        context = getattr(self, "context", None)
        name = type(self).__name__
        return f"{name} {context.name!r}" if context is not None else name


def _class_name(detections: sv.Detections, i: int) -> str | None:
    names = detections.data.get("class_name")
    return None if names is None else str(names[i])


class LineCounter(_Counter):
    """Count tracked objects crossing the line from ``start`` to ``end``.

    Each result is a ``LineCount``: ``in_count``/``out_count`` so far, this frame's
    ``events`` (one ``CountEvent`` per tracker id that crossed, with the frame
    index) and the line itself, which ``Annotate`` draws.

    The rule: a box tells which side of the line its track is on when all of its
    ``anchors`` are on one side, further from the line than ``margin`` times the
    box's height, and within the line's ends. Only detected boxes count; boxes a
    tracker predicted between detections never do. A track is counted when
    ``min_crossing`` detections in a row put it on the other side, and never
    within ``settle_seconds`` of media time after its last count (what it does
    on the line meanwhile is taken for jitter). A result carried forward
    unchanged from a slower stage is not counted again.

    Args:
        start, end: the line's end points in frame pixels.
        detections: the tracked result to count; ``None`` uses the newest result
            that has tracker ids.
        anchors: box points that must cross, e.g. ``"bottom_center"`` (where objects
            touch the ground) or ``("top_left", "top_right", "bottom_left",
            "bottom_right")`` for the whole box.
        margin: how far past the line (a fraction of the box's height) an anchor
            must be to be on a side; a box jittering on the line stays unknown.
        min_crossing: detections in a row on the new side before a crossing counts.
        settle_seconds: media seconds after a count in which the track is not
            counted again, in either direction.
        classes: count only these class names.

    Example::

        pipe.stage("count", fp.stages.LineCounter((190, 220), (640, 220)), after="track")
        # frame.results["count"].in_count, .out_count, .events
    """

    def __init__(
        self,
        start: Sequence[float],
        end: Sequence[float],
        detections: str | None = None,
        *,
        anchors: str | Sequence[str] = "bottom_center",
        margin: float = 0.05,
        min_crossing: int = 1,
        settle_seconds: float = 1.0,
        classes: Iterable[str] | None = None,
    ) -> None:
        if not margin >= 0:
            raise ValueError(f"LineCounter: margin must be >= 0, got {margin!r}")
        self.margin = float(margin)
        self.start, self.end = _point(start, "start"), _point(end, "end")
        if self.start == self.end:
            raise ValueError("LineCounter: start and end must differ")
        self.detections = detections
        self.anchors = _positions(anchors)
        self.min_crossing, self.settle_seconds = _hysteresis(
            "LineCounter", min_crossing, settle_seconds
        )
        self.classes = None if classes is None else frozenset(classes)

    def setup(self) -> None:
        self._in = self._out = 0
        super().setup()

    def process(self, frame: Frame) -> LineCount:
        """The counts after ``frame``."""
        result: LineCount = super().process(frame)
        return result

    def _sides(self, detections: sv.Detections) -> tuple[np.ndarray, np.ndarray]:
        """Per box: whether it is on the "in" side, and whether that is known."""
        start, end = np.array(self.start), np.array(self.end)
        direction = end - start
        points = np.stack(
            [detections.get_anchors_coordinates(a) for a in self.anchors]
        )  # anchors x boxes x 2
        offset = points - start
        length = float(np.hypot(*direction))
        across = (direction[0] * offset[..., 1] - direction[1] * offset[..., 0]) / length
        along = (offset @ direction) / length**2
        heights = detections.xyxy[:, 3] - detections.xyxy[:, 1]
        clear = np.abs(across) > self.margin * heights  # a box on the line says nothing
        within = np.all((along >= 0) & (along <= 1) & clear, axis=0)
        left = across < 0  # left of start -> end on screen (y grows downwards)
        one_side = np.all(left, axis=0) | np.all(~left, axis=0)
        return np.all(left, axis=0), within & one_side

    def _count(self, frame: Frame, detections: sv.Detections | None) -> LineCount:
        events: list[CountEvent] = []
        if detections is not None and len(detections):
            assert detections.tracker_id is not None
            inside, known = self._sides(detections)
            for i in (int(k) for k in np.flatnonzero(known)):
                tracker_id = int(detections.tracker_id[i])
                side = bool(inside[i])
                if not self._sides_of.observe(tracker_id, side, frame.pts, None):
                    continue
                kind: EventKind = "in" if side else "out"
                if side:
                    self._in += 1
                else:
                    self._out += 1
                events.append(
                    CountEvent(kind, tracker_id, frame.index, frame.pts, _class_name(detections, i))
                )
        return LineCount(self.start, self.end, self._in, self._out, tuple(events))

    def __repr__(self) -> str:
        return f"LineCounter(start={self.start}, end={self.end})"


class ZoneCounter(_Counter):
    """Count tracked objects inside a polygon, and their entries and exits.

    Each result is a ``ZoneCount``: ``current_count`` and the ids ``inside`` now,
    ``entered``/``exited`` totals, this frame's ``events`` and the polygon. A box is
    inside when its ``anchor`` point is (``sv.PolygonZone``). Only detected boxes
    count, never a tracker's predictions. The rule is ``LineCounter``'s, with the
    zone's edge as the line: a track enters when ``min_crossing`` detections in a
    row are inside (a track first seen inside enters at once), exits when as many
    are outside, and is not counted again within ``settle_seconds`` of its last
    entry or exit. A track that has not been detected for ``lost_seconds`` of
    media time exits (its track ended inside the zone).

    Example::

        zone = fp.stages.ZoneCounter([(100, 200), (400, 200), (400, 400), (100, 400)])
        pipe.stage("zone", zone, after="track")
        # frame.results["zone"].current_count
    """

    def __init__(
        self,
        polygon: Sequence[Sequence[float]],
        detections: str | None = None,
        *,
        anchor: str = "bottom_center",
        lost_seconds: float = 1.0,
        min_crossing: int = 1,
        settle_seconds: float = 1.0,
        classes: Iterable[str] | None = None,
    ) -> None:
        points = tuple(_point(p, "a polygon vertex") for p in polygon)
        if len(points) < 3:
            raise ValueError(f"ZoneCounter: a polygon needs at least 3 vertices, got {len(points)}")
        self.polygon = points
        self.detections = detections
        self.anchor = _positions(anchor)
        self.lost_seconds = float(lost_seconds)
        self.min_crossing, self.settle_seconds = _hysteresis(
            "ZoneCounter", min_crossing, settle_seconds
        )
        self.classes = None if classes is None else frozenset(classes)

    def setup(self) -> None:
        self._zone = sv.PolygonZone(
            np.round(np.array(self.polygon)).astype(np.int64), triggering_anchors=self.anchor
        )
        self._inside: dict[int, float] = {}  # tracker id -> media time last detected
        self._entered = self._exited = 0
        super().setup()

    def process(self, frame: Frame) -> ZoneCount:
        """The zone's state after ``frame``."""
        result: ZoneCount = super().process(frame)
        return result

    def _count(self, frame: Frame, detections: sv.Detections | None) -> ZoneCount:
        events: list[CountEvent] = []
        now = frame.pts
        if detections is not None and len(detections):
            assert detections.tracker_id is not None
            in_zone = self._zone.trigger(detections)
            for i, tracker_id in enumerate(int(t) for t in detections.tracker_id):
                side = bool(in_zone[i])
                if tracker_id in self._inside:
                    self._inside[tracker_id] = now
                if not self._sides_of.observe(tracker_id, side, now, False):
                    continue
                name = _class_name(detections, i)
                if side:
                    self._inside[tracker_id] = now
                    self._entered += 1
                    events.append(CountEvent("enter", tracker_id, frame.index, now, name))
                else:
                    del self._inside[tracker_id]
                    self._exited += 1
                    events.append(CountEvent("exit", tracker_id, frame.index, now, name))
        for tracker_id, when in list(self._inside.items()):
            if now - when > self.lost_seconds:
                del self._inside[tracker_id]
                self._sides_of.move(tracker_id, False, now)
                self._exited += 1
                events.append(CountEvent("exit", tracker_id, frame.index, now))
        return ZoneCount(
            self.polygon,
            len(self._inside),
            self._entered,
            self._exited,
            tuple(sorted(self._inside)),
            tuple(events),
        )

    def __repr__(self) -> str:
        return f"ZoneCounter(polygon={list(self.polygon)})"


def _hysteresis(who: str, min_crossing: int, settle_seconds: float) -> tuple[int, float]:
    if int(min_crossing) < 1:
        raise ValueError(f"{who}: min_crossing must be >= 1 detection, got {min_crossing!r}")
    if not float(settle_seconds) >= 0:
        raise ValueError(f"{who}: settle_seconds must be >= 0, got {settle_seconds!r}")
    return int(min_crossing), float(settle_seconds)
