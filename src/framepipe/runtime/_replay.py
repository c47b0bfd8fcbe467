"""Replay-as-live: file sources played as live cameras, on a simulated clock.

A discrete-event simulation of a real-time deployment in which every stage
and sink has a worker of its own. Frames leave each source at their media
time; a node that takes a frame is busy for its declared cost (``cost=`` on
the node, or the profile of a real run), and its results reach the next
inboxes when that time is over. The inboxes are the real ones, so policies,
``fps``/``window`` selection, ``max_age`` and joins decide exactly what a live
run would drop, and the real stage and sink code runs on exactly the frames a
live run would give it. Nothing waits in real time, and the same inputs give
the same drops, ages and outputs on every run and every machine.

It is the one host of every run (``ReplayHost``, a ``Host`` with the inline
thread playing the simulation) on the run's clock (``SimClock``): inboxes,
``max_age``, frame timestamps and source pacing read simulated time through
the same code as a live run.

Model, and what it leaves out:

- each stage and sink runs on a worker of its own and never waits for a core
  (use ``framepipe.planner`` to see what sharing cores does);
- a source delivers each frame at its media time (``pts``), at no cost;
- a ``block`` edge that is full holds its producer back: a held source
  then drops the frames that are more than 1.5 frame periods late, like a
  paced file source in a real-time run;
- a batch (``batch > 1``) costs the sum of its frames' costs;
- ``frame.timestamp`` counts simulated seconds from the start of the replay.
"""

from __future__ import annotations

import heapq
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .._errors import GraphError
from .._frame import Frame
from .._graph import Edge, Node, Plan
from .._policy import Queue
from ..stats import StatsRecorder
from ._executor import LocalExecutor
from ._host import Host, HostSpec
from ._inbox import EMPTY, Mark
from ._messages import Report
from ._outlets import LocalOutlet
from ._runners import NodeRunner

log = logging.getLogger("framepipe")

#: A node's cost per frame in seconds: a number, or a function of the frame.
Cost = float | Callable[[Any], float]

# Event kinds, in the order they are handled when they fall on the same instant:
# a worker that finishes frees itself before the next frame arrives.
# A held join frame falling due wakes the simulation last.
_DONE, _FRAME, _WAKE = 0, 1, 2


class SimClock:
    """The run's clock in a replay: simulated seconds since its start (``frame.timestamp``,
    ages, pacing). Only the replay moves it; nothing waits on it."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def wait(self, event: threading.Event, seconds: float) -> bool:
        # A frame is released when the replay's clock reaches its media time.
        return event.is_set()


class _SimRecorder(StatsRecorder):
    """Statistics on the simulated clock: the replay says what each frame cost and when."""

    def __init__(self, name: str, kind: str, clock: SimClock) -> None:
        super().__init__(name, kind)
        self.clock = clock
        self._started = 0.0
        # Set by the replay before each batch: (cost, when it is done).
        self.planned: tuple[float, float] = (0.0, 0.0)

    def record(
        self,
        latency: float,
        age: float = 0.0,
        wait: float = 0.0,
        count: int = 1,
        done: float | None = None,
    ) -> None:
        # The planned cost and finish, on the run's clock; ``age`` is simulated already,
        # and the real time a frame waited means nothing here.
        cost, finished = self.planned
        super().record(cost, age, 0.0, count, finished)

    def record_one(self, done: float, latency: float, age: float, wait: float = 0.0) -> None:
        self.record(latency, age)

    def finish(self) -> None:
        if self._ended is None:
            self._ended = self.clock.now

    def snapshot(self) -> Any:
        if self._ended is None:  # live view during a replay: simulated time so far
            self._ended = self.clock.now
            try:
                return super().snapshot()
            finally:
                self._ended = None
        return super().snapshot()


class _Outlet:
    """An edge as a replayed producer sees it: deliveries wait for the producer's finish."""

    __slots__ = ("edge", "pending")

    def __init__(self, edge: LocalOutlet, pending: deque[tuple[LocalOutlet, Frame | Mark]]) -> None:
        self.edge, self.pending = edge, pending

    def deliver(self, frame: Frame) -> None:
        self.pending.append((self.edge, frame))

    def advance(self, source: str, index: int, pts: float) -> None:
        self.pending.append((self.edge, Mark(source, index, pts)))

    def end(self) -> None:
        self.edge.end()


