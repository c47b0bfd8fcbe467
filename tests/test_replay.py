"""Replay-as-live: file sources played as live cameras on a simulated clock."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import framepipe as fp
from framepipe.config import load_pipeline
from framepipe.runtime import executor_names
from framepipe.testing import FakeClock
from stages_for_tests import Sleepy
from test_cli import framepipe

CLIP = "slow_traffic_small.mp4"  # 29.97 fps


def slow_pipeline(path: Path, stage: Any, **options: Any) -> tuple[fp.Pipeline, fp.sinks.Collect]:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(path))
    slow = pipe.stage("slow", stage, after=cam, **options)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=slow)
    return pipe, collect


def test_a_declared_slow_stage_replays_fast_and_the_same_every_time(media_video) -> None:
    runs = []
    for _ in range(2):
        pipe, collect = slow_pipeline(media_video(CLIP), lambda f: f.index, cost=0.1)
        began = time.monotonic()
        run = pipe.run(mode="replay", duration=10)
        took = time.monotonic() - began
        runs.append((run.stats, sorted(collect.results["slow"])))
        assert took < 5, f"10 s of video replayed in {took:.1f} s"
    (first, kept), (second, kept_again) = runs
    assert kept == kept_again  # exactly the same frames reached the sink
    assert first["slow"].dropped_by == second["slow"].dropped_by
    assert first["slow"].age_ms == second["slow"].age_ms
    # One frame per 0.1 s, always the newest one: 10 s -> 100 frames, 2 of every 3 dropped.
    assert 98 <= first["slow"].processed <= 102, first
    assert first["cam"].processed == 300
    assert first["slow"].dropped_by["policy"] == 300 - first["slow"].processed
    assert first["slow"].latency_ms["p50"] == pytest.approx(100.0)
    assert first["slow"].age_ms["max"] < 34  # the newest frame is never a frame period old
    assert first["out"].age_ms["p50"] == pytest.approx(first["slow"].age_ms["p50"] + 100, abs=1)
    assert first["slow"].fps == pytest.approx(10.0, rel=0.02)
    assert kept[:4] == [0, 2, 5, 8]  # frame 3 arrives 0.1001 s in: after the stage is free


def test_replay_agrees_with_a_real_time_run(media_video) -> None:
    """The real-time run really takes 0.1 s a frame, for 10 s of wall time."""
    path = media_video(CLIP)
    pipe, _ = slow_pipeline(path, Sleepy(0.1), cost=0.1)
    live = pipe.run(mode="realtime", executor="threads", duration=10)
    pipe, _ = slow_pipeline(path, Sleepy(0.0), cost=0.1)
    replay = pipe.run(mode="replay", duration=10)
    live_n, replay_n = live.stats["slow"].processed, replay.stats["slow"].processed
    # The real run starts its clock before the source opens and sleeps a little
    # over 0.1 s a frame: 10% is the slack the replay promises.
    assert abs(live_n - replay_n) <= 0.1 * replay_n, (live.stats, replay.stats)
    assert live.stats["slow"].age_ms["p50"] == pytest.approx(
        replay.stats["slow"].age_ms["p50"], abs=40
    )


def test_cost_can_depend_on_the_frame(clip_dir) -> None:
    clip = clip_dir["h264.mp4"]
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(clip.path))
    # Every tenth frame is slow: the frames after it are dropped.
    stage = pipe.stage(
        "s", lambda f: f.index, after=cam, cost=lambda f: 0.5 if f.index % 10 == 0 else 0.0
    )
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=stage)
    run = pipe.run(mode="replay")
    seen = sorted(collect.results["s"])
    assert seen[0] == 0
    assert 1 not in seen and 2 not in seen  # arrived while frame 0 took 0.5 s
    assert run.stats["s"].latency_ms["max"] == pytest.approx(500.0)
    assert run.stats["s"].dropped_by["policy"] > 0


def test_max_age_queue_and_rate_decide_on_the_simulated_clock(clip_dir) -> None:
    clip = clip_dir["h264.mp4"]  # 30 fps
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(clip.path))
    sampled = pipe.stage("sampled", lambda f: f.index, after=cam, fps=5, cost=0.01)
    queued = pipe.stage(
        "queued",
        lambda f: f.index,
        after=cam,
        policy=fp.Queue(4, "drop_oldest"),
        max_age=150,
        cost=0.1,
    )
    pipe.sink("out", fp.sinks.Collect(), after=[sampled, queued])
    stats = pipe.run(mode="replay").stats
    frames = stats["cam"].processed
    assert stats["sampled"].dropped_by["policy"] == 0
    assert stats["sampled"].processed == pytest.approx(frames * 5 / clip.fps, abs=1)
    # A 0.1 s stage behind a queue of 4: frames wait up to 0.4 s, and those older
    # than 150 ms are dropped rather than processed.
    assert stats["queued"].dropped_by["age"] > 0
    assert stats["queued"].age_ms["max"] <= 150


def test_a_full_block_edge_holds_the_source_back_and_it_drops_late_frames(clip_dir) -> None:
    clip = clip_dir["h264.mp4"]
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(clip.path))
    slow = pipe.stage("slow", lambda f: f.index, after=cam, policy="block", cost=0.2)
    pipe.sink("out", fp.sinks.Collect(), after=slow)
    stats = pipe.run(mode="replay").stats
    assert stats["slow"].dropped_by["policy"] == 0
    assert stats["cam"].dropped_by["late"] > 0
    assert stats["cam"].processed + stats["cam"].dropped_by["late"] == clip.frames


def test_latest_join_attaches_what_a_live_run_would_have(clip_dir) -> None:
    clip = clip_dir["h264.mp4"]
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(clip.path))
    detect = pipe.stage("detect", lambda f: f.index, after=cam, cost=0.3)
    view = pipe.stage(
        "view", lambda f: f.results.get("detect", -1), after=[cam, detect], join="latest", cost=0.0
    )
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=view)
    pipe.run(mode="replay")
    attached = collect.results["view"]
    assert len(attached) == clip.frames  # the fast branch sees every frame
    # Until the first detection is done (0.3 s in) nothing is attached; later frames
    # carry a detection of an earlier frame, never of a later one.
    assert attached[0] == -1 and attached[5] == -1
    later = {i: v for i, v in attached.items() if v != -1}
    assert later and all(v <= i for i, v in later.items())
    assert min(later) == pytest.approx(0.3 * clip.fps, abs=1)


def test_profile_of_a_run_saves_and_replays(clip_dir, tmp_path: Path) -> None:
    clip = clip_dir["h264.mp4"]
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(clip.path))
    pipe.stage("work", Sleepy(0.02), after=cam)
    pipe.sink("out", fp.sinks.Collect(), after="work")
    measured = pipe.run(mode="replay").profile()
    work = measured.nodes["work"]
    assert work.frames == clip.frames
    assert 0.02 <= work.wall_s < 0.2
    assert work.cpu_s is not None and work.cpu_s < work.wall_s  # sleeping costs no CPU
    assert measured.nodes["cam"].kind == "source" and measured.nodes["cam"].cpu_s
    path = measured.save(tmp_path / "profile.json")
    assert json.loads(path.read_text())["nodes"]["work"]["wall_s"] == work.wall_s
    again = fp.Profile.load(path)
    assert again.nodes == measured.nodes

    # The same pipeline replayed with the profile: "work" costs what it measured.
    stats = pipe.run(mode="replay", profile=path).stats
    assert stats["work"].latency_ms["p50"] == pytest.approx(work.wall_s * 1000, rel=1e-3)


def test_a_real_time_run_profiles_its_median_latency(clip_dir) -> None:
    clip = clip_dir["h264.mp4"]
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(clip.path))
    pipe.stage("work", Sleepy(0.05), after=cam)
    profile = pipe.run(mode="realtime", executor="threads").profile()
    assert 0.045 <= profile.nodes["work"].wall_s <= 0.2
    assert profile.nodes["work"].cpu_s is None


def test_replay_from_a_pipeline_file_and_the_command(
    media_video, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "replay.yaml"
    summary = tmp_path / "summary.json"
    spec.write_text(
        f"""
