"""The helpers users test their own sources, stages and sinks with."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

import framepipe as fp
from framepipe.testing import make_frame, run_sink, run_source, run_stage


class Flaky(fp.sources.Source):
    """Reports a reconnect and a skipped frame, as a stream would."""

    live = True

    def open(self, ctx: fp.sources.SourceContext) -> Iterator[fp.sources.Captured]:
        ctx.set_state("connected")
        yield np.zeros((4, 4, 3), np.uint8), 0.0
        ctx.set_state("reconnecting")
        ctx.count_reconnect()
        ctx.set_state("connected")
        ctx.drop(2)
        yield np.ones((4, 4, 3), np.uint8), 0.1


def test_run_source_reports_states_and_drops() -> None:
    states: list[tuple[str, int]] = []
    drops: list[int] = []
    frames = run_source(Flaky(), on_state=lambda s, n: states.append((s, n)), on_drop=drops.append)
    assert [pts for _, pts in frames] == [0.0, 0.1]
    assert states == [("connected", 0), ("reconnecting", 0), ("reconnecting", 1), ("connected", 1)]
    assert drops == [2]


def test_run_stage_chains_results_and_run_sink_collects() -> None:
    frames = [make_frame(index=i) for i in range(3)]
    assert run_stage(lambda f: f.index * 2, frames, name="double") == [0, 2, 4]
    assert run_stage(lambda f: f.results["double"] + 1, frames, name="plus") == [1, 3, 5]
    sink = run_sink(fp.sinks.Collect(), frames, inputs=("plus",))
    assert sink.results == {"plus": {0: 1, 1: 3, 2: 5}}


class Lossy(fp.sinks.Sink):
    """Gives up every other frame, as a sink with a full buffer does."""

    def write(self, frame: fp.Frame) -> None:
        if frame.index % 2:
            self.context.drop()


def test_run_sink_reports_drops() -> None:
    drops: list[int] = []
    run_sink(Lossy(), [make_frame(index=i) for i in range(6)], on_drop=drops.append)
    assert drops == [1, 1, 1]
