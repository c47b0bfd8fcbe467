"""Adding and removing sources on a running pipeline."""

from __future__ import annotations

import time

import pytest

import framepipe as fp


def wait_for(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def processed(pipe: fp.Pipeline, name: str) -> int:
    stats = pipe.stats()
    return stats[name].processed if name in stats else 0


def test_add_and_remove_a_source_while_running(executor: str) -> None:
    pipe = fp.Pipeline()
    cam1 = pipe.source("cam1", fp.sources.Synthetic(width=64, height=48, fps=30))
    who = pipe.stage("who", lambda f: f.source, after=cam1)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=who)
    run = pipe.start(mode="realtime", executor=executor)
    try:
        wait_for(lambda: processed(pipe, "who") >= 10)
        pipe.add_source("cam2", fp.sources.Synthetic(width=32, height=32, fps=30))
        wait_for(lambda: processed(pipe, "cam2") >= 10)
        pipe.remove_source("cam1")
        wait_for(lambda: pipe.stats()["cam1"].state == "ended")
        before = processed(pipe, "cam2")
        wait_for(lambda: processed(pipe, "cam2") >= before + 10)
        assert run.running
    finally:
        run.stop()
    sources = {key[0] for key in collect.results["who"]}
    assert sources == {"cam1", "cam2"}
    assert run.stats["cam2"].processed >= 20


def test_removing_the_last_source_ends_the_run(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=30))
    pipe.stage("a", lambda f: f.index, after=cam)
    run = pipe.start(mode="realtime", executor=executor)
    wait_for(lambda: processed(pipe, "a") >= 5)
    pipe.remove_source("cam")
    assert run.wait(30)
    assert run.stats["a"].state == "ended"


def test_remove_unknown_source_is_an_error() -> None:
    pipe = fp.Pipeline()
    pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=30, frames=1))
    try:
        pipe.remove_source("nope")
    except fp.GraphError as exc:
        assert "no source named 'nope'" in str(exc)
    else:
        raise AssertionError("expected GraphError")


def who_and_pid(frame: fp.Frame) -> tuple[str, int]:
    import os

    return frame.source, os.getpid()


def test_a_removed_source_can_come_back_under_its_name(executor: str) -> None:
    """Remove a camera and add one with the same name: it runs, nothing fails (the
    processes run stopped with FramepipeError("'host:?': 3") at cadd68f)."""
    pipe = fp.Pipeline()
    one = pipe.source("cam1", fp.sources.Synthetic(width=64, height=48, fps=30))
    two = pipe.source("cam2", fp.sources.Synthetic(width=64, height=48, fps=30))
    pipe.sink("out", fp.sinks.Collect(), after=pipe.stage("who", who_and_pid, after=[one, two]))
    run = pipe.start(mode="realtime", executor=executor)
    try:
        wait_for(lambda: processed(pipe, "cam2") >= 10)
        pipe.remove_source("cam2")
        wait_for(lambda: pipe.stats()["cam2"].state == "ended")
        pipe.add_source("cam2", fp.sources.Synthetic(width=32, height=32, fps=30), to="who")
        wait_for(lambda: pipe.stats()["cam2"].state == "running")
        before = processed(pipe, "who")
        wait_for(lambda: processed(pipe, "who") >= before + 20)
        assert run.running and run.errors == []
    finally:
        run.stop()
    assert run.errors == []


def test_with_workers_a_removed_camera_leaves_the_others_running() -> None:
    """``workers=``: removing one camera ends only that camera, not the worker process
    that also runs another (the whole worker stopped at cadd68f)."""
    pipe = fp.Pipeline()
    for name in ("cam1", "cam2"):
        pipe.source(name, fp.sources.Synthetic(width=64, height=48, fps=30))
    who = pipe.stage("who", who_and_pid, after=["cam1", "cam2"])
    pipe.sink("out", fp.sinks.Collect(), after=who)
    run = pipe.start(mode="realtime", executor="processes", workers=1)
    try:
        wait_for(lambda: processed(pipe, "cam1") >= 10)
        pids = run.worker_pids()
        assert pids["cam1"] == pids["cam2"] == pids["who"]  # one worker
        pipe.remove_source("cam2")
        wait_for(lambda: pipe.stats()["cam2"].state == "ended")
        before = processed(pipe, "cam1")
        wait_for(lambda: processed(pipe, "cam1") >= before + 20)
        assert pipe.stats()["who"].state == "running"
        # A camera added now joins the worker of the stage it feeds.
        pipe.add_source("cam3", fp.sources.Synthetic(width=32, height=32, fps=30), to="who")
        wait_for(lambda: processed(pipe, "cam3") >= 10)
        assert run.worker_pids()["cam3"] == pids["who"]
        assert run.errors == []
    finally:
        run.stop()
    assert run.errors == []


def test_a_hot_add_that_fails_leaves_nothing_behind() -> None:
    """A source the run could not take is not in the pipeline afterwards: the next run
    does not run it (it did at cadd68f)."""
    collect = fp.sinks.Collect()
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=30, frames=300))
    pipe.sink("out", collect, after=pipe.stage("who", lambda f: f.source, after=cam))
    run = pipe.start(mode="replay")
    try:
        with pytest.raises(fp.GraphError, match="a replay cannot add sources"):
            pipe.add_source("extra", fp.sources.Synthetic(width=32, height=32, frames=5))
    finally:
        run.stop()
    assert "extra" not in pipe.nodes
    assert pipe.nodes["who"].inputs == ["cam"]
    result = pipe.run(mode="offline", executor="threads")
    assert "extra" not in result.stats and len(collect.results["who"]) == 300
