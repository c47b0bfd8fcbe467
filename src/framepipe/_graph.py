"""Pipeline: the graph of sources, stages and sinks, and how to run it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import GraphError
from ._policy import BLOCK, LATEST, NodeOptions, Queue
from ._stage import FunctionStage, Stage
from .runtime._clock import SYSTEM_CLOCK, Clock
from .runtime._registry import executor_names, resolve_mode
from .sinks._base import Sink
from .sources._base import Source

if TYPE_CHECKING:
    from ._profile import Profile
    from ._run import Run
    from .stats import RunStats

MODES = ("offline", "realtime", "replay")
#: The executors known at import; ``runtime._registry.executor_names()`` is the live list.
EXECUTORS = executor_names()
#: Default policy of a sink's inputs in real-time mode: absorb jitter, stay bounded.
SINK_DEFAULT = Queue(16, "drop_oldest")


@dataclass(eq=False)
class Node:
    """A handle to a node of a pipeline, returned by ``source``, ``stage`` and ``sink``."""

    pipeline: Pipeline
    name: str
    kind: str  # "source" | "stage" | "sink" | "input"
    obj: Any
    inputs: list[str] = field(default_factory=list)
    options: NodeOptions = field(default_factory=NodeOptions)

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name!r}>"


@dataclass(frozen=True, slots=True)
class Edge:
    """An edge of a planned run; ``id`` indexes shared-memory release flags."""

    id: int
    upstream: str
    downstream: str
    policy: Queue


@dataclass
class Plan:
    """A validated pipeline ready for an executor: nodes in topological order."""

    nodes: dict[str, Node]
    order: list[str]
    edges: list[Edge]
    mode: str
    start: float
    next_edge_id: int
    #: Where the run reads time (``framepipe.testing.FakeClock`` in tests).
    clock: Clock = SYSTEM_CLOCK
    #: Sinks of the run's events (``Pipeline.events``), by name: not nodes of the graph.
    event_sinks: dict[str, Sink] = field(default_factory=dict)

    def inputs_of(self, name: str) -> list[Edge]:
        return [e for e in self.edges if e.downstream == name]

    def outputs_of(self, name: str) -> list[Edge]:
        return [e for e in self.edges if e.upstream == name]

    def sources_upstream(self, name: str) -> tuple[str, ...]:
        seen: set[str] = set()
        todo = [name]
        while todo:
            node = self.nodes[todo.pop()]
            if node.kind == "source":
                seen.add(node.name)
            todo.extend(node.inputs)
        return tuple(sorted(seen))

    def needed_fps(self, source: str) -> float | None:
        """The highest rate a consumer of ``source`` selects, in real time; ``None`` when
        some consumer takes every frame (no ``fps=``, or a window) or the run is offline."""
        if self.mode == "offline":
            return None
        rates = []
        for edge in self.outputs_of(source):
            options = self.nodes[edge.downstream].options
            if options.fps is None or options.window is not None:
                return None
            rates.append(options.fps)
        return max(rates) if rates else None

    def describe(self) -> dict[str, Any]:
        """Nodes and edges, JSON-friendly (for the web view and ``framepipe info``)."""
        nodes = []
        for name in self.order:
            node = self.nodes[name]
            info: dict[str, Any] = {"name": name, "kind": node.kind, "inputs": list(node.inputs)}
            describe = getattr(node.obj, "describe", None)
            described = describe() if callable(describe) else {"type": type(node.obj).__name__}
            info["type"] = described.get("type")
            if "folder" in described:  # where a sink writes files (Clips: the web view lists them)
                info["folder"] = described["folder"]
            if node.options.fps:
                info["fps"] = round(node.options.fps, 3)
            nodes.append(info)
        return {
            "mode": self.mode,
            "nodes": nodes,
            "edges": [{"from": e.upstream, "to": e.downstream} for e in self.edges],
        }


def _check_results_read(node: Node, nodes: dict[str, Node]) -> None:
    """A node that names the results it reads (``Clips(when="count")``) must have those
    nodes upstream: a misspelt name would otherwise never match, silently."""
    wanted = getattr(node.obj, "results_read", ())
    if not wanted:
        return
    upstream: set[str] = set()
    todo = list(node.inputs)
    while todo:
        name = todo.pop()
        if name not in upstream:
            upstream.add(name)
            todo.extend(nodes[name].inputs)
    for name in wanted:
        if name not in upstream:
            stages = sorted(n for n in upstream if nodes[n].kind == "stage")
            raise GraphError(
                f"node {node.name!r}: it reads the results of {name!r}, which is not "
                f"upstream of it; its upstream stages are {stages or 'none'}"
            )


def edge_policy(node: Node, mode: str) -> Queue:
    """The queue on each input edge of ``node`` for this mode."""
    if mode == "offline":
        return (
            node.options.policy if node.options.policy and node.options.policy.lossless else BLOCK
        )
    if node.options.policy is not None:
        return node.options.policy
    return SINK_DEFAULT if node.kind == "sink" else LATEST


class Pipeline:
    """A graph of named sources, stages and sinks.

    Example::

        pipe = fp.Pipeline()
        cam = pipe.source("cam", fp.sources.Synthetic(width=1280, height=720, fps=30))
        det = pipe.stage("detect", detector, after=cam, fps=5)
        collect = fp.sinks.Collect()
        pipe.sink("results", collect, after=det)
        run = pipe.run(mode="realtime", executor="processes", duration=10)
        print(run.stats)

    Node options (``stage`` and ``sink``):

    - ``fps=`` at most N calls per second of media time; ``interval=`` seconds
      between calls; ``window=(count, step)``: each call receives a list of the
      last ``count`` frames taken every ``step`` source frames (or ``"1s"``:
      every second of media time), ending at the frame it is called on.
    - ``policy=``: ``"latest"``, ``"block"`` or ``fp.Queue(n, overflow)`` on each
      input edge (see ``framepipe._policy``); ``max_age=`` milliseconds.
    - ``join=``: ``"each"``, ``"merge"`` or ``"latest"`` for several inputs; stages
      default to ``"each"``, sinks to ``"merge"`` (each frame written once, with the
      results of all its inputs; a sink's own ``join`` attribute can say otherwise).
      ``join_wait=`` milliseconds: in real time, the most a merge holds a frame for
      its other inputs (default: one frame interval of its source); see
      docs/concepts.md, "Joins by watermark".
    - ``on_error=``: ``"skip"``, ``"stop"`` or ``"restart"``; stages default to
      ``"skip"``, sinks to ``"stop"`` (a sink that cannot write, e.g. on a full disk,
      stops the run; with ``"skip"`` it counts the frames it lost and goes on).
    - ``executor=``: run this node under another executor than the pipeline's
      (``"threads"`` puts it in a thread of the caller's process,
      ``"processes"`` in its own process).
    - ``resources=``, ``transfer=``, ``jpeg_quality=``: placement on a Ray cluster
      and what crosses machines (``executor="ray"``, see docs/ray.md).
    - ``cost=``: seconds per frame in ``mode="replay"`` (a number, or a
      function of the frame); see docs/replay.md.
    """

    def __init__(self, name: str = "pipeline") -> None:
        self.name = name
        self._nodes: dict[str, Node] = {}
        self._event_sinks: dict[str, Sink] = {}
        self._run: Run | None = None
        self._lock = threading.Lock()

    # -- building ---------------------------------------------------------------

    def source(
        self, name: str, source: Source, *, resources: dict[str, float] | None = None
    ) -> Node:
        """Add a source node: where frames enter the pipeline.

        ``resources=`` is a Ray resource request (``executor="ray"``): the source
        runs on a machine that has them, e.g. ``{"camera_7": 1}``.
        """
        self._check_name(name)
        if not isinstance(source, Source):
            raise GraphError(
                f"source {name!r}: expected an fp.sources.Source "
                f"(e.g. fp.sources.VideoFile(path)), got {type(source).__name__}"
            )
        options = (
            NodeOptions() if resources is None else NodeOptions.build(name, resources=resources)
        )
        return self._add(Node(self, name, "source", source, options=options))

    def input(self, name: str = "input") -> Node:
        """Where frames enter a pipeline that is nested as a stage of another."""
        self._check_name(name)
        return self._add(Node(self, name, "input", None))

    def stage(
        self,
        name: str,
        stage: Stage | Callable[[Any], Any] | Pipeline,
        after: Node | str | Sequence[Node | str],
        **options: Any,
    ) -> Node:
        """Add a stage: a callable ``fn(frame) -> value``, an ``fp.Stage``, or a nested Pipeline."""
        self._check_name(name)
        if isinstance(stage, Pipeline):
            from ._nested import NestedPipeline

            stage = NestedPipeline(stage)
        elif not isinstance(stage, Stage):
            if not callable(stage):
                raise GraphError(
                    f"stage {name!r}: expected a callable fn(frame) or an "
                    f"fp.Stage, got {type(stage).__name__}"
                )
            stage = FunctionStage(stage)
        return self._add(
            Node(
                self, name, "stage", stage, self._inputs(name, after), self._options(name, options)
            )
        )

    def sink(
        self, name: str, sink: Sink, after: Node | str | Sequence[Node | str], **options: Any
    ) -> Node:
        """Add a sink: where results leave the pipeline."""
        self._check_name(name)
        if not isinstance(sink, Sink):
            raise GraphError(
                f"sink {name!r}: expected an fp.sinks.Sink "
                f"(e.g. fp.sinks.Collect()), got {type(sink).__name__}"
            )
        inputs = self._inputs(name, after)
        # A sink is where results leave: one that cannot write stops the run rather than
        # losing them quietly, and a frame reaching it through several inputs is written once.
        options.setdefault("on_error", "stop")
        if len(inputs) > 1:
            # A sink that shows each input apart (the web view) takes them one by one.
            options.setdefault("join", getattr(sink, "join", "merge"))
        return self._add(Node(self, name, "sink", sink, inputs, self._options(name, options)))

    def events(self, name: str, sink: Sink) -> None:
        """Send the run's events to ``sink``: each change of a live source's health
        (``ok``, ``stalled``, ``frozen``, ``clock``) as one record (see docs/events.md).

        ``sink`` takes records (``fp.sinks.JsonLines``, ``fp.sinks.Webhook``,
        ``fp.sinks.Collect``); it runs in the caller's process under every
        executor, opens before the sources start and closes after the last event::

            pipe.events("alerts", fp.sinks.Webhook("http://127.0.0.1:8000/alerts"))
        """
        self._check_name(name)
        if not isinstance(sink, Sink) or not sink.takes_records():
            raise GraphError(
                f"event sink {name!r}: expected a sink that takes records "
                f"(fp.sinks.JsonLines, fp.sinks.Webhook, fp.sinks.Collect), "
                f"got {type(sink).__name__}"
            )
        with self._lock:
            self._event_sinks[name] = sink

    @property
    def nodes(self) -> dict[str, Node]:
        return dict(self._nodes)

    def _add(self, node: Node) -> Node:
        with self._lock:
            self._nodes[node.name] = node
        return node

    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise GraphError(f"node names must be non-empty strings, got {name!r}")
        if name in self._nodes or name in self._event_sinks:
            raise GraphError(f"duplicate node name {name!r}: names must be unique")

    def _inputs(self, name: str, after: Any) -> list[str]:
        if after is None:
            raise GraphError(f"node {name!r} has no input: pass after=<node or list of nodes>")
        items: Iterable[Any] = after if isinstance(after, list | tuple) else [after]
        names = []
        for item in items:
            if isinstance(item, Node):
                if item.pipeline is not self:
                    raise GraphError(
                        f"node {name!r}: input {item.name!r} belongs to another pipeline"
                    )
                names.append(item.name)
            elif isinstance(item, str):
                names.append(item)
            else:
                raise GraphError(
                    f"node {name!r}: after= takes nodes or node names, got {type(item).__name__}"
                )
        if not names:
            raise GraphError(f"node {name!r} has no input: after= is empty")
        if len(set(names)) != len(names):
            raise GraphError(f"node {name!r}: the same input is named twice in after={names}")
        return names

    def _options(self, name: str, options: dict[str, Any]) -> NodeOptions:
        known = {"fps", "interval", "window", "policy", "max_age", "on_error", "join", "executor"}
        known |= {"join_wait"}
        known |= {"resources", "transfer", "jpeg_quality"}  # executor="ray"
        known |= {"cost"}  # mode="replay"
        unknown = set(options) - known
        if unknown:
            raise GraphError(
                f"node {name!r}: unknown option(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        return NodeOptions.build(name, **options)

    # -- planning ---------------------------------------------------------------

    def plan(self, mode: str = "offline", start: float = 0.0) -> Plan:
        """Validate the graph and order it; raises GraphError naming the bad node."""
        if mode not in MODES:
            raise GraphError(f"mode must be one of {MODES}, got {mode!r}")
        nodes = dict(self._nodes)
        if not any(n.kind in ("source", "input") for n in nodes.values()):
            raise GraphError("the pipeline has no source: add one with pipe.source(name, source)")
        for node in nodes.values():
            for upstream in node.inputs:
                if upstream not in nodes:
                    raise GraphError(
                        f"node {node.name!r}: unknown input {upstream!r}; "
                        f"known nodes: {sorted(nodes)}"
                    )
                if nodes[upstream].kind == "sink":
                    raise GraphError(
                        f"node {node.name!r}: input {upstream!r} is a sink; sinks have no output"
                    )
        for node in nodes.values():
            _check_results_read(node, nodes)
        order = _topological(nodes)
        edges: list[Edge] = []
        next_id = 1  # 0 is the owner's own hold on a shared-memory slot
        for name in order:
            node = nodes[name]
            for upstream in node.inputs:
                edges.append(Edge(next_id, upstream, name, edge_policy(node, mode)))
                next_id += 1
        return Plan(
            nodes, order, edges, mode, float(start), next_id, event_sinks=dict(self._event_sinks)
        )

    # -- running ----------------------------------------------------------------

    def start(
        self,
        mode: str = "auto",
        executor: str = "threads",
        *,
        duration: float | None = None,
        start: float = 0.0,
        stop_timeout: float = 10.0,
        profile: Profile | str | os.PathLike[str] | None = None,
        workers: int | None = None,
        clock: Clock | None = None,
        ray_address: str | None = None,
    ) -> Run:
        """Start running in the background and return the ``Run`` at once.

        ``mode="auto"`` picks ``"realtime"`` when any source is live (camera,
        stream) and ``"offline"`` otherwise. ``mode="replay"`` plays file
        sources as live cameras on a simulated clock, each node costing its
        ``cost=`` or what ``profile`` (a ``Profile`` or its JSON file) says;
        ``duration`` then counts media seconds (see docs/replay.md).
        ``workers=N`` (``executor="processes"``) runs the nodes in N worker
        processes instead of one each, each camera's source and the stages it
        feeds together. ``ray_address=`` names the Ray cluster ``executor="ray"``
        joins (else ``RAY_ADDRESS``, else a local one). Use the returned run as a
        context manager, or call ``run.stop()``.
        """
        from ._run import Run

        mode, executor = resolve_mode(mode, executor)
        if mode == "auto":
            live = any(
                n.kind == "source" and getattr(n.obj, "live", False) for n in self._nodes.values()
            )
            mode = "realtime" if live else "offline"
        if mode == "replay" and clock is not None:
            raise GraphError("clock= is not for mode='replay': a replay runs on its own clock")
        if duration is not None and not duration > 0:
            raise GraphError(f"duration must be > 0 seconds, got {duration!r}")
        if ray_address is not None and executor != "ray":
            raise GraphError(f"ray_address= is for executor='ray', not {executor!r}")
        if workers is not None:
            if executor != "processes":
                raise GraphError(f"workers= is for executor='processes', not {executor!r}")
            if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
                raise GraphError(f"workers must be an int >= 1, got {workers!r}")
        if profile is not None and mode != "replay":
            raise GraphError(f"profile= is for mode='replay', not mode={mode!r}")
        if isinstance(profile, str | os.PathLike):
            from ._profile import Profile

            profile = Profile.load(profile)
        with self._lock:
            if self._run is not None and self._run.running:
                raise GraphError(f"pipeline {self.name!r} is already running")
            plan = self.plan(mode, start)
            if clock is not None:
                plan.clock = clock
            self._run = Run(
                plan,
                executor,
                duration=duration,
                stop_timeout=stop_timeout,
                profile=profile,
                workers=workers,
            )
            self._run.ray_address = ray_address
        self._run.start()
        return self._run

    def run(
        self,
        mode: str = "auto",
        executor: str = "threads",
        *,
        duration: float | None = None,
        start: float = 0.0,
        stop_timeout: float = 10.0,
        profile: Profile | str | os.PathLike[str] | None = None,
        workers: int | None = None,
        clock: Clock | None = None,
        ray_address: str | None = None,
    ) -> Run:
        """Run until the sources end, ``duration`` seconds pass, or Ctrl-C; return the Run.

        Raises ``StageError`` (or ``SourceError``/``SinkError``/``WorkerError``)
        when a node fails with ``on_error="stop"``, fails to start, or its worker
        dies. On Ctrl-C or SIGTERM the run stops cleanly (outputs flushed, no
        shared memory or processes left) and the interruption is re-raised.
        """
        run = self.start(
            mode,
            executor,
            duration=duration,
            start=start,
            stop_timeout=stop_timeout,
            profile=profile,
            workers=workers,
            clock=clock,
            ray_address=ray_address,
        )
        run.join()
        return run

    def stop(self, timeout: float | None = None) -> None:
        """Stop the running pipeline, if any, and wait for it to finish."""
        if self._run is not None:
            self._run.stop(timeout)

    def stats(self) -> RunStats:
        """Live statistics of the current (or last) run."""
        from .stats import RunStats

        return self._run.stats if self._run is not None else RunStats()

    def add_source(
        self,
        name: str,
        source: Source,
        to: Node | str | Sequence[Node | str] | None = None,
        *,
        resources: dict[str, float] | None = None,
    ) -> Node:
        """Add a source to the running pipeline (or to the graph when not running).

        ``to`` names the nodes it feeds; by default the nodes fed by the
        pipeline's first source. The new edges take those nodes' policies.
        ``resources=`` places it on a Ray cluster (see ``source``).
        """
        first = next((n for n in self._nodes.values() if n.kind == "source"), None)
        if to is None:
            if first is None:
                raise GraphError(f"source {name!r}: pass to=<nodes it feeds>")
            targets = [n.name for n in self._nodes.values() if first.name in n.inputs]
        else:
            targets = self._inputs(name, to)
        node = self.source(name, source, resources=resources)
        for target in targets:
            if target not in self._nodes or self._nodes[target].kind not in ("stage", "sink"):
                del self._nodes[name]
                raise GraphError(f"source {name!r}: to= must name stages or sinks, got {target!r}")
        for target in targets:
            self._nodes[target].inputs.append(name)
        if self._run is not None and self._run.running:
            try:
                self._run.add_source(node, targets)
            except BaseException:
                # A source that could not start is not part of the pipeline either: the
                # next run() must not run it.
                del self._nodes[name]
                for target in targets:
                    self._nodes[target].inputs.remove(name)
                raise
        return node

    def remove_source(self, name: str) -> None:
        """Stop and remove a source; nodes it fed go on with their other inputs."""
        node = self._nodes.get(name)
        if node is None or node.kind != "source":
            raise GraphError(
                f"no source named {name!r}; sources: "
                f"{sorted(n.name for n in self._nodes.values() if n.kind == 'source')}"
            )
        if self._run is not None and self._run.running:
            self._run.remove_source(name)
        del self._nodes[name]
        for other in self._nodes.values():
            if name in other.inputs:
                other.inputs.remove(name)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, nodes={list(self._nodes)})"


def _topological(nodes: dict[str, Node]) -> list[str]:
    """Kahn's algorithm in insertion order, so the order is stable; names a cycle if any."""
    indegree = {name: len(node.inputs) for name, node in nodes.items()}
    children: dict[str, list[str]] = {name: [] for name in nodes}
    for name, node in nodes.items():
        for upstream in node.inputs:
            children[upstream].append(name)
        if node.kind in ("stage", "sink") and not node.inputs:
            raise GraphError(f"node {name!r} has no input")
    ready = [name for name in nodes if indegree[name] == 0]
    order: list[str] = []
    while ready:
        name = ready.pop(0)
        order.append(name)
        for child in children[name]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if len(order) != len(nodes):
        stuck = sorted(name for name in nodes if name not in order)
        raise GraphError(f"the pipeline has a cycle through {stuck}")
    return order
