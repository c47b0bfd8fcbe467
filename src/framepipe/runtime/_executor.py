"""The executor interface, and the in-process executors: inline and threads.

An executor takes a ``Plan`` and runs its nodes. The interface is small so a
distributed backend (one Ray actor per node) can implement it without any
change to user code: ``start``, ``request_stop``, ``join``, ``kill``,
``stats``, ``final_states``, ``add_source``, ``remove_source``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from .._errors import FramepipeError, SourceError
from .._frame import Frame
from .._graph import Edge, Node, Plan
from .._policy import Queue
from ..stats import RunStats, StatsRecorder
from ._inbox import EMPTY, Inbox
from ._runners import NodeRunner, SourceRunner

log = logging.getLogger("framepipe")

Lease = Callable[[Frame, int], Callable[[], None] | None]


class Executor(ABC):
    """Runs the nodes of a plan somewhere. See the module docstring."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.stop_event = threading.Event()
        self.fatal: FramepipeError | None = None
        self.source_errors: list[FramepipeError] = []
        self._error_lock = threading.Lock()

    @abstractmethod
    def start(self) -> None:
        """Start every node; return at once."""

    @abstractmethod
    def join(self, timeout: float | None = None) -> bool:
        """Wait for the run to end; True if it has."""

    def request_stop(self) -> None:
        """Ask every node to stop soon: sources end, queued work is dropped."""
        self.stop_event.set()

    @abstractmethod
    def kill(self) -> None:
        """Stop now, without waiting for nodes (after the stop timeout)."""

    @abstractmethod
    def stats(self) -> RunStats:
        """Live (or, after join, final) statistics of every node."""

    def final_states(self) -> dict[str, Any]:
        """Sink name -> ``final_state()`` of sinks that ran in another process."""
        return {}

    @abstractmethod
    def add_source(self, node: Node, edges: list[Edge]) -> None:
        """Start a new source feeding existing nodes through ``edges``."""

    @abstractmethod
    def remove_source(self, name: str) -> None:
        """Stop one source; its edges end."""

    def on_fatal(self, node: str, error: BaseException) -> None:
        """A node failed for good: a source error is kept, anything else stops the run."""
        with self._error_lock:
            if isinstance(error, SourceError):
                self.source_errors.append(error)
                return
            if self.fatal is None:
                self.fatal = (
                    error
                    if isinstance(error, FramepipeError)
                    else FramepipeError(f"{node!r}: {error}")
                )
        self.request_stop()


class LocalOutlet:
    """An edge into an inbox of this process."""

    __slots__ = ("edge_id", "inbox", "lease", "stop")

    def __init__(
        self, inbox: Inbox, edge_id: int, stop: threading.Event, lease: Lease | None = None
    ) -> None:
        self.inbox, self.edge_id, self.stop, self.lease = inbox, edge_id, stop, lease

    def deliver(self, frame: Frame) -> None:
        release = self.lease(frame, self.edge_id) if (self.lease and frame._handles) else None
        self.inbox.put(self.edge_id, frame, release, self.stop)

    def end(self) -> None:
        self.inbox.end(self.edge_id)


class DirectOutlet:
    """Inline: an edge that calls its consumer at once (see ``NodeRunner.accept``)."""

    __slots__ = ("edge_id", "runner")

    def __init__(self, runner: NodeRunner, edge_id: int) -> None:
        self.runner, self.edge_id = runner, edge_id

    def deliver(self, frame: Frame) -> None:
        self.runner.accept(frame)

    def end(self) -> None:
        self.runner.inbox.end(self.edge_id)


def _direct(node: Node) -> bool:
    """Whether an inline node can be called directly instead of through its inbox."""
    options = node.options
    return (
        len(node.inputs) == 1
        and options.window is None
        and options.join == "each"
        and int(getattr(node.obj, "batch", 1) or 1) == 1
    )


