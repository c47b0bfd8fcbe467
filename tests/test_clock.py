"""Pacing and ages on an injected clock: real-time behaviour tested without sleeping."""

from __future__ import annotations

import time

import pytest

import framepipe as fp
from framepipe.testing import FakeClock


@pytest.mark.parametrize("executor", ["inline", "threads"])
def test_a_file_is_paced_at_media_time_on_the_runs_clock(executor: str) -> None:
    clock = FakeClock()
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=32, height=24, fps=30, frames=900))
    stamp = pipe.stage("stamp", lambda f: f.timestamp, after=cam, policy="block")
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=stamp, policy="block")
    began = time.monotonic()
    run = pipe.run(mode="realtime", executor=executor, clock=clock)
    assert time.monotonic() - began < 20  # 30 s of media, never slept
    assert run.stats["cam"].dropped_by.get("late", 0) == 0
    stamps = collect.results["stamp"]
    assert len(stamps) == 900
    assert stamps[899] - stamps[0] == pytest.approx(899 / 30, abs=1e-6)
    assert clock.monotonic() == pytest.approx(899 / 30, abs=1e-6)


def test_max_age_reads_the_runs_clock() -> None:
    clock = FakeClock()

    def slow(frame: fp.Frame) -> int:
        clock.advance(0.2 if frame.index % 2 else 0.0)  # odd frames "take" 200 ms
        return frame.index

    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=32, height=24, fps=30, frames=20))
    work = pipe.stage("work", slow, after=cam)
    late = pipe.stage("fresh", lambda f: f.index, after=work, max_age=100)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=late)
    run = pipe.run(mode="offline", executor="inline", clock=clock)
    assert sorted(collect.results["fresh"]) == list(range(0, 20, 2))
    assert run.stats["fresh"].dropped_by["age"] == 10


def test_a_fake_clock_only_goes_forward() -> None:
    clock = FakeClock(start=100.0, autojump=False)
    assert clock.time() == 100.0
    clock.advance(2.5)
    assert clock.time() == 102.5 and clock.monotonic() == 2.5
    with pytest.raises(ValueError, match="only goes forward"):
        clock.advance(-1)
