"""Which worker process runs which node, when ``workers=`` bounds their number.

Without ``workers=`` the processes executor gives every node a process of its
own. With many light nodes (one source and a motion stage per camera, times
sixteen cameras) that is many processes on few cores, and every frame is
copied into shared memory to reach the next process. ``workers=N`` runs the
nodes in N processes instead, keeping each connected part of the graph (a
camera and the stages it feeds) together, so its frames never leave the
process; parts are spread so that the workers get as many nodes each as can
be. When there are fewer parts than workers, the largest parts are split
into their nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .._graph import Node, Plan

T = TypeVar("T")


def group_workers(
    plan: Plan, place: Callable[[Node], str], workers: int, *, main: str
) -> dict[str, str]:
    """Node name -> host id: ``main`` where ``place`` says so, else one of ``workers`` hosts."""
    placement = {name: place(plan.nodes[name]) for name in plan.order}
    movable = [name for name in plan.order if placement[name] != main]
    for worker, unit in spread(connected(plan, movable), workers):
        for name in unit:
            placement[name] = f"worker-{worker}"
    return placement


def keep_with_sources(plan: Plan, placement: dict[str, str]) -> dict[str, str]:
    """A sink that cuts clips from its sources' encoded video (``Sink.encoded_history_s``)
    runs in their host, so the packets never cross a process boundary: it and the other
    sources upstream of it join the host of the first."""
    placement = dict(placement)
    for name in plan.order:
        node = plan.nodes[name]
        if node.kind != "sink" or getattr(node.obj, "encoded_history_s", None) is None:
            continue
        sources = plan.sources_upstream(name)
        if sources:
            host = placement[sources[0]]
            for moved in (*sources[1:], name):
                placement[moved] = host
    return placement


def spread(units: list[list[T]], workers: int) -> list[tuple[int, list[T]]]:
    """Which worker runs each unit (a connected part of the graph): the largest first,
    each to the worker with the fewest nodes so far; when there are fewer units than
    workers, the largest are split into their nodes. The planner forecasts with the
    same rule, so it predicts the placement a run gets."""
    units = [list(unit) for unit in units]
    while len(units) < workers and any(len(unit) > 1 for unit in units):
        largest = max(units, key=len)
        units.remove(largest)
        units.extend([item] for item in largest)
    loads = [0] * workers
    assigned = []
    for unit in sorted(units, key=len, reverse=True):  # stable: plan order among equals
        worker = loads.index(min(loads))
        loads[worker] += len(unit)
        assigned.append((worker, unit))
    return assigned


def connected(plan: Plan, names: list[str]) -> list[list[str]]:
    """The connected parts of the graph among ``names``, each in plan order."""
    keep = set(names)
    neighbours: dict[str, set[str]] = {name: set() for name in names}
    for edge in plan.edges:
        if edge.upstream in keep and edge.downstream in keep:
            neighbours[edge.upstream].add(edge.downstream)
            neighbours[edge.downstream].add(edge.upstream)
    seen: set[str] = set()
    parts = []
    for name in names:
        if name in seen:
            continue
        part, todo = set(), [name]
        while todo:
            current = todo.pop()
            if current in part:
                continue
            part.add(current)
            todo.extend(neighbours[current] - part)
        seen |= part
        parts.append([n for n in names if n in part])
    return parts
