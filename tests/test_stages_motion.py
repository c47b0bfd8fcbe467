"""Motion: MOG2 background subtraction on a synthetic scene and on a real parking-lot clip."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
import supervision as sv

from framepipe.stages import Motion
from framepipe.testing import make_frame, run_stage
from test_stages_detector import video_frames

WIDTH, HEIGHT = 640, 360


EMPTY = 15  # frames of background only before the objects come in


def moving_scene(frames: int, *, still: bool = False) -> tuple[list, list[np.ndarray]]:
    """A textured still background, then two objects moving across it; and their true boxes.

    Like a fixed camera: the scene is seen empty first, so the background model
    learns the background and not the objects.
    """
    rng = np.random.default_rng(7)
    noise = rng.integers(60, 190, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
    background = cv2.resize(noise, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    out, truth = [], []
    for i in range(frames):
        image = background.copy()
        step = 0 if still else i - EMPTY
        bright = (6 * step, 60, 6 * step + 80, 60 + 50)  # coming in from the left
        dark = (400, 3 * step, 400 + 60, 3 * step + 90)  # coming in from the top
        if i < EMPTY and not still:
            out.append(make_frame(image, index=i, pts=i / 30))
            truth.append(np.zeros((0, 4), np.float32))
            continue
        cv2.rectangle(image, bright[:2], (bright[2] - 1, bright[3] - 1), (250, 250, 250), -1)
        cv2.rectangle(image, dark[:2], (dark[2] - 1, dark[3] - 1), (20, 30, 200), -1)
        out.append(make_frame(image, index=i, pts=i / 30))
        truth.append(np.array([bright, dark], np.float32))
    return out, truth


def test_boxes_follow_the_moving_objects() -> None:
    frames, truth = moving_scene(70)
    results = run_stage(Motion(), frames)
    assert all(len(r) == 0 for r in results[:EMPTY])  # warmup, then an empty scene
    for result, boxes in zip(results[EMPTY + 5 :], truth[EMPTY + 5 :], strict=True):
        assert isinstance(result, sv.Detections)
        assert set(result.data["class_name"].tolist()) == {"motion"}
        iou = sv.box_iou_batch(boxes, result.xyxy)
        # Each object is found, and every motion box belongs to an object.
        assert (iou.max(axis=1) > 0.5).all(), (result.metadata["frame_index"], iou)
        assert (iou.max(axis=0) > 0.3).all()
        score = result.metadata["motion_score"]
        assert 0.02 < score < 0.2  # the two objects cover ~4% of the frame
        assert ((result.confidence > 0.3) & (result.confidence <= 1.0)).all()


def test_a_still_scene_has_no_motion() -> None:
    frames, _ = moving_scene(30, still=True)
    results = run_stage(Motion(warmup=1), frames)
    assert all(len(r) == 0 and r.metadata["motion_score"] < 0.001 for r in results)


def test_boxes_are_in_frame_pixels_when_processed_smaller() -> None:
    frames, truth = moving_scene(EMPTY + 20)
    big = [make_frame(cv2.resize(f.image, (2 * WIDTH, 2 * HEIGHT)), index=f.index) for f in frames]
    last = run_stage(Motion(max_width=640), big)[-1]
    iou = sv.box_iou_batch(truth[-1] * 2, last.xyxy)
    assert (iou.max(axis=1) > 0.5).all()
    assert (last.xyxy[:, [0, 2]] <= 2 * WIDTH).all() and (last.xyxy[:, [1, 3]] <= 2 * HEIGHT).all()


def test_cars_in_the_parking_lot(media_video) -> None:
    """car-detection.mp4: cars drive through at about frames 53-117, 180-240 and 315-348.

    Checked by looking at the frames: the lot is empty and still in between.
    """
    results = run_stage(Motion(), video_frames(media_video("car-detection.mp4"), fps=12.5))
    assert len(results) == 377
    quiet = [*range(10, 50), *range(130, 175), *range(295, 312), *range(350, 365)]
    busy = [*range(60, 100), *range(190, 230), *range(320, 340)]
    for i in quiet:
        assert results[i].metadata["motion_score"] < 0.01, i
        assert not (results[i].area > 5000).any(), i
    for i in busy:
        assert results[i].metadata["motion_score"] > 0.02, i
        assert (results[i].area > 10000).any(), i  # a car is ~10,000-20,000 px


def test_options_are_checked_and_the_stage_pickles() -> None:
    with pytest.raises(ValueError, match="blur must be odd"):
        Motion(blur=4)
    stage = Motion(min_area=100)
    stage.setup()
    copy = pickle.loads(pickle.dumps(stage))
    assert copy._subtractor is None and copy.min_area == 100
    assert len(run_stage(copy, [make_frame()])) == 1
