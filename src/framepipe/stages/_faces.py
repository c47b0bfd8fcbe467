"""Face detection with the Haar cascade that ships inside OpenCV 4.x wheels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import supervision as sv

from .._errors import ModelError
from .._frame import Frame
from .._stage import Stage
from ._detector import make_detections, shrink


def haar_cascade_path(name: str = "haarcascade_frontalface_default.xml") -> Path:
    """The path of one of OpenCV's bundled Haar cascades; ``ModelError`` when absent.

    OpenCV 5 wheels no longer ship ``cv2.data`` nor ``CascadeClassifier``, which
    is why framepipe requires ``opencv-python-headless<5``.
    """
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(folder) / name if folder else None
    if path is None or not path.is_file() or not hasattr(cv2, "CascadeClassifier"):
        raise ModelError(
            f"the Haar cascade {name} is not available in this OpenCV ({cv2.__version__}, "
            f"{'no cv2.data' if folder is None else f'looked in {folder}'}): Faces needs an "
            f"OpenCV 4.x wheel, e.g. pip install 'opencv-python-headless>=4.8,<5', or pass "
            f"cascade= a path to a cascade XML file"
        )
    return path


class Faces(Stage):
    """Find frontal faces with OpenCV's Haar cascade; no download needed.

    The result is an ``sv.Detections`` with ``class_name`` ``"face"`` (class id 0).
    A Haar cascade gives no calibrated score, so every ``confidence`` is 1.0.
    Fast on CPU but easily fooled by profiles and poor light: for anything beyond a
    demo use a learned face detector in your own ``fp.Stage``.

    Args:
        scale_factor: how much the search window grows per scale (smaller finds
            more faces, slower).
        min_neighbors: overlapping hits needed to keep a face (higher, fewer false
            positives).
        min_size: smallest face in pixels, ``(width, height)``.
        max_width: frames wider than this are searched at this width (faster);
            boxes are still in the frame's pixels. ``None`` searches full size.
        cascade: a cascade file name from ``cv2.data.haarcascades`` or a path.

    Example::

        pipe.stage("faces", fp.stages.Faces(min_size=(40, 40)))
        # frame.results["faces"].xyxy
    """

    def __init__(
        self,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: tuple[int, int] = (30, 30),
        *,
        max_width: int | None = 640,
        cascade: str | os.PathLike[str] = "haarcascade_frontalface_default.xml",
    ) -> None:
        if scale_factor <= 1.0:
            raise ValueError(f"Faces: scale_factor must be > 1, got {scale_factor}")
        self.scale_factor, self.min_neighbors = float(scale_factor), int(min_neighbors)
        self.min_size = (int(min_size[0]), int(min_size[1]))
        self.max_width = max_width
        self.cascade = cascade
        self._classifier: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_classifier"] = None  # rebuilt by setup() in the worker
        return state

    def setup(self) -> None:
        given = Path(self.cascade)
        path = given if given.is_file() else haar_cascade_path(os.fspath(self.cascade))
        classifier = cv2.CascadeClassifier(str(path))
        if classifier.empty():
            raise ModelError(f"OpenCV could not load the cascade {path}")
        self._classifier = classifier

    def teardown(self) -> None:
        self._classifier = None

    def process(self, frame: Frame) -> sv.Detections:
        """Faces in ``frame``."""
        if self._classifier is None:
            raise RuntimeError("Faces.process called before setup()")
        image, scale = shrink(frame.image, self.max_width)
        # No histogram equalisation: it adds false faces and loses real ones on webcam video.
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        min_size = (
            max(1, round(self.min_size[0] * scale)),
            max(1, round(self.min_size[1] * scale)),
        )
        found = self._classifier.detectMultiScale(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=min_size
        )
        boxes = np.asarray(found, np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # x, y, w, h -> x1, y1, x2, y2
        boxes /= scale
        n = len(boxes)
        return make_detections(
            boxes, np.ones(n), np.zeros(n), ["face"] * n, frame_index=frame.index
        )

    def __repr__(self) -> str:
        return (
            f"Faces(scale_factor={self.scale_factor}, min_neighbors={self.min_neighbors}, "
            f"min_size={self.min_size})"
        )
