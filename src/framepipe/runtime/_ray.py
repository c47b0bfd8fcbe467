"""``executor="ray"``: one pipeline across the machines of a Ray cluster.

Placement: every node goes to one machine (a Ray node). A node with
``resources=`` goes to a machine whose resources cover the request (its first
input's machine when that one does); a node without goes to its first input's
machine, and a source without to the caller's machine. Sinks that call back
into the caller (``in_caller_process``) stay in the caller's process.

Each machine runs one framepipe ``Host`` inside one Ray actor: nodes on the
same machine exchange frames in memory, exactly as they do in a host under
``processes``. Only edges between machines go through Ray, and they *pull*:
the consumer's host keeps one ``take`` call in flight per edge (asked for as
soon as the previous answer arrives), and the producer's host answers it from
a bounded outbox with every frame waiting there (a one-frame outbox for
``latest`` edges, so the newest frame is what crosses; the edge's queue for
the others, and a producer blocks on a full lossless outbox). That is a credit
window of one call per edge, never Ray's unbounded actor mailboxes; frames the
outbox drops, or that the consumer's ``fps=`` would not select, are never
encoded or sent. As on a local ``latest`` edge, a slow consumer's input still
receives every frame it can and keeps the newest, so the consumer starts on a
fresh one. What crosses is chosen per edge (``transfer=``): the raw pixels, a
JPEG of them, or only the results (see ``transfers``).

The caller's process supervises: it polls every host for statistics and
errors, turns a dead actor into a ``WorkerError`` naming its nodes, and at the
end collects the sinks' final states and kills every actor it started.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import cloudpickle
import numpy as np

from .._errors import FramepipeError, GraphError, WorkerError
from .._frame import Frame, lent
from .._graph import Edge, Node, Plan
from .._policy import RateSelector
from ..stats import NodeStats
from ..transport import _shm
from ..transport._seam import Exporter, SourceBuffers
from ._executor import SupervisedExecutor
from ._host import ForwardLogs, Host, HostSpec, Reporter, obey, portable
from ._inbox import Mark
from ._messages import (
    AddSource,
    Connect,
    Done,
    Go,
    Ready,
    RemoveSource,
    Report,
    Segment,
    Stop,
    sendable,
)

try:
    import ray
    from ray.exceptions import GetTimeoutError, RayError, RayTaskError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError:  # pragma: no cover - checked when a run starts
    ray = None  # type: ignore[assignment]

log = logging.getLogger("framepipe")

#: The host of nodes that stay in the caller's process.
CALLER = "caller"
#: How long one ``take`` call waits for a frame before it answers empty (so a
#: consumer notices a stop).
TAKE_WAIT = 0.5
#: How often the caller polls every host for statistics and errors.
POLL_EVERY = 0.25
#: How long hosts may take to be placed, start and set up their nodes.
START_TIMEOUT = 120.0
#: How long a host may take to close its sinks and hand back their state.
FINISH_TIMEOUT = 30.0


def require_ray() -> Any:
    if ray is None:
        raise GraphError(
            "executor='ray' needs Ray: pip install 'framepipe[ray]' (Ray 2.9 or newer)"
        )
    return ray


# -- placement ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Machine:
    """One alive Ray node: its id, address and total resources."""

    node_id: str
    address: str
    resources: Mapping[str, float]

    @property
    def label(self) -> str:
        """How statistics name it: ``address/first 8 hex digits of the node id``."""
        return f"{self.address}/{self.node_id[:8]}"


def machines() -> list[Machine]:
    """The alive nodes of the connected cluster, the caller's own first."""
    here = ray.get_runtime_context().get_node_id()
    found = [
        Machine(n["NodeID"], n["NodeManagerAddress"], dict(n["Resources"]))
        for n in ray.nodes()
        if n.get("Alive")
    ]
    return sorted(found, key=lambda m: m.node_id != here)


