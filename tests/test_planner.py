"""The capacity planner: its model on known costs, and its forecasts against real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import framepipe as fp
from framepipe import planner
from stages_for_tests import Sleepy
from test_cli import framepipe


def camera(path: Path, motion_fps: float = 15) -> fp.Pipeline:
    pipe = fp.Pipeline("camera")
    cam = pipe.source("cam", fp.sources.VideoFile(path))
    pipe.stage("motion", lambda f: f.index, after=cam, fps=motion_fps)
    return pipe


def costs(source_cpu: float, stage_cpu: float, gil: float | None) -> fp.Profile:
    return fp.Profile(
        {
            "cam": fp.NodeCost("source", 100, source_cpu, source_cpu, gil),
            "motion": fp.NodeCost("stage", 50, stage_cpu, stage_cpu, gil, 15.0),
        }
    )


def test_cores_bound_the_stream_count(clip_dir) -> None:
    pipe = camera(clip_dir["long.mp4"].path)  # 30 fps
    # Per stream: 30 x 1 ms decoding + 15 x 10 ms motion = 0.18 cores.
    capacity = planner.forecast(
        pipe, costs(0.001, 0.010, 0.0), streams=range(1, 17), executor="processes", cpus=2
    )
    assert capacity.largest == 11
    eleven, twelve = capacity.forecasts[10], capacity.forecasts[11]
    assert eleven.ok and eleven.nodes["motion"].fps == pytest.approx(15)
    assert eleven.cpu == pytest.approx(11 * 0.18, rel=0.01)
    assert not twelve.ok
    assert twelve.cpu == pytest.approx(2.0, rel=0.01)  # the cores are full...
    assert 13 < twelve.nodes["motion"].fps < 15  # ...and motion falls behind
    assert twelve.nodes["motion"].drop_share > 0


def test_threads_share_one_gil(clip_dir) -> None:
    pipe = camera(clip_dir["long.mp4"].path)
    held = costs(0.001, 0.010, 1.0)  # all of it holds the GIL
    threads = planner.forecast(pipe, held, streams=range(1, 17), executor="threads", cpus=8)
    processes = planner.forecast(pipe, held, streams=range(1, 17), executor="processes", cpus=8)
    # One process: 0.18 s of GIL per stream per second -> 5 streams.
    assert threads.largest == 5
    assert threads.forecasts[5].gil == pytest.approx(1.0, rel=0.01)
    # One process per node: only the 8 cores bound it.
    assert processes.largest == 16
    free = planner.forecast(pipe, costs(0.001, 0.010, 0.0), streams=[16], executor="threads")
    assert free.forecasts[0].gil == 0
    # Two workers: each holds whole cameras, so twice the threads' stream count; 11 would
    # put 6 cameras on one of them (predicted to fit at cadd68f, spreading GIL evenly).
    two = planner.forecast(
        pipe, held, streams=range(1, 17), executor="processes", workers=2, cpus=8
    )
    assert two.largest == 10
    three = planner.forecast(pipe, held, streams=[3], executor="processes", workers=2, cpus=8)
    assert three.forecasts[0].gil == pytest.approx(2 * threads.forecasts[0].gil, rel=0.01)
    with pytest.raises(fp.GraphError, match="workers= is for executor='processes'"):
        planner.forecast(pipe, held, executor="threads", workers=2)


def test_a_node_slower_than_its_rate_never_keeps_up(clip_dir) -> None:
    pipe = camera(clip_dir["long.mp4"].path)
    slow = fp.Profile({"motion": fp.NodeCost("stage", 10, 0.1, 0.0, 0.0, 15.0)})
    capacity = planner.forecast(pipe, slow, streams=[1, 2], executor="threads", cpus=2)
    assert capacity.largest is None
    one = capacity.forecasts[0].nodes["motion"]
    assert one.fps == pytest.approx(10) and one.requested_fps == pytest.approx(15)
    assert one.drop_share == pytest.approx(1 / 3)
    assert one.age_ms == pytest.approx(100, abs=0.01)


def test_replicate_makes_independent_copies(clip_dir) -> None:
    pipe = camera(clip_dir["h264.mp4"].path)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after="motion", policy="latest")
    three = planner.replicate(pipe, 3)
    assert sorted(three.nodes) == sorted(
        f"{n}-{k}" for n in ("cam", "motion", "out") for k in (1, 2, 3)
    )
    assert three.nodes["motion-2"].inputs == ["cam-2"]
    assert three.nodes["motion-2"].options.fps == 15
    assert three.nodes["out-3"].options.policy == fp.Queue(1, "drop_oldest")
    assert three.nodes["out-1"].obj is not three.nodes["out-2"].obj
    three.run(mode="offline")
    assert len(three.nodes["out-2"].obj.results["motion-2"]) == 30  # 2 s at 15 of 30 fps


def test_stream_counts_parse_and_bad_ones_are_named() -> None:
    assert planner.parse_streams("1..4") == [1, 2, 3, 4]
    assert planner.parse_streams("1,2,4,8") == [1, 2, 4, 8]
    assert planner.parse_streams("8, 1..2") == [1, 2, 8]
    for bad in ("", "0..4", "a..b", "1-4"):
        with pytest.raises(fp.GraphError, match="streams: expected counts"):
            planner.parse_streams(bad)


def test_forecast_agrees_with_real_runs(clip_dir) -> None:
    """Measured per-node fps within 15% of the forecast, for 1 and 4 real-time streams.

    The nodes' cost is time they wait (as a camera SDK or a remote model does),
    not CPU, so the check holds on a loaded machine too; the CPU-bound curve is
    measured by the streams benchmark.
    """
    pipe = fp.Pipeline("camera")
    cam = pipe.source("cam", fp.sources.VideoFile(clip_dir["long.mp4"].path, loop=True))
    pipe.stage("slow", Sleepy(0.1), after=cam)  # can do 10 of the 30 fps
    pipe.stage("light", Sleepy(0.02), after=cam, fps=15)  # keeps up with its 15 fps
    profile = planner.measure(pipe, duration=1)
    assert profile.nodes["slow"].wall_s == pytest.approx(0.1, rel=0.2)
    capacity = planner.forecast(pipe, profile, streams=[1, 4], executor="threads")
    for streams in (1, 4):
        predicted = capacity.forecasts[[1, 4].index(streams)]
        assert predicted.nodes["slow"].fps == pytest.approx(10, rel=0.1)
        assert predicted.nodes["light"].fps == pytest.approx(15)
        run = planner.replicate(pipe, streams).run(mode="realtime", executor="threads", duration=4)
        ratios = planner.compare(capacity, {streams: run.stats})[streams]
        assert ratios["slow"] == pytest.approx(1.0, abs=0.15), (streams, run.stats)
        assert ratios["light"] == pytest.approx(1.0, abs=0.15), (streams, run.stats)


def test_profile_and_plan_commands(media_video, tmp_path: Path) -> None:
    spec = tmp_path / "camera.yaml"
    spec.write_text(
        f"""
