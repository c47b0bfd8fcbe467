"""Faces: OpenCV's Haar cascade on real webcam-like clips, and its errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from framepipe import ModelError
from framepipe.stages import Faces
from framepipe.stages._faces import haar_cascade_path
from framepipe.testing import make_frame, run_stage
from test_stages_detector import video_frames


def test_a_face_in_every_frame_of_the_asl_clip(media_video) -> None:
    results = run_stage(Faces(), video_frames(media_video("asl_gestures_book.mkv")))
    assert len(results) == 109
    assert all(len(r) >= 1 for r in results)
    first = results[0]
    assert first.data["class_name"].tolist() == ["face"] * len(first)
    assert first.class_id.tolist() == [0] * len(first)
    assert (first.confidence == 1.0).all()
    # One person in front of a webcam: the biggest face sits in the upper middle.
    x1, _, x2, y2 = first.xyxy[np.argmax(first.area)]
    assert 200 < (x1 + x2) / 2 < 440 and y2 < 300 and x2 - x1 > 40


def test_faces_in_every_frame_of_the_walking_gif(media_video) -> None:
    results = run_stage(
        Faces(), video_frames(media_video("face-demographics-walking-and-pause.gif"))
    )
    assert len(results) == 41
    assert all(1 <= len(r) <= 3 for r in results)


def test_large_frames_are_searched_smaller_but_boxes_stay_in_frame_pixels(media_video) -> None:
    image = next(video_frames(media_video("asl_gestures_book.mkv"))).image
    big = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    [small_result] = run_stage(Faces(max_width=None), [make_frame(image)])
    [big_result] = run_stage(Faces(max_width=640, min_size=(60, 60)), [make_frame(big)])
    assert len(small_result) == 1 and len(big_result) >= 1
    # Searched at half size, so the same face comes back at twice the coordinates.
    error = np.abs(big_result.xyxy / 2 - small_result.xyxy).max(axis=1)
    assert error.min() <= 6


def test_no_faces_on_a_blank_frame() -> None:
    [result] = run_stage(Faces(), [make_frame(width=320, height=240)])
    assert len(result) == 0 and result.data["class_name"].shape == (0,)


def test_a_missing_cascade_is_a_clear_model_error(monkeypatch) -> None:
    with pytest.raises(ModelError, match=r"haarcascade_nothing\.xml is not available"):
        run_stage(Faces(cascade="haarcascade_nothing.xml"), [make_frame()])
    # OpenCV 5 wheels have no cv2.data at all.
    monkeypatch.delattr(cv2, "data")
    with pytest.raises(ModelError, match=r"no cv2\.data.*OpenCV 4\.x wheel"):
        haar_cascade_path()


def test_a_cascade_path_and_pickling(tmp_path: Path) -> None:
    own = tmp_path / "mine.xml"
    own.write_bytes(haar_cascade_path().read_bytes())
    stage = Faces(cascade=own)
    stage.setup()
    copy = pickle.loads(pickle.dumps(stage))
    assert copy._classifier is None
    assert run_stage(copy, [make_frame()])[0].xyxy.shape == (0, 4)