def place(plan: Plan, cluster: list[Machine]) -> dict[str, str]:
    """Node name -> Ray node id (or ``CALLER``). See the module docstring.

    A request must fit a machine's total resources. Nodes on one machine share
    one host process, so their requests are not added up: the host reserves
    the largest request of each resource (see ``host_request``).
    """
    placement: dict[str, str] = {}
    for name in plan.order:
        node = plan.nodes[name]
        if getattr(node.obj, "in_caller_process", False):
            placement[name] = CALLER
            continue
        near = next(
            (placement[i] for i in node.inputs if placement.get(i, CALLER) != CALLER),
            cluster[0].node_id,
        )
        request = node.options.resources
        if not request:
            placement[name] = near
            continue
        fits = [m.node_id for m in cluster if _covers(m.resources, request)]
        if not fits:
            offered = {m.label: _custom(m.resources) for m in cluster}
            raise GraphError(
                f"node {name!r}: no machine of the Ray cluster has resources {dict(request)}; "
                f"machines offer {offered}"
            )
        placement[name] = near if near in fits else fits[0]
    return placement


def host_request(nodes: list[Node]) -> dict[str, float]:
    """What the host actor of ``nodes`` reserves: the largest request of each resource."""
    request: dict[str, float] = {}
    for node in nodes:
        for key, amount in (node.options.resources or {}).items():
            request[key] = max(request.get(key, 0.0), amount)
    return request


def _covers(available: Mapping[str, float], request: Mapping[str, float]) -> bool:
    return all(available.get(key, 0.0) >= amount for key, amount in request.items())


def _custom(resources: Mapping[str, float]) -> dict[str, float]:
    """Resources worth naming in an error (not Ray's per-address and memory entries)."""
    return {
        k: v
        for k, v in resources.items()
        if not k.startswith("node:") and k not in ("memory", "object_store_memory")
    }


# -- what crosses machines ---------------------------------------------------------------------


def reads_pixels(plan: Plan, name: str, memo: dict[str, bool] | None = None) -> bool:
    """Whether ``name`` or anything downstream of it reads ``frame.image``."""
    memo = {} if memo is None else memo
    if name not in memo:
        node = plan.nodes[name]
        memo[name] = bool(getattr(node.obj, "reads_pixels", True)) or any(
            reads_pixels(plan, e.downstream, memo) for e in plan.outputs_of(name)
        )
    return memo[name]


def transfers(plan: Plan, edges: list[Edge]) -> dict[int, tuple[str, int]]:
    """Edge id -> (``"raw" | "jpeg" | "results"``, JPEG quality) for ``edges``.

    The consumer's ``transfer=`` decides (one kind, or one per input); without
    it, an edge carries results only when nothing from the consumer on reads
    pixels, else a JPEG. Asking for ``results`` where pixels are read is an error.
    """
    memo: dict[str, bool] = {}
    chosen: dict[int, tuple[str, int]] = {}
    for edge in edges:
        options = plan.nodes[edge.downstream].options
        asked = options.transfer
        if isinstance(asked, Mapping):
            asked = asked.get(edge.upstream)
        needs = reads_pixels(plan, edge.downstream, memo)
        if asked is None:
            asked = "jpeg" if needs else "results"
        elif asked == "results" and needs:
            raise GraphError(
                f"node {edge.downstream!r}: transfer='results' on its input from "
                f"{edge.upstream!r}, but it (or a node after it) reads frame.image; use "
                f"transfer='jpeg' or 'raw', or set reads_pixels = False on a stage that "
                f"only reads frame.results"
            )
        chosen[edge.id] = (asked, options.jpeg_quality)
    return chosen


