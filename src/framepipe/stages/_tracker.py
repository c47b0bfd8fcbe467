"""Multi-object tracking: ByteTrack over an upstream stage's detections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv
from scipy.optimize import linear_sum_assignment

from .._frame import Frame
from .._stage import Stage
from ._detector import clip_boxes, make_detections


def find_detections(
    frame: Frame, name: str | None, *, tracked: bool = False
) -> tuple[str | None, sv.Detections | None]:
    """``(result name, detections)`` from ``frame.results``.

    With ``name`` that result (``None`` when absent); else the newest
    ``sv.Detections`` among the results, and with ``tracked=True`` the newest
    that carries tracker ids.
    """
    if name is not None:
        value = frame.results.get(name)
        return name, value if isinstance(value, sv.Detections) else None
    for key, value in reversed(frame.results.items()):
        if isinstance(value, sv.Detections) and (not tracked or value.tracker_id is not None):
            return key, value
    return None, None


def same_result(value: sv.Detections | None, last: sv.Detections | None) -> bool:
    """Whether ``value`` is ``last`` carried forward by a pipeline, not a new result.

    In one process a carried-forward result is the very same object; across
    processes it arrives as an equal copy, recognised by the index of the frame
    it was computed on (``metadata["frame_index"]``, which built-in stages set).
    """
    if value is last:
        return True
    if value is None or last is None:
        return False
    index = value.metadata.get("frame_index")
    return index is not None and index == last.metadata.get("frame_index")


# -- Kalman filter over (cx, cy, aspect, height) and their velocities ---------------------------
# The constant-velocity model SORT and ByteTrack use; noise scales with box height so
# that near and far objects are treated alike. ByteTrack's noise is tuned for one step
# per frame at 30 fps, so a step here is 1/30 s of media time and the filter moves on by
# the real time between two updates, whatever rate the detections come at.

_POS_WEIGHT = 1.0 / 20
_VEL_WEIGHT = 1.0 / 160
_STEPS_PER_SECOND = 30.0
_H = np.eye(4, 8)


def _xyxy_to_xyah(xyxy: np.ndarray) -> np.ndarray:
    w = xyxy[:, 2] - xyxy[:, 0]
    h = np.maximum(xyxy[:, 3] - xyxy[:, 1], 1e-3)
    return np.stack([xyxy[:, 0] + w / 2, xyxy[:, 1] + h / 2, w / h, h], axis=1)


def _xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    w = xyah[:, 2] * xyah[:, 3]
    h = xyah[:, 3]
    return np.stack(
        [xyah[:, 0] - w / 2, xyah[:, 1] - h / 2, xyah[:, 0] + w / 2, xyah[:, 1] + h / 2], axis=1
    )


def _kf_initiate(xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = xyah[3]
    std = np.array(
        [
            2 * _POS_WEIGHT * h,
            2 * _POS_WEIGHT * h,
            1e-2,
            2 * _POS_WEIGHT * h,
            10 * _VEL_WEIGHT * h,
            10 * _VEL_WEIGHT * h,
            1e-5,
            10 * _VEL_WEIGHT * h,
        ]
    )
    return np.concatenate([xyah, np.zeros(4)]), np.diag(std**2)


def _kf_predict(means: np.ndarray, covs: np.ndarray, steps: float) -> tuple[np.ndarray, np.ndarray]:
    """Advance ``N`` tracks (``means`` ``N x 8``, ``covs`` ``N x 8 x 8``) by ``steps`` of 1/30 s."""
    h = means[:, 3]
    std = np.stack(
        [
            _POS_WEIGHT * h,
            _POS_WEIGHT * h,
            np.full_like(h, 1e-2),
            _POS_WEIGHT * h,
            _VEL_WEIGHT * h,
            _VEL_WEIGHT * h,
            np.full_like(h, 1e-5),
            _VEL_WEIGHT * h,
        ],
        axis=1,
    )
    noise = np.einsum("ni,ij->nij", std**2 * steps, np.eye(8))
    f = np.eye(8)
    f[:4, 4:] = steps * np.eye(4)
    return means @ f.T, f @ covs @ f.T + noise


def _kf_update(
    mean: np.ndarray, cov: np.ndarray, xyah: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    h = mean[3]
    std = np.array([_POS_WEIGHT * h, _POS_WEIGHT * h, 1e-1, _POS_WEIGHT * h])
    projected_cov = _H @ cov @ _H.T + np.diag(std**2)
    gain = np.linalg.solve(projected_cov, (cov @ _H.T).T).T
    mean = mean + gain @ (xyah - _H @ mean)
    cov = cov - gain @ projected_cov @ gain.T
    return mean, cov


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``a`` (``N x 4``) and ``b`` (``M x 4``) boxes in xyxy."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _assign(cost: np.ndarray, limit: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Minimum-cost matching that refuses pairs costing more than ``limit``.

    Returns the matched ``(row, col)`` pairs, the unmatched rows and the unmatched cols.
    """
    rows, cols = cost.shape
    if rows == 0 or cols == 0:
        return [], list(range(rows)), list(range(cols))
    # Pairs over the limit are priced out rather than removed, so the solver
    # still sees a rectangular problem.
    r, c = linear_sum_assignment(np.where(cost > limit, limit + 1e4, cost))
    pairs = [(int(i), int(j)) for i, j in zip(r, c, strict=True) if cost[i, j] <= limit]
    matched_rows = {i for i, _ in pairs}
    matched_cols = {j for _, j in pairs}
    return (
        pairs,
        [i for i in range(rows) if i not in matched_rows],
        [j for j in range(cols) if j not in matched_cols],
    )


