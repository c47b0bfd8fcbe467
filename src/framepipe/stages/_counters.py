"""Counting tracked objects: crossings of a line, entries into and exits from a zone."""

from __future__ import annotations

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


class _Counter(Stage):
    """What both counters share: finding tracked detections and skipping repeats."""

    reads_pixels = False  # results only

    detections: str | None
    classes: frozenset[str] | None
    _last: Any = None
    _ready = False

    def process(self, frame: Frame) -> Any:
        """The counter's state after ``frame``."""
        if not self._ready:
            self.setup()
        return self._count(frame, self._tracked(frame))

    def setup(self) -> None:
        self._last = None
        self._ready = True

    def __getstate__(self) -> dict[str, Any]:
        # Counting state belongs to one run in one worker; setup() starts it afresh.
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def _count(self, frame: Frame, detections: sv.Detections | None) -> Any:
        """Update the counts with this frame's new tracked detections (``None``: nothing new)."""
        raise NotImplementedError

    def _tracked(self, frame: Frame) -> sv.Detections | None:
        """This frame's new tracked detections, or ``None`` when nothing new arrived."""
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
        if self.classes is not None and len(detections):
            names = detections.data.get("class_name")
            if names is not None:
                kept = detections[np.isin(names, list(self.classes))]
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
    """Count tracked objects crossing the line from ``start`` to ``end`` (``sv.LineZone``).

    Each result is a ``LineCount``: ``in_count``/``out_count`` so far, this frame's
    ``events`` (one ``CountEvent`` per tracker id that crossed, with the frame
    index) and the line itself, which ``Annotate`` draws. An object is counted when
    all of its ``anchors`` have moved to the other side; ``min_crossing`` frames on
    the new side are required first (raise it for jittery boxes). When the tracked
    result is carried forward unchanged from a slower stage, nothing is counted
    again.

    Args:
        start, end: the line's end points in frame pixels.
        detections: the tracked result to count; ``None`` uses the newest result
            that has tracker ids.
        anchors: box points that must cross, e.g. ``"bottom_center"`` (where objects
            touch the ground) or ``("top_left", "top_right", "bottom_left",
            "bottom_right")`` for the whole box.
        min_crossing: frames an object must be seen on the new side.
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
        min_crossing: int = 3,
        classes: Iterable[str] | None = None,
    ) -> None:
        self.start, self.end = _point(start, "start"), _point(end, "end")
        if self.start == self.end:
            raise ValueError("LineCounter: start and end must differ")
        self.detections = detections
        self.anchors = _positions(anchors)
        self.min_crossing = int(min_crossing)
        self.classes = None if classes is None else frozenset(classes)

    def setup(self) -> None:
        self._zone = sv.LineZone(
            sv.Point(*self.start),
            sv.Point(*self.end),
            triggering_anchors=self.anchors,
            minimum_crossing_threshold=self.min_crossing,
        )
        super().setup()

    def process(self, frame: Frame) -> LineCount:
        """The counts after ``frame``."""
        result: LineCount = super().process(frame)
        return result

    def _count(self, frame: Frame, detections: sv.Detections | None) -> LineCount:
        zone = self._zone
        events: list[CountEvent] = []
        if detections is not None:
            crossed_in, crossed_out = zone.trigger(detections)
            assert detections.tracker_id is not None
            crossings: tuple[tuple[EventKind, np.ndarray], ...] = (
                ("in", crossed_in),
                ("out", crossed_out),
            )
            for kind, mask in crossings:
                for i in (int(k) for k in np.flatnonzero(mask)):
                    events.append(
                        CountEvent(
                            kind,
                            int(detections.tracker_id[i]),
                            frame.index,
                            frame.pts,
                            _class_name(detections, i),
                        )
                    )
        return LineCount(self.start, self.end, zone.in_count, zone.out_count, tuple(events))

    def __repr__(self) -> str:
        return f"LineCounter(start={self.start}, end={self.end})"


class ZoneCounter(_Counter):
    """Count tracked objects inside a polygon, and their entries and exits (``sv.PolygonZone``).

    Each result is a ``ZoneCount``: ``current_count`` and the ids ``inside`` now,
    ``entered``/``exited`` totals, this frame's ``events`` and the polygon. An object
    is inside when its ``anchor`` point is. It exits when seen outside, or when it
    has not been seen at all for ``lost_seconds`` of media time (its track ended
    inside the zone).

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
        classes: Iterable[str] | None = None,
    ) -> None:
        points = tuple(_point(p, "a polygon vertex") for p in polygon)
        if len(points) < 3:
            raise ValueError(f"ZoneCounter: a polygon needs at least 3 vertices, got {len(points)}")
        self.polygon = points
        self.detections = detections
        self.anchor = _positions(anchor)
        self.lost_seconds = float(lost_seconds)
        self.classes = None if classes is None else frozenset(classes)

    def setup(self) -> None:
        self._zone = sv.PolygonZone(
            np.round(np.array(self.polygon)).astype(np.int64), triggering_anchors=self.anchor
        )
        self._inside: dict[int, float] = {}  # tracker id -> media time last seen inside
        self._entered = self._exited = 0
        super().setup()

    def process(self, frame: Frame) -> ZoneCount:
        """The zone's state after ``frame``."""
        result: ZoneCount = super().process(frame)
        return result

    def _count(self, frame: Frame, detections: sv.Detections | None) -> ZoneCount:
        zone = self._zone
        events: list[CountEvent] = []
        if detections is not None:
            assert detections.tracker_id is not None
            in_zone = zone.trigger(detections) if len(detections) else np.zeros(0, bool)
            for i, tracker_id in enumerate(int(t) for t in detections.tracker_id):
                name = _class_name(detections, i)
                if in_zone[i]:
                    if tracker_id not in self._inside:
                        self._entered += 1
                        events.append(CountEvent("enter", tracker_id, frame.index, frame.pts, name))
                    self._inside[tracker_id] = frame.pts
                elif tracker_id in self._inside:
                    del self._inside[tracker_id]
                    self._exited += 1
                    events.append(CountEvent("exit", tracker_id, frame.index, frame.pts, name))
        for tracker_id, when in list(self._inside.items()):
            if frame.pts - when > self.lost_seconds:
                del self._inside[tracker_id]
                self._exited += 1
                events.append(CountEvent("exit", tracker_id, frame.index, frame.pts))
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
