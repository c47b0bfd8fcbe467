"""The host: the nodes of a run that live in one process, and how they are scheduled.

One host runs behind every executor. ``inline`` and ``threads`` run one host
in the caller's process holding every node; under ``processes`` each worker
runs one (usually one node) and the caller runs one for the nodes that stay
there (callbacks, ``executor="threads"`` overrides). A host builds an inbox
and a runner per node, wires outlets (direct calls, local inboxes, or
sockets to other hosts), schedules the runners, and reports to its executor
with typed messages (``_messages``): segments it created, readiness, fatal
errors and failures, and, at the end, statistics and sinks' final states.

Schedulers:

- ``threads``: a thread per stage and sink, then one per source at ``go()``.
- ``inline``: one thread runs everything, one source frame at a time through
  the graph in topological order (deterministic; a debugger steps through
  every stage). Edges never block (one thread never waits on itself) and
  single-input nodes are called directly instead of through their inbox.

A replay (``_replay.ReplayHost``) is this host too: it keeps the build and
changes its hooks (``_recorder``, ``_policy``, ``_outlet``) and what the
inline thread plays (``_play``): a simulation on the run's clock.

Life cycle, driven by the executor: ``listen`` -> ``connect`` ->
``start_nodes`` (stages and sinks set up, then ``Ready``) -> ``go`` (sources
start) -> ``stop`` at any time -> ``wait`` -> ``close``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Listener, wait
from typing import Any

import cloudpickle

from .._graph import Edge, Node
from .._policy import Queue
from ..sources._packets import PacketRing
from ..stats import NodeStats, StatsRecorder
from ..transport._seam import Exporter, SourceBuffers
from ..transport._shm import SharedFrames, SharedSourceBuffers
from ._clock import SYSTEM_CLOCK, Clock
from ._inbox import Inbox
from ._messages import (
    AddSource,
    Connect,
    Done,
    Failure,
    Fatal,
    Go,
    Listening,
    Log,
    Ready,
    RemoveSource,
    Report,
    Segment,
    Stats,
    Stop,
    sendable,
)
from ._outlets import DirectOutlet, LocalOutlet, direct
from ._remote import RemoteOutlet, Waker, receive
from ._runners import NodeRunner, SourceRunner, node_error

log = logging.getLogger("framepipe")

Reporter = Callable[[Report], None]
SCHEDULERS = ("inline", "threads")


@dataclass
class HostSpec:
    """What one host needs to know: its nodes and every edge that touches them."""

    host_id: str
    segment_prefix: str
    nodes: list[Node]  # in topological order
    edges: list[Edge]
    placement: dict[str, str]  # node name -> host id
    mode: str
    start: float
    socket_dir: str
    sources_upstream: dict[str, tuple[str, ...]]
    needed_fps: dict[str, float | None] = field(default_factory=dict)
    #: Edge id -> flag column of the shared-memory transport (``FlagColumns``).
    columns: dict[int, int] = field(default_factory=dict)
    #: The caller's level for ``framepipe`` logs: worker records below it stay there.
    log_level: int = logging.WARNING
    scheduler: str = "threads"
    clock: Clock = SYSTEM_CLOCK


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

    #: Whether a one-thread scheduler lets batches wait ``max_wait_ms`` (a replay does,
    #: on its simulated clock; inline, nothing would arrive meanwhile).
    batches_wait = False

    def __init__(
        self,
        spec: HostSpec,
        *,
        stop: threading.Event,
        report: Reporter,
        sink_context: dict[str, Any] | None = None,
    ) -> None:
        if spec.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {spec.scheduler!r}")
        self.spec = spec
        self.inline = spec.scheduler == "inline"
        self.stop_event = stop
        self.report = report
        # Readable once the host stops / once its threads have all ended: for waits
        # on sockets (a producer waiting for credit or a slot, the run's supervisor).
        self.stopped = Waker()
        self.ended = Waker()
        self.shared = SharedFrames(
            spec.segment_prefix,
            on_segment=lambda name: report(Segment(name)),
            stop=stop,
            columns=max(spec.columns.values(), default=0) + 1,
            stopped=self.stopped,
            socket_dir=spec.socket_dir or None,
        )
        self.recorders: dict[str, StatsRecorder] = {}
        self.inboxes: dict[str, Inbox] = {}
        self.sources: dict[str, SourceRunner] = {}
        self.runners: dict[str, NodeRunner] = {}
        self.remote_outlets: list[RemoteOutlet] = []
        self.threads: list[threading.Thread] = []
        self.listener: Listener | None = None
        self._accepting: threading.Thread | None = None
        self._closing = False
        self._receivers: list[threading.Thread] = []
        self._connections: list[Connection] = []
        self.go_event = threading.Event()  # set once the sources have been started
        self._go_or_stop = threading.Event()
        self._ready = 0
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)  # notified as each thread ends
        self._alive = 0
        self._pending_sources: list[SourceRunner] = []  # inline: added while running
        # inline: nodes fed through their inbox, drained after every source frame
        # (the others are called directly by their producer).
        self._queued: set[str] = set()
        self.sink_context = sink_context or {}
        #: Encoded video kept by the sources here for the sinks that cut clips from it.
        self.packet_rings: dict[str, PacketRing] = {}
        self._build()

    def here(self, name: str) -> bool:
        return self.spec.placement.get(name) == self.spec.host_id

    # -- building --------------------------------------------------------------------

    def _build(self) -> None:
        spec = self.spec
        here = {node.name: node for node in spec.nodes}
        for node in spec.nodes:
            history = _encoded_history(node)
            if history is None:
                continue
            for source in spec.sources_upstream.get(node.name, ()):
                if source in here:
                    self._keep_packets(source, history)
        for node in spec.nodes:
            self.recorders[node.name] = self._recorder(node.name, node.kind)
            if node.kind in ("stage", "sink"):
                self.inboxes[node.name] = Inbox(
                    node.name,
                    node.options,
                    self.recorders[node.name],
                    ordered=spec.mode == "offline",
                    clock=spec.clock,
                )
        for edge in spec.edges:
            if self.here(edge.downstream):
                self.inboxes[edge.downstream].add_edge(
                    edge.id,
                    edge.upstream,
                    self._policy(edge.policy),
                    sources=spec.sources_upstream.get(edge.upstream),
                )
        # Consumers first, so inline producers can hold direct references to them.
        for node in reversed(spec.nodes):
            self._build_runner(node, [e for e in spec.edges if e.upstream == node.name])
        order = [node.name for node in spec.nodes]
        self.runners = {n: self.runners[n] for n in order if n in self.runners}
        self.sources = {n: self.sources[n] for n in order if n in self.sources}

    def _recorder(self, name: str, kind: str) -> StatsRecorder:
        return StatsRecorder(name, kind)

    def _policy(self, policy: Queue) -> Queue:
        # One thread never waits on itself: inline edges never block and never drop
        # for being full; every source frame is drained through the graph at once.
        if self.inline and policy.overflow == "block":
            return Queue(1 << 30, "block")
        return policy

    def _outlet(self, edge: Edge) -> Any:
        downstream = edge.downstream
        if self.here(downstream):
            node = self.runners[downstream].node
            if self.inline and direct(node):
                return DirectOutlet(self.runners[downstream], edge.id)
            self._queued.add(downstream)
            return LocalOutlet(self.inboxes[downstream], edge.id, self.stop_event, self._lease)
        outlet = self.outlet_to_host(edge)
        self.remote_outlets.append(outlet)
        return outlet

    def _build_runner(self, node: Node, out_edges: list[Edge]) -> None:
        outlets = [self._outlet(edge) for edge in out_edges]
        # Frames for other hosts live in the transport between hosts from the start.
        crosses = any(not self.here(edge.downstream) for edge in out_edges)
        recorder = self.recorders[node.name]
        if node.kind == "source":
            self.sources[node.name] = SourceRunner(
                node,
                outlets,
                recorder,
                mode=self.spec.mode,
                start=self.spec.start,
                on_fatal=self.on_fatal,
                buffers=self.source_buffers() if crosses else None,
                on_error=self.on_failure,
                clock=self.spec.clock,
                needed_fps=self.spec.needed_fps.get(node.name),
                packets=self.packet_rings.get(node.name),
            )
            return
        runner = NodeRunner(
            node,
            self.inboxes[node.name],
            outlets,
            recorder,
            mode=self.spec.mode,
            sources=self.spec.sources_upstream.get(node.name, ()),
            stop=self.stop_event,
            on_fatal=self.on_fatal,
            sink_context={**self.sink_context, "packets": self.packet_rings.get},
            exporter=self.exporter() if crosses else None,
            on_failure=self.on_failure,
            clock=self.spec.clock,
        )
        if self.inline and not self.batches_wait:
            runner.max_wait = 0.0  # a batch never waits for frames this thread would make
        self.runners[node.name] = runner
        for child in runner.children.values():
            self.recorders[child.name] = child

    # -- the transport between hosts: shared memory and sockets (a Ray host overrides) --

    def outlet_to_host(self, edge: Edge) -> Any:
        """The producer's end of ``edge``, whose consumer runs in another host."""
        return RemoteOutlet(
            edge.id,
            self.spec.columns[edge.id],
            edge.upstream,
            edge.downstream,
            edge.policy,
            self.shared,
            self.stop_event,
            self.stopped,
        )

    def source_buffers(self) -> SourceBuffers | None:
        """Memory for a source whose frames go to other hosts (None: its own arrays)."""
        return SharedSourceBuffers(self.shared)

    def exporter(self) -> Exporter | None:
        """Prepares a producer's frames for other hosts (None: they go as they are)."""
        return self.shared.export

    def _lease(self, frame: Any, edge_id: int) -> Callable[[], None]:
        return self.shared.lease_frame(frame._handles, self.spec.columns[edge_id])

    # -- phases ------------------------------------------------------------------------

    def listen(self) -> str | None:
        """Open the listener for edges from other processes; its address, or None."""
        remote_inputs = any(
            not self.here(e.upstream) and self.here(e.downstream) for e in self.spec.edges
        )
        if not remote_inputs:
            return None
        # Named after the segment prefix, not the node: a node's name may hold "/" or be
        # longer than a socket path allows.
        address = os.path.join(self.spec.socket_dir, f"{self.spec.segment_prefix}.sock")
        self.listener = Listener(address, family="AF_UNIX", backlog=64)
        thread = threading.Thread(target=self._accept, daemon=True, name="framepipe-accept")
        thread.start()
        self._accepting = thread
        return address

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                conn = self.listener.accept()
            except OSError:
                return  # listener closed
            if self._closing:  # close()'s own connection, made to wake this accept()
                conn.close()
                return
            self._connections.append(conn)
            thread = threading.Thread(
                target=receive,
                daemon=True,
                name="framepipe-receive",
                args=(conn, self.inboxes, self.shared, self.stop_event, self._edge_failed),
            )
            self._receivers.append(thread)
            thread.start()

    def connect(self, addresses: dict[str, str]) -> None:
        """Connect every outlet to the listener of the host that runs its consumer."""
        for outlet in self.remote_outlets:
            if outlet.conn is None:
                outlet.connect(addresses[self.spec.placement[outlet.downstream]])

    def start_nodes(self) -> None:
        """Set up the stages and sinks (each in its thread, or all in the inline thread);
        ``Ready`` is reported once all are set up, whether that worked or not."""
        if self.inline:
            self._spawn(self._run_inline)
            return
        for runner in self.runners.values():
            self._spawn(runner.run, self._node_set_up)
        if not self.runners:
            self.report(Ready())

    def _node_set_up(self) -> None:
        with self._lock:
            self._ready += 1
            ready = self._ready == len(self.runners)
        if ready:
            self.report(Ready())

    def go(self) -> None:
        """Start the sources (once every host is ready)."""
        if not self.inline:
            for source in self.sources.values():
                self._spawn(source.run)
        self.go_event.set()
        self._go_or_stop.set()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        def body() -> None:
            try:
                target(*args)
            finally:
                with self._ended:
                    self._alive -= 1
                    self._ended.notify_all()
                    if self._alive == 0:
                        self.ended.set()

        thread = threading.Thread(target=body, daemon=True, name="framepipe-node")
        with self._lock:
            self._alive += 1
            self.threads.append(thread)
        thread.start()

    # -- the inline scheduler ------------------------------------------------------------

    def _run_inline(self) -> None:
        try:
            ok = True
            for runner in self.runners.values():
                ok = ok and runner.setup()
            self.report(Ready())
            self._go_or_stop.wait()
            if ok and not self.stop_event.is_set():
                self._play()
            for source in self.sources.values():
                source.finish()
            if self.stop_event.is_set():
                self._close_inboxes()
            self._drain(list(self.runners.values()))
        except BaseException as exc:  # the scheduler's own failure: fatal, never silent
            log.error("framepipe: the inline scheduler failed", exc_info=True)
            self.on_fatal(f"host:{self.spec.host_id or 'caller'}", exc)
        finally:
            for source in self.sources.values():
                source.finish()
            for runner in self.runners.values():
                runner.finish()

    def _play(self) -> None:
        """Open the sources and run every frame through the graph, until they end or a stop."""
        for source in self.sources.values():
            source.open()
        active = list(self.sources.values())
        queued = [r for r in self.runners.values() if r.name in self._queued]
        while active:  # a stop ends every source (``stop`` removes them)
            if len(active) == 1 and not queued:  # the common case, in the tightest loop
                step = active[0].step
                while not self._pending_sources and step():
                    pass
            ended = False
            for source in active:
                if not source.step():
                    ended = True
                if queued:
                    self._drain(queued)
            if ended:
                active = [source for source in active if not source.ended]
            if self._pending_sources:  # a hot add (checked without the lock: per frame)
                with self._lock:
                    active.extend(self._pending_sources)
                    self._pending_sources.clear()
                queued = [r for r in self.runners.values() if r.name in self._queued]

    def _drain(self, runners: list[NodeRunner]) -> None:
        progressed = True
        while progressed:
            progressed = False
            for runner in runners:
                while not (runner.ended or runner.failed):
                    items = runner.poll()
                    if items is None:
                        progressed = progressed or runner.ended
                        break
                    progressed = True
                    runner.handle(items)

    # -- stopping and the end ------------------------------------------------------------

    def stop(self) -> None:
        """Stop: wakes everything that waits (inboxes close, producers and workers wake)."""
        self.stop_event.set()
        self._go_or_stop.set()
        self.stopped.set()
        for source in list(self.sources.values()):
            source.remove()
        self._close_inboxes()

    def _close_inboxes(self) -> None:
        """Stages drop what waits; sinks first write what they already hold (the stop
        rule: bounded by ``STOP_DRAIN``, the rest counted as ``stop`` drops)."""
        for name, inbox in self.inboxes.items():
            runner = self.runners.get(name)
            if runner is not None and runner.kind == "sink":
                inbox.drain()
            else:
                inbox.close()

    def on_fatal(self, node: str, error: BaseException) -> None:
        """A node failed: the run stops (a source's failure only ends that source)."""
        self.report(Fatal(node, error))

    def on_failure(self, node: str, error: BaseException) -> None:
        """A node failed without stopping the run (``close()``/``teardown()``)."""
        self.report(Failure(node, error))

    def _edge_failed(self, node: str, error: BaseException) -> None:
        runner = self.runners.get(node)
        if runner is not None:
            runner.failed = True
            runner.recorder.set_state("failed")
            error = node_error(runner.node, error, "input failed")
        log.error("%s", error)
        self.on_fatal(node, error)

    def done(self) -> bool:
        """Whether every node thread has ended (sources added while running included)."""
        with self._lock:
            return self._alive == 0

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for every node thread to end, then (briefly) for edges still bringing
        frames in, so frames that arrive after a node stopped count as its ``stop`` drops."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ended:
            if not self._ended.wait_for(lambda: self._alive == 0, timeout):
                return False
        for thread in list(self._receivers):
            left = 2.0 if deadline is None else max(0.0, min(2.0, deadline - time.monotonic()))
            thread.join(left)
        return True

    def stats(self) -> dict[str, NodeStats]:
        return {name: rec.snapshot() for name, rec in self.recorders.items()}

    def final_states(self) -> dict[str, Any]:
        states = {}
        for name, runner in self.runners.items():
            if runner.kind == "sink":
                try:
                    state = runner.obj.final_state()
                except Exception as exc:
                    log.exception("sink %r: final_state() failed", name)
                    self.on_failure(name, node_error(runner.node, exc, "final_state() failed"))
                    continue
                if state is not None:
                    states[name] = state
        return states

    def close(self) -> None:
        for outlet in self.remote_outlets:
            outlet.close()
        if self.listener is not None:
            # Closing a listening socket does not wake a thread blocked in accept() on it
            # (the thread and its socket would outlive the run): connect to wake it first.
            self._closing = True
            if self._accepting is not None and self._accepting.is_alive():
                with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as wake:
                    wake.settimeout(1.0)
                    wake.connect(self.listener.address)
                self._accepting.join(1.0)
            with contextlib.suppress(OSError):
                self.listener.close()
        for conn in self._connections:
            with contextlib.suppress(OSError):
                conn.close()
        self.shared.close()
        self.stopped.close()
        self.ended.close()

    # -- hot add ----------------------------------------------------------------------

    def add_source(
        self,
        node: Node,
        edges: list[Edge],
        columns: dict[int, int] | None = None,
        addresses: dict[str, str] | None = None,
    ) -> None:
        """Start a new source feeding this host's nodes (or others', through ``addresses``)."""
        self.spec.placement[node.name] = self.spec.host_id
        self.spec.columns.update(columns or {})
        self.shared.widen(max(self.spec.columns.values(), default=0) + 1)
        self.recorders[node.name] = self._recorder(node.name, "source")
        for edge in edges:
            self.spec.edges.append(edge)
            if self.here(edge.downstream):
                self.inboxes[edge.downstream].add_edge(
                    edge.id, edge.upstream, self._policy(edge.policy), sources=(edge.upstream,)
                )
        self._keep_packets_for_hot(node.name)
        self._build_runner(node, edges)
        self.connect(addresses or {})
        source = self.sources[node.name]
        if self.inline:
            source.open()
            with self._lock:
                self._pending_sources.append(source)
        else:
            self._spawn(source.run)

    def _keep_packets(self, source: str, history: float) -> None:
        ring = self.packet_rings.get(source)
        if ring is None:
            self.packet_rings[source] = PacketRing(source, history)
        else:
            ring.keep = max(ring.keep, history)

    def _keep_packets_for_hot(self, source: str) -> None:
        # A hot-added source keeps video for the clip sinks here it reaches.
        wanting = {n.name: h for n in self.spec.nodes if (h := _encoded_history(n)) is not None}
        if not wanting:
            return
        reached, todo = set(), [source]
        while todo:
            name = todo.pop()
            for edge in self.spec.edges:
                if edge.upstream == name and edge.downstream not in reached:
                    reached.add(edge.downstream)
                    todo.append(edge.downstream)
        for sink in reached & wanting.keys():
            self._keep_packets(source, wanting[sink])

    def remove_source(self, name: str) -> None:
        source = self.sources.get(name)
        if source is not None:
            source.remove()


