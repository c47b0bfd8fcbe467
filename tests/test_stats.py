"""Statistics: counters, percentiles, the printed table."""

from __future__ import annotations

import pickle

import pytest

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
