"""Tracker: ByteTrack ids on synthetic tracks, carried-forward detections, and a real clip."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest
import supervision as sv

from framepipe.stages import Tracker
from framepipe.stages._detector import make_detections
from framepipe.testing import make_frame, run_stage


def boxes_at(t: int, *, score: float = 0.9) -> sv.Detections:
    """Two cars moving right at 4 px a frame, one above the other."""
    xyxy = [[10 + 4 * t, 20, 70 + 4 * t, 60], [200 + 4 * t, 120, 280 + 4 * t, 180]]
    return make_detections(xyxy, [score, score], [2, 2], ["car", "car"])


def frames_with(results: list[sv.Detections | None], fps: float = 30.0) -> list:
    return [
        make_frame(
            width=640, height=240, index=i, pts=i / fps, results={} if r is None else {"detect": r}
        )
        for i, r in enumerate(results)
    ]


def ids(detections: sv.Detections) -> list[int]:
    assert detections.tracker_id is not None
    return detections.tracker_id.tolist()


def test_ids_are_stable_and_fields_are_kept() -> None:
    out = run_stage(Tracker("detect"), frames_with([boxes_at(t) for t in range(30)]))
    assert all(ids(o) == [1, 2] for o in out)
    last = out[-1]
    assert last.data["class_name"].tolist() == ["car", "car"]
    np.testing.assert_allclose(last.xyxy, boxes_at(29).xyxy)
    assert last.metadata["source"] == "detect" and last.metadata["predicted"] is False


def test_a_new_object_gets_an_id_on_its_second_detection() -> None:
    results = [boxes_at(t)[:1] for t in range(3)] + [boxes_at(t) for t in range(3, 6)]
    out = run_stage(Tracker("detect"), frames_with(results))
    assert [ids(o) for o in out] == [[1], [1], [1], [1], [1, 2], [1, 2]]


def test_a_short_gap_keeps_the_id_and_a_long_one_does_not() -> None:
    def run(gap: int) -> list[list[int]]:
        results = [
            boxes_at(t) if not 10 <= t < 10 + gap else boxes_at(t)[:1] for t in range(10 + gap + 5)
        ]
        return [
            ids(o)
            for o in run_stage(Tracker("detect", lost_track_seconds=1.0), frames_with(results))
        ]

    short = run(15)  # half a second away: comes back as 2
    assert short[-1] == [1, 2]
    long = run(45)  # a second and a half: a new id
    assert long[-1] == [1, 3]


def test_low_score_detections_extend_tracks_but_do_not_start_them() -> None:
    results = [boxes_at(t) for t in range(5)] + [boxes_at(t, score=0.3) for t in range(5, 10)]
    out = run_stage(Tracker("detect"), frames_with(results))
    assert all(ids(o) == [1, 2] for o in out)
    weak_from_start = run_stage(
        Tracker("detect"), frames_with([boxes_at(t, score=0.3) for t in range(5)])
    )
    assert all(len(o) == 0 for o in weak_from_start)


def test_carried_forward_detections_are_predicted_not_matched_again() -> None:
    """A detector at a third of the rate: its result object repeats for two frames."""
    results = []
    for t in range(30):
        results.append(boxes_at(t) if t % 3 == 0 else results[-1])
    out = run_stage(Tracker("detect"), frames_with(results))
    assert all(ids(o) == [1, 2] for o in out)
    assert [o.metadata["predicted"] for o in out[:6]] == [False, True, True] * 2
    # Once the velocity is known, predicted boxes move on between detections.
    for t in (25, 26, 28, 29):
        np.testing.assert_allclose(out[t].xyxy, boxes_at(t).xyxy, atol=2.0)


def test_predictions_follow_media_time_whatever_the_detection_rate() -> None:
    """Detections at irregular times; every frame's box is where the motion puts it."""
    speed = 120.0  # px per media second

    def at(t: float) -> sv.Detections:
        x = 10 + speed * t
        return make_detections([[x, 20, x + 60, 60]], [0.9], [2], ["car"])

    fps = 30.0
    detected_on = {0, 1, 2, 3, 9, 12, 21, 24, 25, 36, 48}  # gaps of 1 to 12 frames
    results: list[sv.Detections | None] = []
    for i in range(60):
        results.append(at(i / fps) if i in detected_on else results[-1])
    out = run_stage(Tracker("detect"), frames_with(results, fps=fps))
    for i in range(12, 60):
        np.testing.assert_allclose(out[i].xyxy[0], at(i / fps).xyxy[0], atol=3.0, err_msg=str(i))
        assert out[i].data["predicted"].tolist() == [i not in detected_on]
        assert out[i].metadata["predicted"] is (i not in detected_on)


def test_no_detections_yet_and_the_newest_result_by_default(caplog) -> None:
    def frames() -> list:
        return frames_with([None, None, boxes_at(2), boxes_at(3)])

    out = run_stage(Tracker("detect"), frames()[:2])
    assert [len(o) for o in out] == [0, 0] and out[0].tracker_id.shape == (0,)
    with caplog.at_level(logging.WARNING):
        run_stage(Tracker("missing"), frames(), name="track")
    assert caplog.text.count("no detections named 'missing'") == 1
    newest = run_stage(Tracker(None), frames())
    assert ids(newest[-1]) == [1, 2] and newest[-1].metadata["source"] == "detect"


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="low_thresh <= track_thresh"):
        Tracker(track_thresh=0.2, low_thresh=0.3)


# -- a real clip: people walking through one by one -------------------------------------------


@pytest.fixture
def people(people_detections: list[sv.Detections]) -> list[sv.Detections]:
    """YOLOX-Nano person detections (conf >= 0.1) for every frame of the clip."""
    return people_detections


def appearances(present: list[bool], max_gap: int) -> list[range]:
    """Runs of frames where someone is present, joining runs split by at most ``max_gap``."""
    runs: list[range] = []
    for i, here in enumerate(present):
        if not here:
            continue
        if runs and i - runs[-1].stop <= max_gap:
            runs[-1] = range(runs[-1].start, i + 1)
        else:
            runs.append(range(i, i + 1))
    return runs


@pytest.mark.parametrize("every", [1, 3], ids=["detector-every-frame", "detector-every-3rd"])
def test_a_walking_person_keeps_one_id(people: list[sv.Detections], every: int) -> None:
    """one-by-one-person-detection.mp4 (10 fps): six people walk through, one at a time.

    An *appearance* is a run of frames in which the detector finds a person with
    conf >= 0.5, runs split by gaps of at most 10 frames (1 s) joined. In the
    longest appearance (about 260 frames) the most common tracker id must be on
    at least 90 % of its frames and no other id on more than 5 %; over the whole
    clip no more than 8 ids are handed out. With ``every=3`` the detector runs on
    every third frame and its result is carried forward, as a pipeline does when
    the detector has a lower rate than the tracker.
    """
    results: list[sv.Detections] = []
    for i, detections in enumerate(people):
        results.append(detections if i % every == 0 else results[-1])
    tracked = run_stage(Tracker("detect"), frames_with(results, fps=10.0))
    present = [bool((d.confidence >= 0.5).any()) for d in people]
    longest = max(appearances(present, max_gap=10), key=len)
    assert len(longest) > 200
    seen = Counter(i for t in longest for i in set(ids(tracked[t])))
    (_, count), *others = seen.most_common()
    assert count >= 0.9 * len(longest), seen
    assert all(n <= 0.05 * len(longest) for _, n in others), seen
    assert len({i for t in tracked for i in ids(t)}) <= 8
