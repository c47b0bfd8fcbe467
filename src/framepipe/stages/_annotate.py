"""Drawing upstream results onto a copy of the frame: boxes, ids, counters, fps."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np
import supervision as sv

from .._frame import Frame
from .._stage import Stage
from ._counters import LineCount, ZoneCount

_PADDING = 6  # pixels around label text


class Annotate(Stage):
    """Draw every upstream result it understands onto a copy of the frame.

    Draws, in ``frame.results`` order:

    - every ``sv.Detections``: boxes and labels (``"#7 car"`` for tracked ones,
      coloured by track; ``"car 0.83"`` otherwise, coloured by class), and with
      ``trace=True`` the recent path of each track. Detections a ``Tracker``
      consumed (named by its ``metadata["source"]``) are not drawn again;
    - ``LineCount`` and ``ZoneCount`` results: the line or zone with its counts;
    - with ``overlay=True``, a corner label with the rate this stage draws frames
      at (measured by the stage itself) and the frame's age
      (``time.time() - frame.timestamp``: capture-to-draw latency).

    The result is the annotated ``H x W x 3`` ``uint8`` BGR image, a new array
    (``frame.image`` is read-only and shared). It is what ``frame.display_image``
    returns, so video and web sinks show it.

    Args:
        boxes, labels, trace, overlay: what to draw.
        detections: names of the results to draw; ``None`` draws all.
        trace_length: points kept per track for ``trace``.

    Example::

        pipe.stage("annotate", fp.stages.Annotate(trace=True))
        pipe.sink(fp.sinks.VideoFile("out.mp4"), after="annotate")
    """

    def __init__(
        self,
        boxes: bool = True,
        labels: bool = True,
        trace: bool = False,
        overlay: bool = True,
        *,
        detections: Iterable[str] | None = None,
        trace_length: int = 30,
    ) -> None:
        self.boxes, self.labels, self.trace, self.overlay = boxes, labels, trace, overlay
        self.detections = None if detections is None else tuple(detections)
        self.trace_length = int(trace_length)
        self._size: tuple[int, int] | None = None

    def setup(self) -> None:
        self._times: deque[float] = deque(maxlen=30)
        self._traces: dict[str, sv.TraceAnnotator] = {}
        self._size = None

    def _style(self, frame: Frame) -> None:
        """Annotators sized for this frame size (re-made only when the size changes)."""
        height, width = frame.shape
        if self._size == (width, height):
            return
        self._size = (width, height)
        self._thickness = sv.calculate_optimal_line_thickness((width, height))
        self._text_scale = sv.calculate_optimal_text_scale((width, height))
        self._box = {
            lookup: sv.BoxAnnotator(thickness=self._thickness, color_lookup=lookup)
            for lookup in sv.ColorLookup
        }
        self._label = {
            lookup: sv.LabelAnnotator(
                text_scale=self._text_scale, text_padding=4, color_lookup=lookup
            )
            for lookup in sv.ColorLookup
        }

    def process(self, frame: Frame) -> np.ndarray:
        """The annotated copy of ``frame.image``."""
        if not hasattr(self, "_times"):
            self.setup()
        self._times.append(time.monotonic())
        self._style(frame)
        canvas = frame.image.copy()
        consumed = {
            value.metadata.get("source")
            for value in frame.results.values()
            if isinstance(value, sv.Detections) and value.tracker_id is not None
        }
        for name, value in frame.results.items():
            if isinstance(value, sv.Detections):
                wanted = (
                    name in self.detections
                    if self.detections is not None
                    else (name not in consumed)
                )
                if wanted and len(value):
                    self._draw_detections(canvas, name, value)
            elif isinstance(value, LineCount):
                self._draw_line(canvas, value)
            elif isinstance(value, ZoneCount):
                self._draw_zone(canvas, value)
        if self.overlay:
            self._draw_overlay(canvas, frame)
        return canvas

    def _draw_detections(self, canvas: np.ndarray, name: str, detections: sv.Detections) -> None:
        tracked = detections.tracker_id is not None
        if tracked:
            lookup = sv.ColorLookup.TRACK
        elif detections.class_id is not None:
            lookup = sv.ColorLookup.CLASS
        else:
            lookup = sv.ColorLookup.INDEX
        if self.trace and tracked:
            tracer = self._traces.get(name)
            if tracer is None:
                tracer = self._traces[name] = sv.TraceAnnotator(
                    trace_length=self.trace_length,
                    thickness=self._thickness,
                    color_lookup=sv.ColorLookup.TRACK,
                )
            tracer.annotate(canvas, detections)
        if self.boxes:
            self._box[lookup].annotate(canvas, detections)
        if self.labels:
            self._label[lookup].annotate(canvas, detections, labels=_labels(detections))

    def _draw_line(self, canvas: np.ndarray, count: LineCount) -> None:
        start, end = sv.Point(*count.start), sv.Point(*count.end)
        sv.draw_line(canvas, start, end, color=sv.Color.WHITE, thickness=self._thickness)
        middle = sv.Point((start.x + end.x) / 2, (start.y + end.y) / 2)
        self._label_at(
            canvas,
            f"in {count.in_count}  out {count.out_count}",
            middle,
            sv.Color.BLACK,
            sv.Color.WHITE,
        )

    def _draw_zone(self, canvas: np.ndarray, count: ZoneCount) -> None:
        polygon = np.round(np.array(count.polygon)).astype(np.int64)
        sv.draw_polygon(canvas, polygon, color=sv.Color.YELLOW, thickness=self._thickness)
        centre = polygon.mean(axis=0)
        self._label_at(
            canvas,
            f"{count.current_count} inside  ({count.entered} in / {count.exited} out)",
            sv.Point(float(centre[0]), float(centre[1])),
            sv.Color.BLACK,
            sv.Color.YELLOW,
        )

    def _draw_overlay(self, canvas: np.ndarray, frame: Frame) -> None:
        text = f"{self.fps:.1f} fps  age {1000 * (time.time() - frame.timestamp):.0f} ms"
        thickness = max(1, self._thickness // 2)
        (width, height), _ = cv2.getTextSize(
            text, cv2.FONT_HERSHEY_SIMPLEX, self._text_scale, thickness
        )
        # draw_text centres the text on its anchor; this puts the box in the top-left corner.
        anchor = sv.Point(2 * _PADDING + width / 2, 2 * _PADDING + height / 2)
        self._label_at(canvas, text, anchor, sv.Color.WHITE, sv.Color.BLACK)

    def _label_at(
        self,
        canvas: np.ndarray,
        text: str,
        centre: sv.Point,
        colour: sv.Color,
        background: sv.Color,
    ) -> None:
        sv.draw_text(
            canvas,
            text,
            centre,
            text_color=colour,
            text_scale=self._text_scale,
            text_thickness=max(1, self._thickness // 2),
            text_padding=_PADDING,
            background_color=background,
        )

    @property
    def fps(self) -> float:
        """Frames per second this stage has drawn recently (0.0 before the second frame)."""
        times = list(getattr(self, "_times", ()))
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def __getstate__(self) -> dict[str, Any]:
        # Annotators and timing are per worker; setup() rebuilds them.
        return {
            k: v
            for k, v in self.__dict__.items()
            if k in ("boxes", "labels", "trace", "overlay", "detections", "trace_length")
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._size = None

    def __repr__(self) -> str:
        return (
            f"Annotate(boxes={self.boxes}, labels={self.labels}, trace={self.trace}, "
            f"overlay={self.overlay})"
        )


def _labels(detections: sv.Detections) -> list[str]:
    names = detections.data.get("class_name")
    out = []
    for i in range(len(detections)):
        name = (
            str(names[i])
            if names is not None
            else (str(detections.class_id[i]) if detections.class_id is not None else "")
        )
        if detections.tracker_id is not None:
            out.append(f"#{int(detections.tracker_id[i])} {name}".strip())
        elif detections.confidence is not None:
            out.append(f"{name} {float(detections.confidence[i]):.2f}".strip())
        else:
            out.append(name)
    return out
