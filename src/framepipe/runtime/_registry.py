"""The executors framepipe knows, by name: the one list every validator reads.

``Pipeline.run(executor=...)``, a node's ``executor=`` option, pipeline files
and ``framepipe run --executor`` all check names here, so an executor added
with ``register`` (a Ray backend) is accepted everywhere at once. Entries name
their class as ``"module:Class"``; it is imported on first use.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import GraphError

if TYPE_CHECKING:
    from .._graph import Plan
    from ._executor import Executor


@dataclass(frozen=True, slots=True)
class ExecutorEntry:
    name: str
    target: str  # "module:Class", called as Class(plan, **options)
    summary: str
    #: Runs nodes in other processes: a node asking for it moves the whole run to it.
    out_of_process: bool = False
    #: The one mode it runs (``replay``), which always runs on it; None: any mode.
    mode: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


_ENTRIES: dict[str, ExecutorEntry] = {}


def register(
    name: str,
    target: str,
    summary: str,
    *,
    out_of_process: bool = False,
    mode: str | None = None,
    **options: Any,
) -> None:
    """Make ``name`` a valid executor everywhere (an existing name is replaced)."""
    _ENTRIES[name] = ExecutorEntry(name, target, summary, out_of_process, mode, dict(options))


def executor_names(*, for_nodes: bool = False) -> tuple[str, ...]:
    """Every executor's name; ``for_nodes``: those a node's ``executor=`` may name
    (not the ones that run a mode of their own)."""
    return tuple(name for name, entry in _ENTRIES.items() if not (for_nodes and entry.mode))


def check_executor(value: Any, *, what: str, for_nodes: bool = False) -> str:
    """``value`` if it names an executor; else a ``GraphError`` naming ``what``."""
    names = executor_names(for_nodes=for_nodes)
    if isinstance(value, str) and value in names:
        return value
    close = difflib.get_close_matches(str(value), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise GraphError(f"{what} must be one of {names}, got {value!r}{hint}")


def resolve_mode(mode: str, executor: str) -> tuple[str, str]:
    """``(mode, executor)`` for a run: a mode with an executor of its own runs on
    it, and that executor runs only its mode (``"auto"`` becomes it)."""
    own = _ENTRIES[check_executor(executor, what="executor")].mode
    if own is not None:
        if mode not in ("auto", own):
            raise GraphError(f"executor {executor!r} runs mode={own!r} only, not mode={mode!r}")
        return own, executor
    for entry in _ENTRIES.values():
        if entry.mode is not None and entry.mode == mode:
            return mode, entry.name
    return mode, executor


def create(name: str, plan: Plan, **options: Any) -> Executor:
    """A new executor of kind ``name`` for ``plan`` (``options``: this run's, as
    ``workers=``).

    A node that asks for an out-of-process executor moves the run to it (the
    other nodes keep theirs through their placement there).
    """
    name = resolve_mode(plan.mode, name)[1]
    entry = _ENTRIES[check_executor(name, what="executor")]
    # An out-of-process run keeps its executor, and so does a mode of its own (replay).
    if not entry.out_of_process and not entry.mode:
        wanted = {node.options.executor or name for node in plan.nodes.values()} - {name}
        for other in sorted(wanted):
            if other in _ENTRIES and _ENTRIES[other].out_of_process:
                entry = _ENTRIES[other]
    module, _, attr = entry.target.partition(":")
    factory = getattr(importlib.import_module(module), attr)
    executor: Executor = factory(plan, **entry.options, **options)
    return executor


register(
    "inline",
    "framepipe.runtime._executor:LocalExecutor",
    "one thread, one frame at a time through the graph: deterministic, for debugging",
    threaded=False,
)
register(
    "threads",
    "framepipe.runtime._executor:LocalExecutor",
    "a thread per node in the caller's process",
    threaded=True,
)
register(
    "processes",
    "framepipe.runtime._processes:ProcessExecutor",
    "a process per node, frames in shared memory",
    out_of_process=True,
)
register(
    "ray",
    "framepipe.runtime._ray:RayExecutor",
    "a host per machine of a Ray cluster, placed by resources= (needs framepipe[ray])",
    out_of_process=True,
)
register(
    "replay",
    "framepipe.runtime._replay:ReplayExecutor",
    "file sources played as live cameras on a simulated clock, each node costing its cost=",
    mode="replay",
)
