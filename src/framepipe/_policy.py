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

Selection is decided per source from the frames themselves, so an offline
run selects the same frames every time:

- ``fps=`` / ``interval=`` decide *when* a node is called, on media time
  (``frame.pts``): media time is cut into slots from the source's first
  frame and the first frame in each new slot is taken. Slots are computed
  from pts, never by counting frames, so a 29.97 fps clip with
  ``interval=1`` is called once per media second, with no drift.
- ``window=(count, step)`` decides *what* a call receives. A window looks
  back, so it counts by the frames that *complete* a slot: the frame that ends
  each ``step`` source frames (or ``step`` seconds of media time, ``"1s"``) is
  sampled, and a call gets the last ``count`` samples, the newest being the
  frame the node is called on. With ``fps=``/``interval=`` as well, the node
  is called on the first sample that completes each of their slots (after
  one interval of video, never on the first frame); a call that falls due
  before ``count`` samples exist is skipped. These are stream-infer's frames:
  ``window=(5, 6), interval=1`` on a 30 fps video calls on frame 29 with
  frames 5, 11, ..., 29.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

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

    With ``completes=True`` a frame is placed by where it *ends* (``select``'s
    ``end``) and the first slot is never selected: the frame taken is the
    first to complete each slot, which is how a look-back window counts.
    """

    __slots__ = ("_first_slot", "_last_slot", "_origin", "period")

    def __init__(self, fps: float, *, completes: bool = False) -> None:
        self.period = 1.0 / fps
        self._origin: dict[str, float] = {}
        self._last_slot: dict[str, int] = {}
        self._first_slot = 0 if completes else -1

    def begin(self, source: str, pts: float) -> None:
        """Count slots from ``pts``, the source's first frame, if not already counting."""
        self._origin.setdefault(source, pts)

    def select(self, source: str, pts: float, end: float | None = None) -> bool:
        origin = self._origin.setdefault(source, pts)
        # The epsilon keeps pts like 0.19999999 in the slot a person would expect.
        slot = math.floor(((pts if end is None else end) - origin) / self.period + 1e-6)
        if slot <= self._last_slot.get(source, self._first_slot):
            return False
        self._last_slot[source] = slot
        return True


class Window(NamedTuple):
    """A parsed ``window=(count, step)``.

    ``step`` is an ``int`` number of source frames, or a ``float`` number of
    media seconds (parsed from ``"1s"``, ``"0.5s"``).
    """

    size: int  # the count: how many samples a call receives
    step: int | float

    @property
    def seconds(self) -> float | None:
        """The step in media seconds, ``None`` when it counts frames."""
        return float(self.step) if isinstance(self.step, float) else None


def parse_window(value: Any) -> Window:
    """``(count, step)`` with ``step`` an int of frames or ``"<seconds>s"``; ValueError if not."""
    expected = (
        f"(count, step) with count an int >= 1 and step an int >= 1 (source frames) "
        f"or seconds like '1s', got {value!r}"
    )
    if isinstance(value, Window):
        return value
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(expected)
    count, step = value
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(expected)
    if isinstance(step, str):
        text = step.strip()
        try:
            seconds = float(text[:-1]) if text.endswith("s") else math.nan
        except ValueError:
            seconds = math.nan
        if not seconds > 0 or math.isinf(seconds):
            raise ValueError(expected)
        return Window(count, seconds)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(expected)
    return Window(count, step)


