"""Annotate: what is drawn, onto a copy, and what is left alone."""

from __future__ import annotations

import pickle
import time

import numpy as np
import supervision as sv

from framepipe.stages import Annotate, LineCount, ZoneCount
from framepipe.stages._detector import make_detections
from framepipe.testing import make_frame, run_stage

GREY = np.full((240, 320, 3), 114, np.uint8)


def cars(track_ids: list[int] | None = None, *, source: str | None = None) -> sv.Detections:
    out = make_detections(
        [[40, 60, 120, 140], [200, 100, 260, 180]], [0.9, 0.6], [2, 7], ["car", "truck"]
    )
    if track_ids is not None:
        out.tracker_id = np.array(track_ids)
        out.metadata["source"] = source
    return out


def draw(stage: Annotate, results: dict) -> np.ndarray:
    [image] = run_stage(stage, [make_frame(GREY.copy(), results=results)])
    return image


def test_draws_on_a_copy_and_returns_the_display_image() -> None:
    frame = make_frame(GREY.copy(), results={"detect": cars()})
    [image] = run_stage(Annotate(), [frame], name="annotate")
    assert image.shape == (240, 320, 3) and image.dtype == np.uint8
    assert image is not frame.image and image.flags.writeable
    assert (frame.image == 114).all()  # the shared frame is untouched
    assert frame.display_image is image
    # Box edges are drawn; the middle of a box is not painted over.
    assert (image[100, 40] != 114).any() and (image[100, 80] == 114).all()


def test_nothing_to_draw_gives_the_frame_back_as_a_copy() -> None:
    image = draw(Annotate(overlay=False), {"other": 42})
    assert (image == GREY).all()
    bare = draw(Annotate(boxes=False, labels=False, overlay=False), {"detect": cars()})
    assert (bare == GREY).all()


def test_tracked_detections_replace_the_raw_ones_they_came_from() -> None:
    tracked = cars([3, 4], source="detect")
    both = draw(Annotate(overlay=False), {"detect": cars(), "track": tracked})
    only_tracked = draw(Annotate(overlay=False), {"track": tracked})
    only_raw = draw(Annotate(overlay=False), {"detect": cars()})
    assert (both == only_tracked).all()
    assert (both != only_raw).any()  # "#3 car" labels and track colours differ
    chosen = draw(
        Annotate(overlay=False, detections=["detect"]), {"detect": cars(), "track": tracked}
    )
    assert (chosen == only_raw).all()


def test_line_and_zone_with_their_counts() -> None:
    line = LineCount((20.0, 200.0), (300.0, 200.0), in_count=2, out_count=5)
    zone = ZoneCount(((180.0, 20.0), (300.0, 20.0), (300.0, 90.0), (180.0, 90.0)), 1, 3, 2)
    image = draw(Annotate(overlay=False), {"count": line, "zone": zone})
    assert (image[200, 25] > 200).all()  # the white line
    assert (image[55, 180] != 114).any()  # the zone's edge
    assert (image[190:210, 110:210] == 0).all(axis=2).any()  # black count text mid-line


def test_overlay_reports_its_own_rate_and_the_frame_age() -> None:
    stage = Annotate()
    frames = [make_frame(GREY.copy(), index=i) for i in range(5)]
    stage.setup()
    for frame in frames:
        frame.timestamp = time.time() - 0.25
        image = stage.process(frame)
        time.sleep(0.01)
    assert 5 < stage.fps < 150
    corner = image[:30, :200]
    assert (corner == 0).all(axis=2).any() and (corner > 200).all(axis=2).any()  # white on black
    assert (draw(Annotate(overlay=False), {})[:30, :200] == 114).all()


def test_trace_draws_each_tracks_path() -> None:
    stage = Annotate(boxes=False, labels=False, overlay=False, trace=True)
    frames = []
    for t in range(10):
        moving = make_detections([[20 + 20 * t, 100, 40 + 20 * t, 120]], [0.9], [2], ["car"])
        moving.tracker_id = np.array([1])
        frames.append(make_frame(GREY.copy(), index=t, results={"track": moving}))
    images = run_stage(stage, frames)
    assert (images[-1][110, 40:200] != 114).any(axis=1).mean() > 0.8  # a line along the path


def test_pickles_without_its_drawing_state() -> None:
    stage = Annotate(trace=True)
    run_stage(stage, [make_frame(GREY.copy(), results={"detect": cars()})])
    copy = pickle.loads(pickle.dumps(stage))
    assert copy.trace and copy.fps == 0.0
    assert draw(copy, {"detect": cars()}).shape == (240, 320, 3)
