"""Motion detection by background subtraction (OpenCV MOG2): no model, no download."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import supervision as sv

from .._frame import Frame
from .._stage import Stage
from ._detector import clip_boxes, make_detections, shrink


class Motion(Stage):
    """Boxes around moving regions, and how much of the frame moves.

    A MOG2 background model learns the static scene; pixels that differ from it
    (shadows excluded) are "moving". Connected moving regions of at least
    ``min_area`` pixels become boxes. The result is an ``sv.Detections`` with
    ``class_name`` ``"motion"``, ``confidence`` = the fraction of each box's pixels
    that move, and ``metadata["motion_score"]``: the fraction of the whole frame
    that moves (0.0 .. 1.0), handy for "record when something happens".

    It is the zero-download default for demos and a cheap trigger in front of a
    detector. The background model is per stage instance and learns from every
    frame it sees, so run it on a steady frame rate; a moving camera makes
    everything "move".

    Args:
        history: frames the background model remembers.
        var_threshold: squared distance to the model above which a pixel moves
            (higher, less sensitive).
        min_area: smallest box kept, in frame pixels.
        detect_shadows: tell shadows apart (they are then not motion).
        warmup: frames at the start during which the model only learns (fast) and
            the result is empty with score 0.
        learning_rate: how fast the background adapts after warmup, per frame;
            default ``1 / history``. Something standing still becomes background
            after roughly ``0.05 / learning_rate`` frames.
        max_width: frames wider than this are processed at this width (faster,
            less noise); boxes are still in the frame's pixels. The default,
            320, costs about a third of full 640x360 frames (3.7 against
            11 ms a frame on a shared 2-core machine) for boxes as good.
        blur: Gaussian blur kernel applied before subtraction, in working
            pixels (odd; 0 disables).
        dilate: frame pixels to grow moving regions by, so that parts of one
            object merge into one box.

    Example::

        pipe.stage("motion", fp.stages.Motion(min_area=800))
        # frame.results["motion"].metadata["motion_score"] -> 0.031
    """

    def __init__(
        self,
        history: int = 500,
        var_threshold: float = 16.0,
        min_area: int = 800,
        *,
        detect_shadows: bool = True,
        warmup: int = 10,
        max_width: int | None = 320,
        blur: int = 5,
        dilate: int = 5,
        learning_rate: float | None = None,
    ) -> None:
        if history < 1 or min_area < 0 or warmup < 0:
            raise ValueError(
                f"Motion: history must be >= 1, min_area and warmup >= 0; got "
                f"history={history}, min_area={min_area}, warmup={warmup}"
            )
        if blur and blur % 2 == 0:
            raise ValueError(f"Motion: blur must be odd or 0, got {blur}")
        self.history, self.var_threshold = int(history), float(var_threshold)
        self.min_area, self.detect_shadows = int(min_area), bool(detect_shadows)
        self.warmup, self.max_width = int(warmup), max_width
        self.blur, self.dilate = int(blur), int(dilate)
        self.learning_rate = 1.0 / self.history if learning_rate is None else float(learning_rate)
        self._subtractor: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_subtractor"] = None  # an OpenCV object; setup() makes a fresh one
        return state

    def setup(self) -> None:
        self._subtractor = cv2.createBackgroundSubtractorMOG2(
            history=self.history, varThreshold=self.var_threshold, detectShadows=self.detect_shadows
        )
        self._seen = 0
        self._grow_for: dict[float, Any] = {}

    def _grow(self, scale: float) -> Any:
        """The dilation kernel: ``dilate`` frame pixels, in working pixels."""
        kernel = self._grow_for.get(scale)
        if kernel is None:
            size = 2 * max(1, round(self.dilate * scale)) + 1
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
            self._grow_for[scale] = kernel
        return kernel

    def teardown(self) -> None:
        self._subtractor = None

    def process(self, frame: Frame) -> sv.Detections:
        """Moving regions of ``frame``."""
        if self._subtractor is None:
            raise RuntimeError("Motion.process called before setup()")
        image, scale = shrink(frame.image, self.max_width)
        if self.blur:
            image = cv2.GaussianBlur(image, (self.blur, self.blur), 0)
        self._seen += 1
        # During warmup OpenCV's own rate (1/frames seen) learns the empty scene fast;
        # after it a slow fixed rate keeps objects that pause briefly from fading in.
        rate = -1.0 if self._seen <= self.warmup else self.learning_rate
        mask = self._subtractor.apply(image, learningRate=rate)
        if self._seen <= self.warmup:
            return self._empty(frame)
        # MOG2 marks shadows 127 and motion 255.
        _, moving = cv2.threshold(mask, 200, 255, cv2.THRESH_BINARY)
        # Opening removes speckle noise; growing joins the parts of one object.
        moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        score = float(np.count_nonzero(moving)) / moving.size
        if self.dilate:
            moving = cv2.dilate(moving, self._grow(scale))
        contours, _ = cv2.findContours(moving, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        boxes, fill = [], []
        min_area = self.min_area * scale * scale
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            if w * h < min_area:
                continue
            boxes.append((x, y, x + w, y + h))
            fill.append(np.count_nonzero(moving[y : y + h, x : x + w]) / (w * h))
        xyxy = np.asarray(boxes, np.float32).reshape(-1, 4) / scale
        height, width = frame.shape
        clip_boxes(xyxy, width, height)
        n = len(xyxy)
        return make_detections(
            xyxy, fill, np.zeros(n), ["motion"] * n, frame_index=frame.index, motion_score=score
        )

    def _empty(self, frame: Frame) -> sv.Detections:
        return make_detections(
            np.empty((0, 4)), [], [], [], frame_index=frame.index, motion_score=0.0
        )

    def __repr__(self) -> str:
        return (
            f"Motion(history={self.history}, var_threshold={self.var_threshold}, "
            f"min_area={self.min_area})"
        )
