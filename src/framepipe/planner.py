"""Capacity planning: how many copies of a pipeline can this machine carry in real time?

From each node's cost per frame on this machine (a ``Profile``: wall and CPU
time, and the share that holds the GIL) and where the executor places the
nodes, ``forecast`` predicts, for N copies of the pipeline (N cameras, each
with its own stages and sinks), every node's frame rate, drops and frame age,
and the largest N that keeps every node at its requested rate.

Example::

    from framepipe import planner

    profile = planner.measure(pipe, duration=10)        # or fp.Profile.load(path)
    capacity = planner.forecast(pipe, profile, streams=range(1, 17), executor="processes")
    print(capacity.largest)                             # e.g. 8
    capacity.plot("capacity.png")

The model, and what it leaves out:

- a node works on one frame at a time, and a frame costs it ``wall_s``; when
  the machine's cores (or, for nodes in one process, the GIL) are
  oversubscribed, every frame's time stretches by the same factor, found so
  that the CPU the nodes use fits in the cores and the GIL time of each
  process fits in one second per second;
- a node processes ``min(requested rate, rate its input delivers, 1 / its
  stretched time)``: what it cannot keep up with is dropped by its policy
  (``latest`` in real-time mode), a source that cannot decode in time drops
  ``late`` frames;
- frame age is the time frames spend in the nodes upstream (and in decoding);
  waiting in queues is not modelled;
- the machine's other work is not modelled: profile on the machine you plan
  for, while it is as busy as it will be.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import GraphError
from ._graph import Pipeline, Plan
from ._profile import NodeCost, Profile, profile_of, this_machine
from .runtime._placement import connected, spread

if TYPE_CHECKING:
    from .stats import RunStats

__all__ = [
    "Capacity",
    "Forecast",
    "NodeForecast",
    "compare",
    "forecast",
    "measure",
    "parse_streams",
    "replicate",
]

#: A node keeps its requested rate when it reaches this share of it.
KEEPS_UP = 0.95
#: Sources may drop at most this share of their frames.
SOURCE_DROPS = 0.01
#: CPU per frame and edge for moving a frame to another node (threads) or process.
HOP_CPU_S = {"inline": 2e-6, "threads": 10e-6, "processes": 50e-6}
#: Assumed when a profile does not say (a real-time run's profile): the worst case.
UNKNOWN_GIL = 1.0


def measure(pipe: Pipeline, *, duration: float | None = None) -> Profile:
    """Profile ``pipe`` on this machine: replay it once, timing every node's real code.

    Wall and CPU time per frame, and the GIL share (estimated by a probe
    thread, see ``framepipe.runtime._replay.GilProbe``). ``duration`` bounds
    the media seconds played. ``framepipe profile FILE`` calls this.
    """
    from .runtime._replay import ReplayExecutor

    plan = pipe.plan("replay")
    executor = ReplayExecutor(plan, duration=duration, probe_gil=True)
    executor.start()
    try:
        executor.join()
    except BaseException:
        executor.request_stop()
        executor.join(10.0)
        raise
    if executor.fatal is not None:
        raise executor.fatal
    if executor.source_errors:
        raise executor.source_errors[0]
    return profile_of(plan, executor.stats(), executor, "replay")


def replicate(pipe: Pipeline, copies: int) -> Pipeline:
    """A pipeline with ``copies`` independent copies of ``pipe``: nodes ``name-1`` ... ``name-N``.

    Each copy has its own source, stages and sinks (copied before any of them
    runs), as N cameras each with the same processing would. Copies are
    exact: every copy of a file source plays the same file, and every copy of
    a sink that writes a file writes the same path.
    """
    if copies < 1:
        raise GraphError(f"copies must be >= 1, got {copies!r}")
    plan = pipe.plan("realtime")
    out = Pipeline(f"{pipe.name}x{copies}")
    for k in range(1, copies + 1):
        for name in plan.order:
            node = plan.nodes[name]
            obj = copy.deepcopy(node.obj)
            new = f"{name}-{k}"
            if node.kind == "source":
                out.source(new, obj)
                continue
            inputs = [f"{i}-{k}" for i in node.inputs]
            options = _options_of(node.options)
            if node.kind == "stage":
                out.stage(new, obj, after=inputs, **options)
            else:
                out.sink(new, obj, after=inputs, **options)
    return out


def _options_of(options: Any) -> dict[str, Any]:
    given: dict[str, Any] = {}
    if options.fps is not None:
        given["fps"] = options.fps
    if options.window is not None:
        given["window"] = options.window
    if options.policy is not None:
        given["policy"] = options.policy
    if options.max_age is not None:
        given["max_age"] = options.max_age * 1000.0
    for key, default in (("on_error", "skip"), ("join", "each")):
        if getattr(options, key) != default:
            given[key] = getattr(options, key)
    for key in ("executor", "cost"):
        if getattr(options, key) is not None:
            given[key] = getattr(options, key)
    return given


@dataclass(frozen=True, slots=True)
class NodeForecast:
    """What one node of one copy is predicted to do."""

    name: str
    kind: str
    requested_fps: float
    fps: float
    drop_share: float  # of the frames it selects, dropped because it cannot keep up
    age_ms: float
    cpu: float  # cores this node uses

    @property
    def keeps_up(self) -> bool:
        if self.kind == "source":
            return self.drop_share <= SOURCE_DROPS
        return self.fps >= KEEPS_UP * self.requested_fps - 1e-9


@dataclass(frozen=True, slots=True)
class Forecast:
    """The prediction for ``streams`` copies of the pipeline."""

    streams: int
    nodes: dict[str, NodeForecast]  # by the pipeline's own node names; every copy alike
    cpu: float  # cores in use
    gil: float  # busiest process's GIL load (1.0 = always held)
    stretch: float  # how much longer each frame takes than alone (1.0 = not at all)

    @property
    def ok(self) -> bool:
        return all(node.keeps_up for node in self.nodes.values())


@dataclass(frozen=True)
class Capacity:
    """Forecasts for several stream counts, and the largest that keeps up."""

    forecasts: list[Forecast]
    executor: str
    cpus: float
    machine: dict[str, Any] = field(default_factory=dict)

    @property
    def largest(self) -> int | None:
        """The largest N (of those forecast) up to which every node keeps its rate."""
        best = None
        for item in sorted(self.forecasts, key=lambda f: f.streams):
            if not item.ok:
                break
            best = item.streams
        return best

    def to_dict(self) -> dict[str, Any]:
        return {
            "executor": self.executor,
            "cpus": self.cpus,
            "machine": self.machine,
            "largest": self.largest,
            "forecasts": [
                {
                    "streams": f.streams,
                    "ok": f.ok,
                    "cpu": round(f.cpu, 3),
                    "gil": round(f.gil, 3),
                    "nodes": {
                        name: {
                            "requested_fps": round(n.requested_fps, 3),
                            "fps": round(n.fps, 3),
                            "drop_share": round(n.drop_share, 4),
                            "age_ms": round(n.age_ms, 2),
                            "cpu": round(n.cpu, 4),
                        }
                        for name, n in f.nodes.items()
                    },
                }
                for f in self.forecasts
            ],
        }

    def rows(self) -> list[list[str]]:
        """Table rows, header first: one row per stream count."""
        names = list(self.forecasts[0].nodes) if self.forecasts else []
        header = ["streams", *[f"{n} fps" for n in names], "drops", "max age ms", "CPU", "GIL", ""]
        rows = [header]
        for f in self.forecasts:
            cells = [str(f.streams)]
            for name in names:
                node = f.nodes[name]
                mark = "" if node.keeps_up else "!"
                cells.append(f"{node.fps:.1f}/{node.requested_fps:.0f}{mark}")
            worst = max(f.nodes.values(), key=lambda n: n.drop_share)
            drops = f"{worst.drop_share:.0%} {worst.name}" if worst.drop_share > 0.0005 else "0"
            cells += [
                drops,
                f"{max(n.age_ms for n in f.nodes.values()):.0f}",
                f"{f.cpu:.2f}/{self.cpus:g}",
                f"{f.gil:.2f}",
                "ok" if f.ok else "over",
            ]
            rows.append(cells)
        return rows

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Save a PNG: each node's predicted fps (and its requested rate) against streams."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        streams = [f.streams for f in self.forecasts]
        fig, (rates, cores) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
        for name in self.forecasts[0].nodes if self.forecasts else []:
            fps = [f.nodes[name].fps for f in self.forecasts]
            line = rates.plot(streams, fps, marker="o", label=name)[0]
            requested = [f.nodes[name].requested_fps for f in self.forecasts]
            rates.plot(streams, requested, linestyle=":", color=line.get_color())
        rates.set_ylabel("fps per stream (dotted: requested)")
        rates.legend(loc="best", fontsize="small")
        largest = self.largest
        title = f"{self.executor} on {self.cpus:g} CPUs: " + (
            f"keeps up to {largest} streams" if largest else "does not keep up"
        )
        rates.set_title(title)
        cores.plot(streams, [f.cpu for f in self.forecasts], marker="o", label="CPU cores used")
        cores.plot(streams, [f.gil for f in self.forecasts], marker="s", label="GIL load")
        cores.axhline(self.cpus, linestyle=":", color="grey")
        cores.set_xlabel("streams")
        cores.legend(loc="best", fontsize="small")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def forecast(
    pipe: Pipeline,
    profile: Profile,
    *,
    streams: Iterable[int] = range(1, 17),
    executor: str = "threads",
    workers: int | None = None,
    cpus: float | None = None,
) -> Capacity:
    """Predict what N copies of ``pipe`` do on this machine, for each N in ``streams``.

    ``profile`` gives each node's cost (``measure`` or ``Profile.load``); a
    node it lacks costs its ``cost=``, else nothing. ``executor`` (and
    ``workers=`` for processes) is how the copies would run; ``cpus``
    defaults to the cores this process may use.
    """
    if executor not in HOP_CPU_S:
        raise GraphError(f"executor must be one of {sorted(HOP_CPU_S)}, got {executor!r}")
    plan = pipe.plan("realtime")
    if workers is not None and (executor != "processes" or workers < 1):
        raise GraphError(f"workers= is for executor='processes', >= 1; got {workers!r}")
    model = _Model(plan, profile, executor, workers)
    cores = float(cpus) if cpus is not None else float(this_machine()["cpus"] or 1)
    counts = sorted(set(int(n) for n in streams))
    if not counts or counts[0] < 1:
        raise GraphError(f"streams must be counts >= 1, got {list(streams)!r}")
    return Capacity(
        [model.forecast(n, cores) for n in counts], executor, cores, dict(profile.machine)
    )


def compare(capacity: Capacity, measured: dict[int, RunStats]) -> dict[int, dict[str, float]]:
    """Measured fps over predicted fps, per stream count and node (``name-k`` averaged over k)."""
    ratios: dict[int, dict[str, float]] = {}
    for item in capacity.forecasts:
        stats = measured.get(item.streams)
        if stats is None:
            continue
        ratios[item.streams] = {}
        for name, node in item.nodes.items():
            copies = [stats[f"{name}-{k}"].fps for k in range(1, item.streams + 1)]
            mean = sum(copies) / len(copies)
            ratios[item.streams][name] = mean / node.fps if node.fps > 0 else math.inf
    return ratios


@dataclass
class _NodeModel:
    name: str
    kind: str
    inputs: list[str]
    fps: float | None  # requested (stages, sinks) or the source's own rate
    wall: float
    cpu: float
    gil: float
    group: str  # the process it runs in (per copy, unless shared by all copies)
    shared: bool  # whether every copy's node runs in the same process
    out_edges: int = 0


class _Model:
    def __init__(
        self, plan: Plan, profile: Profile, executor: str, workers: int | None = None
    ) -> None:
        self.executor = executor
        self.workers = workers
        # A camera's frames stay inside its worker when workers are bounded.
        self.hop = HOP_CPU_S["threads" if workers else executor]
        self.nodes: list[_NodeModel] = []
        for name in plan.order:
            node = plan.nodes[name]
            cost: NodeCost | None = profile.nodes.get(name)
            if cost is None:
                declared = node.options.cost if node.kind != "source" else None
                seconds = float(declared) if isinstance(declared, int | float) else 0.0
                cost = NodeCost(node.kind, 0, seconds, seconds, None)
            wall = max(cost.wall_s, 1e-7)
            cpu = cost.cpu_s if cost.cpu_s is not None else wall
            gil = cost.gil if cost.gil is not None else UNKNOWN_GIL
            # A source: what it delivered in the profile (frames skipped), else its header.
            fps = (cost.fps or _source_fps(node.obj)) if node.kind == "source" else node.options.fps
            group, shared = _placement(node, executor)
            self.nodes.append(
                _NodeModel(
                    name,
                    node.kind,
                    list(node.inputs),
                    fps,
                    wall,
                    cpu,
                    min(1.0, gil),
                    group,
                    shared,
                    len(plan.outputs_of(name)),
                )
            )
        self.joins = {name: plan.nodes[name].options.join for name in plan.order}
        # workers=: one copy's connected parts outside the caller, placed as a run places them.
        self.parts = connected(plan, [n.name for n in self.nodes if not n.shared])

    def _rates(self, stretch: float) -> dict[str, tuple[float, float, float, float]]:
        """Per node: (offered, requested, processed, age seconds) at this stretch factor."""
        rates: dict[str, tuple[float, float, float, float]] = {}
        for n in self.nodes:
            time = n.wall / stretch
            if n.kind == "source":
                wanted = n.fps or 30.0
                rates[n.name] = (wanted, wanted, min(wanted, 1.0 / time), time)
                continue
            ups = [rates[i] for i in n.inputs]
            # ``each`` processes every input's frames; ``merge``/``latest`` the first input's.
            offered = sum(u[2] for u in ups) if self.joins[n.name] == "each" else ups[0][2]
            requested = min(n.fps, offered) if n.fps else offered
            processed = min(requested, 1.0 / time)
            rates[n.name] = (offered, requested, processed, max(u[3] for u in ups) + time)
        return rates

    def _loads(self, streams: int, stretch: float) -> tuple[float, float, float]:
        """CPU cores in use, the busiest process's GIL load, and the one-thread load (inline)."""
        rates = self._rates(stretch)
        cpu, serial = 0.0, 0.0
        gil: dict[str, float] = {}
        pooled: dict[str, float] = {}  # GIL time per copy of nodes placed on ``workers``
        for n in self.nodes:
            processed = rates[n.name][2]
            cpu += processed * (n.cpu + self.hop * n.out_edges)
            serial += processed * n.wall
            per_copy = processed * n.gil * n.wall
            if self.workers and not n.shared:
                pooled[n.name] = per_copy
            else:
                gil[n.group] = gil.get(n.group, 0.0) + (
                    per_copy * streams if n.shared else per_copy
                )
        if self.workers and pooled:
            # Whole cameras go to one worker each, as ``group_workers`` places them.
            units = [list(part) for _ in range(streams) for part in self.parts]
            loads = [0.0] * self.workers
            for worker, unit in spread(units, self.workers):
                loads[worker] += sum(pooled[name] for name in unit)
            gil["workers"] = max(loads)
        return cpu * streams, max(gil.values(), default=0.0), serial * streams

    def _fits(self, streams: int, stretch: float, cores: float) -> bool:
        cpu, gil, serial = self._loads(streams, stretch)
        if self.executor == "inline":
            return serial <= 1.0 + 1e-9
        return cpu <= cores + 1e-9 and gil <= 1.0 + 1e-9

    def forecast(self, streams: int, cores: float) -> Forecast:
        stretch = 1.0
        if not self._fits(streams, 1.0, cores):
            low, high = 1e-6, 1.0
            for _ in range(60):
                middle = (low + high) / 2
                if self._fits(streams, middle, cores):
                    low = middle
                else:
                    high = middle
            stretch = low
        rates = self._rates(stretch)
        ideal = self._rates(1e9)  # no node ever busy: what each node asks for
        cpu, gil, _ = self._loads(streams, stretch)
        nodes = {}
        for n in self.nodes:
            _, _, processed, age = rates[n.name]
            requested = ideal[n.name][1]
            # Frames the node would take but cannot keep up with (not those its fps= skips).
            drop = 1.0 - processed / requested if requested else 0.0
            nodes[n.name] = NodeForecast(
                n.name,
                n.kind,
                requested,
                processed,
                max(0.0, drop),
                age * 1000.0,
                processed * n.cpu,
            )
        return Forecast(streams, nodes, cpu, gil, 1.0 / stretch)


def _source_fps(source: Any) -> float | None:
    fps = getattr(source, "fps", None)
    try:
        return float(fps) if fps else None
    except (TypeError, ValueError):
        return None


def _placement(node: Any, executor: str) -> tuple[str, bool]:
    """The process a node runs in: (group, whether all copies share it)."""
    override = node.options.executor
    if executor in ("inline", "threads") and override != "processes":
        return "main", True
    if getattr(node.obj, "in_caller_process", False) or override in ("threads", "inline"):
        return "main", True
    return node.name, False


def parse_streams(text: str) -> list[int]:
    """``"1..16"``, ``"1,2,4,8"`` or ``"8"`` -> the stream counts."""
    counts: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if ".." in part:
                first, last = (int(v) for v in part.split("..", 1))
                counts.extend(range(first, last + 1))
            elif part:
                counts.append(int(part))
    except ValueError:
        raise GraphError(f"streams: expected counts like 1..16 or 1,2,4,8, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise GraphError(f"streams: expected counts >= 1, like 1..16 or 1,2,4,8, got {text!r}")
    return sorted(set(counts))
