"""A synthetic street scene with moving vehicles: the demo source that needs no file or camera."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ._base import Captured, Source, SourceContext

#: Vehicle body colours (BGR): saturated enough to stand out from the asphalt.
_COLOURS = (
    (40, 40, 200),
    (200, 90, 30),
    (40, 170, 230),
    (230, 230, 230),
    (60, 160, 60),
    (160, 60, 150),
    (25, 25, 25),
    (0, 120, 255),
)


@dataclass(frozen=True, slots=True)
class Vehicle:
    """One vehicle of a ``Scene`` frame, as drawn: the ground truth for tests.

    ``id`` is unique within the scene; ``box`` is ``(x1, y1, x2, y2)`` in frame
    pixels, possibly reaching past the frame's edges; ``direction`` is ``+1``
    for vehicles moving right, ``-1`` for vehicles moving left.
    """

    id: int
    lane: int
    direction: int
    box: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class _Lane:
    top: float
    height: float
    direction: int
    speed: float  # pixels per frame
    period: float  # mean frames between vehicles
    offset: float  # frame of the lane's vehicle number 0


class Scene(Source):
    """A street seen from above, with vehicles driving through it in four lanes.

    The two lower lanes drive right, the two upper lanes drive left, each at its
    own steady speed; vehicles of random length and colour enter at one edge
    and leave at the other, several on screen at once. Everything is a pure
    function of the frame index and ``seed``: the same frames every run, and
    seeking (``ctx.start``) is free. The background is static, so motion
    detection finds exactly the vehicles, and ``counting_line`` crosses every
    lane, so a line counter has something to count.

    It is the source of ``framepipe demo``. ``vehicles(index)`` returns what
    frame ``index`` shows, for checking detectors and counters.

    Args:
        width, height: frame size in pixels (at least 160 x 90).
        fps: media frame rate; frame ``i`` has ``pts = i / fps``. Vehicles cover
            the same distance per second whatever the rate.
        frames: how many frames to produce; ``None`` runs until stopped.
        seed: picks vehicle lengths, colours and gaps.
        traffic: how busy the street is; 1.0 is a vehicle every 2.5 s per lane on
            average, 2.0 twice as many (vehicles never overlap in a lane).

    Example::

        scene = fp.sources.Scene(width=960, height=540, fps=30)
        pipe.source("street", scene)
        pipe.stage("count", fp.stages.LineCounter(*scene.counting_line), after="track")
    """

    seekable = True

    def __init__(
        self,
        width: int = 960,
        height: int = 540,
        fps: float = 30.0,
        frames: int | None = None,
        *,
        seed: int = 0,
        traffic: float = 1.0,
    ) -> None:
        if width < 160 or height < 90:
            raise ValueError(
                f"Scene: width and height must be at least 160x90, got {width}x{height}"
            )
        if not fps > 0:
            raise ValueError(f"Scene: fps must be > 0, got {fps}")
        if not traffic > 0:
            raise ValueError(f"Scene: traffic must be > 0, got {traffic}")
        if frames is not None and frames < 0:
            raise ValueError(f"Scene: frames must be >= 0 or None, got {frames}")
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.frames, self.seed, self.traffic = frames, int(seed), float(traffic)

    # -- geometry ------------------------------------------------------------------------

    @property
    def road(self) -> tuple[float, float]:
        """``(top, bottom)`` of the road in pixels."""
        return (0.30 * self.height, 0.80 * self.height)

    @property
    def counting_line(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """A vertical line across the road in the middle of the frame: ``(start, end)``.

        Drawn from top to bottom, so for ``fp.stages.LineCounter`` vehicles
        moving right cross it one way and vehicles moving left the other.
        """
        top, bottom = self.road
        x = self.width / 2
        return ((x, top - 0.02 * self.height), (x, bottom + 0.02 * self.height))

    def _lanes(self) -> list[_Lane]:
        top, bottom = self.road
        lane_h = (bottom - top) / 4
        # Pixels per frame: a vehicle crosses the frame in about 5-7 s whatever the size or rate.
        base = self.width / (6.0 * self.fps)
        speeds = (1.15, 0.85, 0.9, 1.2)  # upper two lanes drive left, lower two right
        lanes = []
        for i, factor in enumerate(speeds):
            period = 2.5 * self.fps / self.traffic
            # Keep a gap: the longest vehicle plus a little must fit in the shortest spacing.
            min_period = (0.16 * self.width) / (base * factor) / 0.5
            lanes.append(
                _Lane(
                    top=top + i * lane_h,
                    height=lane_h,
                    direction=-1 if i < 2 else 1,
                    speed=base * factor,
                    period=max(period, min_period),
                    offset=-(0.4 + 0.7 * i) * self.fps * 2,
                )
            )
        return lanes

    def vehicles(self, index: int) -> list[Vehicle]:
        """The vehicles frame ``index`` shows (some may be only partly in view)."""
        return [vehicle for vehicle, _ in self._vehicles(index, self._lanes())]

    def _vehicles(self, index: int, lanes: list[_Lane]) -> list[tuple[Vehicle, int]]:
        out = []
        for lane_no, lane in enumerate(lanes):
            longest = 0.16 * self.width
            crossing = (self.width + longest) / lane.speed  # frames a vehicle is in view
            first = math.floor((index - crossing - lane.offset) / lane.period) - 1
            last = math.floor((index - lane.offset) / lane.period)
            for n in range(max(first, 0), last + 1):
                length, colour, jitter = self._traits(lane_no, n)
                born = lane.offset + (n + jitter) * lane.period
                travelled = (index - born) * lane.speed
                if travelled < 0:
                    continue
                x1 = travelled - length if lane.direction > 0 else self.width - travelled
                x2 = x1 + length
                if x2 <= 0 or x1 >= self.width:
                    continue
                margin = 0.2 * lane.height
                box = (x1, lane.top + margin, x2, lane.top + lane.height - margin)
                # Ids interleave lanes so every vehicle of the scene has its own.
                vid = n * len(lanes) + lane_no + 1
                out.append((Vehicle(vid, lane_no, lane.direction, box), colour))
        return out

    def _traits(self, lane: int, n: int) -> tuple[float, int, float]:
        """Length in pixels, colour index and spawn jitter (0..0.35 periods) of vehicle ``n``."""
        # A tiny integer hash instead of an RNG object per vehicle: this runs every frame.
        h = (self.seed * 0x9E3779B1 + lane * 0x85EBCA77 + n * 0xC2B2AE3D) & 0xFFFFFFFF
        h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & 0xFFFFFFFF
        h = ((h ^ (h >> 12)) * 0x297A2D39) & 0xFFFFFFFF
        h ^= h >> 15
        length = (0.09 + 0.07 * ((h & 0xFF) / 255)) * self.width
        colour = (h >> 8) % len(_COLOURS)
        jitter = 0.35 * (((h >> 16) & 0xFF) / 255)
        return length, colour, jitter

    # -- drawing ---------------------------------------------------------------------------

    def _background(self) -> np.ndarray:
        w, h = self.width, self.height
        rng = np.random.default_rng(self.seed)
        # Grass with a fixed, blurred texture: static, so background models learn it at once.
        noise = rng.normal(0, 12, (h, w)).astype(np.float32)
        grass = cv2.GaussianBlur(noise, (0, 0), 3)[..., None]
        image = np.clip(np.array([60, 130, 70], np.float32) + grass, 0, 255).astype(np.uint8)
        top, bottom = (round(v) for v in self.road)
        kerb = max(2, h // 90)
        image[top - 3 * kerb : top] = (170, 170, 170)
        image[bottom : bottom + 3 * kerb] = (170, 170, 170)
        asphalt = rng.normal(0, 4, (bottom - top, w, 1)).astype(np.float32)
        image[top:bottom] = np.clip(75 + asphalt, 0, 255).astype(np.uint8)
        lane_h = (bottom - top) / 4
        thick = max(1, h // 180)
        dash = max(8, w // 24)
        for i in (1, 3):
            y = round(top + i * lane_h)
            for x in range(0, w, 2 * dash):
                cv2.line(image, (x, y), (x + dash, y), (235, 235, 235), thick)
        middle = round(top + 2 * lane_h)
        cv2.line(image, (0, middle - 2 * thick), (w, middle - 2 * thick), (0, 200, 230), thick)
        cv2.line(image, (0, middle + 2 * thick), (w, middle + 2 * thick), (0, 200, 230), thick)
        return image

    @staticmethod
    def _draw(image: np.ndarray, vehicle: Vehicle, colour: int) -> None:
        x1, y1, x2, y2 = vehicle.box
        body = _COLOURS[colour]
        p1, p2 = (round(x1), round(y1)), (round(x2), round(y2))
        cv2.rectangle(image, p1, p2, body, -1)
        length, height = x2 - x1, y2 - y1
        # A darker cabin and glass, placed by driving direction, so the vehicle has a front.
        cabin_from = 0.30 if vehicle.direction > 0 else 0.20
        cx1 = round(x1 + cabin_from * length)
        cx2 = round(x1 + (cabin_from + 0.50) * length)
        inset = round(0.15 * height)
        cv2.rectangle(image, (cx1, p1[1] + inset), (cx2, p2[1] - inset), (50, 45, 40), -1)
        shade = tuple(int(c * 0.7) for c in body)
        cv2.rectangle(image, p1, p2, shade, max(1, int(height // 14)))

    def open(self, ctx: SourceContext) -> Iterator[Captured]:
        background = self._background()
        lanes = self._lanes()
        first = round(ctx.start * self.fps)
        indices = itertools.count(first) if self.frames is None else range(first, self.frames)
        for index in indices:
            image = ctx.buffer((self.height, self.width, 3))
            np.copyto(image, background)
            for vehicle, colour in self._vehicles(index, lanes):
                self._draw(image, vehicle, colour)
            yield image, index / self.fps

    def describe(self) -> dict[str, Any]:
        return {
            "type": "Scene",
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "frames": self.frames,
            "seed": self.seed,
            "traffic": self.traffic,
        }

    def __repr__(self) -> str:
        return f"Scene(width={self.width}, height={self.height}, fps={self.fps}, seed={self.seed})"
