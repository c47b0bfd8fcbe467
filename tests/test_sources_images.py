"""Images: folders and globs of stills played as video."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from clip_fixtures import draw_frame, read_index
from framepipe import SourceError
from framepipe.sources import Images
from framepipe.sources._images import natural_key
from framepipe.testing import run_source


def write(path: Path, index: int, size: tuple[int, int] = (160, 120)) -> Path:
    assert cv2.imwrite(str(path), draw_frame(index, size))
    return path


@pytest.fixture
def numbered(tmp_path: Path) -> Path:
    """img1.png ... img12.png, where each image shows its own number."""
    for index in range(1, 13):
        write(tmp_path / f"img{index}.png", index)
    return tmp_path


def indices(frames: list[tuple[np.ndarray, float]]) -> list[int]:
    return [read_index(image) for image, _ in frames]


def test_natural_order(numbered: Path) -> None:
    frames = run_source(Images(numbered, fps=10))
    assert indices(frames) == list(range(1, 13))
    assert [pts for _, pts in frames] == pytest.approx([i / 10 for i in range(12)])


def test_natural_key_orders_numbers_by_value() -> None:
    names = ["img10.png", "img2.png", "IMG1.png", "img2b.png", "img02.png", "a.png"]
    assert sorted(names, key=natural_key) == [
        "a.png",
        "IMG1.png",
        "img2.png",
        "img02.png",
        "img2b.png",
        "img10.png",
    ]


def test_folder_skips_other_and_hidden_files(numbered: Path) -> None:
    (numbered / "notes.txt").write_text("not an image")
    write(numbered / ".hidden.png", 99)
    (numbered / "sub").mkdir()
    assert indices(run_source(Images(numbered))) == list(range(1, 13))


def test_glob_pattern(tmp_path: Path) -> None:
    write(tmp_path / "a1.jpg", 1)
    write(tmp_path / "a3.jpg", 3)
    write(tmp_path / "b2.jpg", 2)
    write(tmp_path / "a2.png", 7)
    assert indices(run_source(Images(tmp_path / "a*.jpg"))) == [1, 3]
    nested = tmp_path / "deep" / "er"
    nested.mkdir(parents=True)
    write(nested / "a9.jpg", 9)
    assert indices(run_source(Images(f"{tmp_path}/**/a*.jpg"))) == [1, 3, 9]


def test_sizes_may_differ(tmp_path: Path) -> None:
    write(tmp_path / "1.png", 1, (160, 120))
    write(tmp_path / "2.png", 2, (320, 240))
    shapes = [image.shape for image, _ in run_source(Images(tmp_path))]
    assert shapes == [(120, 160, 3), (240, 320, 3)]


def test_grey_and_alpha_images_become_bgr(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "1.png"), np.full((48, 64), 200, np.uint8))
    cv2.imwrite(str(tmp_path / "2.png"), np.full((48, 64, 4), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "3.png"), np.full((48, 64, 3), 30000, np.uint16))
    images = [image for image, _ in run_source(Images(tmp_path))]
    assert all(image.shape == (48, 64, 3) and image.dtype == np.uint8 for image in images)
    assert [int(image[0, 0, 0]) for image in images[:2]] == [200, 100]


def test_start_skips_to_the_frame_at_or_after_it(numbered: Path) -> None:
    frames = run_source(Images(numbered, fps=10), start=0.45)
    assert indices(frames)[0] == 6  # frame 5 (pts 0.5), the 6th image
    assert frames[0][1] == pytest.approx(0.5)


def test_start_past_the_end(numbered: Path) -> None:
    assert run_source(Images(numbered, fps=10), start=5.0) == []


def test_loop_keeps_pts_rising(numbered: Path) -> None:
    frames = run_source(Images(numbered, fps=4, loop=True), limit=30)
    assert indices(frames) == (list(range(1, 13)) * 3)[:30]
    assert [pts for _, pts in frames] == pytest.approx([i / 4 for i in range(30)])


def test_unreadable_file_is_named(numbered: Path) -> None:
    broken = numbered / "img5.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    began = time.monotonic()
    with pytest.raises(SourceError) as caught:
        run_source(Images(numbered), name="stills")
    assert time.monotonic() - began < 5.0
    assert "'stills'" in str(caught.value) and "img5.png" in str(caught.value)
    assert "cannot read image" in str(caught.value)


@pytest.mark.parametrize(
    "where, expected",
    [
        ("empty", "no image files in folder"),
        ("*.jpg", "no files match"),
        ("missing", "no such folder or file"),
    ],
)
def test_nothing_to_play(tmp_path: Path, where: str, expected: str) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=f"'stills': {expected}"):
        run_source(Images(tmp_path / where), name="stills")


def test_stops_when_asked(numbered: Path) -> None:
    began = time.monotonic()
    frames = run_source(Images(numbered, loop=True), stop_after=0.2)
    assert frames and time.monotonic() - began < 2.0


def test_rejects_bad_fps_and_pickles(numbered: Path) -> None:
    with pytest.raises(ValueError, match="fps"):
        Images(numbered, fps=0)
    copy = pickle.loads(pickle.dumps(Images(numbered, fps=5, loop=True)))
    assert copy.describe() == {"type": "Images", "pattern": str(numbered), "fps": 5.0, "loop": True}


# VideoFile's pipeline test covers the process boundary for file sources.
@pytest.mark.parametrize("executor", ["inline", "threads"])
def test_images_through_a_pipeline(numbered: Path, executor: str) -> None:
    import framepipe as fp

    pipe = fp.Pipeline()
    stills = pipe.source("stills", Images(numbered, fps=10))
    seen = pipe.stage("seen", lambda frame: read_index(frame.image), after=stills)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=seen)
    pipe.run(mode="offline", executor=executor)
    assert [collect.results["seen"][i] for i in range(12)] == list(range(1, 13))