executor: processes
sources:
  - name: cam
    type: VideoFile
    path: {media_video("slow_traffic_small.mp4")}
stages:
  - name: motion
    type: Motion
    fps: 15
"""
    )
    saved = tmp_path / "profile.json"
    result = framepipe("profile", spec, "-o", saved, "--duration", "3")
    assert result.returncode == 0, result.stderr
    assert "motion" in result.stdout and "GIL share" in result.stdout
    motion = json.loads(saved.read_text())["nodes"]["motion"]
    assert motion["frames"] == 45 and motion["fps"] == 15 and motion["cpu_s"] > 0

    png = tmp_path / "capacity.png"
    result = framepipe(
        "plan", spec, "--streams", "1..16", "--profile", saved, "--plot", png, "--cpus", "2"
    )
    assert result.returncode == 0, result.stderr
    assert "largest stream count" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = framepipe("plan", spec, "--streams", "1,8", "--profile", saved, "--json")
    data = json.loads(result.stdout)
    assert [f["streams"] for f in data["forecasts"]] == [1, 8]
    assert data["executor"] == "processes"
    assert data["forecasts"][0]["nodes"]["motion"]["fps"] == pytest.approx(15)

    bad = framepipe("plan", spec, "--streams", "0..3", "--profile", saved)
    assert bad.returncode == 2 and "--streams: expected counts" in bad.stderr
    missing = framepipe("plan", spec, "--profile", tmp_path / "nope.json")
    assert missing.returncode == 1 and "nope.json" in missing.stderr


def test_the_profile_tells_code_that_holds_the_gil_from_code_that_does_not(clip_dir) -> None:
    from stages_for_tests import Spin

    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(clip_dir["h264.mp4"].path))
    pipe.stage("python", Spin(0.02), after=cam, fps=10)  # pure Python: holds the GIL
    pipe.stage("waits", Sleepy(0.02), after=cam, fps=10)  # sleeps: releases it
    profile = planner.measure(pipe)
    python, waits = profile.nodes["python"], profile.nodes["waits"]
    assert python.gil is not None and waits.gil is not None, profile
    assert python.gil > 0.6 and waits.gil < 0.4, profile
    # One computes all the time, the other sleeps (CPU time, not wall: the machine is shared).
    assert python.cpu_s is not None and waits.cpu_s is not None
    assert waits.cpu_s < python.cpu_s / 3, profile
