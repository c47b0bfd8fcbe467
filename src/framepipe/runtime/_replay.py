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
from ..stats import RunStats, StatsRecorder
from ._executor import Executor
from ._inbox import EMPTY, Inbox, WorkItem
from ._runners import NodeRunner, SourceRunner

log = logging.getLogger("framepipe")

#: A node's cost per frame in seconds: a number, or a function of the frame.
Cost = float | Callable[[Any], float]

# Event kinds, in the order they are handled when they fall on the same instant:
# a worker that finishes frees itself before the next frame arrives.
_DONE, _FRAME = 0, 1


class SimClock:
    """Simulated seconds since the start of a replay; only the replay moves it."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _SimInbox(Inbox):
    """An inbox whose ``max_age`` is judged on the simulated clock."""

    def __init__(self, *args: Any, clock: SimClock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock

    def _too_old(self, item: WorkItem) -> bool:
        max_age = self.options.max_age
        if max_age is None or self.clock() - item.frame.timestamp <= max_age:
            return False
        self.recorder.drop("age")
        item.done()
        return True

    def full(self, edge_id: int) -> bool:
        """Whether a put on ``edge_id`` would make its producer wait."""
        with self._cond:
            edge = self._edges[edge_id]
            return (
                not self._closed
                and edge.policy.overflow == "block"
                and len(edge.entries) >= edge.policy.size
            )


class _SimRecorder(StatsRecorder):
    """Statistics on the simulated clock: the replay says what each frame cost and when."""

    def __init__(self, name: str, kind: str, clock: SimClock) -> None:
        super().__init__(name, kind)
        self.clock = clock
        self._started = 0.0
        # Set by the replay before each batch: (cost, age at start, when it is done).
        self.planned: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def record(
        self, latency: float, age: float | None = None, wait: float | None = None, count: int = 1
    ) -> None:
        cost, age_at_start, done = self.planned
        self.processed += count
        self._latency.add(cost)
        self._age.add(age_at_start)
        self._done_times.extend([done] * count)
        if self._first is None:
            self._first = done - cost
        self._last = done

    def finish(self) -> None:
        if self._ended is None:
            self._ended = self.clock()

    def snapshot(self) -> Any:
        if self._ended is None:  # live view during a replay: simulated time so far
            self._ended = self.clock()
            try:
                return super().snapshot()
            finally:
                self._ended = None
        return super().snapshot()


class _Outlet:
    """An edge as a replayed producer sees it: deliveries wait for the producer's finish."""

    __slots__ = ("edge_id", "inbox", "pending")

    def __init__(self, inbox: _SimInbox, edge_id: int, pending: deque[tuple[_Outlet, Frame]]):
        self.inbox, self.edge_id, self.pending = inbox, edge_id, pending

    def deliver(self, frame: Frame) -> None:
        self.pending.append((self, frame))

    def end(self) -> None:
        self.inbox.end(self.edge_id)


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