class JpegCache:
    """The last few JPEGs a host made, so a frame sent on several edges is encoded once.

    Stages never change ``frame.image``: every edge carries the same array
    object for a given frame, so it (with the frame's source and index, should
    the object's id be reused) keys the cache.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.encoded: OrderedDict[tuple[str, int, int, int], bytes] = OrderedDict()
        self.lock = threading.Lock()

    def encode(self, frame: Frame, quality: int) -> bytes:
        key = (frame.source, frame.index, id(frame.image), quality)
        with self.lock:
            found = self.encoded.get(key)
        if found is not None:
            return found
        import cv2

        ok, encoded = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise FramepipeError(f"frame {frame.index} of {frame.source!r}: JPEG encoding failed")
        data: bytes = encoded.tobytes()
        with self.lock:
            self.encoded[key] = data
            while len(self.encoded) > self.size:
                self.encoded.popitem(last=False)
        return data


def pack(frame: Frame, kind: str, quality: int, jpegs: JpegCache) -> tuple[Any, ...]:
    """One frame as it crosses machines (plain tuple: Ray pickles it)."""
    image = frame.image
    pixels: Any
    if kind == "raw":
        pixels = image
    elif kind == "jpeg":
        pixels = jpegs.encode(frame, quality)
    else:
        pixels = None
    meta = (frame.index, frame.pts, frame.timestamp, frame.source, image.shape, str(image.dtype))
    return (meta, frame.results, kind, pixels)


def unpack(item: tuple[Any, ...]) -> Frame:
    (index, pts, timestamp, source, shape, dtype), results, kind, pixels = item
    if kind == "raw":
        image = pixels
    elif kind == "jpeg":
        import cv2

        image = cv2.imdecode(np.frombuffer(pixels, np.uint8), cv2.IMREAD_COLOR)
    else:
        # Results only: a frame of the right shape whose pixels are all zero,
        # taking no memory (a broadcast view). Stages that set reads_pixels =
        # False may still read frame.shape.
        image = np.broadcast_to(np.zeros((), dtype), shape)
    if image.flags.writeable:
        image.flags.writeable = False
    return Frame(image, index, pts, timestamp, source, lent(dict(results)))


@dataclass(slots=True)
class Batch:
    """What one ``take`` returns: the frames waiting, drops since the last batch, the end."""

    frames: list[Any]  # packed frames and ``Mark``s, in order
    dropped: int
    skipped: int
    ended: bool


class Outbox:
    """The producer's end of a cross-machine edge: frames waiting for the next ``take``.

    Bounded by the edge's queue: a ``latest`` edge keeps the newest frame, a
    dropping queue drops by its policy (counted as the consumer's ``policy``
    drops), a lossless edge blocks the producer until the consumer took.
    """

    def __init__(
        self,
        edge: Edge,
        kind: str,
        quality: int,
        fps: float | None,
        stop: threading.Event,
        jpegs: JpegCache,
    ) -> None:
        self.edge_id, self.downstream = edge.id, edge.downstream
        self.jpegs = jpegs
        self.policy = edge.policy
        self.kind, self.quality = kind, quality
        # Frames the consumer's rate would not select never cross the network.
        self.rate = RateSelector(fps) if fps else None
        self.stop = stop
        self.frames: deque[Frame | Mark] = deque()
        self.cond = threading.Condition()
        self.ended = False
        self.dropped = 0
        self.skipped = 0
        self.turn = 0  # the sequence number of the take that may go next

    def deliver(self, frame: Frame) -> None:
        with self.cond:
            if self.ended:
                return
            if self.rate is not None and not self.rate.select(frame.source, frame.pts):
                self.skipped += 1
                self._mark(frame.source, frame.index, frame.pts)
                return
            if len(self.frames) >= self.policy.size:
                if self.policy.overflow == "block":
                    while len(self.frames) >= self.policy.size and not self.ended:
                        if self.stop.is_set():
                            return
                        self.cond.wait()  # a take, the edge's end or the stop (close) wakes it
                    if self.ended:
                        return
                elif self.policy.overflow == "drop_newest":
                    self.dropped += 1
                    return
                else:
                    self.frames.popleft()
                    self.dropped += 1
            self.frames.append(frame)
            self.cond.notify_all()

    def advance(self, source: str, index: int, pts: float) -> None:
        with self.cond:
            if not self.ended:
                self._mark(source, index, pts)

    def _mark(self, source: str, index: int, pts: float) -> None:
        # Watermarks go in order with the frames; one between two frames is enough.
        last = self.frames[-1] if self.frames else None
        if type(last) is Mark and last.source == source:
            last.index, last.pts = max(last.index, index), pts
        else:
            self.frames.append(Mark(source, index, pts))
            self.cond.notify_all()

    def end(self) -> None:
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def close(self) -> None:
        """Stop: drop what waits, wake the producer and the consumer's ``take``."""
        with self.cond:
            self.ended = True
            self.frames.clear()
            self.cond.notify_all()

    def take(self, seq: int, timeout: float) -> Batch:
        """Everything waiting (after up to ``timeout`` s for something to arrive).

        Calls of one edge may overlap (the consumer asks for the next batch while
        it decodes this one); ``seq`` makes them take frames in the order asked.
        """
        with self.cond:
            while self.turn != seq:
                self.cond.wait()
            if not self.frames and not self.ended:
                self.cond.wait(timeout)
            self.turn += 1
            frames = list(self.frames)
            self.frames.clear()
            dropped, skipped = self.dropped, self.skipped
            self.dropped = self.skipped = 0
            ended = self.ended
            self.cond.notify_all()  # a blocked producer may go on
        jpegs = self.jpegs
        return Batch(
            [f if isinstance(f, Mark) else pack(f, self.kind, self.quality, jpegs) for f in frames],
            dropped,
            skipped,
            ended,
        )


