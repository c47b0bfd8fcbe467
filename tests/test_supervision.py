"""The supervision rule: every failure reaches the caller once, named; every frame is counted."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

import framepipe as fp
from framepipe._policy import NodeOptions, Queue
from framepipe.runtime._inbox import Inbox, Ticket
from framepipe.stats import StatsRecorder
from framepipe.testing import make_frame


def small(frames: int = 20) -> fp.sources.Synthetic:
    return fp.sources.Synthetic(width=64, height=48, fps=30, frames=frames)


class AlwaysFails(fp.Stage):
    def process(self, frame: fp.Frame) -> None:
        raise ValueError("model output is garbage")


def test_restart_gives_up_after_its_limit_with_back_off(executor: str) -> None:
    from framepipe.runtime._runners import RESTART_BACKOFF, RESTART_LIMIT

    pipe = fp.Pipeline()
    cam = pipe.source("cam", small(200))
    pipe.stage("model", AlwaysFails(), after=cam, on_error="restart")
    began = time.monotonic()
    with pytest.raises(fp.StageError, match=r"'model'.*restart") as info:
        pipe.run(mode="offline", executor=executor)
    took = time.monotonic() - began
    assert isinstance(info.value.__cause__, ValueError)
    stats = pipe.stats()["model"]
    assert stats.restarts == RESTART_LIMIT
    assert stats.errors == RESTART_LIMIT + 1
    # back-off doubles: the run waited at least the sum of the waits before each restart
    assert took >= RESTART_BACKOFF * (2**RESTART_LIMIT - 1) * 0.9


def test_worker_logs_reach_the_callers_logging(
    executor: str, caplog: pytest.LogCaptureFixture
) -> None:
    def noisy(frame: fp.Frame) -> int:
        if frame.index == 3:
            raise ValueError("bad frame 3")
        return frame.index

    pipe = fp.Pipeline()
    cam = pipe.source("cam", small(10))
    pipe.stage("flaky", noisy, after=cam)
    with caplog.at_level(logging.ERROR):
        pipe.run(mode="offline", executor=executor)
    records = [r for r in caplog.records if "bad frame 3" in r.getMessage() + (r.exc_text or "")]
    assert records, caplog.text
    assert records[0].name == "framepipe.stage.flaky"
    assert "'flaky' failed" in caplog.text


def test_worker_logs_honour_the_callers_level(caplog: pytest.LogCaptureFixture) -> None:
    class Chatty(fp.Stage):
        def process(self, frame: fp.Frame) -> int:
            self.context.logger.info("frame %d seen", frame.index)
            self.context.logger.debug("too detailed")
            return frame.index

    pipe = fp.Pipeline()
    pipe.stage("chatty", Chatty(), after=pipe.source("cam", small(3)))
    with caplog.at_level(logging.INFO, logger="framepipe"):
        pipe.run(mode="offline", executor="processes")
    assert "frame 2 seen" in caplog.text
    assert "too detailed" not in caplog.text


def test_ticket_references_change_under_the_inbox_lock() -> None:
    """The inbox adds references under its lock (windows); a worker dropping its own
    reference takes the same lock, so no update is lost and a slot is freed exactly once."""
    inbox = Inbox("n", NodeOptions(), StatsRecorder("n", "stage"))
    inbox.add_edge(1, "up", Queue(4, "block"))
    released: list[int] = []
    inbox.put(1, make_frame(), lambda: released.append(1))
    item = inbox.take(0)
    assert isinstance(item, Ticket)  # a frame taken on its own is its own work item
    ticket = item
    with inbox._lock:
        ticket.refs += 1  # what the window code does
        dropper = threading.Thread(target=ticket.unref)
        dropper.start()
        dropper.join(0.2)
        assert dropper.is_alive(), "unref() changed the count without the inbox lock"
    dropper.join(10)
    assert ticket.refs == 1 and released == []
    item.done()
    assert released == [1]
    item.done()  # a second done() of the same item is a no-op
    assert released == [1]


# -- nested pipelines ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [
        {"window": (3, 1)},
        {"policy": "latest"},
        {"max_age": 100},
        {"on_error": "stop"},
        {"join": "merge"},
        {"executor": "processes"},
    ],
)
def test_nested_inner_options_that_cannot_apply_are_rejected(option: dict) -> None:
    inner = fp.Pipeline("inner")
    x = inner.input()
    inner.stage("mean", lambda f: float(f.image.mean()), after=x, **option)
    pipe = fp.Pipeline()
    cam = pipe.source("cam", small())
    with pytest.raises(fp.GraphError, match=f"'mean'.*{next(iter(option))}"):
        pipe.stage("measure", inner, after=cam)


def test_nested_stages_have_their_own_statistics_rows(executor: str) -> None:
    inner = fp.Pipeline("inner")
    x = inner.input()
    mean = inner.stage("mean", lambda f: float(f.image.mean()), after=x)
    inner.stage("half", lambda f: f.results["mean"] / 2, after=mean, fps=10)
    pipe = fp.Pipeline()
    cam = pipe.source("cam", small(30))
    measure = pipe.stage("measure", inner, after=cam)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=measure)
    run = pipe.run(mode="offline", executor=executor)
    stats = run.stats
    assert stats["measure/mean"].processed == 30
    assert stats["measure/half"].processed == 10
    assert stats["measure/half"].dropped_by.get("rate") == 20
    names = list(stats.to_dict())
    assert names.index("measure") < names.index("measure/mean") < names.index("out")
    assert len(collect.results["measure"]) == 30


# -- frames in flight at a stop --------------------------------------------------------------


def test_frames_in_flight_at_stop_are_counted(executor: str) -> None:
    """A sink writes what it holds at a stop for 2 s at most (``STOP_DRAIN``): 64 frames
    of 0.1 s each do not fit, and the rest is counted as ``stop`` drops."""

    def slow(frame: fp.Frame) -> None:
        time.sleep(0.1)

    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=100))
    tag = pipe.stage("tag", lambda f: f.index, after=cam)
    pipe.sink("slow", fp.sinks.Callback(slow), after=tag, policy=fp.Queue(64, "block"))
    run = pipe.start(mode="realtime", executor=executor)
    deadline = time.monotonic() + 30
    while run.stats["slow"].processed < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.5)  # the sink's queue fills up (100 fps in, 10 fps out)
    run.stop()
    stats = run.stats
    sink = stats["slow"]
    assert stats["tag"].processed == sink.processed + sum(sink.dropped_by.values())
    if executor != "inline":
        assert sink.dropped_by.get("stop", 0) > 0


def test_a_failing_node_still_ends_its_outputs(executor: str) -> None:
    """A framework failure in a node body (here a bad yield) still ends downstream."""

    class Bad(fp.sources.Source):
        def open(self, ctx):  # type: ignore[no-untyped-def]
            yield np.zeros((48, 64, 3), np.uint8), 0.0
            yield "not an image", 1.0

    pipe = fp.Pipeline()
    cam = pipe.source("cam", Bad())
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=pipe.stage("a", lambda f: f.index, after=cam))
    run = pipe.start(mode="offline", executor=executor)
    assert run.wait(60), "the run did not end"
    assert isinstance(run.errors[0], fp.SourceError)
    assert "'cam'" in str(run.errors[0])
    assert run.stats["out"].state == "ended"
