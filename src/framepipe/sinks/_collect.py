"""Sinks that hand results back to the caller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._frame import Frame
from ._base import Sink


def detach(value: Any) -> Any:
    """An owned copy of every array in ``value`` (through dicts, lists and tuples).

    The borrow rule: arrays a sink receives may be views of memory that is
    reused once ``write()`` returns (shared-memory slots, a stage's buffer), so
    whatever a sink keeps past ``write()`` it copies first.
    """
    if isinstance(value, np.ndarray):
        return np.array(value, copy=True)
    if isinstance(value, dict):
        return {k: detach(v) for k, v in value.items()}
    if isinstance(value, list):
        return [detach(v) for v in value]
    if isinstance(value, tuple):
        items = [detach(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value


class Collect(Sink):
    """Keep every result that reaches the sink, readable after the run.

    ``results[node][frame.index] = value`` for each input node. When more than
    one source feeds the sink, keys are ``(source, index)`` so frames of
    different sources never overwrite each other (a source added while running
    switches the keys of what was already collected too). ``collect.results`` is filled
    in the caller's process whatever the executor. Arrays are kept as owned copies
    (see ``detach``), never as views of a frame's memory.

    Example::

        collect = fp.sinks.Collect()
        pipe.sink("results", collect, after=[detect, preview])
        pipe.run()
        collect.results["detect"][0]
    """

    reads_pixels = False  # results only

    def __init__(self) -> None:
        self.results: dict[str, dict[Any, Any]] = {}
        #: Records that are not frames (as an event sink: ``pipe.events``), in order.
        self.records: list[dict[str, Any]] = []

    def open(self) -> None:
        self.results = {name: {} for name in self.context.inputs}
        self.records = []
        self._by_source = len(self.context.sources) > 1
        self._only_source = self.context.sources[0] if self.context.sources else None

    def write(self, frame: Frame) -> None:
        if not self._by_source and frame.source != self._only_source:
            if self._only_source is None:
                self._only_source = frame.source
            else:
                self._by_source = True
                self.results = {
                    node: {(self._only_source, i): v for i, v in values.items()}
                    for node, values in self.results.items()
                }
        key: Any = (frame.source, frame.index) if self._by_source else frame.index
        for name in self.context.inputs:
            if name in frame.results:
                self.results.setdefault(name, {})[key] = detach(frame.results[name])

    def write_record(self, record: dict[str, Any]) -> None:
        self.records.append(detach(record))

    def final_state(self) -> Any:
        return self.results

    def adopt_final_state(self, state: Any) -> None:
        self.results = state


class Callback(Sink):
    """Call ``fn(frame)`` for every frame that reaches the sink.

    Runs in the caller's process under every executor, so the callback may
    touch the caller's objects. Keep it quick: a slow callback only slows
    this sink (its inbox drops or blocks by its policy), never the stages.
    """

    in_caller_process = True

    def __init__(self, fn: Callable[[Frame], Any]) -> None:
        self.fn = fn

    def write(self, frame: Frame) -> None:
        self.fn(frame)
