"""The unit of data that flows through a pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True, eq=False)
class Frame:
    """One video frame and the results attached to it on its way through the pipeline.

    Attributes:
        image: ``H x W x 3`` ``uint8`` array in BGR order, as OpenCV uses. It is
            always read-only: every consumer of a frame sees the same pixels, and
            in other processes they live in shared memory. A stage that draws
            makes its own copy first: ``canvas = frame.image.copy()``.
        index: position of the frame in its source, counted from 0.
        pts: media time of the frame in seconds.
        timestamp: ``time.time()`` when the source captured the frame; the frame's
            age is ``time.time() - timestamp``.
        source: name of the source node the frame came from.
        results: outputs of upstream stages, keyed by stage name.
    """

    image: np.ndarray
    index: int
    pts: float
    timestamp: float
    source: str
    results: dict[str, Any] = field(default_factory=dict)
    #: Shared-memory slots backing ``image`` and array results (runtime only).
    _handles: tuple[Any, ...] = field(default=(), repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the image."""
        return (int(self.image.shape[0]), int(self.image.shape[1]))

    @property
    def display_image(self) -> np.ndarray:
        """What to show or record: the newest annotated image among the results, else ``image``.

        An annotated image is any result that is an ``H x W x 3`` ``uint8`` array
        (what ``fp.stages.Annotate`` returns). Video and web sinks show this.
        """
        for value in reversed(self.results.values()):
            if (
                isinstance(value, np.ndarray)
                and value.ndim == 3
                and value.dtype == np.uint8
                and value.shape[2] == 3
            ):
                return value
        return self.image

    def __repr__(self) -> str:
        h, w = self.shape
        keys = ", ".join(self.results) or "-"
        return (
            f"Frame(source={self.source!r}, index={self.index}, pts={self.pts:.3f}, "
            f"{w}x{h}, results=[{keys}])"
        )
