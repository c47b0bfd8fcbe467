"""Offline mode: lossless, deterministic, same results under every executor."""

from __future__ import annotations

import numpy as np
import pytest

import framepipe as fp
from stages_for_tests import index_of, mean_of


def synthetic(frames: int = 60, fps: float = 30.0) -> fp.sources.Synthetic:
    return fp.sources.Synthetic(width=96, height=64, fps=fps, frames=frames)


def test_every_frame_reaches_every_node(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic(120))
    a = pipe.stage("a", index_of, after=cam)
    b = pipe.stage("b", mean_of, after=cam)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=[a, b])
    run = pipe.run(mode="offline", executor=executor)
    assert sorted(collect.results["a"]) == list(range(120))
    assert collect.results["a"] == {i: i for i in range(120)}
    assert len(collect.results["b"]) == 120
    assert run.stats["a"].processed == 120 and run.stats["a"].dropped == 0
    assert run.stats["out"].processed == 120  # a sink merges its inputs: once per frame
    assert all(s.state == "ended" for s in run.stats.values())


def test_results_are_identical_across_executors() -> None:
    def build() -> tuple[fp.Pipeline, fp.sinks.Collect]:
        pipe = fp.Pipeline()
        cam = pipe.source("cam", synthetic(90))
        mean = pipe.stage("mean", mean_of, after=cam, fps=10)
        window = pipe.stage(
            "window", lambda frames: [f.index for f in frames], after=cam, window=(3, 2)
        )
        collect = fp.sinks.Collect()
        pipe.sink("out", collect, after=[mean, window])
        return pipe, collect

    seen = []
    for executor in ("inline", "threads", "processes"):
        pipe, collect = build()
        pipe.run(mode="offline", executor=executor)
        seen.append(collect.results)
    assert seen[0] == seen[1] == seen[2]
    assert sorted(seen[0]["mean"]) == list(range(0, 90, 3))


def test_rates_are_decided_on_media_time(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic(90, fps=30))
    pipe_fps15 = pipe.stage("fps15", index_of, after=cam, fps=15)
    every_half_s = pipe.stage("half", index_of, after=cam, interval=0.5)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=[pipe_fps15, every_half_s])
    run = pipe.run(mode="offline", executor=executor)
    assert sorted(collect.results["fps15"]) == list(range(0, 90, 2))
    assert sorted(collect.results["half"]) == list(range(0, 90, 15))
    assert run.stats["fps15"].dropped_by["rate"] == 45
    assert run.stats["half"].dropped_by["rate"] == 84


def test_window_gives_lists_of_frames(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic(20))
    win = pipe.stage("win", lambda frames: [f.index for f in frames], after=cam, window=(4, 3))
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=win)
    pipe.run(mode="offline", executor=executor)
    # samples 2,5,8,...,17 (each ends 3 frames); a window once four are held, sliding by one
    assert list(collect.results["win"].values()) == [
        [2, 5, 8, 11],
        [5, 8, 11, 14],
        [8, 11, 14, 17],
    ]


def test_none_passes_nothing_on(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic(30))
    even = pipe.stage("even", lambda f: f.index if f.index % 2 == 0 else None, after=cam)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=even)
    run = pipe.run(mode="offline", executor=executor)
    assert sorted(collect.results["even"]) == list(range(0, 30, 2))
    assert run.stats["out"].processed == 15


def test_lambdas_and_closures_run_in_every_executor(executor: str) -> None:
    offset = 1000
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic(10))
    shifted = pipe.stage("shifted", lambda f: f.index + offset, after=cam)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=shifted)
    pipe.run(mode="offline", executor=executor)
    assert collect.results["shifted"] == {i: i + offset for i in range(10)}


def test_results_travel_downstream(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic(10))
    a = pipe.stage("a", lambda f: f.index * 2, after=cam)
    b = pipe.stage("b", lambda f: f.results["a"] + 1, after=a)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=b)
    pipe.run(mode="offline", executor=executor)
    assert collect.results["b"] == {i: 2 * i + 1 for i in range(10)}


def test_merge_join_combines_results_of_the_same_frame(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic(30))
    every = pipe.stage("every", index_of, after=cam)
    some = pipe.stage("some", lambda f: -f.index, after=cam, fps=10)
    both = pipe.stage(
        "both",
        lambda f: (f.results.get("every"), f.results.get("some")),
        after=[every, some],
        join="merge",
    )
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=both)
    pipe.run(mode="offline", executor=executor)
    merged = collect.results["both"]
    assert sorted(merged) == list(range(30))  # each frame once
    for index, (e, s) in merged.items():
        assert e == index
        assert s == (-index if index % 3 == 0 else None)


