"""Tracker: the per-frame cost of ``Tracker.process``, this version against the one it replaced.

The tracker now moves tracks on by media time and marks predicted boxes; this
checks that it costs no more than 10% over the ByteTrack implementation it
replaced. Both run in the same process on the same frames: the old one is the
module ``src/framepipe/stages/_tracker.py`` as of commit ``94a118f``, read with
``git show`` and imported under another name at benchmark time.

The frames: 12 cars crossing a 640x360 frame at different speeds, with box
jitter, a few missed detections and a low-score one per frame (deterministic,
from a seeded generator). Two cases: detections on every frame, and detections
on every third frame with the newest result carried forward in between (a
detector at 10 fps under a 30 fps tracker, ``join="latest"``), where the
tracker mostly predicts. Each implementation runs the whole sequence 5 times,
alternating, and keeps its best time.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import supervision as sv

from framepipe.stages import Tracker
from framepipe.stages._detector import make_detections
from framepipe.testing import make_frame

from ._report import Measurement, Target, progress

BENCH = "tracker"
BASELINE_COMMIT = "94a118f"
FRAMES = 900
REPEATS = 5


def baseline_module() -> ModuleType:
    """The tracker module of ``BASELINE_COMMIT``, imported as ``framepipe.stages._tracker_base``."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "show", f"{BASELINE_COMMIT}:src/framepipe/stages/_tracker.py"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="framepipe-bench-"))
    path = folder / "_tracker_base.py"
    path.write_text(source, encoding="utf-8")
    # A name inside framepipe.stages, so its relative imports resolve.
    spec = importlib.util.spec_from_file_location("framepipe.stages._tracker_base", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def detections(frames: int) -> list[sv.Detections]:
    """Per frame: the cars in view, jittered, some missed, plus one weak false box."""
    rng = np.random.default_rng(7)
    starts = rng.uniform(-300, 600, 12)
    speeds = rng.uniform(60, 240, 12) * rng.choice([-1, 1], 12)  # px per second
    lanes = np.linspace(40, 300, 12)
    out = []
    for i in range(frames):
        t = i / 30
        x = (starts + speeds * t) % 900 - 150
        seen = (x > -40) & (x < 640) & (rng.random(12) > 0.05)
        boxes = np.stack([x, lanes, x + 80, lanes + 50], axis=1)[seen]
        boxes += rng.normal(0, 1.5, boxes.shape)
        scores = rng.uniform(0.55, 0.95, len(boxes))
        weak = np.array([[rng.uniform(0, 560), rng.uniform(0, 300), 0, 0]])
        weak[:, 2:] = weak[:, :2] + 60
        boxes = np.concatenate([boxes, weak])
        scores = np.concatenate([scores, [0.2]])
        n = len(boxes)
        out.append(make_detections(boxes, scores, np.full(n, 2), ["car"] * n, frame_index=i))
    return out


def frames_for(every: int, recorded: list[sv.Detections]) -> list[Any]:
    image = np.full((360, 640, 3), 114, np.uint8)
    frames, current = [], recorded[0]
    for i, found in enumerate(recorded):
        if i % every == 0:
            current = found
        frames.append(make_frame(image, index=i, pts=i / 30, results={"detect": current}))
    return frames


def per_frame_us(tracker_class: type, frames: list[Any]) -> float:
    tracker = tracker_class("detect")
    tracker.setup()
    began = time.perf_counter()
    for frame in frames:
        tracker.process(frame)
    return (time.perf_counter() - began) / len(frames) * 1e6


def run(quick: bool) -> Iterator[Measurement]:
    progress("tracker: per-frame cost, this version against " + BASELINE_COMMIT)
    old = baseline_module().Tracker
    recorded = detections(FRAMES // 3 if quick else FRAMES)
    for every, detail in ((1, "detections every frame"), (3, "detections every 3rd frame")):
        frames = frames_for(every, recorded)
        best = {"framepipe": float("inf"), BASELINE_COMMIT: float("inf")}
        for _ in range(2 if quick else REPEATS):
            best["framepipe"] = min(best["framepipe"], per_frame_us(Tracker, frames))
            best[BASELINE_COMMIT] = min(best[BASELINE_COMMIT], per_frame_us(old, frames))
        for case, value in best.items():
            yield Measurement(BENCH, case, detail, "per_frame", value, "us")
        yield Measurement(
            BENCH,
            f"framepipe/{BASELINE_COMMIT}",
            detail,
            "per_frame",
            best["framepipe"] / best[BASELINE_COMMIT],
            "x",
            Target("<=", 1.10),
        )