# -- one machine's host ------------------------------------------------------------------------


class RayHost(Host):
    """The nodes of one machine: a ``Host`` whose transport to other hosts is Ray.

    Edges to other machines go through an ``Outbox`` the consumer's host pulls
    with ``take``; frames never enter shared memory (no source buffers, no exporter).
    """

    def __init__(
        self,
        spec: HostSpec,
        plan_transfers: dict[int, tuple[str, int]],
        fps: dict[str, float | None],
        *,
        machine: str,
        stop: threading.Event,
        report: Reporter,
        sink_context: dict[str, Any] | None = None,
    ) -> None:
        self.transfers = plan_transfers
        self.fps = fps  # consumer name -> the rate its single input is selected at
        self.outboxes: dict[int, Outbox] = {}
        self.jpegs = JpegCache()
        self.machine = machine
        self.pulls: dict[int, threading.Thread] = {}  # edge id -> its pulling thread
        super().__init__(spec, stop=stop, report=report, sink_context=sink_context)

    def outlet_to_host(self, edge: Edge) -> Outbox:
        kind, quality = self.transfers[edge.id]
        outbox = Outbox(
            edge, kind, quality, self.fps.get(edge.downstream), self.stop_event, self.jpegs
        )
        self.outboxes[edge.id] = outbox
        return outbox

    def source_buffers(self) -> SourceBuffers | None:
        return None

    def exporter(self) -> Exporter | None:
        return None

    def connect(self, addresses: Mapping[str, Any]) -> None:
        """Start pulling every edge into this host from another machine's host.

        ``addresses``: host id -> its ``HostActor``. Edges already pulled are left as they are.
        """
        for edge in self.spec.edges:
            if edge.id in self.pulls or not self.here(edge.downstream):
                continue
            if self.here(edge.upstream):
                continue
            producer = addresses[self.spec.placement[edge.upstream]]
            thread = threading.Thread(
                target=self._pull, args=(edge, producer), daemon=True, name="framepipe-pull"
            )
            self.pulls[edge.id] = thread
            thread.start()

    def _pull(self, edge: Edge, producer: Any) -> None:
        inbox = self.inboxes[edge.downstream]
        # One call in flight: the next is asked for as soon as a batch arrives,
        # before it is decoded, so the producer encodes while the consumer decodes.
        seq = itertools.count()
        pending = producer.take.remote(edge.id, next(seq))
        try:
            while not self.stop_event.is_set():
                batch: Batch = ray.get(pending)
                if not batch.ended:
                    pending = producer.take.remote(edge.id, next(seq))
                if batch.dropped:
                    inbox.recorder.drop("policy", batch.dropped)
                if batch.skipped:
                    inbox.recorder.drop("rate", batch.skipped)
                for item in batch.frames:
                    if type(item) is Mark:
                        inbox.advance(edge.id, item.source, item.index, item.pts)
                    elif not inbox.put(edge.id, unpack(item), None, self.stop_event):
                        return
                if batch.ended:
                    return
        except RayTaskError as exc:
            # The producer's host is alive but could not send (a result Ray cannot pickle).
            error = WorkerError(
                edge.downstream, f"its input from {edge.upstream!r} failed: {exc.cause!r}"
            )
            error.__cause__ = exc.cause
            self.on_fatal(edge.downstream, error)
        except RayError as exc:
            # The producer's machine is gone; the run's supervisor reports it.
            log.debug(
                "framepipe: edge %d into %r lost its producer: %s", edge.id, edge.downstream, exc
            )
        except Exception as exc:
            self.on_fatal(edge.downstream, exc)
        finally:
            inbox.end(edge.id)

    def take(self, edge_id: int, seq: int) -> Batch:
        return self.outboxes[edge_id].take(seq, TAKE_WAIT)

    def stop(self) -> None:
        super().stop()
        for outbox in self.outboxes.values():
            outbox.close()

    def stats(self) -> dict[str, NodeStats]:
        return {name: replace(s, machine=self.machine) for name, s in super().stats().items()}

    def add_inbound(
        self, edges: list[Edge], placement: dict[str, str], peers: Mapping[str, Any]
    ) -> None:
        """Edges of a source added on another host while running: local consumers pull them."""
        self.spec.placement.update(placement)
        for edge in edges:
            self.spec.edges.append(edge)
            if self.here(edge.downstream):
                self.inboxes[edge.downstream].add_edge(
                    edge.id, edge.upstream, self._policy(edge.policy), sources=(edge.upstream,)
                )
        self.connect(peers)