def _encoded_history(node: Node) -> float | None:
    """Seconds of the sources' encoded video a sink wants kept (``Clips``), or None."""
    return getattr(node.obj, "encoded_history_s", None) if node.kind == "sink" else None


# -- the child process ---------------------------------------------------------------------

STATS_EVERY = 0.5


#: LogRecord attributes that travel to the caller (the rest may not pickle).
_RECORD_FIELDS = (
    "name", "levelno", "levelname", "pathname", "filename", "module", "lineno", "funcName",
    "created", "msecs", "relativeCreated", "thread", "threadName", "process", "processName",
    "stack_info",
)  # fmt: skip


class ForwardLogs(logging.Handler):
    """Sends a worker's log records to the caller, whose ``logging`` handles them.

    Records keep their logger name (``framepipe.stage.<node>``), level and
    traceback; only what pickles travels (the message is formatted here).
    """

    def __init__(self, report: Reporter) -> None:
        super().__init__()
        self.report = report
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {key: getattr(record, key, None) for key in _RECORD_FIELDS}
            fields["msg"] = record.getMessage()
            fields["exc_text"] = (
                self._formatter.formatException(record.exc_info)
                if record.exc_info
                else record.exc_text
            )
            self.report(Log(fields))
        except Exception:
            self.handleError(record)