class ReplayExecutor(Executor):
    """Runs a plan as a simulated real-time deployment, in one thread. See the module docstring."""

    def __init__(
        self,
        plan: Plan,
        *,
        duration: float | None = None,
        profile: Any = None,
        probe_gil: bool = False,
    ) -> None:
        super().__init__(plan)
        for node in plan.nodes.values():
            if node.kind == "source" and getattr(node.obj, "live", False):
                raise GraphError(
                    f"source {node.name!r}: replay plays files as if they were live; "
                    f"{type(node.obj).__name__} is already live (use mode='realtime')"
                )
        self.clock = SimClock()
        self.duration = duration
        self.costs = node_costs(plan, profile)
        self.recorders: dict[str, StatsRecorder] = {}
        self.inboxes: dict[str, _SimInbox] = {}
        self.sources: dict[str, SourceRunner] = {}
        self.runners: dict[str, NodeRunner] = {}
        self.pending: dict[str, deque[tuple[_Outlet, Frame]]] = {}
        self.measured: dict[str, _Measure] = {}
        self.gil_probe = GilProbe() if probe_gil else None
        self._busy: set[str] = set()  # nodes working on a batch
        self._held: set[str] = set()  # producers waiting on a full ``block`` edge
        self._events: list[tuple[float, int, int, str]] = []
        self._seq = 0
        self._next: dict[str, tuple[Any, float]] = {}  # source -> (image, pts) due next
        self._origin: dict[str, float] = {}  # source -> pts of its first frame
        self._period: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._set_up = threading.Event()
        self._build()

    def _build(self) -> None:
        plan = self.plan
        for name in plan.order:
            node = plan.nodes[name]
            self.recorders[name] = _SimRecorder(name, node.kind, self.clock)
            self.pending[name] = deque()
            self.measured[name] = _Measure()
            if node.kind in ("stage", "sink"):
                self.inboxes[name] = _SimInbox(
                    name, node.options, self.recorders[name], clock=self.clock
                )
        for edge in plan.edges:
            self.inboxes[edge.downstream].add_edge(edge.id, edge.upstream, edge.policy)
        for name in plan.order:
            node = plan.nodes[name]
            outlets: list[Any] = [
                _Outlet(self.inboxes[e.downstream], e.id, self.pending[name])
                for e in plan.outputs_of(name)
            ]
            if node.kind == "source":
                self.sources[name] = SourceRunner(
                    node,
                    outlets,
                    self.recorders[name],
                    mode="replay",
                    start=plan.start,
                    stop=self.stop_event,
                    on_fatal=self.on_fatal,
                    needed_fps=plan.needed_fps(name),
                )
            elif node.kind in ("stage", "sink"):
                runner = NodeRunner(
                    node,
                    self.inboxes[name],
                    outlets,
                    self.recorders[name],
                    mode="replay",
                    sources=plan.sources_upstream(name),
                    stop=self.stop_event,
                    on_fatal=self.on_fatal,
                    sink_context={"pipeline_stats": self.stats, "pipeline_graph": plan.describe},
                )
                runner.max_wait = 0.0  # a batch is what is waiting when the worker is free
                self.runners[name] = runner

    # -- the executor interface ------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="framepipe-replay")
        self._thread.start()
        self._set_up.wait()

    def join(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def request_stop(self) -> None:
        super().request_stop()
        for inbox in self.inboxes.values():
            inbox.close()

    def kill(self) -> None:
        self.request_stop()

    def stats(self) -> RunStats:
        return RunStats({name: rec.snapshot() for name, rec in self.recorders.items()})

    def add_source(self, node: Node, edges: list[Edge]) -> None:
        raise GraphError(f"source {node.name!r}: a replay cannot add sources while it runs")

    def remove_source(self, name: str) -> None:
        raise GraphError(f"source {name!r}: a replay cannot remove sources while it runs")

    # -- the simulation --------------------------------------------------------------

    def _run(self) -> None:
        if self.gil_probe is not None:
            self.gil_probe.start()
        try:
            ok = all(runner.setup() for runner in self.runners.values())
            self._set_up.set()
            if ok:
                for name, source in self.sources.items():
                    source.open()
                    self._read(name)
                self._loop()
        except Exception as exc:  # the replay's own failure: one named error, the run ends
            self.on_fatal("replay", exc)
        try:
            for source in self.sources.values():
                source.finish()
            self._dispatch()
        finally:
            self._set_up.set()
            for runner in self.runners.values():
                runner.finish()
            for recorder in self.recorders.values():
                recorder.finish()
            if self.gil_probe is not None:
                self.gil_probe.stop()
            self._done.set()

    def _began(self) -> tuple[float, float, int]:
        ticks = self.gil_probe.ticks if self.gil_probe is not None else 0
        return time.perf_counter(), time.process_time(), ticks

    def _measure(self, name: str, frames: int, wall: float, cpu: float, ticks: int) -> None:
        probe = self.gil_probe
        self.measured[name].add(
            frames,
            time.perf_counter() - wall,
            time.process_time() - cpu,
            probe.ticks - ticks if probe is not None else 0,
        )

    def gil_share(self, name: str) -> float | None:
        """The estimated GIL share of node ``name``'s code (with ``probe_gil=True``)."""
        if self.gil_probe is None:
            return None
        measured = self.measured[name]
        return self.gil_probe.share(measured.ticks, measured.wall)

    def _schedule(self, when: float, kind: int, name: str) -> None:
        self._seq += 1
        heapq.heappush(self._events, (when, kind, self._seq, name))

    def _loop(self) -> None:
        self._dispatch()
        while self._events and not self.stop_event.is_set():
            when, kind, _, name = heapq.heappop(self._events)
            self.clock.now = max(self.clock.now, when)
            if kind == _DONE:
                self._busy.discard(name)
                if not self._flush(name):
                    self._held.add(name)
            else:
                self._emit(name)
            self._dispatch()

    def _read(self, name: str) -> None:
        """Decode the next frame of source ``name`` and schedule it at its media time."""
        runner = self.sources[name]
        if runner.ended or runner._iterator is None:
            runner.finish()
            return
        began_wall, began_cpu, began_ticks = self._began()
        try:
            image, pts = next(runner._iterator)
        except StopIteration:
            runner.finish()
            return
        except Exception as exc:
            runner._fail(exc, "failed while reading")
            return
        self._measure(name, 1, began_wall, began_cpu, began_ticks)
        pts = float(pts)
        origin = self._origin.setdefault(name, pts)
        previous = self._next.get(name)
        if previous is not None:
            self._period[name] = max(pts - previous[1], 0.0)
        due = pts - origin
        if self.duration is not None and due >= self.duration:
            runner.finish()
            return
        self._next[name] = (image, pts)
        self._schedule(max(due, self.clock.now), _FRAME, name)

    def _emit(self, name: str) -> None:
        """Source ``name``'s frame is due now: deliver it (or drop it if held back too long)."""
        runner = self.sources[name]
        image, pts = self._next.pop(name)
        due = pts - self._origin[name]
        late = self.clock.now - due
        if late > max(self._period.get(name, 0.0), 0.005) * 1.5:
            runner.recorder.drop("late")
        else:
            frame = runner._frame(image, pts, due, None)
            for outlet in runner.outlets:
                outlet.deliver(frame)
            recorder = self.recorders[name]
            assert isinstance(recorder, _SimRecorder)
            recorder.planned = (0.0, 0.0, self.clock.now)
            recorder.record(0.0)
            if not self._flush(name):
                self._held.add(name)
                return
        self._read(name)

    def _flush(self, name: str) -> bool:
        """Deliver what ``name`` produced, in order; False if a full ``block`` edge holds it."""
        pending = self.pending[name]
        while pending:
            outlet, frame = pending[0]
            if outlet.inbox.full(outlet.edge_id):
                return False
            pending.popleft()
            outlet.inbox.put(outlet.edge_id, frame)
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
                items = runner.take(block=False)
                if items is EMPTY:
                    continue
                progressed = True
                if items is None:
                    runner.finish()
                    continue
                self._work(name, runner, items)

    def _work(self, name: str, runner: NodeRunner, items: list[WorkItem]) -> None:
        now = self.clock.now
        try:
            cost = sum(_seconds(name, self.costs[name](item.payload)) for item in items)
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
        recorder.planned = (cost, max(now - item.frame.timestamp for item in items), now + cost)
        began_wall, began_cpu, began_ticks = self._began()
        runner.handle(items)  # the real code; its results wait in ``pending`` until done
        self._measure(name, len(items), began_wall, began_cpu, began_ticks)
        self._busy.add(name)
        self._schedule(now + cost, _DONE, name)