def _row(detections: sv.Detections, j: int) -> sv.Detections:
    row = detections[j : j + 1]
    assert isinstance(row, sv.Detections)
    return row


@dataclass(slots=True, eq=False)
class _Track:
    mean: np.ndarray
    cov: np.ndarray
    row: sv.Detections  # the last detection matched, to carry its fields forward
    last_seen: float
    track_id: int = 0  # public id, given on confirmation; 0 while unconfirmed
    lost: bool = False

    @property
    def xyxy(self) -> np.ndarray:
        return _xyah_to_xyxy(self.mean[None, :4])[0]


class Tracker(Stage):
    """ByteTrack over the detections of an upstream stage; adds stable ``tracker_id``s.

    The result is the input ``sv.Detections`` restricted to detections that belong
    to a confirmed track, with ``tracker_id`` set (ids count up from 1 and are never
    reused) and ``metadata["source"]`` naming the result that was tracked, so
    ``Annotate`` draws the tracked boxes instead of the raw ones.

    ByteTrack (Zhang et al., 2022) matches high-score detections to tracks by IoU
    with Kalman-predicted boxes first, then low-score detections to the tracks
    still unmatched, which keeps ids through partial occlusions. A track is
    confirmed on its second matched detection (on the very first frame at once),
    kept while lost for ``lost_track_seconds`` of media time, then dropped.

    Time is media time: the Kalman filter moves tracks on by the real time between
    the frames it updates on (``frame.pts``), so velocities mean the same whether
    detections come on every frame or three times a second.

    A detector slower than the tracker: in a pipeline where the detector runs at a
    lower rate, the tracker still gets every frame and the detector's newest result
    is carried forward - the very same object as on the previous frame (an equal
    copy across processes, with the same ``metadata["frame_index"]``). The tracker
    recognises that (and a frame with no detections result yet) and only *predicts*:
    confirmed tracks are returned where their velocity puts them at this frame's
    time, without changing the filter. Every result says which boxes are
    predictions: ``data["predicted"]`` (one bool per box) and
    ``metadata["predicted"]`` (the whole result). Counters count only detected
    boxes, so a prediction never makes a crossing.

    Args:
        detections: name of the upstream result to track; ``None`` tracks the newest
            ``sv.Detections`` in ``frame.results``.
        track_thresh: detections scoring at least this are "high" (first association
            and new tracks); lower ones down to ``low_thresh`` only extend tracks.
        low_thresh: detections below this are ignored.
        new_track_thresh: a high detection that matches nothing starts a track only
            if it scores at least this; default ``track_thresh + 0.1``.
        match_thresh: largest matching cost (1 - IoU * score) in the first association.
        lost_track_seconds: how long a lost track can come back, in media seconds.
        frame_rate: when given, a frame's time is ``frame.index / frame_rate``
            instead of ``frame.pts`` (for sources whose timestamps are unreliable).

    Example::

        pipe.stage("detect", fp.stages.Detector("yolox_nano"), fps=10)
        pipe.stage("track", fp.stages.Tracker("detect"), after=["source", "detect"])
        # frame.results["track"].tracker_id -> array([1, 2, 5])
    """

    def __init__(
        self,
        detections: str | None = "detect",
        *,
        track_thresh: float = 0.5,
        low_thresh: float = 0.1,
        new_track_thresh: float | None = None,
        match_thresh: float = 0.8,
        lost_track_seconds: float = 1.0,
        frame_rate: float | None = None,
    ) -> None:
        if not 0.0 <= low_thresh <= track_thresh <= 1.0:
            raise ValueError(
                f"Tracker: need 0 <= low_thresh <= track_thresh <= 1, got "
                f"low_thresh={low_thresh}, track_thresh={track_thresh}"
            )
        if frame_rate is not None and frame_rate <= 0:
            raise ValueError(f"Tracker: frame_rate must be > 0, got {frame_rate}")
        self.detections = detections
        self.track_thresh, self.low_thresh = float(track_thresh), float(low_thresh)
        self.new_track_thresh = (
            min(1.0, self.track_thresh + 0.1)
            if new_track_thresh is None
            else float(new_track_thresh)
        )
        self.match_thresh = float(match_thresh)
        self.lost_track_seconds = float(lost_track_seconds)
        self.frame_rate = frame_rate
        self.reset()

    def reset(self) -> None:
        """Forget every track; ids start again from 1."""
        self._tracks: list[_Track] = []
        self._last_input: Any = None
        self._next_id = 1
        self._updates = 0
        self._time: float | None = None  # media time every track's filter state is at
        self._warned_missing = False

    def setup(self) -> None:
        self.reset()

    @property
    def tracks(self) -> int:
        """How many tracks (confirmed, unconfirmed and lost) are alive."""
        return len(self._tracks)

    def process(self, frame: Frame) -> sv.Detections:
        """Tracked detections for ``frame`` (predicted ones when no new detections came)."""
        now = frame.index / self.frame_rate if self.frame_rate else frame.pts
        key, detections = find_detections(frame, self.detections)
        if detections is None:
            self._warn_missing(frame)
        fresh = detections is not None and not same_result(detections, self._last_input)
        self._last_input = detections
        if fresh:
            assert detections is not None
            if self._tracks:
                means, covs = _kf_predict(
                    np.stack([t.mean for t in self._tracks]),
                    np.stack([t.cov for t in self._tracks]),
                    self._steps_to(now),
                )
                for track, mean, cov in zip(self._tracks, means, covs, strict=True):
                    track.mean, track.cov = mean, cov
            out = self._update(detections, now)
            self._time = now
        else:
            out = self._predicted(frame, self._steps_to(now))
        self._tracks = [
            t for t in self._tracks if not (t.lost and now - t.last_seen > self.lost_track_seconds)
        ]
        out.metadata = {
            **out.metadata,
            "frame_index": frame.index,
            "source": key,
            "predicted": not fresh,
        }
        return out

    def _update(self, detections: sv.Detections, now: float) -> sv.Detections:
        self._updates += 1
        n = len(detections)
        scores = (
            np.ones(n, np.float32)
            if detections.confidence is None
            else detections.confidence.astype(np.float32)
        )
        boxes = np.asarray(detections.xyxy, np.float64)
        high = np.flatnonzero(scores >= self.track_thresh)
        low = np.flatnonzero((scores >= self.low_thresh) & (scores < self.track_thresh))
        confirmed = [t for t in self._tracks if t.track_id]
        unconfirmed = [t for t in self._tracks if not t.track_id]
        matched: list[tuple[_Track, int]] = []

        # 1. Confirmed tracks (tracked or lost) against high detections, IoU fused with score.
        pool_boxes = np.array([t.xyxy for t in confirmed]).reshape(-1, 4)
        cost = 1.0 - _iou(pool_boxes, boxes[high]) * scores[high][None, :]
        pairs, rest_tracks, rest_high = _assign(cost, self.match_thresh)
        matched += [(confirmed[i], int(high[j])) for i, j in pairs]

        # 2. Tracks that were being tracked and are still unmatched, against low detections.
        still = [confirmed[i] for i in rest_tracks if not confirmed[i].lost]
        cost = 1.0 - _iou(np.array([t.xyxy for t in still]).reshape(-1, 4), boxes[low])
        pairs, rest_still, _ = _assign(cost, 0.5)
        matched += [(still[i], int(low[j])) for i, j in pairs]
        for i in rest_still:
            still[i].lost = True

        # 3. Unconfirmed tracks get one more chance with the remaining high detections.
        left = high[rest_high]
        cost = (
            1.0
            - _iou(np.array([t.xyxy for t in unconfirmed]).reshape(-1, 4), boxes[left])
            * scores[left][None, :]
        )
        pairs, rest_unconfirmed, rest_left = _assign(cost, 0.7)
        matched += [(unconfirmed[i], int(left[j])) for i, j in pairs]
        dropped = {id(unconfirmed[i]) for i in rest_unconfirmed}

        for track, j in matched:
            track.mean, track.cov = _kf_update(
                track.mean, track.cov, _xyxy_to_xyah(boxes[j : j + 1])[0]
            )
            track.row, track.last_seen = _row(detections, j), now
            track.lost = False
            if not track.track_id:
                self._confirm(track)

        # 4. New tracks from high detections nobody claimed.
        born = []
        for j in left[rest_left]:
            if scores[j] < self.new_track_thresh:
                continue
            mean, cov = _kf_initiate(_xyxy_to_xyah(boxes[j : j + 1])[0])
            track = _Track(mean, cov, _row(detections, j), now)
            if self._updates == 1:
                self._confirm(track)  # nothing to confirm against on the first frame
            born.append((track, int(j)))
        self._tracks = [t for t in self._tracks if id(t) not in dropped] + [t for t, _ in born]

        shown = [(t, j) for t, j in matched + born if t.track_id]
        shown.sort(key=lambda pair: pair[1])
        out = detections[np.array([j for _, j in shown], dtype=np.int64)]
        assert isinstance(out, sv.Detections)
        out.tracker_id = np.array([t.track_id for t, _ in shown], dtype=np.int64)
        out.data["predicted"] = np.zeros(len(out), bool)
        return out

    def _steps_to(self, now: float) -> float:
        """Filter steps from the last update to ``now`` (never backwards)."""
        return 0.0 if self._time is None else max(0.0, now - self._time) * _STEPS_PER_SECOND

    def _confirm(self, track: _Track) -> None:
        track.track_id = self._next_id
        self._next_id += 1

    def _predicted(self, frame: Frame, steps: float) -> sv.Detections:
        shown = [t for t in self._tracks if t.track_id and not t.lost]
        if not shown:
            out = make_detections(np.empty((0, 4)), [], [], [])
            out.tracker_id = np.empty(0, np.int64)
            out.data["predicted"] = np.zeros(0, bool)
            return out
        out = sv.Detections.merge([t.row for t in shown])
        means = np.stack([t.mean for t in shown])
        boxes = _xyah_to_xyxy(means[:, :4] + steps * means[:, 4:]).astype(np.float32)
        height, width = frame.shape
        clip_boxes(boxes, width, height)
        out.xyxy = boxes
        out.tracker_id = np.array([t.track_id for t in shown], dtype=np.int64)
        out.data["predicted"] = np.ones(len(out), bool)
        return out

    def _warn_missing(self, frame: Frame) -> None:
        if self.detections is None or self._warned_missing or not frame.results:
            return
        self._warned_missing = True
        context = getattr(self, "context", None)
        if context is not None:
            context.logger.warning(
                "%r: no detections named %r in frame.results (has: %s); predicting only until "
                "they arrive",
                context.name,
                self.detections,
                ", ".join(frame.results),
            )

    def __repr__(self) -> str:
        return f"Tracker(detections={self.detections!r})"
