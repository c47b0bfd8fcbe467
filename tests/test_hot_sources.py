"""Adding and removing sources on a running pipeline."""

from __future__ import annotations

import time

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
