"""A worker host: the nodes of a run that live in one process.

Under ``executor="processes"`` every child process runs one host (usually
one node), and the caller's process runs one for the nodes that stay there
(callbacks, ``executor="threads"`` overrides). A host gives each node a
thread, listens for edges from other processes, connects its own outlets to
theirs, and reports to the run's supervisor: segments it created, readiness,
statistics, fatal errors, and its final results.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Listener
from typing import Any

import cloudpickle

from .._errors import FramepipeError, RemoteTraceback
from .._graph import Edge, Node
from ..stats import NodeStats, StatsRecorder
from ..transport._shm import SharedFrames
from ._executor import LocalOutlet
from ._inbox import Inbox
from ._remote import RemoteOutlet, receive
from ._runners import NodeRunner, SourceRunner

log = logging.getLogger("framepipe")

Report = Callable[[tuple[Any, ...]], None]


@dataclass
class HostSpec:
    """What one host needs to know: its nodes and every edge that touches them."""

    host_id: str
    segment_prefix: str
    nodes: list[Node]  # in topological order; ``pipeline`` is None (not pickled)
    edges: list[Edge]
    placement: dict[str, str]  # node name -> host id
    mode: str
    start: float
    socket_dir: str
    sources_upstream: dict[str, tuple[str, ...]]
    needed_fps: dict[str, float | None] = field(default_factory=dict)


def portable(node: Node) -> Node:
    """A copy of ``node`` without its pipeline, so it pickles on its own."""
    return Node(
        None,  # type: ignore[arg-type]
        node.name,
        node.kind,
        node.obj,
        list(node.inputs),
        node.options,
    )


class Host:
    """Runs the nodes of one ``HostSpec`` in this process. See the module docstring."""

    def __init__(
        self,
        spec: HostSpec,
        *,
        stop: threading.Event,
        report: Report,
        sink_context: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.stop_event = stop
        self.report = report
        self.shared = SharedFrames(
            spec.segment_prefix, on_segment=lambda name: report(("segment", name)), stop=stop
        )
        self.recorders: dict[str, StatsRecorder] = {}
        self.inboxes: dict[str, Inbox] = {}
        self.sources: dict[str, SourceRunner] = {}
        self.runners: dict[str, NodeRunner] = {}
        self.remote_outlets: list[RemoteOutlet] = []
        self.threads: list[threading.Thread] = []
        self.listener: Listener | None = None
        self._receivers: list[threading.Thread] = []
        self._connections: list[Connection] = []
        self.go_event = threading.Event()
        self._ready = 0
        self._ready_lock = threading.Lock()
        self.sink_context = sink_context or {}
        self._build()

    def here(self, name: str) -> bool:
        return self.spec.placement.get(name) == self.spec.host_id

    def _build(self) -> None:
        spec = self.spec
        for node in spec.nodes:
            self.recorders[node.name] = StatsRecorder(node.name, node.kind)
            if node.kind in ("stage", "sink"):
                self.inboxes[node.name] = Inbox(
                    node.name,
                    node.options,
                    self.recorders[node.name],
                    ordered=spec.mode == "offline",
                )
        for edge in spec.edges:
            if self.here(edge.downstream):
                self.inboxes[edge.downstream].add_edge(edge.id, edge.upstream, edge.policy)
        for node in spec.nodes:
            self._build_runner(node, [e for e in spec.edges if e.upstream == node.name])

    def _build_runner(self, node: Node, out_edges: list[Edge]) -> None:
        outlets: list[Any] = []
        remote = False
        for edge in out_edges:
            if self.here(edge.downstream):
                outlets.append(
                    LocalOutlet(
                        self.inboxes[edge.downstream], edge.id, self.stop_event, lease=self._lease
                    )
                )
            else:
                outlet = RemoteOutlet(
                    edge.id,
                    edge.upstream,
                    edge.downstream,
                    edge.policy,
                    self.shared,
                    self.stop_event,
                )
                self.remote_outlets.append(outlet)
                outlets.append(outlet)
                remote = True
        recorder = self.recorders[node.name]
        if node.kind == "source":
            self.sources[node.name] = SourceRunner(
                node,
                outlets,
                recorder,
                mode=self.spec.mode,
                start=self.spec.start,
                stop=self.stop_event,
                on_fatal=self.on_fatal,
                slots=self.shared,
                export=remote,
                needed_fps=self.spec.needed_fps.get(node.name),
            )
        else:
            self.runners[node.name] = NodeRunner(
                node,
                self.inboxes[node.name],
                outlets,
                recorder,
                mode=self.spec.mode,
                sources=self.spec.sources_upstream.get(node.name, ()),
                stop=self.stop_event,
                on_fatal=self.on_fatal,
                sink_context=self.sink_context,
                shared=self.shared if remote else None,
            )

    def _lease(self, frame: Any, edge_id: int) -> Callable[[], None]:
        return self.shared.lease_frame(frame._handles, edge_id)

    # -- phases ------------------------------------------------------------------------

    def listen(self) -> str | None:
        """Open the listener for edges from other processes; its address, or None."""
        remote_inputs = any(
            not self.here(e.upstream) and self.here(e.downstream) for e in self.spec.edges
        )
        if not remote_inputs:
            return None
        address = os.path.join(self.spec.socket_dir, f"{self.spec.host_id}.sock")
        self.listener = Listener(address, family="AF_UNIX", backlog=64)
        thread = threading.Thread(target=self._accept, daemon=True, name="framepipe-accept")
        thread.start()
        return address

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                conn = self.listener.accept()
            except OSError:
                return  # listener closed
            self._connections.append(conn)
            thread = threading.Thread(
                target=receive,
                daemon=True,
                name="framepipe-receive",
                args=(conn, self.inboxes, self.shared, self.stop_event),
            )
            self._receivers.append(thread)
            thread.start()

    def connect(self, addresses: dict[str, str]) -> None:
        """Connect every outlet to the listener of the host that runs its consumer."""
        for outlet in self.remote_outlets:
            if outlet.conn is None:
                outlet.connect(addresses[self.spec.placement[outlet.downstream]])

    def start_nodes(self) -> None:
        """Start a thread per stage and sink: each sets up, reports ready, then works."""
        for runner in self.runners.values():
            self._spawn(self._run_node, runner)
        if not self.runners:
            self.report(("ready",))

    def _run_node(self, runner: NodeRunner) -> None:
        runner.run(self._node_set_up)

    def _node_set_up(self) -> None:
        with self._ready_lock:
            self._ready += 1
            if self._ready == len(self.runners):
                self.report(("ready",))

    def go(self) -> None:
        """Start the sources (once every host is ready)."""
        self.go_event.set()
        for source in self.sources.values():
            self._spawn(source.run)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="framepipe-node")
        self.threads.append(thread)
        thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for inbox in self.inboxes.values():
            inbox.close()

    def on_fatal(self, node: str, error: BaseException) -> None:
        self.report(("fatal", node, *_portable_error(error)))

    def done(self) -> bool:
        return all(not t.is_alive() for t in self.threads)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in list(self.threads):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
        return self.done()

    def stats(self) -> dict[str, NodeStats]:
        return {name: rec.snapshot() for name, rec in self.recorders.items()}

    def final_states(self) -> dict[str, Any]:
        states = {}
        for name, runner in self.runners.items():
            if runner.kind == "sink":
                try:
                    state = runner.obj.final_state()
                except Exception:
                    log.exception("sink %r: final_state() failed", name)
                    continue
                if state is not None:
                    states[name] = state
        return states

    def close(self) -> None:
        for outlet in self.remote_outlets:
            outlet.close()
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.close()
        for conn in self._connections:
            with contextlib.suppress(OSError):
                conn.close()
        self.shared.close()

    # -- hot add ----------------------------------------------------------------------

    def add_source(self, node: Node, edges: list[Edge], addresses: dict[str, str]) -> None:
        self.spec.placement[node.name] = self.spec.host_id
        self.recorders[node.name] = StatsRecorder(node.name, "source")
        for edge in edges:
            self.spec.edges.append(edge)
            if self.here(edge.downstream):
                self.inboxes[edge.downstream].add_edge(edge.id, edge.upstream, edge.policy)
        self._build_runner(node, edges)
        self.connect(addresses)
        self._spawn(self.sources[node.name].run)

    def remove_source(self, name: str) -> None:
        source = self.sources.get(name)
        if source is not None:
            source.removed.set()


def _portable_error(error: BaseException) -> tuple[bytes, bytes | None, str]:
    """Pickle an error and its cause for the parent; fall back to text."""
    text = "".join(traceback.format_exception(error.__cause__ or error))
    try:
        blob = pickle.dumps(error)
    except Exception:
        blob = pickle.dumps(FramepipeError(str(error)))
    cause = None
    if error.__cause__ is not None:
        try:
            cause = cloudpickle.dumps(error.__cause__)
            pickle.loads(cause)
        except Exception:
            cause = None
    return blob, cause, text


def restore_error(blob: bytes, cause: bytes | None, text: str) -> BaseException:
    error: BaseException = pickle.loads(blob)
    original: BaseException | None = None
    if cause is not None:
        try:
            original = pickle.loads(cause)
        except Exception:
            original = None
    error.__cause__ = original if original is not None else RemoteTraceback(text)
    return error


# -- the child process ---------------------------------------------------------------------

STATS_EVERY = 0.5


def host_main(conn: Connection, blob: bytes) -> None:
    """Entry point of a worker process (spawned)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run's owner handles Ctrl-C
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    send_lock = threading.Lock()

    def report(message: tuple[Any, ...]) -> None:
        # If the owner is gone the send fails; the control loop notices and stops.
        with send_lock, contextlib.suppress(OSError, EOFError, ValueError):
            conn.send(message)

    host: Host | None = None
    try:
        spec: HostSpec = cloudpickle.loads(blob)
        host = Host(spec, stop=stop, report=report)
        report(("listening", host.listen()))
        _serve(conn, host, report)
    except BaseException as exc:  # anything here is the host's own failure: say it
        report(
            (
                "fatal",
                f"host:{host.spec.host_id if host is not None else '?'}",
                *_portable_error(exc),
            )
        )
    finally:
        if host is not None:
            host.stop()
            host.wait(5.0)
            host.close()
        with contextlib.suppress(OSError):
            conn.close()


def _serve(conn: Connection, host: Host, report: Report) -> None:
    last_stats = 0.0
    while True:
        if host.stop_event.is_set():
            host.stop()  # SIGTERM sets the flag only; this closes the inboxes too
        if (host.go_event.is_set() or host.stop_event.is_set()) and host.done():
            break
        try:
            ready = conn.poll(0.1)
            message = conn.recv() if ready else None
        except (EOFError, OSError):
            # The run's owner died: stop, finalize outputs, leave.
            host.stop()
            host.wait(5.0)
            return
        if message is not None:
            kind = message[0]
            if kind == "connect":
                host.connect(message[1])
                host.start_nodes()
            elif kind == "go":
                host.go()
            elif kind == "stop":
                host.stop()
            elif kind == "add_source":
                _, node, edges, addresses = message
                host.add_source(node, edges, addresses)
            elif kind == "remove_source":
                host.remove_source(message[1])
        now = time.monotonic()
        if now - last_stats >= STATS_EVERY:
            last_stats = now
            report(("stats", host.stats()))
    report(("done", host.stats(), host.final_states()))
