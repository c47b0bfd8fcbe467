"""At a stop, each sink writes what its inbox already holds (bounded), and counts the rest."""

from __future__ import annotations

import time

import pytest

import framepipe as fp
from stages_for_tests import index_of


class SlowWriter(fp.sinks.Sink):
    """A sink that takes 30 ms a frame: its inbox is full when the run stops."""

    in_caller_process = True

    def __init__(self) -> None:
        self.written: list[int] = []

    def write(self, frame: fp.Frame) -> None:
        time.sleep(0.03)
        self.written.append(frame.index)


@pytest.mark.parametrize("how", ["inline", "threads", "processes"])
def test_a_sink_writes_what_it_holds_when_the_run_stops(how: str) -> None:
    """Its queue (16 frames by default) is written before it closes, not dropped (every
    queued frame was a ``stop`` drop at cadd68f)."""
    sink = SlowWriter()
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=60))
    pipe.sink("out", sink, after=pipe.stage("i", index_of, after=cam))
    run = pipe.start(mode="realtime", executor=how)
    deadline = time.monotonic() + 30
    while run.stats["out"].processed < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    run.stop()
    out = run.stats["out"]
    assert out.dropped_by.get("stop", 0) <= 2, out.dropped_by
    assert out.processed == len(sink.written)
    # What reached the sink is written or counted: nothing is lost silently.
    delivered = run.stats["i"].processed
    assert out.processed + sum(out.dropped_by.values()) == delivered, (delivered, out)
