"""The contract between a sink and the worker that runs it."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._frame import Frame


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What a running sink may know about where it runs.

    Set as ``sink.context`` by the worker before ``open()``. ``inputs`` are the
    names of the nodes feeding the sink; ``sources`` the names of the sources
    upstream of it when the run started.

    Sinks that run in the caller's process (``in_caller_process = True``) also
    get live views of the whole run: ``pipeline_stats()`` returns the current
    ``RunStats`` and ``pipeline_graph()`` a JSON-friendly description of the
    nodes and edges. Elsewhere both are ``None``.
    """

    name: str
    mode: str
    inputs: tuple[str, ...]
    sources: tuple[str, ...]
    logger: logging.Logger
    pipeline_stats: Callable[[], Any] | None = None
    pipeline_graph: Callable[[], dict[str, Any]] | None = None
    on_drop: Callable[[int], None] | None = None
    #: ``packets(source)``: the source's ``PacketRing`` in this process, if it keeps one.
    packets: Callable[[str], Any] | None = None

    def drop(self, count: int = 1) -> None:
        """Count ``count`` items the sink gave up (a full buffer): ``buffer`` drops."""
        if self.on_drop is not None:
            self.on_drop(count)


class Sink(ABC):
    """Where results leave the pipeline: a file, a server, a callback.

    Like sources, sinks are picklable descriptions: ``open()`` runs inside the
    worker and acquires files or connections; ``write(frame)`` is called for
    every frame that reaches the sink; ``close()`` is called exactly once at
    the end (normal end, ``stop()``, Ctrl-C, SIGTERM, or a failure elsewhere) and
    must flush and finalize what was written. A ``close()`` that raises fails
    the run whatever the sink's ``on_error``: an output that was not finalized
    is never a success.

    The borrow rule: ``frame.image`` and the arrays in ``frame.results`` are
    valid during ``write()`` only (their memory is reused afterwards), and are
    read-only. A sink that keeps data past ``write()`` keeps copies
    (``fp.sinks.Collect`` does).

    A sink whose results the caller reads after the run (``Collect``) returns
    them from ``final_state()`` in the worker; the runtime hands that value to
    ``adopt_final_state()`` on the caller's own instance, whatever the executor.
    """

    #: Set by the worker before ``open()``.
    context: SinkContext
    #: Run this sink in the caller's process even under ``executor="processes"``
    #: (callbacks that touch the caller's objects).
    in_caller_process: bool = False
    #: Whether ``write`` reads ``frame.image`` (see ``Stage.reads_pixels``).
    reads_pixels: bool = True
    #: The default ``join=`` when the sink has several inputs: ``"merge"`` writes each
    #: frame once with all its results; a sink that shows each input apart (the web
    #: view) says ``"each"``, so a join never hides an input from it.
    join: str = "merge"
    #: Seconds of its sources' encoded video the sink cuts from (``Clips``): the sources
    #: keep that much in a ``PacketRing``, and the sink runs in their process.
    encoded_history_s: float | None = None
    #: Names of the nodes whose results the sink reads by name (``Clips(when=...)``): the
    #: plan fails with a ``GraphError`` when one is not upstream of the sink.
    results_read: tuple[str, ...] = ()

    def open(self) -> None:
        """Acquire resources. Called once, inside the worker."""

    @abstractmethod
    def write(self, frame: Frame) -> None:
        """Consume one frame; its ``results`` hold the upstream outputs."""

    def close(self) -> None:
        """Flush and finalize. Called exactly once at the end."""

    def write_record(self, record: dict[str, Any]) -> None:
        """Take one JSON-ready record that is not a frame: an event of the run
        (``pipe.events(name, sink)``). Sinks that write records override it."""
        raise NotImplementedError(f"{type(self).__name__} does not take records")

    @classmethod
    def takes_records(cls) -> bool:
        """Whether this sink can be an event sink (it overrides ``write_record``)."""
        return cls.write_record is not Sink.write_record

    def final_state(self) -> Any:
        """What the caller's instance needs after the run; called in the worker after close()."""
        return None

    def adopt_final_state(self, state: Any) -> None:
        """Take the value ``final_state()`` returned in the worker."""

    def describe(self) -> dict[str, Any]:
        """A short JSON-friendly description for the web view."""
        return {"type": type(self).__name__}
