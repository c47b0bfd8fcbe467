"""A node's inbox: one bounded queue per input edge, selection, and joins.

Producers ``put`` frames on an edge; the node's worker ``take``s work items.
Everything a node drops (policy, rate, age) is counted here, and every frame
that leaves the inbox without being processed is released at once, so shared
memory slots go back to their owner as early as possible.

Watermarks. Besides frames, an edge carries ``Mark``s: "every frame of this
source up to this index is decided here". A frame that a node will never pass
on (its rate skipped it, the stage returned ``None`` or failed, it was too old)
becomes a mark that travels the same way, in order with the frames, so a join
downstream knows at once that it need not wait for it.

Joins, for nodes with several inputs:

- ``each``: every frame from any input is processed on its own, in arrival order.
- ``merge``: the same frame (same source and index) arriving through several
  inputs is processed once, with all their results. An input that cannot carry
  the frame's source is never waited for. Offline, a frame waits exactly until
  every other input has decided it (delivered it, passed a mark or a later frame
  of its source, or ended): lossless and deterministic. In real time a frame
  waits at most ``join_wait`` (default: one frame interval of its source) and
  is processed with what has arrived; a result that comes later is delivered on
  its own, marked ``late``, never attached to another frame.
- ``latest``: the first input drives; each of its frames is processed with the
  newest result of every other input attached (slow detections carried onto a
  fast video branch), never from a later frame: of the same source, the newest
  with an index not above the frame's; of another source, the newest with a
  media time (``pts``) not above the frame's in offline mode (the newest that
  arrived, in real time). Offline, a frame waits until every other input has
  decided that far, so the attached results are the same in every run.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import numpy as np

from .._frame import Frame
from .._policy import NodeOptions, Queue, RateSelector, WindowSampler
from ..stats import StatsRecorder
from ._clock import SYSTEM_CLOCK, Clock

#: take() found nothing ready (non-blocking call).
EMPTY: Any = object()
#: Offline, frames an input of a join may have waiting for the other inputs before
#: the join stops reading it (its producer then waits: back-pressure, not loss).
JOIN_AHEAD_LIMIT = 64
#: Results a ``latest`` join keeps per input in real time.
LATEST_HISTORY = 64
#: Frames a real-time ``merge`` remembers having written, per source (to mark late ones).
WRITTEN_MEMORY = 1024
#: A real-time ``merge``'s wait for a source whose frame interval is not known yet.
DEFAULT_JOIN_WAIT = 0.1
#: At a stop, how long a sink may go on writing what its inbox already holds (seconds).
STOP_DRAIN = 2.0


class Mark:
    """A watermark: the producer has decided every frame of ``source`` up to ``index``
    (``pts``: that frame's media time) and will send nothing more for them."""

    __slots__ = ("index", "pts", "source")

    def __init__(self, source: str, index: int, pts: float) -> None:
        self.source, self.index, self.pts = source, index, pts

    def __repr__(self) -> str:
        return f"Mark({self.source!r}, {self.index})"


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


#: What a worker takes from its inbox (a ``Mark`` is passed on downstream).
Work = WorkItem | Ticket


@dataclass(slots=True)
class _Edge:
    upstream: str
    policy: Queue
    credit: Callable[[int], None] | None
    #: The sources whose frames can come this way (None: any).
    sources: frozenset[str] | None = None
    # (seq, Ticket | window list | Mark): marks take no room and no credit.
    entries: deque[tuple[int, Any]] = field(default_factory=deque)
    ended: bool = False
    #: Per source, the newest (index, pts) taken from this edge: decided up to there.
    passed: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: Offline joins: frames taken from this edge that wait for the other inputs.
    waiting: int = 0

    def carries(self, source: str) -> bool:
        return self.sources is None or source in self.sources or source in self.passed

    def decided(self, source: str, index: int) -> bool:
        """Whether nothing more can come this way for frame ``index`` of ``source``."""
        if (self.ended and not self.entries) or not self.carries(source):
            return True
        return self.passed.get(source, (-1, 0.0))[0] >= index

    def decided_pts(self, source: str, pts: float) -> bool:
        """Whether nothing more can come this way for ``source`` at media time ``pts``."""
        if self.ended and not self.entries:
            return True
        passed = self.passed.get(source)
        return passed is not None and passed[1] >= pts

    def pass_to(self, source: str, index: int, pts: float) -> None:
        known = self.passed.get(source)
        if known is None or index > known[0]:
            self.passed[source] = (index, pts)


@dataclass(slots=True)
class _Pending:
    """A frame a merge join holds for its other inputs."""

    tickets: dict[int, Ticket]
    since: float  # the clock's time when its first input arrived


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
        self._drain_until: float | None = None  # set by ``drain``: stopping, still writing
        self._seq = 0
        self._rate = RateSelector(options.fps) if options.fps and not options.window else None
        self._window = WindowSampler(options.window, options.fps) if options.window else None
        self._pending: dict[tuple[str, int], _Pending] = {}
        # Real-time merge: what was written, per source (insertion-ordered, bounded).
        self._written: dict[str, dict[int, None]] = {}
        self._interval: dict[str, tuple[int, float, float]] = {}  # source -> (index, pts, s)
        self._join_wait = options.join_wait
        #: The clock's time at which a held join frame is due (None: none held).
        self.deadline: float | None = None
        # Per source, the (index, pts) of the newest mark this node passed on.
        self._marked: dict[str, int] = {}
        self._history: dict[str, deque[tuple[str, int, float, Any]]] = {}
        self._held: deque[Any] = deque()  # latest join, offline: primary entries waiting
        self._driven: dict[str, Frame] = {}  # latest join, offline: newest frame per source
        self._only: _Edge | None = None
        self._latest = options.join == "latest"
        # Offline is lossless: frames are never too old (the mode, not the wall clock,
        # decides what is processed).
        self._max_age = None if ordered else options.max_age
        # Whether a put has more to do than queue the frame.
        self._selects = self._latest or self._window is not None or self._rate is not None

    # -- edges ---------------------------------------------------------------

    def add_edge(
        self,
        edge: int,
        upstream: str,
        policy: Queue,
        credit: Callable[[int], None] | None = None,
        sources: tuple[str, ...] | None = None,
    ) -> None:
        """``sources``: those whose frames can come through this edge (None: any)."""
        with self._lock:
            carried = None if sources is None else frozenset(sources)
            self._edges[edge] = _Edge(upstream, policy, credit, carried)
            self._order.append(edge)
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
                frames = sum(1 for _, entry in edge.entries if type(entry) is not Mark)
                if frames:
                    self.recorder.drop("stop", frames)
                while edge.entries:
                    self._discard(edge, edge.entries.popleft()[1])
            if self._pending:
                self.recorder.drop("stop", len(self._pending))
            for pending in self._pending.values():
                for ticket in pending.tickets.values():
                    ticket.unref()
            self._pending.clear()
            waiting = [entry for entry in self._held if type(entry) is not Mark]
            if waiting:
                self.recorder.drop("stop", len(waiting))
            self._held.clear()
            for entry in waiting:
                for ticket in entry if isinstance(entry, list) else (entry,):
                    ticket.unref()
            if self._window is not None:
                for held in self._window.held.values():
                    for ticket in held:
                        ticket.unref()
                self._window.held.clear()
            self._wake_taker()
            self._cond.notify_all()

    def drain(self, seconds: float = STOP_DRAIN) -> None:
        """Stop, but let the worker take what is already here for up to ``seconds``
        (a sink writes what it holds): nothing more is accepted, joins stop waiting,
        and whatever is left at the deadline is dropped as ``stop`` (``close``)."""
        with self._lock:
            if self._closed or self._drain_until is not None:
                return
            self._drain_until = time.monotonic() + seconds
            for edge in self._edges.values():
                edge.ended = True  # nothing more comes: a join writes what it has
            self._wake_taker()
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def _stopping(self) -> bool:
        return self._closed or self._drain_until is not None

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
            if self._closed or self._drain_until is not None:
                self.recorder.drop("stop")
                self._give_back(edge, ticket)
                return False
            entry: Any = ticket
            if self._selects:
                if self._latest and edge_id != self._order[0]:
                    if not self.ordered:
                        self._keep_latest(edge, ticket)
                        return True
                elif self._window is not None:
                    entry = self._windowed(edge, ticket)
                    if entry is None:
                        self._mark(edge, frame.source, frame.index, frame.pts)
                        return True
                elif self._rate is not None and not self._rate.select(frame.source, frame.pts):
                    self.recorder.drop("rate")
                    self._give_back(edge, ticket)
                    self._mark(edge, frame.source, frame.index, frame.pts)
                    return True
            policy = edge.policy
            if len(edge.entries) >= policy.size:
                if policy.overflow == "block":
                    while len(edge.entries) >= policy.size and not self._stopping:
                        if stop is not None and stop.is_set():
                            break
                        self._putters += 1
                        try:
                            self._cond.wait()  # close() (every stop closes) or a take wakes it
                        finally:
                            self._putters -= 1
                    if self._stopping or (stop is not None and stop.is_set()):
                        self.recorder.drop("stop")
                        self._discard(edge, entry)
                        return False
                elif policy.overflow == "drop_oldest":
                    self.recorder.drop("policy")
                    self._discard(edge, edge.entries.popleft()[1])
                else:
                    self.recorder.drop("policy")
                    self._discard(edge, entry)
                    self._mark(edge, frame.source, frame.index, frame.pts)
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
        due = self._window.due(frame.source, frame.index, frame.pts)
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
        if type(entry) is Mark:
            return
        for ticket in entry if isinstance(entry, list) else (entry,):
            ticket.unref()
        if edge.credit is not None:
            edge.credit(1)

    def advance(self, edge_id: int, source: str, index: int, pts: float) -> None:
        """The producer of ``edge_id`` decided frame ``index`` of ``source`` (and every
        earlier one) without sending it: a watermark, in order with its frames."""
        with self._lock:
            edge = self._edges.get(edge_id)
            if edge is not None and not self._closed:
                self._mark(edge, source, index, pts)

    def _mark(self, edge: _Edge, source: str, index: int, pts: float) -> None:
        if self._latest and not self.ordered and edge is not self._edges[self._order[0]]:
            edge.pass_to(source, index, pts)  # real-time secondaries are read at once
            return
        entries = edge.entries
        if entries:
            last = entries[-1][1]
            if type(last) is Mark and last.source == source:  # one mark between frames
                if index > last.index:
                    last.index, last.pts = index, pts
                return
        self._seq += 1
        entries.append((self._seq, Mark(source, index, pts)))
        self._wake_taker()

    def _passed_on(self, source: str) -> Mark | None:
        """The mark this node passes on for ``source``: how far every input that can
        carry it has decided, once that is further than the last mark passed on."""
        low: tuple[int, float] | None = None
        for edge in self._edges.values():
            if not edge.carries(source) or (edge.ended and not edge.entries):
                continue
            passed = edge.passed.get(source)
            if passed is None:
                return None
            if low is None or passed[0] < low[0]:
                low = passed
        if low is None:
            return None
        for key in self._pending:
            if key[0] == source and key[1] <= low[0]:
                return None
        if low[0] <= self._marked.get(source, -1):
            return None
        self._marked[source] = low[0]
        return Mark(source, low[0], low[1])

    def _keep_latest(self, edge: _Edge, ticket: Ticket) -> None:
        frame = ticket.frame
        value = frame.results.get(edge.upstream)
        if isinstance(value, np.ndarray):
            value = value.copy()  # the frame's memory goes back to its owner below
        if value is not None:
            history = self._history.get(edge.upstream)
            if history is None:
                maxlen = None if self.ordered else LATEST_HISTORY  # offline: pruned instead
                history = self._history[edge.upstream] = deque(maxlen=maxlen)
            history.append((frame.source, frame.index, frame.pts, value))
        edge.pass_to(frame.source, frame.index, frame.pts)
        self._give_back(edge, ticket)
        self._wake_taker()

    def _attach_latest(self, frame: Frame) -> dict[str, Any]:
        """The newest result of each other input for ``frame`` (never from a later frame)."""
        attached: dict[str, Any] = {}
        for upstream, history in self._history.items():
            chosen, same_source = None, False
            for source, index, pts, value in reversed(history):
                if source == frame.source:
                    same_source = True
                    if index <= frame.index:
                        chosen = value
                        break
                elif self.ordered and chosen is None and pts <= frame.pts:
                    chosen = value  # offline: by media time, the same in every run
            if not same_source and chosen is None and history and not self.ordered:
                chosen = history[-1][3]  # real time, fed by other sources: the newest
            if chosen is not None:
                attached[upstream] = chosen
        return attached

    def _secondaries_passed(self, frame: Frame) -> bool:
        """Offline: whether every other input has decided up to ``frame``."""
        for edge_id in self._order[1:]:
            edge = self._edges[edge_id]
            if edge.ended and not edge.entries:
                continue
            if edge.carries(frame.source) and not edge.decided(frame.source, frame.index):
                return False
            sources = edge.sources if edge.sources is not None else frozenset(edge.passed)
            for other in sources:
                if other != frame.source and not edge.decided_pts(other, frame.pts):
                    return False
            if edge.sources is None and not edge.passed:
                return False  # nothing known of it yet
        return True

    def _read_secondaries(self, head: Frame | None) -> None:
        """Offline ``latest``: take the other inputs' frames into their history while
        the held frame needs them, or while they are not too far ahead."""
        for edge_id in self._order[1:]:
            edge = self._edges[edge_id]
            while edge.entries:
                history = self._history.get(edge.upstream)
                ahead = 0 if history is None else len(history)
                if head is not None and self._edge_passed(edge, head):
                    if ahead >= JOIN_AHEAD_LIMIT:
                        break
                elif head is None and ahead >= JOIN_AHEAD_LIMIT:
                    break
                entry = self._pop(edge)
                if type(entry) is Mark:
                    edge.pass_to(entry.source, entry.index, entry.pts)
                    continue
                ticket = entry[-1] if isinstance(entry, list) else entry
                if isinstance(entry, list):
                    for extra in entry[:-1]:
                        extra.unref()
                self._keep_latest_offline(edge, ticket)

    def _edge_passed(self, edge: _Edge, frame: Frame) -> bool:
        if edge.carries(frame.source) and not edge.decided(frame.source, frame.index):
            return False
        return all(
            edge.decided_pts(other, frame.pts) for other in edge.passed if other != frame.source
        )

    def _keep_latest_offline(self, edge: _Edge, ticket: Ticket) -> None:
        frame = ticket.frame
        value = frame.results.get(edge.upstream)
        if isinstance(value, np.ndarray):
            value = value.copy()
        if value is not None:
            history = self._history.setdefault(edge.upstream, deque())
            history.append((frame.source, frame.index, frame.pts, value))
        edge.pass_to(frame.source, frame.index, frame.pts)
        ticket.unref()

    def _prune_history(self, frame: Frame) -> None:
        """Offline ``latest``: drop results no later frame can be given (the driving
        input's frames come in order per source), so the history stays as short as
        the lag between the inputs."""
        self._driven[frame.source] = frame
        for upstream, history in self._history.items():
            # Per source of the history, the oldest entry some later frame may still take.
            needed: dict[str, int] = {}
            for driven in self._driven.values():
                found: set[str] = set()  # the newest entry each source would give it
                for position in range(len(history) - 1, -1, -1):
                    source, index, pts, _ = history[position]
                    if source in found:
                        continue
                    if source == driven.source:
                        if index > driven.index:
                            continue
                    elif pts > driven.pts:
                        continue
                    found.add(source)
                    if position < needed.get(source, len(history)):
                        needed[source] = position
            keep = deque(
                entry
                for position, entry in enumerate(history)
                if position >= needed.get(entry[0], 0)
            )
            if len(keep) < len(history):
                self._history[upstream] = keep

    # -- the worker --------------------------------------------------------------

    def take(self, timeout: float | None = None) -> Work | Mark | None:
        """The next work item (or mark to pass on); ``None`` once every input has
        ended (or on close).

        ``timeout=0`` never blocks and returns ``EMPTY`` when nothing is ready.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        lock = self._lock
        while True:
            lock.acquire()  # not ``with``: half the cost, on the per-frame path
            try:
                if self._closed:
                    return None
                if self._drain_until is not None and time.monotonic() > self._drain_until:
                    self.close()  # the stop's deadline: what is left is dropped, counted
                    return None
                only = self._only
                if only is not None:  # one input taken frame by frame: no scan
                    if only.entries:
                        ticket: Any = only.entries.popleft()[1]  # ``_pop``, inlined
                        if type(ticket) is Mark:
                            return ticket
                        if only.credit is not None:
                            only.credit(1)
                        if self._putters:
                            self._cond.notify_all()
                        if self._max_age is not None and self._too_old(ticket):
                            return self._decided(ticket.frame)
                        return ticket
                    if only.ended:
                        return None
                else:
                    item = self._next_item()
                    if item is not None:
                        if isinstance(item, WorkItem) and self._too_old(item):
                            return self._decided(item.frame)
                        return item
                    if self._all_ended():
                        return None
                remaining = -1.0  # no timeout
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return EMPTY
                if self.deadline is not None:  # a held join frame falls due
                    due = max(0.0, self.deadline - self.clock.time()) + 0.001
                    remaining = due if remaining < 0 else min(remaining, due)
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

    def _decided(self, frame: Frame) -> Mark:
        """A frame this node will not process: passed on as a mark."""
        return Mark(frame.source, frame.index, frame.pts)

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
            if not (primary.ended and not primary.entries and not self._held):
                return False
            for edge_id in self._order[1:]:  # offline: what nobody will read any more
                edge = self._edges[edge_id]
                while edge.entries:
                    self._discard(edge, self._pop(edge))
            return True
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
        if type(entry) is Mark:
            return entry  # took no room, owes no credit
        if edge.credit is not None:
            edge.credit(1)
        if self._putters:
            self._cond.notify_all()  # a blocked producer may go on
        return entry

    def _next_item(self) -> WorkItem | Mark | None:
        join = self.options.join
        if join == "merge":
            return self._next_merged()
        if join == "latest":
            return self._next_latest()
        while True:
            best, best_seq = -1, 0
            for edge_id in self._order:
                entries = self._edges[edge_id].entries
                if entries and (best < 0 or entries[0][0] < best_seq):
                    best, best_seq = edge_id, entries[0][0]
            if best < 0:
                return None
            edge = self._edges[best]
            entry = self._pop(edge)
            if type(entry) is not Mark:
                newest = entry[-1].frame if isinstance(entry, list) else entry.frame
                edge.pass_to(newest.source, newest.index, newest.pts)
                return self._item(entry, best)
            edge.pass_to(entry.source, entry.index, entry.pts)
            mark = self._passed_on(entry.source)
            if mark is not None:
                return mark

    def _next_latest(self) -> WorkItem | Mark | None:
        primary_id = self._order[0]
        primary = self._edges[primary_id]
        if not self.ordered:
            if not primary.entries:
                return None
            entry = self._pop(primary)
            if type(entry) is Mark:
                return entry
        else:
            while primary.entries and len(self._held) < JOIN_AHEAD_LIMIT:
                self._held.append(self._pop(primary))  # frees the edge's credit
            head = self._held[0] if self._held else None
            if type(head) is Mark:
                self._read_secondaries(None)
                return self._held.popleft()
            newest = None
            if head is not None:
                newest = head[-1].frame if isinstance(head, list) else head.frame
            self._read_secondaries(newest)
            if newest is None or not self._secondaries_passed(newest):
                return None
            entry = self._held.popleft()
            self._prune_history(newest)
        item = self._item(entry, primary_id)
        attached = self._attach_latest(item.frame)
        if attached:
            frame = item.frame
            item.frame = frame.derive({**attached, **frame.results})
            if item.payload is frame:
                item.payload = item.frame
        return item

    def _item(self, entry: Any, edge_id: int) -> WorkItem:
        if type(entry) is list:
            frames = [t.frame for t in entry]
            return WorkItem(frames, frames[-1], list(entry), entry[-1].arrived, edge_id)
        return WorkItem(entry.frame, entry.frame, [entry], entry.arrived, edge_id)

    # -- merge -------------------------------------------------------------------------

    def _next_merged(self) -> WorkItem | Mark | None:
        for edge_id in self._order:
            edge = self._edges[edge_id]
            # Offline, an input far ahead of the others is left in its queue: its
            # producer waits (back-pressure) instead of the join holding more frames.
            while edge.entries and (not self.ordered or edge.waiting < JOIN_AHEAD_LIMIT):
                entry = self._pop(edge)
                if type(entry) is Mark:
                    edge.pass_to(entry.source, entry.index, entry.pts)
                    continue
                if isinstance(entry, list):  # windows do not merge: take the newest frame
                    for extra in entry[:-1]:
                        extra.unref()
                    entry = entry[-1]
                ticket: Ticket = entry
                frame = ticket.frame
                edge.pass_to(frame.source, frame.index, frame.pts)
                self._learn_interval(frame)
                key = (frame.source, frame.index)
                written = self._written.get(frame.source)
                if written is not None and frame.index in written:
                    # Real time: this frame was written without this input, which
                    # came late. It goes on alone, marked, never attached again.
                    late = frame.derive(late=True)
                    return WorkItem(late, late, [ticket], ticket.arrived, edge_id)
                pending = self._pending.get(key)
                if pending is None:
                    pending = self._pending[key] = _Pending({}, self.clock.time())
                if edge_id in pending.tickets:  # the same frame twice on one edge
                    pending.tickets[edge_id].unref()
                else:
                    edge.waiting += 1
                pending.tickets[edge_id] = ticket
        item = self._merged_due()
        if item is not None:
            return item
        for source in {key[0] for key in self._pending} | self._sources_marked():
            mark = self._passed_on(source)
            if mark is not None:
                return mark
        return None

    def _sources_marked(self) -> set[str]:
        return {source for edge in self._edges.values() for source in edge.passed}

    def _learn_interval(self, frame: Frame) -> None:
        """A source's frame interval, from the frames seen (real-time merge waits)."""
        if self.ordered or self._join_wait is not None:
            return
        known = self._interval.get(frame.source)
        if known is None:
            self._interval[frame.source] = (frame.index, frame.pts, 0.0)
        elif frame.index > known[0] and frame.pts > known[1]:
            step = (frame.pts - known[1]) / (frame.index - known[0])
            interval = step if not known[2] else 0.8 * known[2] + 0.2 * step
            self._interval[frame.source] = (frame.index, frame.pts, interval)

    def _wait_for(self, source: str) -> float:
        if self._join_wait is not None:
            return self._join_wait
        known = self._interval.get(source)
        return known[2] if known is not None and known[2] else DEFAULT_JOIN_WAIT

    def _merged_due(self) -> WorkItem | None:
        """The next frame every input has decided (or, in real time, whose wait is over)."""
        self.deadline = None
        if not self._pending:
            return None
        now = self.clock.time()
        edges = self._edges.items()
        for key in sorted(self._pending):
            source, index = key
            pending = self._pending[key]
            arrived = pending.tickets
            complete = all(
                edge_id in arrived or edge.decided(source, index) for edge_id, edge in edges
            )
            if not complete and not self.ordered:
                due = pending.since + self._wait_for(source)
                if now < due:
                    if self.deadline is None or due < self.deadline:
                        self.deadline = due
                    continue
                complete = True
            if complete:
                del self._pending[key]
                if not self.ordered:
                    self._remember_written(source, index)
                tickets = [arrived[e] for e in self._order if e in arrived]
                for edge_id in arrived:
                    self._edges[edge_id].waiting -= 1
                self.deadline = None  # computed again on the next call
                return self._merged_item(tickets)
        return None

    def _remember_written(self, source: str, index: int) -> None:
        written = self._written.setdefault(source, {})
        written[index] = None
        if len(written) > WRITTEN_MEMORY:
            del written[next(iter(written))]

    def _merged_item(self, tickets: list[Ticket]) -> WorkItem:
        first = tickets[0].frame
        if len(tickets) == 1:
            return WorkItem(first, first, tickets, tickets[0].arrived)
        results: dict[str, Any] = {}
        handles: dict[str, Any] = {}
        for ticket in tickets:
            for key, value in ticket.frame.results.items():
                results.setdefault(key, value)
            for handle in ticket.frame._handles:
                # Each array keeps the handle of the frame it came with: the transport
                # then holds every input's shared memory as long as the merged frame.
                handles.setdefault(getattr(handle, "key", ""), handle)
        frame = first.derive(results, handles=tuple(handles.values()))
        return WorkItem(frame, frame, tickets, min(t.arrived for t in tickets))
