"""What an edge does when its consumer is busy, and which frames a node selects.

Back-pressure lives on each edge into a node (its *inbox*):

- ``"latest"``: a one-slot mailbox; a newer frame replaces an unread one (the
  replaced one is counted as a ``policy`` drop). The consumer always starts on
  the newest frame. Default for stages in real-time mode.
- ``Queue(n, overflow="drop_oldest" | "drop_newest" | "block")``: a bounded
  queue; when full it drops the oldest or the newest frame, or blocks the
  producer.
- ``"block"``: ``Queue(8, "block")``; lossless. Every edge is lossless in
  offline mode, whatever its policy.

Selection (``fps=``, ``interval=``, ``window=``) is decided on media time
(``frame.pts``), per source, so an offline run selects the same frames every
time.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Overflow = Literal["drop_oldest", "drop_newest", "block"]
_OVERFLOWS = ("drop_oldest", "drop_newest", "block")


@dataclass(frozen=True, slots=True)
class Queue:
    """A bounded queue on an edge: ``Queue(8, overflow="drop_oldest")``.

    Args:
        size: how many frames may wait (>= 1).
        overflow: what a full queue does with a new frame: ``drop_oldest``
            (keep the newest ``size``), ``drop_newest`` (refuse the new one) or
            ``block`` (make the producer wait: lossless).
    """

    size: int = 8
    overflow: Overflow = "drop_oldest"

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"Queue size must be an int >= 1, got {self.size!r}")
        if self.overflow not in _OVERFLOWS:
            raise ValueError(f"Queue overflow must be one of {_OVERFLOWS}, got {self.overflow!r}")

    @property
    def lossless(self) -> bool:
        return self.overflow == "block"


LATEST = Queue(1, "drop_oldest")
BLOCK = Queue(8, "block")

Policy = Queue | Literal["latest", "block"]


def resolve_policy(policy: Any, *, node: str) -> Queue | None:
    """Turn a user's ``policy=`` into a ``Queue`` (``None``: the mode's default)."""
    from ._errors import GraphError

    if policy is None:
        return None
    if isinstance(policy, Queue):
        return policy
    if policy == "latest":
        return LATEST
    if policy == "block":
        return BLOCK
    raise GraphError(
        f"node {node!r}: policy must be 'latest', 'block' or fp.Queue(n, overflow), got {policy!r}"
    )


class RateSelector:
    """Selects at most ``fps`` frames per second of media time, per source.

    Media time is cut into slots of ``1/fps`` seconds from the source's first
    frame; the first frame that falls in a new slot is selected. The choice
    depends only on pts, so it is the same in every run.
    """

    __slots__ = ("_last_slot", "_origin", "period")

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self._origin: dict[str, float] = {}
        self._last_slot: dict[str, int] = {}

    def select(self, source: str, pts: float) -> bool:
        origin = self._origin.setdefault(source, pts)
        # The epsilon keeps pts like 0.19999999 in the slot a person would expect.
        slot = math.floor((pts - origin) / self.period + 1e-6)
        if slot <= self._last_slot.get(source, -1):
            return False
        self._last_slot[source] = slot
        return True


class WindowSampler:
    """Builds sliding windows: every ``step``-th frame is sampled; once ``count``
    samples are held, each new sample yields the list of the last ``count``.
    """

    __slots__ = ("count", "held", "seen", "step")

    def __init__(self, count: int, step: int) -> None:
        self.count, self.step = count, step
        self.seen: dict[str, int] = {}
        self.held: dict[str, deque[Any]] = {}

    def sample(self, source: str) -> bool:
        """Whether this source's next frame is sampled into the window."""
        n = self.seen.get(source, 0)
        self.seen[source] = n + 1
        return n % self.step == 0

    def push(self, source: str, item: Any) -> tuple[Any | None, list[Any] | None]:
        """Add a sample; return (evicted item or None, full window or None)."""
        window = self.held.setdefault(source, deque())
        window.append(item)
        evicted = window.popleft() if len(window) > self.count else None
        return evicted, (list(window) if len(window) == self.count else None)


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """Validated per-node scheduling options."""

    fps: float | None = None
    window: tuple[int, int] | None = None
    policy: Queue | None = None
    max_age: float | None = None  # seconds
    on_error: str = "skip"
    join: str = "each"
    executor: str | None = None
    #: Seconds per frame in a replay: a number or ``fn(frame) -> seconds``.
    cost: float | Callable[[Any], float] | None = None

    @classmethod
    def build(
        cls,
        node: str,
        *,
        fps: float | None = None,
        interval: float | None = None,
        window: tuple[int, int] | None = None,
        policy: Any = None,
        max_age: float | None = None,
        on_error: str = "skip",
        join: str = "each",
        executor: str | None = None,
        cost: float | Callable[[Any], float] | None = None,
    ) -> NodeOptions:
        from ._errors import GraphError

        if fps is not None and interval is not None:
            raise GraphError(f"node {node!r}: give fps= or interval=, not both")
        if interval is not None:
            if interval <= 0:
                raise GraphError(f"node {node!r}: interval must be > 0 seconds, got {interval!r}")
            fps = 1.0 / interval
        if fps is not None and not fps > 0:
            raise GraphError(f"node {node!r}: fps must be > 0, got {fps!r}")
        if window is not None:
            if (
                not isinstance(window, tuple | list)
                or len(window) != 2
                or not all(isinstance(v, int) and v >= 1 for v in window)
            ):
                raise GraphError(
                    f"node {node!r}: window must be (count, step) with ints >= 1, got {window!r}"
                )
            window = (int(window[0]), int(window[1]))
        if max_age is not None and not max_age > 0:
            raise GraphError(f"node {node!r}: max_age must be > 0 milliseconds, got {max_age!r}")
        if on_error not in ("skip", "stop", "restart"):
            raise GraphError(
                f"node {node!r}: on_error must be 'skip', 'stop' or 'restart', got {on_error!r}"
            )
        if join not in ("each", "merge", "latest"):
            raise GraphError(
                f"node {node!r}: join must be 'each', 'merge' or 'latest', got {join!r}"
            )
        if executor not in (None, "inline", "threads", "processes"):
            raise GraphError(
                f"node {node!r}: executor must be 'inline', 'threads' or "
                f"'processes', got {executor!r}"
            )
        if cost is not None and not callable(cost):
            if isinstance(cost, bool) or not isinstance(cost, int | float) or not cost >= 0:
                raise GraphError(
                    f"node {node!r}: cost must be seconds >= 0 or a function of the frame, "
                    f"got {cost!r}"
                )
            cost = float(cost)
        return cls(
            fps=fps,
            window=window,
            policy=resolve_policy(policy, node=node),
            max_age=None if max_age is None else max_age / 1000.0,
            on_error=on_error,
            join=join,
            executor=executor,
            cost=cost,
        )
