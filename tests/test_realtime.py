"""Real-time mode: slow consumers never slow fast ones, and always get fresh frames."""

from __future__ import annotations

import time

import pytest

import framepipe as fp
from stages_for_tests import Sleepy, Spin


def test_slow_consumer_does_not_slow_the_fast_one(executor: str) -> None:
    if executor == "inline":
        pytest.skip("inline runs every node in one thread: nothing runs beside a slow stage")
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=320, height=240, fps=30))
    fast = pipe.stage("fast", lambda f: f.index, after=cam)
    slow = pipe.stage("slow", Sleepy(0.5), after=cam)
    pipe.sink("out", fp.sinks.Collect(), after=[fast, slow])
    run = pipe.run(mode="realtime", executor=executor, duration=4)
    stats = run.stats
    # Generous slack: the machine is shared with other tests.
    assert stats["fast"].fps >= 30 * 0.8, stats
    assert stats["fast"].processed >= 30 * 4 * 0.75, stats
    assert 3 <= stats["slow"].processed <= 9, stats
    # the slow consumer starts on the newest frame: never seconds old
    assert stats["slow"].age_ms["p50"] <= 100, stats
    assert stats["slow"].age_ms["max"] <= 250, stats
    # and what it skipped is counted
    assert stats["slow"].dropped_by["policy"] >= 80, stats


def test_cpu_bound_slow_stage_in_its_own_process() -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=640, height=360, fps=30))
    fast = pipe.stage("fast", lambda f: f.index, after=cam)
    slow = pipe.stage("slow", Spin(0.5), after=cam)
    pipe.sink("out", fp.sinks.Collect(), after=[fast, slow])
    run = pipe.run(mode="realtime", executor="processes", duration=4)
    assert run.stats["fast"].fps >= 30 * 0.8, run.stats
    assert run.stats["slow"].age_ms["p50"] <= 100, run.stats


def test_realtime_paces_file_like_sources(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=20, frames=30))
    collect = fp.sinks.Collect()
    a = pipe.stage("a", lambda f: time.time(), after=cam)
    pipe.sink("out", collect, after=a)
    began = time.monotonic()
    pipe.run(mode="realtime", executor=executor)
    took = time.monotonic() - began
    times = sorted(collect.results["a"].values())
    assert times[-1] - times[0] == pytest.approx(29 / 20, abs=0.3)
    assert took >= 1.3


def test_max_age_drops_stale_frames(executor: str) -> None:
    if executor == "inline":
        pytest.skip("inline: frames never wait behind another thread")
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=50))
    slow = pipe.stage(
        "slow", Sleepy(0.2), after=cam, policy=fp.Queue(10, "drop_newest"), max_age=100
    )
    pipe.sink("out", fp.sinks.Collect(), after=slow)
    run = pipe.run(mode="realtime", executor=executor, duration=2.5)
    stats = run.stats["slow"]
    assert stats.dropped_by["age"] > 0, stats
    assert stats.age_ms["max"] <= 100 + 60, stats  # checked when processing starts


def test_queue_policies_count_what_they_drop(executor: str) -> None:
    if executor == "inline":
        pytest.skip("inline: a queue never fills while its consumer waits")
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=50))
    oldest = pipe.stage("oldest", Sleepy(0.1), after=cam, policy=fp.Queue(3, "drop_oldest"))
    newest = pipe.stage("newest", Sleepy(0.1), after=cam, policy=fp.Queue(3, "drop_newest"))
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=[oldest, newest], join="each")  # not waiting to merge
    run = pipe.run(mode="realtime", executor=executor, duration=2.5)
    for name in ("oldest", "newest"):
        assert run.stats[name].dropped_by["policy"] > 30, run.stats
    # drop_oldest keeps recent frames; drop_newest keeps the first ones it queued
    late_oldest = max(collect.results["oldest"])
    late_newest = max(collect.results["newest"])
    assert late_oldest > late_newest


def test_live_stats_while_running(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=30))
    pipe.stage("a", lambda f: f.index, after=cam)
    with pipe.start(mode="realtime", executor=executor) as run:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if pipe.stats().get("a") and pipe.stats()["a"].processed >= 15:
                break
            time.sleep(0.05)
        live = pipe.stats()
        assert live["a"].processed >= 15
        assert live["a"].state == "running"
        assert run.running
    assert not run.running
    assert run.stats["a"].state == "ended"
    assert "processed" in str(run.stats)


def test_a_paused_consumer_process_pins_no_memory() -> None:
    """A consumer that stops reading (its process paused) must not make the source pile
    frames, and the shared memory under them, into its socket."""
    import os
    import signal

    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=640, height=480, fps=60))
    fast = pipe.stage("fast", lambda f: f.index, after=cam)
    pipe.sink("out", fp.sinks.Collect(), after=fast)
    run = pipe.start(mode="realtime", executor="processes")
    try:
        deadline = time.monotonic() + 30
        while pipe.stats().get("fast") is None or pipe.stats()["fast"].processed < 30:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        prefix = run._executor.prefix  # type: ignore[union-attr]
        pid = run.worker_pids()["fast"]
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(3)  # 180 frames the consumer cannot read
            held = sum(
                os.path.getsize(f"/dev/shm/{n}")
                for n in os.listdir("/dev/shm")
                if n.startswith(prefix)
            )
        finally:
            os.kill(pid, signal.SIGCONT)
        assert held < 40 * 640 * 480 * 3, f"{held / 2**20:.0f} MiB of frames pinned"
        while pipe.stats()["fast"].dropped_by["policy"] < 100:
            assert time.monotonic() < deadline + 10
            time.sleep(0.05)
    finally:
        run.stop()
