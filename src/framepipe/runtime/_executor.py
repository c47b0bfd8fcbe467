"""The executor interface, and the in-process executors: inline and threads.

An executor is placement plus a control channel: it takes a ``Plan``, puts its
nodes on hosts (``_host.Host``: the same host runs nodes under every
executor), and relays what the hosts report. The interface is small so a
distributed backend (a host per Ray actor) can implement it without any
change to user code: ``start``, ``request_stop``, ``join``, ``kill``,
``stats``, ``final_states``, ``add_source``, ``remove_source``.
"""

from __future__ import annotations

import logging
import secrets
import threading
from abc import ABC, abstractmethod
from typing import Any

from .._errors import FramepipeError, SourceError
from .._graph import Edge, Node, Plan
from ..stats import NodeStats, RunStats
from ._host import Host, HostSpec, portable, replay_log
from ._messages import Failure, Fatal, Log, Ready, Report, error_of
from ._runners import ordered_stats

log = logging.getLogger("framepipe")

#: The host of the caller's process. A node with a process of its own has its name for
#: host id, and node names are never empty: no node can take the caller's place.
MAIN = ""


class Executor(ABC):
    """Runs the nodes of a plan somewhere. See the module docstring."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.stop_event = threading.Event()
        self.fatal: FramepipeError | None = None
        #: Errors that did not stop the run: failed sources, failed close()/teardown().
        self.source_errors: list[FramepipeError] = []
        self._error_lock = threading.Lock()

    @abstractmethod
    def start(self) -> None:
        """Start every node; return at once."""

    @abstractmethod
    def join(self, timeout: float | None = None) -> bool:
        """Wait for the run to end; True if it has."""

    def request_stop(self) -> None:
        """Ask every node to stop soon: sources end, stages drop queued work (sinks write
        what they already hold)."""
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

    def sink_context(self) -> dict[str, Any]:
        """What sinks in the caller's process may read of the run (``Sink.context``)."""
        return {"pipeline_stats": self.stats, "pipeline_graph": self.plan.describe}

    def on_fatal(self, node: str, error: BaseException) -> None:
        """A node failed for good: a source error is kept, anything else stops the run."""
        if isinstance(error, SourceError):
            self.on_failure(node, error)
            return
        with self._error_lock:
            if self.fatal is None:
                self.fatal = _named(node, error)
        self.request_stop()

    def on_failure(self, node: str, error: BaseException) -> None:
        """A node failed without stopping the others; the run fails once it has ended."""
        with self._error_lock:
            self.source_errors.append(_named(node, error))

    def report(self, message: Report) -> bool:
        """Handle what any host reports about the run; False if it is not about the run."""
        match message:
            case Fatal(node):
                self.on_fatal(node, error_of(message))
            case Failure(node):
                self.on_failure(node, error_of(message))
            case Log(fields):
                replay_log(fields)
            case _:
                return False
        return True


def _named(node: str, error: BaseException) -> FramepipeError:
    if isinstance(error, FramepipeError):
        return error
    named = FramepipeError(f"{node!r}: {error}")
    named.__cause__ = error.__cause__ or error
    return named