class GilProbe:
    """Estimates how much of some code's time holds the GIL, from a thread that keeps waking.

    The probe thread sleeps 0.2 ms at a time and needs the GIL for a moment on
    each wake-up. While the measured code releases the GIL (OpenCV, numpy,
    onnxruntime, I/O) the probe wakes at its free rate; while the code holds
    it, the probe only gets the GIL at each switch interval
    (``sys.getswitchinterval()``, 5 ms). The wake-up rate during the code,
    between those two, gives the share. An estimate: on a busy machine the
    probe also waits for a core.
    """

    def __init__(self) -> None:
        self.ticks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True, name="framepipe-gil")
        self.free_rate = 0.0
        self.held_rate = 1.0 / sys.getswitchinterval()

    def _tick(self) -> None:
        sleep = time.sleep
        while not self._stop.is_set():
            sleep(0.0002)
            self.ticks += 1

    def start(self) -> None:
        self._thread.start()
        ticks, began = self.ticks, time.perf_counter()
        time.sleep(0.2)  # the free rate, with this thread idle
        self.free_rate = (self.ticks - ticks) / (time.perf_counter() - began)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def share(self, ticks: int, wall: float) -> float | None:
        """The GIL share of code that ran ``wall`` seconds while the probe ticked ``ticks``."""
        if self.free_rate <= self.held_rate * 1.5 or wall * self.free_rate < 50:
            return None  # too busy a machine, or too little time, to tell
        rate = ticks / wall
        share = (self.free_rate - rate) / (self.free_rate - self.held_rate)
        return round(min(1.0, max(0.0, share)), 3)


class _Measure:
    """Real time and CPU spent in a node's own code during the replay (for profiles).

    CPU is the process's: it counts the threads a node's libraries start
    (FFmpeg's decoder, OpenCV), and nothing else runs while a node's code does.
    """

    __slots__ = ("cpu", "frames", "ticks", "wall")

    def __init__(self) -> None:
        self.frames, self.wall, self.cpu, self.ticks = 0, 0.0, 0.0, 0

    def add(self, frames: int, wall: float, cpu: float, ticks: int) -> None:
        self.frames += frames
        self.wall += wall
        self.cpu += cpu
        self.ticks += ticks


