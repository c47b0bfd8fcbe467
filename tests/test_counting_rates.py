"""Counts stay right when the detector skips frames: rates 30, 15, 10, 5 and 3 fps.

The detector runs once per clip on every frame (the session's shared
``vehicle_detections`` and ``people_detections``); each rate then replays those
detections through the documented pipeline (detector at ``fps=rate``, tracker on
every frame with ``join="latest"``, counter), so only the detector's cost is
shared. At 10 fps the real detector runs too, exactly as docs/stages.md writes
the recipe.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import supervision as sv

import framepipe as fp
from framepipe.stages import CountEvent, Detector, LineCounter, Tracker, ZoneCounter

RATES = (30, 15, 10, 5, 3)
VEHICLES = ["car", "truck", "bus", "motorcycle"]
LINE = ((190, 230), (640, 230))  # docs/stages.md's line across the road
ZONE = [(360, 340), (620, 340), (620, 432), (360, 432)]  # where people stop, mid-frame


class Replay(fp.Stage):
    """The detections recorded for each frame index, as the detector returned them."""

    def __init__(self, recorded: list[sv.Detections]) -> None:
        self.recorded = recorded

    def process(self, frame: fp.Frame) -> sv.Detections:
        return self.recorded[frame.index]


def count(
    clip: Path, detect: fp.Stage, rate: float, counter: fp.Stage, executor: str = "threads"
) -> list[CountEvent]:
    """The documented recipe: ``detect`` at ``fps=rate``, tracker on every frame, ``counter``."""
    pipe = fp.Pipeline()
    video = pipe.source("video", fp.sources.VideoFile(clip))
    det = pipe.stage("detect", detect, after=video, fps=rate)
    track = pipe.stage("track", Tracker("detect"), after=[video, det], join="latest")
    counted = pipe.stage("count", counter, after=track)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=counted)
    pipe.run(mode="offline", executor=executor)
    results = collect.results["count"]
    return [e for i in sorted(results) for e in results[i].events]


def tally(events: list[CountEvent]) -> Counter[str]:
    return Counter(e.kind for e in events)


def assert_close_and_once(events: list[CountEvent], every_frame: Counter[str], what: Any) -> None:
    counted = tally(events)
    assert abs(counted["in"] - every_frame["in"]) <= 1, (what, events)
    assert abs(counted["out"] - every_frame["out"]) <= 1, (what, events)
    # No track is counted twice, let alone back and forth.
    assert len({e.tracker_id for e in events}) == len(events), (what, events)


def test_line_counts_do_not_depend_on_the_detector_rate(
    vehicle_detections: list[sv.Detections], media_video: Any, shared_media: Path
) -> None:
    clip = media_video("slow_traffic_small.mp4")
    assert len(vehicle_detections) == 914
    replay = Replay(vehicle_detections)
    by_rate = {rate: count(clip, replay, rate, LineCounter(*LINE)) for rate in RATES}
    every_frame = tally(by_rate[30])
    assert every_frame["in"] >= 1 and every_frame["out"] >= 4, by_rate[30]
    for rate, events in by_rate.items():
        assert_close_and_once(events, every_frame, rate)

    # The recipe as docs/stages.md writes it, with the real detector at 10 fps.
    detector = Detector(shared_media / "models" / "yolox_nano.onnx", conf=0.1, classes=VEHICLES)
    assert_close_and_once(count(clip, detector, 10, LineCounter(*LINE)), every_frame, "recipe")


def test_zone_counts_do_not_depend_on_the_detector_rate(
    people_detections: list[sv.Detections], media_video: Any
) -> None:
    clip = media_video("one-by-one-person-detection.mp4")
    assert len(people_detections) == 1394
    replay = Replay(people_detections)
    for rate in RATES:  # the clip is 10 fps: 30 and 15 see every frame too
        events = count(clip, replay, rate, ZoneCounter(ZONE), executor="inline")
        counted = tally(events)
        # Six people walk in, stop in the zone, and walk out, one at a time.
        assert abs(counted["enter"] - 6) <= 1 and abs(counted["exit"] - 6) <= 1, (rate, events)
        per_track: dict[int, list[str]] = {}
        for e in events:
            per_track.setdefault(e.tracker_id, []).append(e.kind)
        assert all(kinds in (["enter"], ["enter", "exit"]) for kinds in per_track.values()), (
            rate,
            events,
        )
