"""Camera: the failure paths, for real.

There is no camera on the machines this suite runs on, so reading frames from
a real device is not tested here; the reader shares its thread, hand-off,
back-off and states with ``Stream``, which is tested against real servers.
"""

from __future__ import annotations

import glob
import pickle
import sys
import time
from pathlib import Path

import pytest

from framepipe import SourceError
from framepipe.sources import Camera
from framepipe.testing import run_source

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="device paths are checked on Linux (V4L2)"
)


def absent_index() -> int:
    present = {int(path.removeprefix("/dev/video")) for path in glob.glob("/dev/video[0-9]*")}
    return next(index for index in range(64) if index not in present)


def opens_with_error(camera: Camera) -> SourceError:
    began = time.monotonic()
    with pytest.raises(SourceError) as caught:
        run_source(camera, name="webcam", limit=1)
    assert time.monotonic() - began < 5.0
    assert caught.value.node == "webcam" and "'webcam'" in str(caught.value)
    return caught.value


def test_missing_device_index() -> None:
    index = absent_index()
    error = opens_with_error(Camera(index))
    assert f"no camera at /dev/video{index}" in str(error)
    assert "video devices here" in str(error)


def test_missing_device_path() -> None:
    assert "no camera at /dev/video63" in str(opens_with_error(Camera("/dev/video63")))


def test_stable_link_to_a_missing_device(tmp_path: Path) -> None:
    link = tmp_path / "usb-Acme_Webcam-video-index0"
    link.symlink_to(f"/dev/video{absent_index()}")
    assert "no camera at" in str(opens_with_error(Camera(link)))


def test_a_device_that_is_not_a_camera() -> None:
    error = opens_with_error(Camera("/dev/null"))
    assert "cannot open camera /dev/null" in str(error)


def test_options_and_pickling() -> None:
    with pytest.raises(ValueError, match="fourcc"):
        Camera(0, fourcc="MJPEG")
    camera = pickle.loads(pickle.dumps(Camera("/dev/video0", 1280, 720, 30, fourcc="MJPG")))
    assert camera.describe() == {
        "type": "Camera",
        "device": "/dev/video0",
        "width": 1280,
        "height": 720,
        "fps": 30,
    }
    assert camera.live is True and camera.seekable is False


# Not under "processes": there the error arrives only after 7-10 s (reported), and
# nothing about a failing open is specific to the process boundary.
@pytest.mark.parametrize("executor", ["inline", "threads"])
def test_missing_camera_fails_the_pipeline(executor: str) -> None:
    import framepipe as fp

    pipe = fp.Pipeline()
    cam = pipe.source("webcam", Camera(absent_index()))
    pipe.sink("out", fp.sinks.Collect(), after=pipe.stage("n", lambda f: f.index, after=cam))
    began = time.monotonic()
    with pytest.raises(SourceError, match=r"'webcam'.*no camera at /dev/video"):
        pipe.run(mode="realtime", executor=executor, duration=10)
    assert time.monotonic() - began < 5.0
