"""What each node of a pipeline costs per frame on this machine: ``run.profile()``.

A profile feeds replays (``pipe.run(mode="replay", profile=...)``) and the
capacity planner. It is saved as JSON::

    {"format": "framepipe-profile", "version": 1,
     "machine": {"cpus": 2, "platform": "Linux-...", "python": "3.12.3"},
     "executor": "threads", "mode": "replay",
     "nodes": {"motion": {"kind": "stage", "frames": 150, "wall_s": 0.0041,
                          "cpu_s": 0.0039, "gil": 0.3, "fps": 15.0}, ...}}

``wall_s`` and ``cpu_s`` are seconds per frame (for a source: to decode one
frame); ``gil`` the share of ``cpu_s`` spent holding the GIL (``null`` when
not measured); ``fps`` the rate the node asks for (``null``: every frame), or
for a source in a replay, the rate it delivered (after skipping frames no
consumer takes).
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._errors import FramepipeError

FORMAT = "framepipe-profile"
VERSION = 1


@dataclass(frozen=True, slots=True)
class NodeCost:
    """One node's measured cost per frame."""

    kind: str
    frames: int
    wall_s: float
    cpu_s: float | None = None
    gil: float | None = None
    fps: float | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    """Per-node costs of a pipeline on one machine. See the module docstring."""

    nodes: dict[str, NodeCost]
    machine: dict[str, Any] = field(default_factory=lambda: this_machine())
    executor: str = "threads"
    mode: str = "replay"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "machine": dict(self.machine),
            "executor": self.executor,
            "mode": self.mode,
            "nodes": {name: asdict(cost) for name, cost in self.nodes.items()},
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the profile as JSON; returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Profile:
        """Read a profile saved by ``save`` (or ``framepipe profile``)."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise FramepipeError(f"profile {os.fspath(path)!r}: cannot read it: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise FramepipeError(f"profile {os.fspath(path)!r}: not JSON: {exc}") from exc
        return cls.from_dict(data, where=os.fspath(path))

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "profile") -> Profile:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise FramepipeError(
                f'{where}: not a framepipe profile (expected "format": {FORMAT!r}; '
                f"make one with run.profile().save(path) or `framepipe profile FILE`)"
            )
        nodes: dict[str, NodeCost] = {}
        for name, entry in (data.get("nodes") or {}).items():
            try:
                nodes[name] = NodeCost(**entry)
            except TypeError as exc:
                raise FramepipeError(f"{where}: node {name!r}: {exc}") from exc
            if not (isinstance(nodes[name].wall_s, int | float) and nodes[name].wall_s >= 0):
                raise FramepipeError(
                    f"{where}: node {name!r}: wall_s must be seconds >= 0, "
                    f"got {nodes[name].wall_s!r}"
                )
        return cls(
            nodes,
            dict(data.get("machine") or {}),
            str(data.get("executor", "threads")),
            str(data.get("mode", "replay")),
        )

    def __str__(self) -> str:
        lines = [f"{'node':<16} {'kind':<7} {'frames':>7} {'wall ms':>9} {'cpu ms':>9} {'gil':>5}"]
        for name, cost in self.nodes.items():
            cpu = f"{cost.cpu_s * 1000:9.2f}" if cost.cpu_s is not None else f"{'-':>9}"
            gil = f"{cost.gil:5.2f}" if cost.gil is not None else f"{'-':>5}"
            lines.append(
                f"{name:<16} {cost.kind:<7} {cost.frames:>7} {cost.wall_s * 1000:9.2f} {cpu} {gil}"
            )
        return "\n".join(lines)


def profile_of(plan: Any, stats: Any, executor: Any, executor_name: str) -> Profile:
    """The profile of a finished run: measured costs from a replay, else median latencies."""
    measured = getattr(executor, "measured", None)
    nodes: dict[str, NodeCost] = {}
    for name, node_stats in stats.items():
        node = plan.nodes.get(name)
        if node is not None and node.kind == "source":
            # What it delivered: less than the file's rate when it skipped frames.
            fps = node_stats.fps if measured is not None and node_stats.fps else None
        else:
            fps = node.options.fps if node is not None else None
        m = measured.get(name) if measured is not None else None
        if m is not None and m.frames:  # a nested pipeline's inner rows are not measured apart
            nodes[name] = NodeCost(
                node_stats.kind,
                m.frames,
                round(m.wall / m.frames, 7),
                round(m.cpu / m.frames, 7),
                executor.gil_share(name),
                fps,
            )
        else:
            nodes[name] = NodeCost(
                node_stats.kind,
                node_stats.processed,
                node_stats.latency_ms["p50"] / 1000.0,
                None,
                None,
                fps,
            )
    return Profile(nodes, executor=executor_name, mode=plan.mode)


def this_machine() -> dict[str, Any]:
    """What a profile says about where it was measured."""
    return {
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
