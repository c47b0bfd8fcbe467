"""A node's inbox: one bounded queue per input edge, selection, and joins.

Producers ``put`` frames on an edge; the node's worker ``take``s work items.
Everything a node drops (policy, rate, age) is counted here, and every frame
that leaves the inbox without being processed is released at once, so shared
memory slots go back to their owner as early as possible.

Joins, for nodes with several inputs:

- ``each``: every frame from any input is processed on its own, in arrival order.
- ``merge``: the same frame (same source and index) arriving through several
  inputs is processed once, with all their results; a frame that one input
  will never deliver (it skipped it, or is already past it) is processed with
  the results that did arrive.
- ``latest``: the first input drives; each of its frames is processed with the
  newest result of every other input attached (slow detections carried onto a
  fast video branch): the newest from a frame of the same source that is not
  newer than the frame being processed. In offline mode a frame waits until
  every other input has passed it, so the attached results are the same in
  every run.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from time import perf_counter
from typing import Any

import numpy as np

from .._frame import Frame, lent
from .._policy import NodeOptions, Queue, RateSelector, WindowSampler
from ..stats import StatsRecorder
from ._clock import SYSTEM_CLOCK, Clock

#: take() found nothing ready (non-blocking call).
EMPTY: Any = object()
#: Bound on frames a merge join holds waiting for their other inputs, per source.
MERGE_PENDING_LIMIT = 64


class Ticket:
    """One delivered frame, held until every work item that uses it is done.

    ``refs`` changes only under ``lock`` (the inbox's lock, which is re-entrant):
    the inbox adds references while it holds it, workers drop theirs from
    their own threads.

    A frame taken on its own (one input, no window or join) is its own work
    item: ``payload``, ``frame``, ``arrived`` and ``done()``, like a ``WorkItem``.
    """

    __slots__ = ("arrived", "frame", "lock", "refs", "release", "sent")

    def __init__(
        self,
        frame: Frame,
        release: Callable[[], None] | None,
        lock: AbstractContextManager[Any],
        sent: float = 0.0,
        handed: float = 0.0,
    ) -> None:
        self.frame = frame
        self.release = release
        self.lock = lock
        self.refs = 1
        # ``perf_counter()`` when the frame arrived: the node's wait is measured from
        # here. ``sent``: the wall-clock time of the same moment, if the producer
        # handed it on (0: unknown), so the worker need not read the wall clock.
        self.arrived = handed or perf_counter()
        self.sent = sent

    @property
    def payload(self) -> Frame:
        return self.frame

    def unref(self) -> None:
        if self.release is None:  # nothing to give back (frames of this process): no lock
            return
        with self.lock:
            self.refs -= 1
            if self.refs or self.release is None:
                return
            release, self.release = self.release, None
        release()

    done = unref


@dataclass(slots=True)
class WorkItem:
    """What the node processes: a frame, or a list of frames for windows."""

    payload: Any
    frame: Frame  # the newest frame: its metadata goes downstream
    tickets: list[Ticket]
    arrived: float  # ``perf_counter()`` when the item's oldest frame arrived
    source_edge: int = -1

    def done(self) -> None:
        for ticket in self.tickets:
            ticket.unref()
        self.tickets = []


#: What a worker takes from its inbox.
Work = WorkItem | Ticket


@dataclass(slots=True)
class _Edge:
    upstream: str
    policy: Queue
    credit: Callable[[int], None] | None
    entries: deque[tuple[int, Any]] = field(default_factory=deque)  # (seq, Ticket | window list)
    ended: bool = False


class Inbox:
    """The bounded, thread-safe inbox of one node. See the module docstring."""

    def __init__(
        self,
        node: str,
        options: NodeOptions,
        recorder: StatsRecorder,
        *,
        ordered: bool = False,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.clock = clock  # frame ages (max_age)
        self.node = node
        self.ordered = ordered  # offline: joins wait for their inputs instead of guessing
        self.options = options
        self.recorder = recorder
        self._edges: dict[int, _Edge] = {}
        self._order: list[int] = []
        # Held with the lock itself (``with self._lock``: C code); producers waiting on
        # a full ``block`` edge wait on the condition, and are notified only if any wait.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._putters = 0
        # The worker (one per inbox) sleeps on a bare lock that a put releases: two C
        # calls per wake-up, where a condition allocates a lock and runs Python.
        self._taker_asleep = False
        self._wakeup = threading.Lock()
        self._wakeup.acquire()
        self._closed = False
        self._seq = 0
        self._rate = RateSelector(options.fps) if options.fps else None
        self._window = WindowSampler(options.window) if options.window else None
        self._pending: dict[tuple[str, int], dict[int, Ticket]] = {}
        self._passed: dict[int, dict[str, int]] = {}
        self._history: dict[str, deque[tuple[str, int, Any]]] = {}
        self._held: deque[Any] = deque()  # latest join, offline: primary entries waiting
        self._only: _Edge | None = None
        self._latest = options.join == "latest"
        self._max_age = options.max_age
        # Whether a put has more to do than queue the frame.
        self._selects = self._latest or self._window is not None or self._rate is not None

    # -- edges ---------------------------------------------------------------

    def add_edge(
        self, edge: int, upstream: str, policy: Queue, credit: Callable[[int], None] | None = None
    ) -> None:
        with self._lock:
            self._edges[edge] = _Edge(upstream, policy, credit)
            self._order.append(edge)
            self._passed[edge] = {}
            # One input taken frame by frame: ``take`` pops it without a scan.
            plain = len(self._edges) == 1 and self.options.join == "each" and not self._window
            self._only = self._edges[edge] if plain else None

    def has_edge(self, edge: int) -> bool:
        with self._lock:
            return edge in self._edges

    def set_credit(self, edge: int, credit: Callable[[int], None]) -> None:
        """Attach the credit callback of a lossless edge from another process."""
        with self._lock:
            self._edges[edge].credit = credit

    def end(self, edge: int) -> None:
        """The producer of ``edge`` has finished: nothing more will arrive on it."""
        with self._lock:
            if edge in self._edges:
                self._edges[edge].ended = True
                self._wake_taker()

    def close(self) -> None:
        """Stop: drop everything waiting, wake producers and the worker."""
        with self._lock:
            self._closed = True
            # What was delivered but will not be processed is counted as ``stop``
            # drops, so a producer's output and what this node took add up.
            for edge in self._edges.values():
                if edge.entries:
                    self.recorder.drop("stop", len(edge.entries))
                while edge.entries:
                    self._discard(edge, edge.entries.popleft()[1])
            if self._pending:
                self.recorder.drop("stop", len(self._pending))
            for tickets in self._pending.values():
                for ticket in tickets.values():
                    ticket.unref()
            self._pending.clear()
            if self._held:
                self.recorder.drop("stop", len(self._held))
            while self._held:
                entry = self._held.popleft()
                for ticket in entry if isinstance(entry, list) else (entry,):
                    ticket.unref()
            if self._window is not None:
                for held in self._window.held.values():
                    for ticket in held:
                        ticket.unref()
                self._window.held.clear()
            self._wake_taker()
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- producers -------------------------------------------------------------

    def full(self, edge_id: int) -> bool:
        """Whether a put on ``edge_id`` would make its producer wait."""
        with self._lock:
            edge = self._edges[edge_id]
            policy = edge.policy
            return (
                not self._closed and policy.overflow == "block" and len(edge.entries) >= policy.size
            )

    def put(
        self,
        edge_id: int,
        frame: Frame,
        release: Callable[[], None] | None = None,
        stop: threading.Event | None = None,
        sent: float = 0.0,
        handed: float = 0.0,
    ) -> bool:
        """Deliver ``frame`` on ``edge_id``. Blocks only on a full ``block`` queue.

        ``release`` is called exactly once, when the inbox no longer needs the
        frame. Returns False if the frame was not accepted (inbox closed).
        ``sent``/``handed``: the wall and ``perf_counter`` times the producer handed
        the frame on, if it read them (0: read here).
        """
        ticket = Ticket(frame, release, self._lock, sent, handed)
        lock = self._lock
        lock.acquire()  # not ``with``: half the cost, on the per-frame path
        try:
            edge = self._edges[edge_id]
            if self._closed:
                self.recorder.drop("stop")
                self._give_back(edge, ticket)
                return False
            entry: Any = ticket
            if self._selects:
                if self._latest and edge_id != self._order[0]:
                    self._keep_latest(edge, ticket)
                    return True
                if self._window is not None:
                    entry = self._windowed(edge, ticket)
                    if entry is None:
                        return True
                elif self._rate is not None and not self._rate.select(frame.source, frame.pts):
                    self.recorder.drop("rate")
                    self._give_back(edge, ticket)
                    return True
            policy = edge.policy
            if len(edge.entries) >= policy.size:
                if policy.overflow == "block":
                    while len(edge.entries) >= policy.size and not self._closed:
                        if stop is not None and stop.is_set():
                            break
                        self._putters += 1
                        try:
                            self._cond.wait()  # close() (every stop closes) or a take wakes it
                        finally:
                            self._putters -= 1
                    if self._closed or (stop is not None and stop.is_set()):
                        self.recorder.drop("stop")
                        self._discard(edge, entry)
                        return False
                elif policy.overflow == "drop_oldest":
                    self.recorder.drop("policy")
                    self._discard(edge, edge.entries.popleft()[1])
                else:
                    self.recorder.drop("policy")
                    self._discard(edge, entry)
                    return True
            self._seq += 1
            edge.entries.append((self._seq, entry))
            if self._taker_asleep:  # ``_wake_taker``, inlined: the per-frame path
                self._taker_asleep = False
                self._wakeup.release()
            return True
        finally:
            lock.release()

    def _windowed(self, edge: _Edge, ticket: Ticket) -> list[Ticket] | None:
        """Sample ``ticket`` into its window; the window to process if a call is due.

        Every frame that is not a sample is released at once; a sample is held
        (its pixels too) until it leaves the window, so a window keeps at most
        ``count`` frames alive per source, however far apart they are.
        """
        assert self._window is not None
        frame = ticket.frame
        if not self._window.sample(frame.source, frame.index, frame.pts):
            self.recorder.drop("rate")
            self._give_back(edge, ticket)
            return None
        evicted = self._window.push(frame.source, ticket)
        if evicted is not None:
            evicted.unref()
        # fps=/interval= pick the calls among the samples; a call due before the
        # window has filled is skipped (its slot is spent).
        due = self._rate is None or self._rate.select(frame.source, frame.pts)
        window = self._window.full(frame.source) if due else None
        if window is None:
            if edge.credit is not None:
                edge.credit(1)
            return None
        for held in window:
            held.refs += 1
        return window

    def _give_back(self, edge: _Edge, ticket: Ticket) -> None:
        ticket.unref()
        if edge.credit is not None:
            edge.credit(1)

    def _discard(self, edge: _Edge, entry: Any) -> None:
        for ticket in entry if isinstance(entry, list) else (entry,):
            ticket.unref()
        if edge.credit is not None:
            edge.credit(1)

    def _keep_latest(self, edge: _Edge, ticket: Ticket) -> None:
        frame = ticket.frame
        value = frame.results.get(edge.upstream)
        if isinstance(value, np.ndarray):
            value = value.copy()  # the frame's memory goes back to its owner below
        if value is not None:
            history = self._history.setdefault(edge.upstream, deque(maxlen=MERGE_PENDING_LIMIT))
            history.append((frame.source, frame.index, value))
        for edge_id, known in self._edges.items():
            if known is edge:
                self._passed[edge_id][frame.source] = frame.index
        self._give_back(edge, ticket)
        self._wake_taker()

    def _attach_latest(self, frame: Frame) -> dict[str, Any]:
        """The newest result of each other input for ``frame`` (never from a later frame)."""
        attached: dict[str, Any] = {}
        for upstream, history in self._history.items():
            chosen, same_source = None, False
            for source, index, value in reversed(history):
                if source == frame.source:
                    same_source = True
                    if index <= frame.index:
                        chosen = value
                        break
            if not same_source and history:
                chosen = history[-1][2]  # an input fed by other sources: its newest
            if chosen is not None:
                attached[upstream] = chosen
        return attached

    def _secondaries_passed(self, frame: Frame) -> bool:
        for edge_id in self._order[1:]:
            edge = self._edges[edge_id]
            if not edge.ended and self._passed[edge_id].get(frame.source, -1) < frame.index:
                return False
        return True

    # -- the worker --------------------------------------------------------------

    def take(self, timeout: float | None = None) -> Work | None:
        """The next work item; ``None`` once every input has ended (or on close).

        ``timeout=0`` never blocks and returns ``EMPTY`` when nothing is ready.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        lock = self._lock
        while True:
            lock.acquire()  # not ``with``: half the cost, on the per-frame path
            try:
                if self._closed:
                    return None
                only = self._only
                if only is not None:  # one input taken frame by frame: no scan
                    if only.entries:
                        ticket: Ticket = only.entries.popleft()[1]  # ``_pop``, inlined
                        if only.credit is not None:
                            only.credit(1)
                        if self._putters:
                            self._cond.notify_all()
                        if self._max_age is not None and self._too_old(ticket):
                            continue
                        return ticket
                    if only.ended:
                        return None
                else:
                    item = self._next_item()
                    if item is not None:
                        if self._max_age is not None and self._too_old(item):
                            continue
                        return item
                    if self._all_ended():
                        return None
                remaining = -1.0  # no timeout
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return EMPTY
                self._taker_asleep = True
            finally:
                lock.release()
            if self._wakeup.acquire(True, remaining):
                continue
            with self._lock:  # timed out: unless a wake-up is on its way, stop sleeping
                if self._taker_asleep:
                    self._taker_asleep = False
                    continue
            self._wakeup.acquire()  # the one a producer released just now

    def _wake_taker(self) -> None:
        """Wake the worker if it sleeps in ``take`` (called with the lock held)."""
        if self._taker_asleep:
            self._taker_asleep = False
            self._wakeup.release()

    def _all_ended(self) -> bool:
        if not self._edges:
            return False
        if self.options.join == "latest":
            primary = self._edges[self._order[0]]
            return primary.ended and not primary.entries and not self._held
        return all(e.ended and not e.entries for e in self._edges.values()) and not self._pending

    def _too_old(self, item: Work) -> bool:
        max_age = self._max_age
        if max_age is None or self.clock.time() - item.frame.timestamp <= max_age:
            return False
        self.recorder.drop("age")
        item.done()
        return True

    def _pop(self, edge: _Edge) -> Any:
        _, entry = edge.entries.popleft()
        if edge.credit is not None:
            edge.credit(1)
        if self._putters:
            self._cond.notify_all()  # a blocked producer may go on
        return entry

    def _next_item(self) -> WorkItem | None:
        join = self.options.join
        if join == "merge":
            return self._next_merged()
        if join == "latest":
            return self._next_latest()
        best, best_seq = -1, 0
        for edge_id in self._order:
            entries = self._edges[edge_id].entries
            if entries and (best < 0 or entries[0][0] < best_seq):
                best, best_seq = edge_id, entries[0][0]
        if best < 0:
            return None
        return self._item(self._pop(self._edges[best]), best)

    def _next_latest(self) -> WorkItem | None:
        primary = self._order[0]
        if not self.ordered:
            if not self._edges[primary].entries:
                return None
            entry = self._pop(self._edges[primary])
        else:
            while self._edges[primary].entries:  # free the edge's credit while waiting
                self._held.append(self._pop(self._edges[primary]))
            if not self._held:
                return None
            head = self._held[0]
            newest = head[-1].frame if isinstance(head, list) else head.frame
            if not self._secondaries_passed(newest) and len(self._held) <= MERGE_PENDING_LIMIT:
                return None
            entry = self._held.popleft()
        item = self._item(entry, primary)
        attached = self._attach_latest(item.frame)
        if attached:
            frame = item.frame
            item.frame = replace(frame, results=lent({**attached, **frame.results}))
            if item.payload is frame:
                item.payload = item.frame
        return item

    def _item(self, entry: Any, edge_id: int) -> WorkItem:
        if type(entry) is list:
            frames = [t.frame for t in entry]
            return WorkItem(frames, frames[-1], list(entry), entry[-1].arrived, edge_id)
        return WorkItem(entry.frame, entry.frame, [entry], entry.arrived, edge_id)

    def _next_merged(self) -> WorkItem | None:
        for edge_id in self._order:
            edge = self._edges[edge_id]
            while edge.entries:
                ticket = self._pop(edge)
                if isinstance(ticket, list):  # windows do not merge: take the newest frame
                    for extra in ticket[:-1]:
                        extra.unref()
                    ticket = ticket[-1]
                frame = ticket.frame
                self._passed[edge_id][frame.source] = frame.index
                key = (frame.source, frame.index)
                slot = self._pending.setdefault(key, {})
                if edge_id in slot:  # same frame twice on one edge: keep the newer
                    slot[edge_id].unref()
                slot[edge_id] = ticket
        if not self._pending:
            return None
        per_source: dict[str, int] = {}
        for source, _ in self._pending:
            per_source[source] = per_source.get(source, 0) + 1
        for key in sorted(self._pending, key=lambda k: (k[0], k[1])):
            source, index = key
            arrived = self._pending[key]
            complete = all(
                edge_id in arrived or edge.ended or self._passed[edge_id].get(source, -1) > index
                for edge_id, edge in self._edges.items()
            )
            if complete or per_source[source] > MERGE_PENDING_LIMIT:
                del self._pending[key]
                tickets = [arrived[e] for e in self._order if e in arrived]
                results: dict[str, Any] = {}
                for ticket in tickets:
                    results.update(ticket.frame.results)
                frame = replace(tickets[0].frame, results=lent(results))
                return WorkItem(frame, frame, tickets, min(t.arrived for t in tickets))
        return None