class WindowSampler:
    """Keeps, per source, the last ``count`` samples of a ``Window``, and says
    which samples are calls.

    A frame is sampled when it is the first to complete a new slot of ``step``
    source frames (by ``frame.index``) or ``step`` media seconds (by
    ``frame.pts`` plus the source's frame duration), counted from the source's
    first frame, so gaps (frames dropped upstream) do not shift the grid. Only
    samples are held, so a window keeps at most ``count`` frames' pixels alive.
    """

    __slots__ = ("_calls", "_first", "_slots", "by_pts", "count", "held")

    def __init__(self, window: Window, fps: float | None = None) -> None:
        self.count = window.size
        seconds = window.seconds
        self.by_pts = seconds is not None
        step = seconds if seconds is not None else window.step
        self._slots = RateSelector(1.0 / step, completes=True)
        self._calls = RateSelector(fps, completes=True) if fps else None
        self._first: dict[str, tuple[int, float]] = {}
        self.held: dict[str, deque[Any]] = {}

    def _end(self, source: str, index: int, pts: float) -> float:
        """Where this frame ends in media time: its pts plus the source's mean
        frame duration so far (unknown, so zero, on its first frame)."""
        first = self._first.get(source)
        if first is None:
            first = self._first[source] = (index, pts)
            if self._calls is not None:
                self._calls.begin(source, pts)
        if index <= first[0]:
            return pts
        return pts + (pts - first[1]) / (index - first[0])

    def sample(self, source: str, index: int, pts: float) -> bool:
        """Whether this frame of ``source`` is sampled into its window."""
        end = self._end(source, index, pts)  # also where calls count from
        if self.by_pts:
            return self._slots.select(source, pts, end)
        return self._slots.select(source, float(index), float(index + 1))

    def due(self, source: str, index: int, pts: float) -> bool:
        """Whether a sample is a call: every sample without ``fps=``/``interval=``."""
        if self._calls is None:
            return True
        return self._calls.select(source, pts, self._end(source, index, pts))

    def push(self, source: str, item: Any) -> Any | None:
        """Add a sample; return the sample it pushed out of the window, if any."""
        window = self.held.setdefault(source, deque())
        window.append(item)
        return window.popleft() if len(window) > self.count else None

    def full(self, source: str) -> list[Any] | None:
        """The last ``count`` samples of ``source``, oldest first; ``None`` until there are."""
        window = self.held.get(source)
        return list(window) if window is not None and len(window) == self.count else None


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """Validated per-node scheduling options."""

    fps: float | None = None
    window: Window | None = None
    policy: Queue | None = None
    max_age: float | None = None  # seconds
    on_error: str = "skip"
    join: str = "each"
    #: Real time: how long a ``merge`` holds a frame for its other inputs (seconds;
    #: None: one frame interval of its source).
    join_wait: float | None = None
    executor: str | None = None
    # executor="ray" (see framepipe.runtime._ray): where a node may run, and what
    # its input edges carry between machines.
    resources: Mapping[str, float] | None = None
    transfer: Mapping[str, str] | str | None = None  # one kind, or upstream -> kind
    jpeg_quality: int = 90
    #: Seconds per frame in a replay: a number or ``fn(frame) -> seconds``.
    cost: float | Callable[[Any], float] | None = None

    @classmethod
    def build(
        cls,
        node: str,
        *,
        fps: float | None = None,
        interval: float | None = None,
        window: tuple[int, int | str] | None = None,
        policy: Any = None,
        max_age: float | None = None,
        on_error: str = "skip",
        join: str = "each",
        join_wait: float | None = None,
        executor: str | None = None,
        resources: Mapping[str, float] | None = None,
        transfer: Mapping[str, str] | str | None = None,
        jpeg_quality: int = 90,
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
        parsed = None
        if window is not None:
            try:
                parsed = parse_window(window)
            except ValueError as exc:
                raise GraphError(f"node {node!r}: window must be {exc}") from None
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
        if join_wait is not None:
            if isinstance(join_wait, bool) or not isinstance(join_wait, int | float):
                raise GraphError(
                    f"node {node!r}: join_wait must be milliseconds >= 0, got {join_wait!r}"
                )
            if not join_wait >= 0:
                raise GraphError(
                    f"node {node!r}: join_wait must be milliseconds >= 0, got {join_wait!r}"
                )
            if join != "merge":
                raise GraphError(
                    f"node {node!r}: join_wait= applies to join='merge', not join={join!r}"
                )
        if executor is not None:
            from .runtime._registry import check_executor

            check_executor(executor, what=f"node {node!r}: executor", for_nodes=True)
        resources = check_resources(node, resources)
        transfer = check_transfer(node, transfer)
        if not isinstance(jpeg_quality, int) or not 1 <= jpeg_quality <= 100:
            raise GraphError(
                f"node {node!r}: jpeg_quality must be an int from 1 to 100, got {jpeg_quality!r}"
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
            window=parsed,
            policy=resolve_policy(policy, node=node),
            max_age=None if max_age is None else max_age / 1000.0,
            on_error=on_error,
            join=join,
            join_wait=None if join_wait is None else join_wait / 1000.0,
            executor=executor,
            resources=resources,
            transfer=transfer,
            jpeg_quality=jpeg_quality,
            cost=cost,
        )


#: What a cross-machine edge carries under ``executor="ray"``.
TRANSFERS = ("raw", "jpeg", "results")


def check_resources(node: str, resources: Any) -> dict[str, float] | None:
    """A Ray resource request: ``{"GPU": 1, "camera_7": 1}``."""
    from ._errors import GraphError

    if resources is None:
        return None
    if not isinstance(resources, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and v > 0
        for k, v in resources.items()
    ):
        raise GraphError(
            f"node {node!r}: resources must map resource names to amounts > 0 "
            f"(e.g. {{'GPU': 1, 'camera_7': 1}}), got {resources!r}"
        )
    return {k: float(v) for k, v in resources.items()}


def check_transfer(node: str, transfer: Any) -> dict[str, str] | str | None:
    """``"raw" | "jpeg" | "results"``, or a mapping of input name to one of them."""
    from ._errors import GraphError

    if transfer is None:
        return None
    kinds = transfer.values() if isinstance(transfer, Mapping) else [transfer]
    if not all(isinstance(k, str) and k in TRANSFERS for k in kinds):
        raise GraphError(
            f"node {node!r}: transfer must be one of {TRANSFERS} or a mapping of "
            f"input name to one of them, got {transfer!r}"
        )
    return dict(transfer) if isinstance(transfer, Mapping) else str(transfer)
