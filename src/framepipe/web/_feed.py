"""The newest frame of every input of a web sink, encoded on demand for any number of viewers.

Threads and what they touch:

- the sink's worker thread calls ``Feeds.publish(frame)`` for every frame. It
  copies the image only when someone watches that feed, and never encodes or
  waits: the pipeline never slows down for the web view;
- the server's event loop runs one coroutine per browser stream. Each waits
  (on an ``asyncio.Event`` the worker sets through ``call_soon_threadsafe``)
  for a frame newer than the one it sent last, then asks for its JPEG. The
  first viewer to ask encodes it, in a worker thread; the others reuse it. A
  slow viewer simply asks less often and always gets the newest frame; TCP
  flow control holds it back without buffering anything here.

Memory per feed is bounded: the newest raw copy and the newest JPEG.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .._frame import Frame
from ..sinks._json import to_json

#: How often each feed's results are converted to JSON for ``/api/results`` (seconds).
RESULTS_PERIOD = 0.25
#: After a page asks for results, keep converting them for this long (seconds).
RESULTS_INTEREST = 10.0


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """What a viewer is told about a frame besides its pixels."""

    index: int
    pts: float
    timestamp: float
    source: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Picture:
    """One encoded frame: ``seq`` counts the feed's frames from 1."""

    seq: int
    jpeg: bytes
    info: FrameInfo


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of a BGR image (OpenCV releases the GIL while it encodes)."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"cannot encode a {image.shape} {image.dtype} image as JPEG")
    return data.tobytes()


def input_of(frame: Frame, inputs: Sequence[str]) -> str:
    """Which of a sink's ``inputs`` delivered ``frame``.

    A stage adds its own result last, so the newest result names the stage
    the frame came from; a frame straight from a source has no result of its
    own and is named by ``frame.source``.
    """
    if frame.results:
        newest = next(reversed(frame.results))
        if newest in inputs:
            return newest
    if frame.source in inputs:
        return frame.source
    for name in reversed(frame.results):
        if name in inputs:
            return name
    return inputs[0] if inputs else frame.source


class Feed:
    """The newest frame of one input node from one source.

    ``publish`` runs in the sink's worker thread; everything else in the
    server's event loop.
    """

    def __init__(
        self,
        node: str,
        source: str,
        *,
        quality: int,
        max_fps: float | None,
        wake: Callable[[Feed], None],
    ) -> None:
        self.node, self.source = node, source
        self.quality = quality
        self._period = 1.0 / max_fps if max_fps else 0.0
        self._wake_soon = wake
        self._lock = threading.Lock()
        self._seq = 0
        self._image: np.ndarray | None = None
        self._info: FrameInfo | None = None
        self._picture: Picture | None = None
        self._event = asyncio.Event()
        self._encoding: asyncio.Lock | None = None
        self._last_kept = 0.0
        self._times: deque[float] = deque(maxlen=64)
        #: Streams currently open on this feed (read by the worker, written by the loop).
        self.watchers = 0
        self.frames = 0  # frames that reached the feed
        self.encoded = 0
        self.sent = 0
        self.results: dict[str, Any] | None = None
        self._results_at = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return (self.node, self.source)

    # -- the sink's worker thread --------------------------------------------------------

    def publish(self, frame: Frame, *, results_wanted: bool) -> None:
        """Offer the newest frame; copies its picture only when someone watches."""
        now = time.monotonic()
        self.frames += 1
        self._times.append(now)
        if results_wanted and now - self._results_at >= RESULTS_PERIOD:
            self._results_at = now
            self.results = {
                "index": frame.index,
                "pts": frame.pts,
                "timestamp": frame.timestamp,
                "source": frame.source,
                "results": to_json(frame.results),
            }
        if not self.watchers:
            # Nobody to show it to: no copy, but older pictures are now stale.
            with self._lock:
                self._seq += 1
                self._image = None
            return
        if now - self._last_kept < self._period:
            return
        self._last_kept = now
        image = frame.display_image
        # A copy: the frame's pixels may live in shared memory that is reused as soon
        # as write() returns.
        copy = np.ascontiguousarray(image).copy()
        height, width = copy.shape[:2]
        info = FrameInfo(frame.index, frame.pts, frame.timestamp, frame.source, width, height)
        with self._lock:
            self._seq += 1
            self._image, self._info = copy, info
        self._wake_soon(self)

    # -- the event loop ------------------------------------------------------------------

    def wake(self) -> None:
        """Release every viewer waiting for a newer frame (event loop only)."""
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def next_picture(self, after: int, closing: Callable[[], bool]) -> Picture | None:
        """The newest frame with ``seq > after``, encoded; waits for one. ``None`` when closing."""
        while True:
            if closing():
                return None
            event = self._event
            with self._lock:
                ready = self._seq > after and (
                    self._image is not None
                    or (self._picture is not None and self._picture.seq == self._seq)
                )
            if ready:
                return await self._encoded()
            await event.wait()

    async def _encoded(self) -> Picture:
        if self._encoding is None:
            self._encoding = asyncio.Lock()
        async with self._encoding:
            with self._lock:
                seq, image, info = self._seq, self._image, self._info
            if self._picture is not None and self._picture.seq == seq:
                return self._picture
            assert image is not None and info is not None
            jpeg = await asyncio.to_thread(encode_jpeg, image, self.quality)
            self.encoded += 1
            self._picture = Picture(seq, jpeg, info)
            with self._lock:
                if self._seq == seq:
                    self._image = None  # encoded: only the JPEG is needed from now on
            return self._picture

    def describe(self) -> dict[str, Any]:
        info = self._info
        times = list(self._times)
        fps = (
            (len(times) - 1) / (times[-1] - times[0])
            if len(times) > 1 and times[-1] > times[0] and time.monotonic() - times[-1] < 2.0
            else 0.0
        )
        return {
            "node": self.node,
            "source": self.source,
            "fps": round(fps, 2),
            "frames": self.frames,
            "encoded": self.encoded,
            "sent": self.sent,
            "watchers": self.watchers,
            "width": info.width if info else None,
            "height": info.height if info else None,
        }


