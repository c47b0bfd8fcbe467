"""A folder or glob of still images played as a video: ``Images``."""

from __future__ import annotations

import glob
import itertools
import math
import os
import re
from collections.abc import Iterator
from typing import Any

import cv2

from .._errors import SourceError
from ._base import Captured, Source, SourceContext

#: File name suffixes a folder is filtered by (what OpenCV's imread decodes).
IMAGE_SUFFIXES = frozenset(
    {
        ".bmp",
        ".dib",
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jp2",
        ".png",
        ".webp",
        ".pbm",
        ".pgm",
        ".ppm",
        ".pxm",
        ".pnm",
        ".tif",
        ".tiff",
        ".sr",
        ".ras",
        ".exr",
        ".hdr",
        ".pic",
    }
)

_DIGITS = re.compile(r"(\d+)")


def natural_key(path: str) -> tuple[Any, ...]:
    """Sort key putting ``img2`` before ``img10`` (case-insensitive, digits as numbers)."""
    parts = _DIGITS.split(path.lower())
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in parts)


class Images(Source):
    """Still images from a folder or a glob pattern, played in natural order at ``fps``.

    ``pattern_or_dir`` is a folder (every image file in it, hidden files
    skipped) or a glob such as ``"shots/*.jpg"`` or ``"run/**/*.png"``. Files
    are sorted naturally (``img2`` before ``img10``) and decoded with OpenCV
    as BGR; grey, 16-bit and alpha images are converted. Images may differ in
    size. Frame ``i`` has ``pts = i / fps``; ``ctx.start`` skips to the first
    frame at or after it; ``loop=True`` starts again after the last image with
    ``pts`` still rising.

    The file list is made when the source opens. An empty match raises
    ``SourceError``; so does a file OpenCV cannot decode, naming it.

    Example::

        pipe.source("frames", fp.sources.Images("dump/", fps=10))
    """

    live = False
    seekable = True

    def __init__(
        self, pattern_or_dir: str | os.PathLike[str], fps: float = 30.0, loop: bool = False
    ) -> None:
        if fps <= 0:
            raise ValueError(f"Images: fps must be > 0, got {fps}")
        self.pattern = os.fspath(pattern_or_dir)
        self.fps = float(fps)
        self.loop = bool(loop)

    def describe(self) -> dict[str, Any]:
        return {"type": "Images", "pattern": self.pattern, "fps": self.fps, "loop": self.loop}

    def files(self) -> list[str]:
        """The image files this source plays, in order."""
        if os.path.isdir(self.pattern):
            names = (
                os.path.join(self.pattern, name)
                for name in os.listdir(self.pattern)
                if not name.startswith(".")
            )
            paths = [
                path
                for path in names
                if os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES and os.path.isfile(path)
            ]
        else:
            paths = [
                path for path in glob.glob(self.pattern, recursive=True) if os.path.isfile(path)
            ]
        return sorted(paths, key=natural_key)

    def open(self, ctx: SourceContext) -> Iterator[Captured]:
        paths = self.files()
        if not paths:
            if os.path.isdir(self.pattern):
                detail = f"no image files in folder {self.pattern}"
            elif any(char in self.pattern for char in "*?["):
                detail = f"no files match {self.pattern!r}"
            else:
                detail = f"no such folder or file: {self.pattern}"
            raise SourceError(ctx.name, detail)
        first = max(0, math.ceil(ctx.start * self.fps - 1e-9))
        if first >= len(paths) and not self.loop:
            ctx.logger.warning("start %.3f s is past the last of %d images", ctx.start, len(paths))
            return
        for index in itertools.count(first):
            if index >= len(paths) and not self.loop:
                return
            path = paths[index % len(paths)]
            # imread reads into its own array (it takes no output buffer), so the
            # image is yielded as is: copying it into ctx.buffer would only move
            # the copy the runtime makes anyway.
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            if image is None:
                reason = "missing" if not os.path.exists(path) else "not an image OpenCV can decode"
                raise SourceError(ctx.name, f"cannot read image {path}: {reason}")
            yield image, index / self.fps
            if ctx.stopping:
                return