class HostActor:
    """The Ray actor that runs one machine's ``RayHost``, as a worker process runs a ``Host``.

    It obeys the commands a worker obeys (``Connect`` with actor handles for
    addresses, ``Go``, ``Stop``, ``AddSource``, ``RemoveSource``) and keeps what
    its host reports until the caller polls.
    """

    def __init__(
        self, blob: bytes, plan_transfers: dict[int, tuple[str, int]], fps: dict[str, Any]
    ) -> None:
        node_id = ray.get_runtime_context().get_node_id()
        address = ray.util.get_node_ip_address()
        self.stop_event = threading.Event()
        self.reports: list[Report] = []
        self.segments: list[str] = []
        self.ready = threading.Event()
        self._lock = threading.Lock()
        spec: HostSpec = cloudpickle.loads(blob)
        logs = logging.getLogger("framepipe")  # stage logs reach the caller's logging
        logs.handlers[:] = [ForwardLogs(self._report)]
        logs.propagate = False
        logs.setLevel(spec.log_level)
        self.host = RayHost(
            spec,
            plan_transfers,
            fps,
            machine=f"{address}/{node_id[:8]}",
            stop=self.stop_event,
            report=self._report,
        )

    def _report(self, message: Report) -> None:
        match message:
            case Ready():
                self.ready.set()
            case Segment(name):
                self.segments.append(name)
            case _:
                with self._lock:
                    self.reports.append(sendable(message))

    def pid(self) -> int:
        return os.getpid()

    def start(self, peers: dict[str, Any]) -> None:
        """Start pulling, set up every node; return once they are set up."""
        obey(self.host, Connect(peers))
        self.ready.wait(START_TIMEOUT)

    def obey(self, command: Any) -> None:
        obey(self.host, command)

    def take(self, edge_id: int, seq: int) -> Batch:
        return self.host.take(edge_id, seq)

    def _reported(self) -> list[Report]:
        with self._lock:
            reports, self.reports = self.reports, []
        return reports

    def poll(self) -> tuple[dict[str, NodeStats], list[Report], bool]:
        """Statistics, reports since the last poll, and whether every node has ended."""
        # Ended first: what a node reported before it ended is in this poll's reports.
        done = (self.host.go_event.is_set() or self.stop_event.is_set()) and self.host.done()
        return self.host.stats(), self._reported(), done

    def finish(self) -> tuple[Done, list[Report]]:
        """Stop, close every node; statistics, the sinks' final states and the last reports."""
        self.host.stop()
        self.host.wait(10.0)
        states = self.host.final_states()
        stats = self.host.stats()
        self.host.close()
        for name in self.segments:
            _shm.unlink(name)
        return Done(stats, states), self._reported()

    def add_source(
        self,
        node: Node,
        edges: list[Edge],
        plan_transfers: dict[int, tuple[str, int]],
        peers: dict[str, Any],
    ) -> None:
        self.host.transfers.update(plan_transfers)
        obey(self.host, AddSource(node, edges, {}, peers))

    def add_inbound(
        self, edges: list[Edge], placement: dict[str, str], peers: dict[str, Any]
    ) -> None:
        self.host.add_inbound(edges, placement, peers)