def test_latest_join_carries_slow_results_onto_every_frame(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic(30))
    slow = pipe.stage("slow", lambda f: f.index, after=cam, fps=5)
    draw = pipe.stage("draw", lambda f: f.results.get("slow"), after=[cam, slow], join="latest")
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=draw)
    pipe.run(mode="offline", executor=executor)
    # Offline, each frame carries the newest slow result from a frame not after it:
    # the same in every run and under every executor.
    assert collect.results["draw"] == {i: 6 * (i // 6) for i in range(30)}


def test_fan_out_to_many_consumers(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic(15))
    outs = [pipe.stage(f"s{i}", lambda f, i=i: f.index * i, after=cam) for i in range(4)]
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=outs)
    pipe.run(mode="offline", executor=executor)
    for i in range(4):
        assert collect.results[f"s{i}"] == {n: n * i for n in range(15)}


def test_frames_are_read_only_and_a_copy_can_be_drawn_on(executor: str) -> None:
    def draw(frame: fp.Frame) -> tuple[bool, int]:
        try:
            frame.image[0, 0] = 0
            writable = True
        except ValueError:
            writable = False
        canvas = frame.image.copy()
        canvas[:] = 7
        return writable, int(canvas[0, 0, 0])

    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic(3))
    d = pipe.stage("draw", draw, after=cam)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=d)
    pipe.run(mode="offline", executor=executor)
    assert set(collect.results["draw"].values()) == {(False, 7)}


def test_array_results_cross_processes(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=320, height=240, fps=30, frames=8))
    inverted = pipe.stage("invert", lambda f: 255 - f.image, after=cam)
    check = pipe.stage(
        "check",
        lambda f: int((f.results["invert"].astype(int) + f.image.astype(int)).min()),
        after=inverted,
    )
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=check)
    pipe.run(mode="offline", executor=executor)
    assert collect.results["check"] == {i: 255 for i in range(8)}


def test_nested_pipeline_as_a_stage(executor: str) -> None:
    inner = fp.Pipeline("measure")
    x = inner.input()
    inner.stage("mean", mean_of, after=x)
    inner.stage("double", lambda f: f.results["mean"] * 2, after="mean")
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic(5))
    measured = pipe.stage("measure", inner, after=cam)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=measured)
    pipe.run(mode="offline", executor=executor)
    for value in collect.results["measure"].values():
        assert value["double"] == pytest.approx(2 * value["mean"])


def test_start_seeks_in_offline_mode(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic(60))
    pts = pipe.stage("pts", lambda f: round(f.pts, 3), after=cam)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=pts)
    pipe.run(mode="offline", executor=executor, start=1.0)
    values = list(collect.results["pts"].values())
    assert values[0] == 1.0 and len(values) == 30


def test_generator_and_still_image_sources(executor: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import cv2

    still = tmp_path / "still.png"
    cv2.imwrite(str(still), np.full((32, 48, 3), 200, np.uint8))
    pipe = fp.Pipeline()
    gen = pipe.source(
        "gen", fp.sources.Generator([np.full((16, 16, 3), i, np.uint8) for i in range(5)], fps=10)
    )
    img = pipe.source("img", fp.sources.StillImage(still, fps=10, frames=4))
    a = pipe.stage("a", lambda f: (f.source, int(f.image[0, 0, 0]), f.shape), after=[gen, img])
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=a)
    pipe.run(mode="offline", executor=executor)
    results = collect.results["a"]
    assert {k: v for k, v in results.items() if k[0] == "gen"} == {
        ("gen", i): ("gen", i, (16, 16)) for i in range(5)
    }
    assert {k: v for k, v in results.items() if k[0] == "img"} == {
        ("img", i): ("img", 200, (32, 48)) for i in range(4)
    }


@pytest.mark.parametrize("pipeline_executor", ["threads", "processes"])
def test_per_node_executor_override(pipeline_executor: str) -> None:
    import os

    other = "processes" if pipeline_executor == "threads" else "threads"
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic(20))
    here = pipe.stage("here", lambda f: os.getpid(), after=cam)
    moved = pipe.stage("moved", lambda f: os.getpid(), after=here, executor=other)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=[here, moved])
    pipe.run(mode="offline", executor=pipeline_executor)
    here_pids = set(collect.results["here"].values())
    moved_pids = set(collect.results["moved"].values())
    assert len(here_pids) == len(moved_pids) == 1
    assert here_pids != moved_pids
    assert (os.getpid() in moved_pids) == (other == "threads")
    assert len(collect.results["moved"]) == 20


def test_node_names_may_hold_any_characters(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam/1 front door", fp.sources.Synthetic(width=32, height=24, frames=5))
    stage = pipe.stage("zone/" + "long-name-" * 12, lambda f: f.index, after=cam)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=stage)
    pipe.run(mode="offline", executor=executor)
    assert collect.results["zone/" + "long-name-" * 12] == {i: i for i in range(5)}
