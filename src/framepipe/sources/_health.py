"""Whether a live camera tells the truth: stalled, frozen, or with a lying clock.

A connection that stays open proves nothing: an encoder that froze keeps
sending the same picture, a relay can keep the session open and send nothing,
and a camera's clock can stop. ``HealthWatch`` decides from what the source
itself sees, in the source's worker, with no work on the frames beyond a
strided sample of one channel:

- ``stalled``: no frame for ``stall_after`` seconds (the connection may be open);
- ``frozen``: the picture has not changed for ``frozen_after`` seconds. A frame
  counts as a change when the mean absolute difference of a strided sample of
  its green channel (about 16,000 pixels, never averaged, so sensor noise
  still shows) from the last changed frame is above ``frozen_threshold`` grey
  levels (of 255). Identical frames differ by 0; a still scene from a real
  sensor by 1 or more (noise), a moving one by far more;
- ``clock``: the source's own timestamps stopped advancing or went backwards
  for ``clock_after`` seconds of arriving frames;
- ``ok`` otherwise. Several at once report the first of that list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: How many pixels the frozen check samples (a strided grid, about this many).
SAMPLED_PIXELS = 16384


@dataclass(frozen=True, slots=True)
class HealthOptions:
    """When a live source counts as stalled, frozen or with a broken clock.

    ``None`` turns a check off. ``reconnect_when_frozen`` drops the connection
    and reconnects when the picture freezes (a frozen relay or encoder often
    recovers on a new session).
    """

    stall_after: float | None = 5.0
    frozen_after: float | None = 10.0
    frozen_threshold: float = 0.5
    clock_after: float | None = 2.0
    reconnect_when_frozen: bool = False

    def __post_init__(self) -> None:
        for name in ("stall_after", "frozen_after", "clock_after"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and value > 0):
                raise ValueError(f"{name} must be a number of seconds > 0 or None, got {value!r}")
        if not (isinstance(self.frozen_threshold, int | float) and self.frozen_threshold >= 0):
            raise ValueError(
                f"frozen_threshold must be a number of grey levels >= 0, "
                f"got {self.frozen_threshold!r}"
            )


def health_options(owner: str, **given: Any) -> HealthOptions:
    """``HealthOptions`` from a source's keyword arguments; ValueError naming ``owner``."""
    try:
        return HealthOptions(**given)
    except ValueError as exc:
        raise ValueError(f"{owner}: {exc}") from None


class HealthWatch:
    """The health of one live source, fed by its worker with each frame and each idle tick.

    ``frame()`` and ``idle()`` return the new state when it changes, else ``None``.
    Times are the caller's clock (``time.monotonic()``), so tests can drive it.
    """

    def __init__(self, options: HealthOptions, now: float) -> None:
        self.options = options
        self.state = "ok"
        self._last_frame = now
        self._last_change = now
        self._reference: np.ndarray | None = None
        self._stride = 0
        self._renewed = -math.inf  # when a frozen picture last asked for a new connection
        self._media: float | None = None  # the source's own time of the last frame
        self._clock_bad_since: float | None = None

    def reconnected(self, now: float) -> None:
        """A new connection: its frames and timestamps are judged afresh from ``now``."""
        self._media = None
        self._clock_bad_since = None
        self._last_frame = max(self._last_frame, now)

    def detail(self) -> str:
        """What the current state means, for logs and events."""
        return {
            "stalled": f"no frame for {self.options.stall_after:g} s",
            "frozen": f"the picture has not changed for {self.options.frozen_after:g} s",
            "clock": f"its timestamps have not advanced for {self.options.clock_after:g} s",
        }.get(self.state, "frames arrive, change and advance")

    def changed(self, image: np.ndarray) -> bool:
        """Whether ``image`` differs from the last changed frame by more than the
        threshold (it then becomes the one later frames are compared with)."""
        sample = self._sample(image)
        reference = self._reference
        if (
            reference is None
            or reference.shape != sample.shape
            or float(np.abs(sample - reference).mean()) > self.options.frozen_threshold
        ):
            self._reference = sample
            return True
        return False

    def frame(self, image: np.ndarray, media: float | None, now: float) -> str | None:
        """A frame arrived, with the source's own timestamp ``media`` (``None``: unknown)."""
        self._last_frame = now
        options = self.options
        if options.frozen_after is not None and self.changed(image):
            self._last_change = now
        if options.clock_after is not None and media is not None and math.isfinite(media):
            previous, self._media = self._media, media
            if previous is not None and media <= previous:
                if self._clock_bad_since is None:
                    self._clock_bad_since = now
            else:
                self._clock_bad_since = None
        return self._update(now)

    def renew_due(self, now: float) -> bool:
        """With ``reconnect_when_frozen``: whether to ask for a new connection now (once
        as the picture freezes, then every ``frozen_after`` while it stays frozen)."""
        options = self.options
        if not options.reconnect_when_frozen or self.state != "frozen":
            return False
        assert options.frozen_after is not None
        if now - self._renewed < options.frozen_after:
            return False
        self._renewed = now
        return True

    def idle(self, now: float) -> str | None:
        """No frame since the last call: the state a stall may have led to."""
        return self._update(now)

    def _sample(self, image: np.ndarray) -> np.ndarray:
        if not self._stride:
            pixels = image.shape[0] * image.shape[1]
            self._stride = max(1, int(math.sqrt(pixels / SAMPLED_PIXELS)))
        channel = image[:: self._stride, :: self._stride, 1] if image.ndim == 3 else image
        return channel.astype(np.int16)

    def _current(self, now: float) -> str:
        options = self.options
        if options.stall_after is not None and now - self._last_frame >= options.stall_after:
            return "stalled"
        if options.frozen_after is not None and now - self._last_change >= options.frozen_after:
            return "frozen"
        bad = self._clock_bad_since
        if options.clock_after is not None and bad is not None and now - bad >= options.clock_after:
            return "clock"
        return "ok"

    def _update(self, now: float) -> str | None:
        state = self._current(now)
        if state == self.state:
            return None
        if self.state == "stalled":
            # Frames again: the picture and clock are judged from here on.
            self._last_change = max(self._last_change, now)
        self.state = state
        return state