@functools.cache
def _actor_class() -> Any:
    return ray.remote(HostActor)


# -- the caller ---------------------------------------------------------------------------------


@dataclass
class _Remote:
    """The caller's view of one machine's host actor."""

    host_id: str
    machine: Machine
    nodes: list[str]
    actor: Any
    stats: dict[str, NodeStats]
    done: bool = False
    dead: bool = False
    pid: int | None = None


class RayExecutor(SupervisedExecutor):
    """Runs a plan on the connected Ray cluster (or a local one). See the module docstring."""

    def __init__(self, plan: Plan, *, address: str | None = None) -> None:
        super().__init__(plan)
        for node in plan.nodes.values():
            if getattr(node.obj, "encoded_history_s", None) is not None:
                raise GraphError(
                    f"sink {node.name!r}: {type(node.obj).__name__} cuts clips from its "
                    f"sources' encoded video in their process; it runs under the inline, "
                    f"threads and processes executors, not yet on Ray"
                )
        require_ray()
        if not ray.is_initialized():
            # Without an address, RAY_ADDRESS joins a cluster, else Ray starts a local one.
            ray.init(address=address)
        self.run_id = secrets.token_hex(4)
        self.cluster = machines()
        self.by_id = {m.node_id: m for m in self.cluster}
        self.placement = place(plan, self.cluster)
        self.transfers = transfers(plan, self._cross(plan.edges))
        self.remotes: dict[str, _Remote] = {}
        self.main_host: RayHost | None = None
        self._caller_ready = threading.Event()
        self._finished = False

    def _cross(self, edges: list[Edge]) -> list[Edge]:
        return [e for e in edges if self.placement[e.upstream] != self.placement[e.downstream]]

    def _fps(self) -> dict[str, float | None]:
        # Rates are applied by the producer only for single-input consumers
        # (several inputs share one selector in the consumer's inbox).
        return {
            name: node.options.fps if len(node.inputs) == 1 and not node.options.window else None
            for name, node in self.plan.nodes.items()
        }

    def _spec(self, host_id: str, names: list[str]) -> HostSpec:
        # No shared memory between machines; sockets are Ray's.
        return self.host_spec(
            host_id, names, segment_prefix=f"fp_{self.run_id}_{len(self.remotes)}", socket_dir=""
        )

    # -- start ------------------------------------------------------------------------------

    def start(self) -> None:
        groups = self.hosts()
        try:
            for host_id, names in groups.items():
                if host_id != CALLER:
                    self._launch(host_id, names)
            if CALLER in groups:
                spec = self._spec(CALLER, groups[CALLER])
                spec.nodes = [self.plan.nodes[n] for n in groups[CALLER]]
                self.main_host = RayHost(
                    spec,
                    self.transfers,
                    self._fps(),
                    machine=f"{self.cluster[0].label} (caller)",
                    stop=self.stop_event,
                    report=self._caller_report,
                    sink_context=self.sink_context(),
                )
            peers = self._peers()
            started = {r.actor.start.remote(peers): r for r in self.remotes.values()}
            if self.main_host is not None:
                self.main_host.connect(peers)
                self.main_host.start_nodes()
            self._wait_for(started, "set up its nodes")
            if self.main_host is not None:
                self._caller_ready.wait(START_TIMEOUT)
            self._supervisor = threading.Thread(
                target=self._supervise, daemon=True, name="framepipe-ray-supervisor"
            )
            self._supervisor.start()
            if self.stop_event.is_set():
                return
            for remote in self.remotes.values():
                remote.actor.obey.remote(Go())
            if self.main_host is not None:
                self.main_host.go()
        except BaseException:
            self.request_stop()
            raise

    def _peers(self) -> dict[str, Any]:
        return {r.host_id: r.actor for r in self.remotes.values()}

    def _launch(self, host_id: str, names: list[str]) -> _Remote:
        machine = self.by_id[host_id]
        try:
            blob = cloudpickle.dumps(self._spec(host_id, names))
        except Exception as exc:
            raise WorkerError(
                names[0],
                f"cannot be sent to a Ray worker: {exc}. Everything a node holds must "
                f"pickle under executor='ray' (load models in setup())",
            ) from exc
        request = host_request([self.plan.nodes[n] for n in names])
        edges = sum(1 for e in self.plan.edges if self.placement[e.upstream] == host_id)
        actor = (
            _actor_class()
            .options(
                name=f"framepipe-{self.run_id}-{machine.node_id[:8]}",
                num_cpus=request.pop("CPU", 0.0),
                num_gpus=request.pop("GPU", 0.0),
                resources=request,
                max_concurrency=16 + 2 * edges,
                max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(machine.node_id, soft=False),
            )
            .remote(blob, self.transfers, self._fps())
        )
        remote = _Remote(host_id, machine, names, actor, {})
        with self._lock:
            self.remotes[host_id] = remote
        return remote

    def _wait_for(self, refs: dict[Any, _Remote], what: str) -> None:
        for ref, remote in refs.items():
            try:
                ray.get(ref, timeout=START_TIMEOUT)
            except GetTimeoutError:
                raise WorkerError(
                    remote.nodes[0],
                    f"the host on machine {remote.machine.label} did not {what} within "
                    f"{START_TIMEOUT:.0f} s (are the resources it asks for free?)",
                ) from None
            except RayError as exc:
                self._died(remote, exc)
                raise self.fatal or WorkerError(remote.nodes[0], str(exc)) from exc

    def _caller_report(self, message: Report) -> None:
        if isinstance(message, Ready):
            self._caller_ready.set()
        elif not isinstance(message, Segment):  # the caller's host sends through Ray, not memory
            self.report(message)

    # -- supervise -------------------------------------------------------------------------------

    def _supervise(self) -> None:
        try:
            while True:
                with self._lock:
                    live = [r for r in self.remotes.values() if not r.dead and not r.done]
                self._poll(live)
                with self._lock:
                    left = [r for r in self.remotes.values() if not r.dead and not r.done]
                if not left and self.main_done():
                    break
                self.stop_event.wait(POLL_EVERY)
        except Exception:
            log.exception("framepipe: Ray supervisor failed")
            self.request_stop()
        finally:
            self._finish()

    def _poll(self, remotes: list[_Remote]) -> None:
        refs = {r.actor.poll.remote(): r for r in remotes}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=2.0) if refs else ([], [])
        for ref in ready:
            remote = refs[ref]
            try:
                stats, reports, done = ray.get(ref)
            except RayError as exc:
                self._died(remote, exc)
                continue
            remote.stats = stats
            for message in reports:
                if not self.report(message):
                    raise TypeError(f"unknown report from host {remote.host_id!r}: {message!r}")
            remote.done = done

    def _died(self, remote: _Remote, exc: BaseException) -> None:
        if remote.dead:
            return
        remote.dead = True
        remote.stats = {
            name: replace(
                remote.stats.get(name) or NodeStats(name, self.plan.nodes[name].kind),
                state="died",
                machine=remote.machine.label,
            )
            for name in remote.nodes
        }
        names = ", ".join(repr(n) for n in remote.nodes)
        error = WorkerError(
            remote.nodes[0],
            f"the Ray actor running {names} on machine {remote.machine.label} died "
            f"({type(exc).__name__})",
        )
        log.error("framepipe: %s", error)
        self.on_fatal(remote.nodes[0], error)

    def _finish(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
        if self.main_host is not None:
            self.main_host.stop()
            self.main_host.wait(10.0)
            self._final_states.update(self.main_host.final_states())
            self.main_host.close()
        alive = [r for r in self.remotes.values() if not r.dead]
        refs = {r.actor.finish.remote(): r for r in alive}
        if refs:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=FINISH_TIMEOUT)
            for ref in ready:
                with contextlib.suppress(RayError):
                    done, reports = ray.get(ref)
                    refs[ref].stats = done.stats
                    self._final_states.update(done.final_states)
                    for message in reports:
                        self.report(message)
        self._kill_actors()
        self._done.set()

    def _kill_actors(self) -> None:
        for remote in list(self.remotes.values()):
            with contextlib.suppress(Exception):
                ray.kill(remote.actor, no_restart=True)

    # -- control ---------------------------------------------------------------------------------

    def request_stop(self) -> None:
        super().request_stop()
        for remote in list(self.remotes.values()):
            if not remote.dead:
                with contextlib.suppress(Exception):
                    remote.actor.obey.remote(Stop())
        if self.main_host is not None:
            self.main_host.stop()
        if self._supervisor is None:  # stopped before the supervisor ever ran
            self._finish()

    def kill(self) -> None:
        super().request_stop()
        if self.main_host is not None:
            self.main_host.stop()
        self._kill_actors()
        if self._supervisor is None or not self._supervisor.is_alive():
            self._done.set()

    def host_stats(self) -> list[dict[str, NodeStats]]:
        return [remote.stats for remote in list(self.remotes.values())]

    def worker_pids(self) -> dict[str, int]:
        """Node name -> process id of the actor that runs it (on its machine)."""
        pids: dict[str, int] = {}
        for remote in list(self.remotes.values()):
            if remote.pid is None and not remote.dead:
                with contextlib.suppress(RayError):
                    remote.pid = ray.get(remote.actor.pid.remote(), timeout=10)
            if remote.pid is not None:
                pids.update(dict.fromkeys(remote.nodes, remote.pid))
        return pids

    # -- hot add / remove ----------------------------------------------------------------------

    def add_source(self, node: Node, edges: list[Edge]) -> None:
        plan = self.plan
        # place() skips nodes already placed only by recomputing all: keep earlier choices.
        single = Plan({node.name: node}, [node.name], [], plan.mode, plan.start, 0)
        self.placement[node.name] = place(single, self.cluster)[node.name]
        host_id = self.placement[node.name]
        self.transfers.update(transfers(plan, self._cross(edges)))
        update = {node.name: host_id}
        new = self.remotes.get(host_id) is None
        # A new host is built from the plan, which holds the source and its edges already.
        remote = self._launch(host_id, [node.name]) if new else self.remotes[host_id]
        peers = self._peers()
        if not new:
            remote.nodes.append(node.name)
            # The producer first, so that consumers pulling the new edges find its outboxes.
            ray.get(remote.actor.add_source.remote(portable(node), edges, self.transfers, peers))
        others = [r for r in self.remotes.values() if r.host_id != host_id and not r.dead]
        ray.get([r.actor.add_inbound.remote(edges, update, peers) for r in others])
        if self.main_host is not None:
            self.main_host.add_inbound(edges, update, peers)
        if new:
            self._wait_for({remote.actor.start.remote(peers): remote}, "start")
            remote.actor.obey.remote(Go())

    def remove_source(self, name: str) -> None:
        host_id = self.placement.get(name)
        if host_id in self.remotes:
            self.remotes[host_id].actor.obey.remote(RemoveSource(name))


def actor_pids() -> list[int]:
    """Process ids of framepipe host actors still alive on this machine (for tests)."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any("HostActor" in part for part in process.info["cmdline"] or ()):
                found.append(process.info["pid"])
    return found
