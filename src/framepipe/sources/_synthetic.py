"""Sources that need no file or device: test patterns, still images, generators."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import cv2
import numpy as np

from .._errors import SourceError
from ._base import Captured, Source, SourceContext


class Synthetic(Source):
    """A moving colour-bar test pattern with the frame index drawn in.

    Cheap enough for 1080p at hundreds of frames per second: each frame is one
    shifted copy of a precomputed pattern plus a small text label.

    Args:
        width, height: frame size in pixels.
        fps: media frame rate; frame ``i`` has ``pts = i / fps``.
        frames: how many frames to produce; ``None`` runs until stopped.
    """

    seekable = True

    def __init__(
        self, width: int = 640, height: int = 480, fps: float = 30.0, frames: int | None = None
    ) -> None:
        if width < 16 or height < 16:
            raise ValueError(f"Synthetic: width and height must be >= 16, got {width}x{height}")
        if fps <= 0:
            raise ValueError(f"Synthetic: fps must be > 0, got {fps}")
        self.width, self.height, self.fps, self.frames = int(width), int(height), float(fps), frames

    def open(self, ctx: SourceContext) -> Iterator[Captured]:
        period = max(64, self.width // 4)
        stripe = np.arange(self.width + period, dtype=np.int32)
        hue = ((stripe % period) * 180 // period).astype(np.uint8)
        hsv = np.empty((1, stripe.size, 3), np.uint8)
        hsv[..., 0], hsv[..., 1], hsv[..., 2] = hue, 200, 230
        row = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        # Vertical shading so the pattern is not the same on every row.
        shade = np.linspace(0.55, 1.0, self.height, dtype=np.float32)[:, None, None]
        pattern = (row.astype(np.float32) * shade).astype(np.uint8)
        first = round(ctx.start * self.fps)
        scale = max(0.6, self.height / 360)
        indices = itertools.count(first) if self.frames is None else range(first, self.frames)
        for index in indices:
            image = ctx.buffer((self.height, self.width, 3))
            shift = (index * 4) % period
            np.copyto(image, pattern[:, shift : shift + self.width])
            cv2.putText(
                image,
                f"#{index}",
                (10, int(40 * scale)),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                (255, 255, 255),
                max(1, int(2 * scale)),
                cv2.LINE_AA,
            )
            yield image, index / self.fps

    def describe(self) -> dict[str, Any]:
        return {"type": "Synthetic", "width": self.width, "height": self.height, "fps": self.fps}


class StillImage(Source):
    """One image file repeated as a video, at ``fps``.

    Args:
        path: an image file OpenCV can read (PNG, JPEG, BMP...).
        fps: media frame rate.
        frames: how many frames; ``None`` runs until stopped.
    """

    seekable = True

    def __init__(
        self, path: str | os.PathLike[str], fps: float = 30.0, frames: int | None = None
    ) -> None:
        self.path, self.fps, self.frames = os.fspath(path), float(fps), frames

    def open(self, ctx: SourceContext) -> Iterator[Captured]:
        if not os.path.exists(self.path):
            raise SourceError(ctx.name, f"image file not found: {self.path}")
        still = cv2.imread(self.path, cv2.IMREAD_COLOR)
        if still is None:
            raise SourceError(ctx.name, f"not an image OpenCV can read: {self.path}")
        first = round(ctx.start * self.fps)
        indices = itertools.count(first) if self.frames is None else range(first, self.frames)
        for index in indices:
            image = ctx.buffer(still.shape)
            np.copyto(image, still)
            yield image, index / self.fps

    def describe(self) -> dict[str, Any]:
        return {"type": "StillImage", "path": self.path, "fps": self.fps}


class Generator(Source):
    """Frames from a callable or an iterable.

    ``source`` is either an iterable of images (or of ``(image, pts)`` pairs),
    or a callable returning the next image, ``(image, pts)``, or ``None`` to
    end. Without explicit pts, frame ``i`` has ``pts = i / fps``. Images must be
    ``H x W x 3`` ``uint8`` (grey ``H x W`` images are converted).

    With ``live=True`` the generator keeps its own time (it blocks until the
    next frame is ready, like a camera) and is not paced in real-time mode.
    """

    def __init__(
        self, source: Callable[[], Any] | Iterable[Any], fps: float = 30.0, live: bool = False
    ) -> None:
        if not callable(source) and not isinstance(source, Iterable):
            raise TypeError(f"Generator: expected a callable or an iterable, got {type(source)!r}")
        self.source, self.fps, self.live = source, float(fps), live

    def open(self, ctx: SourceContext) -> Iterator[Captured]:
        items = _until_none(self.source) if callable(self.source) else self.source
        for index, item in enumerate(items):
            image, pts = item if isinstance(item, tuple) else (item, index / self.fps)
            if not (
                type(image) is np.ndarray
                and image.ndim == 3
                and image.shape[2] == 3
                and image.dtype is _UINT8
            ):
                image = _as_bgr(ctx.name, image, index)
            yield image, float(pts)


_UINT8 = np.dtype(np.uint8)


def _until_none(fn: Callable[[], Any]) -> Iterator[Any]:
    # Not iter(fn, None): that compares each image with None, which numpy refuses.
    while (item := fn()) is not None:
        yield item


def _as_bgr(node: str, image: Any, index: int) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 2:
        array = cv2.cvtColor(array.astype(np.uint8, copy=False), cv2.COLOR_GRAY2BGR)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise SourceError(
            node,
            f"frame {index}: expected an HxWx3 uint8 image, "
            f"got shape {array.shape} dtype {array.dtype}",
        )
    return array
