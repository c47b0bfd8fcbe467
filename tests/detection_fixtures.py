"""YOLOX-Nano detections on every frame of the real clips, made once per test session.

Registered in ``conftest.py`` (``pytest_plugins``). The detector is the slow part
of the tracking and counting tests, so they share one pass per clip:

- ``vehicle_detections``: cars, trucks, buses and motorcycles (conf >= 0.1) on
  the 914 frames of ``slow_traffic_small.mp4``;
- ``people_detections``: persons (conf >= 0.1) on the 1394 frames of
  ``one-by-one-person-detection.mp4``.

Frames are decoded with PyAV (``video_frames``), list index = frame index, and
each result carries ``metadata["frame_index"]`` as the detector sets it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import supervision as sv

from framepipe.stages import Detector
from framepipe.testing import run_stage
from test_stages_detector import video_frames

VEHICLES = ["car", "truck", "bus", "motorcycle"]


@pytest.fixture(scope="session")
def vehicle_detections(shared_media: Path, media_video: Any) -> list[sv.Detections]:
    detector = Detector(shared_media / "models" / "yolox_nano.onnx", conf=0.1, classes=VEHICLES)
    return run_stage(detector, video_frames(media_video("slow_traffic_small.mp4")))


@pytest.fixture(scope="session")
def people_detections(shared_media: Path, media_video: Any) -> list[sv.Detections]:
    detector = Detector(shared_media / "models" / "yolox_nano.onnx", conf=0.1, classes=["person"])
    clip = media_video("one-by-one-person-detection.mp4")
    return run_stage(detector, video_frames(clip, fps=10.0))
