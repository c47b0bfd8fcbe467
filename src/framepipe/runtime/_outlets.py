"""Output edges into inboxes of the same process.

(Edges into other processes are ``RemoteOutlet`` in ``_remote``.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._frame import Frame
from .._graph import Node
from ..transport._seam import Lease
from ._clock import SYSTEM_CLOCK, Clock
from ._inbox import Inbox

if TYPE_CHECKING:
    from ._runners import NodeRunner


class LocalOutlet:
    """An edge into an inbox of this process."""

    __slots__ = ("edge_id", "inbox", "lease", "stop")

    def __init__(
        self, inbox: Inbox, edge_id: int, stop: threading.Event, lease: Lease | None = None
    ) -> None:
        self.inbox, self.edge_id, self.stop, self.lease = inbox, edge_id, stop, lease

    def deliver(self, frame: Frame, sent: float = 0.0, handed: float = 0.0) -> None:
        """Queue ``frame``; ``sent``/``handed``: as ``Inbox.put`` takes them."""
        release = self.lease(frame, self.edge_id) if (self.lease and frame._handles) else None
        self.inbox.put(self.edge_id, frame, release, self.stop, sent, handed)

    def advance(self, source: str, index: int, pts: float) -> None:
        self.inbox.advance(self.edge_id, source, index, pts)

    def end(self) -> None:
        self.inbox.end(self.edge_id)


class DirectOutlet:
    """Inline: an edge that calls its consumer at once (see ``NodeRunner.accept``)."""

    __slots__ = ("deliver", "edge_id", "runner")

    def __init__(self, runner: NodeRunner, edge_id: int) -> None:
        self.runner, self.edge_id = runner, edge_id
        # The consumer's own method: one call less per hop on the inline hot path.
        self.deliver: Callable[[Frame], None] = runner.accept

    def advance(self, source: str, index: int, pts: float) -> None:
        self.runner.advance(source, index, pts)

    def end(self) -> None:
        self.runner.inbox.end(self.edge_id)


#: An outlet's ``deliver``, given the wall and ``perf_counter`` times of the hand-off.
Handoff = Callable[[Frame, float, float], None]


def handoffs(outlets: list[Any], clock: Clock) -> list[Handoff] | None:
    """The outlets' ``deliver``, to be given the time, if every outlet is in this process.

    A consumer in this process is handed the time its frame left the producer,
    so a hop reads the clock twice (when its call begins and ends) instead of
    four times. Not with a clock of the caller's: it may move while a stage runs.
    """
    if clock is not SYSTEM_CLOCK or not all(
        isinstance(o, DirectOutlet | LocalOutlet) for o in outlets
    ):
        return None
    return [outlet.deliver for outlet in outlets]


def direct(node: Node) -> bool:
    """Whether an inline node can be called directly instead of through its inbox."""
    options = node.options
    return (
        len(node.inputs) == 1
        and options.window is None
        and options.join == "each"
        and int(getattr(node.obj, "batch", 1) or 1) == 1
    )
