"""Local cameras through OpenCV: ``Camera`` (V4L2 on Linux)."""

from __future__ import annotations

import glob
import os
import re
import sys
import time
from typing import Any

import cv2

from .._errors import SourceError
from ._base import SourceContext
from ._health import health_options
from ._stream import Backoff, LiveSource, Session

_VIDEO_NODE = re.compile(r"^/dev/video(\d+)$")


class Camera(LiveSource):
    """Frames from a local camera, read with OpenCV's ``VideoCapture``.

    On Linux the V4L2 backend is used; ``device`` is an index (``0`` is
    ``/dev/video0``) or a device path, including the stable
    ``/dev/v4l/by-id/...`` links. ``width``, ``height``, ``fps`` and
    ``fourcc`` (e.g. ``"MJPG"``, which many USB cameras need for high
    resolutions at full rate) are requested from the driver; what it grants is
    logged when it differs.

    A reader thread grabs frames as the camera delivers them; in real-time
    mode only the newest is kept (older ones are counted with ``ctx.drop``),
    so a slow pipeline never sees stale frames from the driver's queue. ``pts``
    is seconds since the first frame, taken when the frame was grabbed.

    A missing, busy or unreadable device raises ``SourceError`` when the source
    opens. A camera lost while running (unplugged) is reopened with back-off
    (``reconnect=True``), reporting ``reconnecting`` until it is back.

    Its health is watched as a ``Stream``'s is (``stall_after``,
    ``frozen_after``, ``frozen_threshold``, ``clock_after``,
    ``reconnect_when_frozen``: see ``fp.sources.Stream``): a covered lens or a
    hung driver shows as ``frozen`` or ``stalled``.

    Example::

        pipe.source("webcam", fp.sources.Camera(0, width=1280, height=720, fps=30))
    """

    # A camera that is not there at the start is a configuration mistake, not an outage.
    retry_first_connect = False

    def __init__(
        self,
        device: int | str = 0,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        *,
        fourcc: str | None = None,
        reconnect: bool = True,
        backoff: tuple[float, float] = (0.5, 5.0),
        max_retries: int | None = None,
        first_frame_timeout: float = 5.0,
        stall_after: float | None = 5.0,
        frozen_after: float | None = 10.0,
        frozen_threshold: float = 0.5,
        clock_after: float | None = 2.0,
        reconnect_when_frozen: bool = False,
    ) -> None:
        if fourcc is not None and len(fourcc) != 4:
            raise ValueError(f"Camera: fourcc must have 4 characters, got {fourcc!r}")
        self.device = device if isinstance(device, int) else os.fspath(device)
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self.reconnect = bool(reconnect)
        self.backoff = Backoff(float(backoff[0]), float(backoff[1]))
        self.max_retries = max_retries
        self.first_frame_timeout = float(first_frame_timeout)
        self.health = health_options(
            "Camera",
            stall_after=stall_after,
            frozen_after=frozen_after,
            frozen_threshold=frozen_threshold,
            clock_after=clock_after,
            reconnect_when_frozen=bool(reconnect_when_frozen),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "type": "Camera",
            "device": self.device,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
        }

    def _target(self) -> str:
        return f"camera {self.device}"

    def _index_or_path(self) -> tuple[int | str, str | None]:
        """What to hand OpenCV, and the device node to check (Linux only)."""
        if not sys.platform.startswith("linux"):
            return self.device, None
        if isinstance(self.device, int):
            return self.device, f"/dev/video{self.device}"
        node = os.path.realpath(self.device)
        match = _VIDEO_NODE.match(node)
        # OpenCV's V4L2 backend opens /dev/videoN reliably by index.
        return (int(match.group(1)) if match else node), self.device

    def _check(self, ctx: SourceContext) -> None:
        _, node = self._index_or_path()
        if node is None:
            return
        if not os.path.exists(node):
            present = sorted(glob.glob("/dev/video*")) or ["none"]
            ctx.set_state("failed")
            raise SourceError(
                ctx.name, f"no camera at {node} (video devices here: {', '.join(present)})"
            )
        if not os.access(node, os.R_OK | os.W_OK):
            ctx.set_state("failed")
            raise SourceError(
                ctx.name, f"permission denied for {node} (is the user in the 'video' group?)"
            )

    def _connect(self, ctx: SourceContext) -> cv2.VideoCapture:
        device, node = self._index_or_path()
        backend = cv2.CAP_V4L2 if node is not None else cv2.CAP_ANY
        capture = cv2.VideoCapture(device, backend)
        if not capture.isOpened():
            capture.release()
            raise SourceError(
                ctx.name,
                f"cannot open {self._target()}: not a video capture "
                f"device, or busy (used by another program?)",
            )
        # Bound each read so the reader notices a stop or a dead camera.
        capture.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, 1000)
        if self.fourcc is not None:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.fourcc))
        for prop, wanted in (
            (cv2.CAP_PROP_FRAME_WIDTH, self.width),
            (cv2.CAP_PROP_FRAME_HEIGHT, self.height),
            (cv2.CAP_PROP_FPS, self.fps),
        ):
            if wanted is not None:
                capture.set(prop, float(wanted))
        granted = (
            capture.get(cv2.CAP_PROP_FRAME_WIDTH),
            capture.get(cv2.CAP_PROP_FRAME_HEIGHT),
            capture.get(cv2.CAP_PROP_FPS),
        )
        asked = (self.width, self.height, self.fps)
        if any(a is not None and abs(a - g) > 0.5 for a, g in zip(asked, granted, strict=True)):
            ctx.logger.warning(
                "%s: asked for %sx%s at %s fps, the driver gives %gx%g at %g fps",
                self._target(),
                *asked,
                *granted,
            )
        return capture

    def _disconnect(self, handle: Any) -> None:
        handle.release()

    def _read_connection(self, ctx: SourceContext, handle: Any, session: Session) -> None:
        capture: cv2.VideoCapture = handle
        last_frame = time.monotonic()
        while not session.halted:
            if not capture.grab():
                # The first frame may take a while (exposure, format negotiation);
                # later, a second without frames means the camera is gone or stalled.
                allowed = self.first_frame_timeout if session.frames == 0 else 1.0
                if time.monotonic() - last_frame > allowed:
                    if session.frames == 0:
                        raise SourceError(
                            ctx.name,
                            f"{self._target()} opened but sent no frame "
                            f"in {allowed:g} s (busy, or not a camera?)",
                        )
                    session.error = TimeoutError(f"no frame for {allowed:g} s")
                    return
                time.sleep(0.01)  # a failing grab may return at once: do not spin
                continue
            # The grab time is the frame's media time: decoding it must not delay its pts.
            last_frame = time.monotonic()
            ok, image = capture.retrieve()
            if ok and image is not None and not session.deliver(image, last_frame):
                return
