"""Scene: the synthetic street of the demo; deterministic frames, ground truth, countable."""

from __future__ import annotations

import itertools
import pickle
from collections import Counter

import numpy as np
import pytest

import framepipe as fp
from framepipe.sources import Scene
from framepipe.testing import run_source


def test_frames_are_deterministic_and_seekable() -> None:
    scene = Scene(width=320, height=180, fps=30, frames=40, seed=3)
    first = run_source(scene)
    again = run_source(pickle.loads(pickle.dumps(scene)))
    assert len(first) == 40
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert [pts for _, pts in first] == [i / 30 for i in range(40)]
    # Seeking starts at the same frame a full read reaches.
    seeked = run_source(scene, start=1.0)
    assert len(seeked) == 10
    assert np.array_equal(seeked[0][0], first[30][0])
    assert seeked[0][1] == pytest.approx(1.0)


def test_seeds_and_traffic_change_the_scene() -> None:
    a = run_source(Scene(width=320, height=180, frames=90, seed=1))[-1][0]
    b = run_source(Scene(width=320, height=180, frames=90, seed=2))[-1][0]
    assert not np.array_equal(a, b)
    quiet = sum(len(Scene(traffic=0.5).vehicles(i)) for i in range(0, 900, 30))
    busy = sum(len(Scene(traffic=2.0).vehicles(i)) for i in range(0, 900, 30))
    assert busy > quiet


def test_ground_truth_matches_the_pixels() -> None:
    scene = Scene(width=480, height=270, frames=200)
    frames = run_source(scene)
    background = scene._background()
    for index in (0, 75, 150, 199):
        image = frames[index][0]
        vehicles = scene.vehicles(index)
        assert vehicles, f"frame {index} shows no vehicle"
        for vehicle in vehicles:
            x1, y1, x2, y2 = vehicle.box
            cx, cy = int((max(x1, 0) + min(x2, 479)) / 2), int((y1 + y2) / 2)
            if 0 <= cx < 480:
                assert not np.array_equal(image[cy, cx], background[cy, cx]), vehicle
        # Outside every box the frame is the background.
        mask = np.ones(image.shape[:2], bool)
        for vehicle in vehicles:
            x1, y1, x2, y2 = (round(v) for v in vehicle.box)
            mask[max(y1 - 2, 0) : y2 + 3, max(x1 - 2, 0) : max(x2 + 3, 0)] = False
        assert np.array_equal(image[mask], background[mask])


def test_vehicles_drive_both_ways_without_overlapping() -> None:
    scene = Scene()
    directions: Counter[int] = Counter()
    for index in range(0, 1800, 3):
        vehicles = scene.vehicles(index)
        for lane in range(4):
            boxes = sorted(v.box for v in vehicles if v.lane == lane)
            for left, right in itertools.pairwise(boxes):
                assert left[2] < right[0], (index, lane, boxes)
        directions.update({v.direction for v in vehicles})
    assert directions[1] > 0 and directions[-1] > 0


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="160x90"):
        Scene(width=100, height=50)
    with pytest.raises(ValueError, match="fps"):
        Scene(fps=0)
    with pytest.raises(ValueError, match="traffic"):
        Scene(traffic=0)
    assert Scene(width=640, height=360).describe()["type"] == "Scene"


def test_motion_tracking_and_the_counting_line_count_what_crosses() -> None:
    """The demo's pipeline, offline: its counts match the scene's ground truth."""
    frames = 450
    scene = Scene(width=640, height=360, fps=30, frames=frames)
    pipe = fp.Pipeline()
    pipe.source("scene", scene)
    pipe.stage("motion", fp.stages.Motion(min_area=600), after="scene")
    pipe.stage("track", fp.stages.Tracker("motion"), after="motion")
    pipe.stage("count", fp.stages.LineCounter(*scene.counting_line), after="track")
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after="count")
    pipe.run(mode="offline", executor="threads")

    x = scene.counting_line[0][0]
    crossed: Counter[int] = Counter()
    last: dict[int, float] = {}
    for index in range(frames):
        for vehicle in scene.vehicles(index):
            centre = (vehicle.box[0] + vehicle.box[2]) / 2
            if vehicle.id in last and (last[vehicle.id] - x) * (centre - x) < 0:
                crossed[vehicle.direction] += 1
            last[vehicle.id] = centre
    final = collect.results["count"][frames - 1]
    assert crossed[1] >= 5 and crossed[-1] >= 5
    # Vehicles moving right cross the top-to-bottom line one way, moving left the other.
    assert abs(final.in_count - crossed[1]) <= 2, (final, crossed)
    assert abs(final.out_count - crossed[-1]) <= 2, (final, crossed)