def replay_log(fields: dict[str, Any]) -> None:
    """Hand a record forwarded by a worker to the caller's logger of the same name."""
    record = logging.makeLogRecord(fields)
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


def host_main(conn: Connection, blob: bytes) -> None:
    """Entry point of a worker process (started clean: fork server or spawn)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run's owner handles Ctrl-C
    stop = threading.Event()
    wake_read, wake_write = os.pipe()  # wakes the control loop: a SIGTERM, or the end

    def on_sigterm(*_: Any) -> None:
        stop.set()
        with contextlib.suppress(OSError):
            os.write(wake_write, b"t")

    signal.signal(signal.SIGTERM, on_sigterm)
    send_lock = threading.Lock()

    def report(message: Report) -> None:
        # If the owner is gone the send fails; the control loop notices and stops.
        with send_lock, contextlib.suppress(OSError, EOFError, ValueError):
            conn.send(sendable(message))

    host: Host | None = None
    orphaned = False
    try:
        spec: HostSpec = cloudpickle.loads(blob)
        root = logging.getLogger()
        root.handlers[:] = [ForwardLogs(report)]
        root.setLevel(spec.log_level)
        host = Host(spec, stop=stop, report=report)
        report(Listening(host.listen()))
        orphaned = _serve(conn, host, report, wake_read, wake_write)
    except BaseException as exc:  # anything here is the host's own failure: say it
        where = f"host:{host.spec.host_id if host is not None else '?'}"
        report(Fatal(where, exc))
    finally:
        if host is not None:
            host.stop()
            host.wait(5.0)
            host.close()
            if orphaned:  # the owner removes the run's socket folder; it cannot any more
                shutil.rmtree(host.spec.socket_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            conn.close()


def _serve(conn: Connection, host: Host, report: Reporter, wake_read: int, wake_write: int) -> bool:
    """The worker's control loop: commands in, statistics out, until every node has ended.

    It sleeps until a command arrives, the host ends, a SIGTERM, or the next
    statistics report is due: nothing polls. True if the run's owner went away.
    """
    ended = threading.Event()

    def watch() -> None:
        host._go_or_stop.wait()
        host.wait()
        ended.set()
        with contextlib.suppress(OSError):
            os.write(wake_write, b"e")

    threading.Thread(target=watch, daemon=True, name="framepipe-watch").start()
    next_stats = time.monotonic()
    while not ended.is_set():
        if host.stop_event.is_set():
            host.stop()  # SIGTERM sets the flag only; this closes the inboxes too
        for ready in wait([conn, wake_read], max(0.0, next_stats - time.monotonic())):
            if ready == wake_read:
                os.read(wake_read, 64)
                continue
            try:
                command = conn.recv()
            except (EOFError, OSError):
                # The run's owner died: stop, finalize outputs, leave.
                host.stop()
                host.wait(5.0)
                return True
            obey(host, command)
        if time.monotonic() >= next_stats:
            next_stats = time.monotonic() + STATS_EVERY
            report(Stats(host.stats()))
    host.wait(5.0)  # edges still bringing frames in: counted before the final stats
    report(Done(host.stats(), host.final_states()))
    return False


def obey(host: Host, command: Any) -> None:
    match command:
        case Connect(addresses):
            host.connect(addresses)
            host.start_nodes()
        case Go():
            host.go()
        case Stop():
            host.stop()
        case AddSource(node, edges, columns, addresses):
            host.add_source(node, edges, columns, addresses)
        case RemoveSource(name):
            host.remove_source(name)
        case _:
            raise TypeError(f"unknown command for a host: {command!r}")