class Feeds:
    """All feeds of one web sink, created as frames of new (node, source) pairs arrive."""

    def __init__(
        self, inputs: Sequence[str], *, quality: int = 80, max_fps: float | None = None
    ) -> None:
        self.inputs = tuple(inputs)
        self.quality, self.max_fps = quality, max_fps
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closing = False
        self._feeds: dict[tuple[str, str], Feed] = {}
        self._lock = threading.Lock()
        self._results_until = 0.0

    def publish(self, frame: Frame) -> None:
        """Hand a frame to its feed (the sink's worker thread)."""
        node = input_of(frame, self.inputs)
        feed = self._feeds.get((node, frame.source))
        if feed is None:
            with self._lock:
                feed = self._feeds.setdefault(
                    (node, frame.source),
                    Feed(
                        node,
                        frame.source,
                        quality=self.quality,
                        max_fps=self.max_fps,
                        wake=self._wake_soon,
                    ),
                )
        feed.publish(frame, results_wanted=time.monotonic() < self._results_until)

    def _wake_soon(self, feed: Feed) -> None:
        loop = self.loop
        if loop is None:
            return
        # RuntimeError: the loop has closed, so the server is gone and nobody waits.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(feed.wake)

    def feeds(self) -> list[Feed]:
        """Feeds in the order of the sink's inputs, then by source."""
        order = {name: i for i, name in enumerate(self.inputs)}
        with self._lock:
            feeds = list(self._feeds.values())
        return sorted(feeds, key=lambda f: (order.get(f.node, len(order)), f.node, f.source))

    def find(self, node: str, source: str | None = None) -> Feed | None:
        """The feed of ``node`` (from ``source``, or its first source)."""
        for feed in self.feeds():
            if feed.node == node and (source is None or feed.source == source):
                return feed
        return None

    def want_results(self) -> None:
        """Someone looks at results: keep converting them for a while."""
        self._results_until = time.monotonic() + RESULTS_INTEREST

    def close(self) -> None:
        """End every stream: waiting viewers are released and see ``closing``."""
        self.closing = True
        loop = self.loop
        if loop is None:
            return
        for feed in self.feeds():
            self._wake_soon(feed)
