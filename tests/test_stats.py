"""Statistics: counters, percentiles, the printed table."""

from __future__ import annotations

import pickle
import time

import pytest

import framepipe as fp
from framepipe.stats import RunStats, StatsRecorder


def test_snapshot_counts_percentiles_and_reasons() -> None:
    rec = StatsRecorder("detect", "stage")
    for ms in range(1, 101):
        rec.record(ms / 1000, age=ms / 1000, wait=0.0)
    rec.drop("policy", 3)
    rec.drop("rate")
    rec.error()
    snap = rec.snapshot()
    assert snap.processed == 100
    assert snap.dropped == 5 and snap.dropped_by["policy"] == 3 and snap.dropped_by["error"] == 1
    assert snap.latency_ms["p50"] == 50.5 and snap.latency_ms["max"] == 100.0
    assert 95 <= snap.latency_ms["p95"] <= 96
    assert pickle.loads(pickle.dumps(snap)) == snap


def test_final_fps_covers_the_processing_span() -> None:
    rec = StatsRecorder("a", "stage")
    rec.record(0.5)
    rec.record(0.5)
    rec.finish()
    assert 1.0 <= rec.snapshot().fps <= 4.5  # two frames in ~0.5 s of work


def test_table_lists_every_node() -> None:
    a, b = StatsRecorder("cam", "source"), StatsRecorder("detect", "stage")
    b.drop("age", 2)
    table = str(RunStats({"cam": a.snapshot(), "detect": b.snapshot()}))
    lines = table.splitlines()
    assert lines[0].startswith("node") and "latency p50/p95/max ms" in lines[0]
    assert any(line.startswith("detect") and "2 (age 2)" in line for line in lines)
    assert RunStats({"cam": a.snapshot()}).to_dict()["cam"]["kind"] == "source"


def test_unknown_node_names_the_known_ones() -> None:
    stats = RunStats({"cam": StatsRecorder("cam", "source").snapshot()})
    with pytest.raises(KeyError, match=r"no node named 'detect'; nodes: \['cam'\]"):
        stats["detect"]


def test_maxima_cover_the_whole_run_beyond_the_samples_kept() -> None:
    rec = StatsRecorder("detect", "stage", keep=64)
    for i in range(5000):
        slow = i == 10
        rec.record(1.0 if slow else 0.001, age=2.0 if slow else 0.002, wait=3.0 if slow else 0.0)
    snap = rec.snapshot()
    assert snap.processed == 5000
    assert snap.latency_ms["max"] == 1000.0 and snap.latency_ms["p95"] == 1.0
    assert snap.age_ms["max"] == 2000.0 and snap.wait_ms["max"] == 3000.0


def test_batches_count_every_frame_and_keep_their_maxima() -> None:
    rec = StatsRecorder("detect", "stage", keep=16)
    rec.record(0.5, age=0.1, count=3)
    for _ in range(40):
        rec.record(0.01, count=7)  # batches larger than the fold interval
    snap = rec.snapshot()
    assert snap.processed == 3 + 40 * 7
    assert snap.latency_ms["max"] == 500.0 and snap.age_ms["max"] == 100.0


def test_inline_ages_grow_by_each_stages_time() -> None:
    """Inline hands each frame on with the time it left its producer: the next stage's
    age includes the previous stage's time, and max_age sees it."""

    def slow(frame: fp.Frame) -> int:
        time.sleep(0.02)
        return frame.index

    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=32, height=24, frames=10))
    work = pipe.stage("slow", slow, after=cam)
    after = pipe.stage("after", lambda f: f.index, after=work)
    fresh = pipe.stage("fresh", lambda f: f.index, after=work, max_age=10)
    pipe.sink("out", fp.sinks.Collect(), after=[after, fresh])
    run = pipe.run(mode="offline", executor="inline")
    assert run.stats["slow"].age_ms["max"] < 10
    assert run.stats["after"].age_ms["p50"] >= 20
    assert run.stats["slow"].latency_ms["p50"] >= 20
    assert run.stats["fresh"].processed == 0 and run.stats["fresh"].dropped_by["age"] == 10


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_ages_and_waits_match_the_wall_clock(executor: str) -> None:
    """A worker takes the time its frame was handed on from the producer (threads)
    or reads the clock (frames from another process): either way the age it
    records is the frame's age when the call began, and the wait is the time
    the frame spent in the inbox behind a slow call."""
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=32, height=24, frames=12))
    slow = pipe.stage("slow", _slow_index, after=cam)
    seen = pipe.stage("seen", _age_seen, after=slow)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=seen)
    run = pipe.run(mode="offline", executor=executor)
    assert len(collect.results["seen"]) == 12
    seen_ms = sorted(age * 1000 for age in collect.results["seen"].values())
    stats = run.stats["seen"]
    # The age recorded before the call and the age the call saw: the same moment,
    # give or take the scheduling of one call on a loaded machine.
    assert stats.age_ms["max"] <= seen_ms[-1] + 1
    assert stats.age_ms["max"] >= seen_ms[-1] - 50
    assert stats.age_ms["p50"] >= 20  # includes the slow stage's time
    # Frames queue up behind the slow stage: the later ones wait several of its calls.
    slow_stats = run.stats["slow"]
    assert slow_stats.wait_ms["max"] >= 40
    assert slow_stats.age_ms["max"] >= slow_stats.wait_ms["max"]  # a frame ages as it waits
    assert slow_stats.latency_ms["p50"] >= 20


def _slow_index(frame: fp.Frame) -> int:
    time.sleep(0.02)
    return frame.index


def _age_seen(frame: fp.Frame) -> float:
    return time.time() - frame.timestamp