class LocalExecutor(Executor):
    """Every node in this process, on one host: a thread each (``threads``) or one
    thread for all (``inline``; see ``_host`` for the schedulers)."""

    def __init__(self, plan: Plan, *, threaded: bool) -> None:
        super().__init__(plan)
        self.threaded = threaded
        self._ready = threading.Event()
        self._closed = False
        spec = HostSpec(
            host_id=MAIN,
            segment_prefix=f"fp_local_{secrets.token_hex(4)}",  # never used: no other process
            nodes=[plan.nodes[name] for name in plan.order],
            edges=list(plan.edges),
            placement=dict.fromkeys(plan.order, MAIN),
            mode=plan.mode,
            start=plan.start,
            socket_dir="",
            sources_upstream={name: plan.sources_upstream(name) for name in plan.order},
            needed_fps={name: plan.needed_fps(name) for name in plan.order},
            scheduler="threads" if threaded else "inline",
            clock=plan.clock,
        )
        self.host = self._host(spec, self.sink_context())

    def _host(self, spec: HostSpec, sink_context: dict[str, Any]) -> Host:
        return Host(spec, stop=self.stop_event, report=self._report, sink_context=sink_context)

    def _report(self, message: Report) -> None:
        if isinstance(message, Ready):
            self._ready.set()
        elif not self.report(message):
            raise TypeError(f"unexpected report from the local host: {message!r}")

    def start(self) -> None:
        # Sources start once every stage is set up (models loaded), so the first
        # frames are not dropped while a slow setup() runs.
        self.host.start_nodes()
        self._ready.wait()  # a stop sets it too
        if not self.stop_event.is_set():
            self.host.go()

    def request_stop(self) -> None:
        super().request_stop()
        self._ready.set()
        self.host.stop()

    def join(self, timeout: float | None = None) -> bool:
        if not self.host.wait(timeout):
            return False
        with self._error_lock:
            if not self._closed:  # the host's wake-up pipes: a service runs many pipelines
                self._closed = True
                self.host.close()
        return True

    def kill(self) -> None:
        # Threads cannot be killed; they are daemons, and every blocking wait in
        # framepipe honours the stop flag. Close what can be closed.
        self.request_stop()

    def stats(self) -> RunStats:
        return RunStats(ordered_stats(self.host.recorders, self.plan.order))

    def add_source(self, node: Node, edges: list[Edge]) -> None:
        self.host.add_source(node, edges)

    def remove_source(self, name: str) -> None:
        self.host.remove_source(name)


class SupervisedExecutor(Executor):
    """An executor whose hosts run in other processes (workers, Ray actors) and report to
    a supervisor here; ``main_host`` runs the nodes that stay in the caller's process."""

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self.main_host: Host | None = None
        self._final_states: dict[str, Any] = {}
        self._done = threading.Event()  # set once every host has ended and been cleaned up
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None

    #: Node name -> the id of the host that runs it.
    placement: dict[str, str]

    def hosts(self) -> dict[str, list[str]]:
        """Host id -> the names of its nodes, in topological order."""
        groups: dict[str, list[str]] = {}
        for name in self.plan.order:
            groups.setdefault(self.placement[name], []).append(name)
        return groups

    def host_spec(self, host_id: str, names: list[str], **transport: Any) -> HostSpec:
        """The spec of the host ``host_id`` running ``names`` (``transport``: the
        ``HostSpec`` fields of the transport between hosts)."""
        plan = self.plan
        return HostSpec(
            host_id=host_id,
            nodes=[portable(plan.nodes[n]) for n in names],
            edges=[
                e
                for e in plan.edges
                if host_id in (self.placement[e.upstream], self.placement[e.downstream])
            ],
            placement=dict(self.placement),
            mode=plan.mode,
            start=plan.start,
            sources_upstream={n: plan.sources_upstream(n) for n in plan.order},
            needed_fps={n: plan.needed_fps(n) for n in names},
            log_level=logging.getLogger("framepipe").getEffectiveLevel(),
            clock=plan.clock,
            **transport,
        )

    @abstractmethod
    def host_stats(self) -> list[dict[str, NodeStats]]:
        """The latest statistics each host in another process reported."""

    def main_done(self) -> bool:
        """Whether the caller's host (if any) has started and ended, or was stopped and ended."""
        main = self.main_host
        return main is None or (
            (main.go_event.is_set() or self.stop_event.is_set()) and main.done()
        )

    def join(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def stats(self) -> RunStats:
        merged: dict[str, NodeStats] = {}
        for stats in self.host_stats():
            merged.update(stats)
        if self.main_host is not None:
            merged.update(self.main_host.stats())
        return RunStats(ordered_stats(merged, self.plan.order))

    def final_states(self) -> dict[str, Any]:
        return dict(self._final_states)