mode: replay
duration: 10
sources:
  - name: cam
    type: VideoFile
    path: {media_video(CLIP)}
stages:
  - name: motion
    type: Motion
    fps: 15
    cost: 0.1
sinks:
  - name: log
    type: JsonLines
    path: {tmp_path / "out.jsonl"}
    after: motion
"""
    )
    pipe, options = load_pipeline(spec)
    assert options.mode == "replay"
    assert pipe.nodes["motion"].options.cost == 0.1
    result = framepipe("run", spec, "--quiet", "--summary", summary)
    assert result.returncode == 0, result.stderr
    data = json.loads(summary.read_text())
    assert data["mode"] == "replay"
    assert data["stats"]["motion"]["processed"] == pytest.approx(100, abs=2)
    # --mode replay on a file that asks for another mode
    spec.write_text(spec.read_text().replace("mode: replay", "mode: realtime"))
    result = framepipe("run", spec, "--quiet", "--mode", "replay", "--summary", summary)
    assert result.returncode == 0, result.stderr
    assert json.loads(summary.read_text())["elapsed_s"] < 8


def test_bad_costs_and_live_sources_are_named(clip_dir) -> None:
    clip = clip_dir["h264.mp4"]
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(clip.path))
    with pytest.raises(fp.GraphError, match=r"node 'bad'.*cost must be seconds >= 0"):
        pipe.stage("bad", lambda f: 1, after=cam, cost=-1)
    pipe.stage("s", lambda f: 1, after=cam, cost=lambda f: "slow")
    with pytest.raises(fp.GraphError, match=r"node 's': cost= must give seconds >= 0, got 'slow'"):
        pipe.run(mode="replay")

    live = fp.Pipeline()
    gen = live.source("gen", fp.sources.Generator(iter([]), live=True))
    live.sink("out", fp.sinks.Collect(), after=gen)
    with pytest.raises(fp.GraphError, match=r"source 'gen'.*already live"):
        live.run(mode="replay")
    with pytest.raises(fp.GraphError, match="profile= is for mode='replay'"):
        pipe.run(mode="offline", profile=fp.Profile({}))


def test_replay_is_the_executor_of_its_mode_and_runs_on_its_own_clock(clip_dir) -> None:
    assert "replay" in executor_names()
    clip = clip_dir["h264.mp4"]
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(clip.path))
    stamp = pipe.stage("stamp", lambda f: (f.pts, f.timestamp), after=cam, cost=0.001)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=stamp)

    run = pipe.run(executor="replay")  # mode="auto" becomes the executor's mode
    assert (run.plan.mode, run.executor_name) == ("replay", "replay")
    stamps = list(collect.results["stamp"].values())
    first_pts = stamps[0][0]
    # Timestamps are simulated seconds from the start: each frame at its media time.
    assert [t for _, t in stamps] == pytest.approx([pts - first_pts for pts, _ in stamps])

    with pytest.raises(fp.GraphError, match="runs mode='replay' only"):
        pipe.run(mode="realtime", executor="replay")
    with pytest.raises(fp.GraphError, match="a replay runs on its own clock"):
        pipe.run(mode="replay", clock=FakeClock())
    with pytest.raises(fp.GraphError, match=r"node 'x': executor must be one of"):
        pipe.stage("x", lambda f: 1, after=cam, executor="replay")


def test_a_stage_that_fails_in_a_replay_stops_it_with_its_name(clip_dir) -> None:
    clip = clip_dir["h264.mp4"]
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(clip.path))

    def boom(frame: fp.Frame) -> None:
        raise ValueError("no")

    pipe.stage("boom", boom, after=cam, on_error="stop", cost=0.01)
    with pytest.raises(fp.StageError, match="boom"):
        pipe.run(mode="replay")


def test_docs_examples_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = Path(__file__).resolve().parent.parent / "docs" / "replay.md"
    blocks = _python_blocks(docs.read_text())
    assert blocks, "docs/replay.md has no python examples"
    media = Path(__file__).resolve().parent.parent.parent / "shared" / "media" / "videos"
    if not (media / CLIP).exists():
        pytest.skip("the examples play ../shared/media/videos/slow_traffic_small.mp4")
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    monkeypatch.setattr(sys, "argv", ["example"])
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for block in blocks:
        exec(compile(block, str(docs), "exec"), namespace)


def _python_blocks(text: str) -> list[str]:
    blocks, current, inside = [], [], False
    for line in text.splitlines():
        if line.strip() == "```python":
            inside, current = True, []
        elif inside and line.strip() == "```":
            inside = False
            blocks.append("\n".join(current))
        elif inside:
            current.append(line)
    return blocks


def test_a_nested_pipeline_in_a_replay_profiles_on_the_run_clock() -> None:
    """Its inner rows age on the simulated clock and the profile and the planner take
    them (a ``KeyError`` and ages of 1.8e12 ms at cadd68f)."""
    from framepipe import planner

    inner = fp.Pipeline("measure")
    x = inner.input()
    inner.stage("mean", lambda f: float(f.image.mean()), after=x)
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=30, frames=60))
    pipe.sink("out", fp.sinks.Collect(), after=pipe.stage("measure", inner, after=cam))
    run = pipe.run(mode="replay")
    assert run.stats["measure/mean"].age_ms["max"] < 1000
    assert "measure/mean" in run.profile().nodes
    assert "measure/mean" in planner.measure(pipe).nodes


class BatchSizes(fp.Stage):
    """Gives each frame the size of the batch it came in."""

    batch = 4
    max_wait_ms = 200.0

    def process(self, frame: fp.Frame) -> int:
        return 1

    def process_batch(self, frames):  # type: ignore[no-untyped-def]
        return [len(frames)] * len(frames)


def test_a_replay_waits_max_wait_ms_for_a_batch_to_fill() -> None:
    """As a live worker does, on the simulated clock: 30 fps frames and a 200 ms wait fill
    batches of 4 (batches of 1 at cadd68f)."""
    collect = fp.sinks.Collect()
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=30, frames=60))
    pipe.sink("out", collect, after=pipe.stage("batched", BatchSizes(), after=cam, cost=0.001))
    run = pipe.run(mode="replay")
    sizes = collect.results["batched"]
    assert sorted(sizes) == list(range(60))
    assert set(sizes.values()) == {4}, sizes
    assert run.stats["batched"].age_ms["max"] < 200 + 120  # the wait, three frames, the cost