def _seconds(node: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not seconds >= 0:
        raise GraphError(f"node {node!r}: cost= must give seconds >= 0, got {value!r}")
    return seconds


def _constant(seconds: float) -> Callable[[Any], float]:
    return lambda frame: seconds


def node_costs(plan: Plan, profile: Any = None) -> dict[str, Callable[[Any], float]]:
    """Each stage and sink's cost function: ``cost=`` first, then the profile, else 0."""
    costs: dict[str, Callable[[Any], float]] = {}
    for name, node in plan.nodes.items():
        if node.kind not in ("stage", "sink"):
            continue
        declared = node.options.cost
        if callable(declared):
            costs[name] = declared
        elif declared is not None:
            costs[name] = _constant(float(declared))
        elif profile is not None and name in profile.nodes:
            costs[name] = _constant(profile.nodes[name].wall_s)
        else:
            costs[name] = _constant(0.0)
    return costs


class ReplayHost(Host):
    """The host of a replay: the one build of every host, scheduled as a simulation.

    Like the ``inline`` scheduler it runs every node in one thread; instead of
    running each source frame through the graph at once it moves the run's
    clock (``SimClock``) from event to event: a frame due at its media time, a
    node done with its batch. Edges keep their policies (a full ``block`` edge
    holds its producer back), and a producer's results reach the next inboxes
    when its cost is over.
    """

    batches_wait = True

    def __init__(
        self,
        spec: HostSpec,
        *,
        stop: threading.Event,
        report: Callable[[Report], None],
        sink_context: dict[str, Any],
        costs: dict[str, Callable[[Any], float]],
        duration: float | None,
        gil_probe: GilProbe | None,
    ) -> None:
        assert isinstance(spec.clock, SimClock)
        self.clock = spec.clock
        self.costs = costs
        self.duration = duration
        self.gil_probe = gil_probe
        self.pending: dict[str, deque[tuple[LocalOutlet, Frame | Mark]]] = {}
        self.measured: dict[str, _Measure] = {}
        self._busy: set[str] = set()  # nodes working on a batch
        self._held: set[str] = set()  # producers waiting on a full ``block`` edge
        self._events: list[tuple[float, int, int, str]] = []
        self._seq = 0
        self._next: dict[str, tuple[Any, float]] = {}  # source -> (image, pts) due next
        self._origin: dict[str, float] = {}  # source -> pts of its first frame
        self._wakes: dict[str, float] = {}  # node -> the join deadline it wakes at
        # Batches filling up (``max_wait_ms``): node -> (items, when the wait ends).
        self._forming: dict[str, tuple[list[Any], float]] = {}
        super().__init__(spec, stop=stop, report=report, sink_context=sink_context)

    # -- the build's hooks ------------------------------------------------------------

    def _recorder(self, name: str, kind: str) -> StatsRecorder:
        self.pending[name] = deque()
        self.measured[name] = _Measure()
        return _SimRecorder(name, kind, self.clock)

    def _policy(self, policy: Queue) -> Queue:
        return policy  # a full ``block`` edge holds its producer, as in a live run

    def _outlet(self, edge: Edge) -> Any:
        local = LocalOutlet(self.inboxes[edge.downstream], edge.id, self.stop_event)
        return _Outlet(local, self.pending[edge.upstream])

    # -- the simulation ---------------------------------------------------------------

    def _run_inline(self) -> None:
        if self.gil_probe is not None:
            self.gil_probe.start()
        try:
            super()._run_inline()
        finally:
            for recorder in self.recorders.values():
                recorder.finish()
            if self.gil_probe is not None:
                self.gil_probe.stop()

    def _play(self) -> None:
        for name, source in self.sources.items():
            source.open()
            self._read(name)
        self._dispatch()
        while self._events and not self.stop_event.is_set():
            when, kind, _, name = heapq.heappop(self._events)
            self.clock.now = max(self.clock.now, when)
            if kind == _DONE:
                self._busy.discard(name)
                if not self._flush(name):
                    self._held.add(name)
            elif kind == _FRAME:
                self._emit(name)
            self._dispatch()
        for source in self.sources.values():
            source.finish()
        self._dispatch()
        for name, (items, _) in self._forming.items():  # stopped while a batch filled
            frames = [item for item in items if type(item) is not Mark]
            self.recorders[name].drop("stop", len(frames))
            for item in frames:
                item.done()
        self._forming.clear()

    def _began(self) -> tuple[float, float, int]:
        ticks = self.gil_probe.ticks if self.gil_probe is not None else 0
        return time.perf_counter(), time.process_time(), ticks

    def _measure(self, name: str, frames: int, began: tuple[float, float, int]) -> None:
        wall, cpu, ticks = began
        probe = self.gil_probe
        self.measured[name].add(
            frames,
            time.perf_counter() - wall,
            time.process_time() - cpu,
            probe.ticks - ticks if probe is not None else 0,
        )

    def _schedule(self, when: float, kind: int, name: str) -> None:
        self._seq += 1
        heapq.heappush(self._events, (when, kind, self._seq, name))

    def _read(self, name: str) -> None:
        """Decode the next frame of source ``name`` and schedule it at its media time."""
        runner = self.sources[name]
        if runner.ended:  # its open() failed
            return
        began = self._began()
        captured = runner.read()
        if captured is None:
            return
        self._measure(name, 1, began)
        image, pts = captured
        due = pts - self._origin.setdefault(name, pts)
        if self.duration is not None and due >= self.duration:
            runner.finish()
            return
        self._next[name] = (image, pts)
        self._schedule(max(due, self.clock.now), _FRAME, name)

    def _emit(self, name: str) -> None:
        """Source ``name``'s frame is due now: the runner paces it on the simulated clock
        (a frame held back too long is dropped late) and delivers it."""
        runner = self.sources[name]
        recorder = self.recorders[name]
        assert isinstance(recorder, _SimRecorder)
        recorder.planned = (0.0, self.clock.now)
        runner.deliver(*self._next.pop(name))
        if not self._flush(name):
            self._held.add(name)
            return
        self._read(name)

    def _flush(self, name: str) -> bool:
        """Deliver what ``name`` produced, in order; False if a full ``block`` edge holds it."""
        pending = self.pending[name]
        while pending:
            edge, frame = pending[0]
            if isinstance(frame, Mark):
                pending.popleft()
                edge.advance(frame.source, frame.index, frame.pts)
                continue
            if edge.inbox.full(edge.edge_id):
                return False
            pending.popleft()
            edge.deliver(frame)
        return True

    def _dispatch(self) -> None:
        """Give every free worker its next batch; release producers whose edges have room."""
        progressed = True
        while progressed and not self.stop_event.is_set():
            progressed = False
            for name in list(self._held):
                if self._flush(name):
                    self._held.discard(name)
                    progressed = True
                    if name in self.sources:
                        self._read(name)
            for name, runner in self.runners.items():
                if runner.ended or name in self._busy or name in self._held:
                    continue
                if runner.failed:
                    runner.finish()
                    continue
                items = self._batch(name, runner) if runner.max_wait else runner.poll()
                if items is None:
                    progressed = progressed or runner.ended
                    continue
                progressed = True
                self._work(name, runner, items)
        self._wake_at_deadlines()

    def _batch(self, name: str, runner: NodeRunner) -> list[Any] | None:
        """A batch for a node that waits ``max_wait_ms`` for it to fill: as a live worker
        would, it waits on the simulated clock (a wake-up at the end of the wait)."""
        items, due = self._forming.pop(name, ([], self.clock.now + runner.max_wait))
        ended = False
        while len(items) < runner.batch:
            item = runner.inbox.take(0)
            if item is EMPTY:
                break
            if item is None:
                ended = True
                break
            items.append(item)
            if type(item) is Mark:
                break  # passed on at once, after what came before it
        if not items:
            if ended:
                runner.finish()
            return None
        full = len(items) >= runner.batch or type(items[-1]) is Mark
        if full or ended or self.clock.now >= due:
            return items
        self._forming[name] = (items, due)
        if self._wakes.get(name) != due:
            self._wakes[name] = due
            self._schedule(due, _WAKE, name)
        return None

    def _wake_at_deadlines(self) -> None:
        """A join holding a frame for a late input lets it go at its deadline: the
        simulation wakes then, as a worker's timed wait would."""
        for name, inbox in self.inboxes.items():
            due = inbox.deadline
            if due is not None and due > self.clock.now and self._wakes.get(name) != due:
                self._wakes[name] = due
                self._schedule(due, _WAKE, name)

    def _work(self, name: str, runner: NodeRunner, items: list[Any]) -> None:
        now = self.clock.now
        if all(type(item) is Mark for item in items):  # watermarks cost nothing
            runner.handle(items)
            if not self._flush(name):
                self._held.add(name)
            return
        try:
            cost = sum(
                _seconds(name, self.costs[name](item.payload))
                for item in items
                if type(item) is not Mark
            )
        except Exception as exc:
            for item in items:
                item.done()
            runner.failed = True
            self.on_fatal(
                name,
                exc
                if isinstance(exc, GraphError)
                else GraphError(
                    f"node {name!r}: cost= failed on frame {items[0].frame.index}: "
                    f"{type(exc).__name__}: {exc}"
                ),
            )
            return
        recorder = self.recorders[name]
        assert isinstance(recorder, _SimRecorder)
        recorder.planned = (cost, now + cost)
        began = self._began()
        runner.handle(items)  # the real code; its results wait in ``pending`` until done
        self._measure(name, len(items), began)
        self._busy.add(name)
        self._schedule(now + cost, _DONE, name)


class ReplayExecutor(LocalExecutor):
    """Runs a plan as a simulated real-time deployment on a ``ReplayHost``. See the
    module docstring."""

    def __init__(
        self,
        plan: Plan,
        *,
        duration: float | None = None,
        profile: Any = None,
        probe_gil: bool = False,
    ) -> None:
        for node in plan.nodes.values():
            if node.kind == "source" and getattr(node.obj, "live", False):
                raise GraphError(
                    f"source {node.name!r}: replay plays files as if they were live; "
                    f"{type(node.obj).__name__} is already live (use mode='realtime')"
                )
        plan.clock = SimClock()
        self.gil_probe = GilProbe() if probe_gil else None
        self._costs = node_costs(plan, profile)
        self._duration = duration
        super().__init__(plan, threaded=False)

    def _host(self, spec: HostSpec, sink_context: dict[str, Any]) -> Host:
        return ReplayHost(
            spec,
            stop=self.stop_event,
            report=self._report,
            sink_context=sink_context,
            costs=self._costs,
            duration=self._duration,
            gil_probe=self.gil_probe,
        )

    @property
    def measured(self) -> dict[str, _Measure]:
        """Real time and CPU of each node's own code during the replay (for profiles)."""
        assert isinstance(self.host, ReplayHost)
        return self.host.measured

    def gil_share(self, name: str) -> float | None:
        """The estimated GIL share of node ``name``'s code (with ``probe_gil=True``)."""
        if self.gil_probe is None:
            return None
        measured = self.measured[name]
        return self.gil_probe.share(measured.ticks, measured.wall)

    def add_source(self, node: Node, edges: list[Edge]) -> None:
        raise GraphError(f"source {node.name!r}: a replay cannot add sources while it runs")

    def remove_source(self, name: str) -> None:
        raise GraphError(f"source {name!r}: a replay cannot remove sources while it runs")