class LocalExecutor(Executor):
    """All nodes in this process: one thread each (``threads``) or one thread for all (``inline``).

    Inline runs one source frame at a time through the whole graph in
    topological order, so runs are deterministic and a debugger can step
    through every stage.
    """

    def __init__(self, plan: Plan, *, threaded: bool) -> None:
        super().__init__(plan)
        self.threaded = threaded
        self.recorders: dict[str, StatsRecorder] = {}
        self.inboxes: dict[str, Inbox] = {}
        self.sources: dict[str, SourceRunner] = {}
        self.runners: dict[str, NodeRunner] = {}
        self.threads: list[threading.Thread] = []
        self._pending_sources: list[SourceRunner] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._build()

    def _policy(self, policy: Queue) -> Queue:
        # One thread never waits on itself: inline edges never block and never drop
        # for being full; every source frame is drained through the graph at once.
        if not self.threaded and policy.overflow == "block":
            return Queue(1 << 30, "block")
        return policy

    def _build(self) -> None:
        plan = self.plan
        for name in plan.order:
            node = plan.nodes[name]
            self.recorders[name] = StatsRecorder(name, node.kind)
            if node.kind in ("stage", "sink"):
                self.inboxes[name] = Inbox(
                    name, node.options, self.recorders[name], ordered=plan.mode == "offline"
                )
        for edge in plan.edges:
            self.inboxes[edge.downstream].add_edge(
                edge.id, edge.upstream, self._policy(edge.policy)
            )
        # Build consumers first so inline producers can hold direct references to them.
        for name in reversed(plan.order):
            node = plan.nodes[name]
            outlets: list[Any] = [self._outlet(e) for e in plan.outputs_of(name)]
            if node.kind == "source":
                self.sources[name] = self._source_runner(node, outlets)
            elif node.kind in ("stage", "sink"):
                runner = NodeRunner(
                    node,
                    self.inboxes[name],
                    outlets,
                    self.recorders[name],
                    mode=plan.mode,
                    sources=plan.sources_upstream(name),
                    stop=self.stop_event,
                    on_fatal=self.on_fatal,
                    sink_context=self.sink_context(),
                )
                if not self.threaded:
                    runner.max_wait = 0.0
                self.runners[name] = runner
        self.runners = {n: self.runners[n] for n in plan.order if n in self.runners}
        self.sources = {n: self.sources[n] for n in plan.order if n in self.sources}

    def _outlet(self, edge: Edge) -> Any:
        if not self.threaded and _direct(self.plan.nodes[edge.downstream]):
            return DirectOutlet(self.runners[edge.downstream], edge.id)
        return LocalOutlet(self.inboxes[edge.downstream], edge.id, self.stop_event)

    def sink_context(self) -> dict[str, Any]:
        """Live views handed to sinks (web view): the run's stats and graph."""
        return {"pipeline_stats": self.stats, "pipeline_graph": self.plan.describe}

    def _source_runner(self, node: Node, outlets: list[Any]) -> SourceRunner:
        return SourceRunner(
            node,
            outlets,
            self.recorders[node.name],
            mode=self.plan.mode,
            start=self.plan.start,
            stop=self.stop_event,
            on_fatal=self.on_fatal,
            needed_fps=self.plan.needed_fps(node.name),
        )

    # -- running -----------------------------------------------------------------

    def start(self) -> None:
        if self.threaded:
            ready = threading.Barrier(len(self.runners) + 1) if self.runners else None
            for runner in self.runners.values():
                self._spawn(self._run_node, runner, ready)
            if ready is not None:
                # Sources start once every stage is set up (models loaded), so the
                # first frames are not dropped while a slow setup() runs.
                with contextlib.suppress(threading.BrokenBarrierError):
                    ready.wait()
            for source in self.sources.values():
                self._spawn(source.run)
            self._spawn(self._watch)
        else:
            # Like the threads executor, return once every node is set up (sinks open).
            self._set_up = threading.Event()
            self._spawn(self._run_inline)
            self._set_up.wait()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(
            target=target,
            args=args,
            daemon=True,
            name=f"framepipe-{getattr(target, '__name__', 'node')}",
        )
        self.threads.append(thread)
        thread.start()

    def _run_node(self, runner: NodeRunner, ready: threading.Barrier | None) -> None:
        def set_up() -> None:
            if ready is not None:
                ready.wait()

        with contextlib.suppress(threading.BrokenBarrierError):
            runner.run(set_up)

    def _watch(self) -> None:
        # Rescan until no thread is left: sources added while running start new ones.
        while True:
            with self._lock:
                alive = [
                    t for t in self.threads if t.is_alive() and t is not threading.current_thread()
                ]
            if not alive:
                break
            for thread in alive:
                thread.join()
        self._done.set()

    def _run_inline(self) -> None:
        try:
            ok = all(runner.setup() for runner in self.runners.values())
            self._set_up.set()
            if ok:
                for source in self.sources.values():
                    source.open()
                active = list(self.sources.values())
                while active and not self.stop_event.is_set():
                    for source in list(active):
                        if not source.step():
                            active.remove(source)
                        self._drain()
                    with self._lock:
                        active.extend(self._pending_sources)
                        self._pending_sources.clear()
            for source in self.sources.values():
                source.finish()
            if self.stop_event.is_set():
                for inbox in self.inboxes.values():
                    inbox.close()
            self._drain()
        finally:
            self._set_up.set()
            for runner in self.runners.values():
                runner.finish()
            self._done.set()

    def _drain(self) -> None:
        progressed = True
        while progressed:
            progressed = False
            for runner in self.runners.values():
                if runner.ended:
                    continue
                while not runner.failed:
                    items = runner.take(block=False)
                    if items is EMPTY:
                        break
                    progressed = True
                    if items is None:
                        runner.finish()
                        break
                    runner.handle(items)

    def request_stop(self) -> None:
        super().request_stop()
        for inbox in self.inboxes.values():
            inbox.close()

    def join(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def kill(self) -> None:
        # Threads cannot be killed; they are daemons, and every blocking wait in
        # framepipe honours the stop flag. Close what can be closed.
        self.request_stop()

    def stats(self) -> RunStats:
        return RunStats({name: rec.snapshot() for name, rec in self.recorders.items()})

    # -- hot add / remove ------------------------------------------------------------

    def add_source(self, node: Node, edges: list[Edge]) -> None:
        self.recorders[node.name] = StatsRecorder(node.name, "source")
        outlets: list[Any] = []
        for edge in edges:
            self.inboxes[edge.downstream].add_edge(
                edge.id, edge.upstream, self._policy(edge.policy)
            )
            outlets.append(self._outlet(edge))
        runner = self._source_runner(node, outlets)
        self.sources[node.name] = runner
        if self.threaded:
            with self._lock:
                self._spawn(runner.run)
        else:
            runner.open()
            with self._lock:
                self._pending_sources.append(runner)

    def remove_source(self, name: str) -> None:
        runner = self.sources.get(name)
        if runner is not None:
            runner.removed.set()
