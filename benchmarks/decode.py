"""Decode: fp.sources.VideoFile against a bare PyAV decode loop, in the same run.

The baseline is what a user writes to get BGR frames out of a file with PyAV:
``for f in container.decode(video=0): f.to_ndarray(format="bgr24")`` with
threaded decoding. framepipe runs the file through one no-op stage, offline,
inline (the same single process as the loop), and counts from the first
decoded frame to the last.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import framepipe as fp

from ._report import Measurement, Target, progress, shared_media

BENCH = "decode"
CLIP = "slow_traffic_small.mp4"


def _clip() -> Path | None:
    media = shared_media()
    path = media / "videos" / CLIP if media is not None else None
    return path if path is not None and path.exists() else None


def bare_pyav(path: Path) -> tuple[int, float]:
    import av

    began = time.perf_counter()
    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frame.to_ndarray(format="bgr24")
            count += 1
    return count, time.perf_counter() - began


def framepipe_decode(path: Path, executor: str) -> tuple[int, float]:
    pipe = fp.Pipeline("decode")
    video = pipe.source("video", fp.sources.VideoFile(path))
    pipe.stage("none", lambda frame: None, after=video)
    began = time.perf_counter()
    run = pipe.run(mode="offline", executor=executor)
    return run.stats["none"].processed, time.perf_counter() - began


def run(quick: bool) -> Iterator[Measurement]:
    path = _clip()
    if path is None:
        progress(f"decode: skipped, {CLIP} not found (../shared/media is absent)")
        return
    repeats = 2 if quick else 4
    best: dict[str, float] = {}
    for case, measure in (
        ("PyAV loop", lambda: bare_pyav(path)),
        ("framepipe inline", lambda: framepipe_decode(path, "inline")),
        ("framepipe threads", lambda: framepipe_decode(path, "threads")),
    ):
        progress(f"decode: {case}")
        rates = []
        for _ in range(repeats):
            frames, seconds = measure()
            rates.append(frames / seconds)
        best[case] = max(rates)
        yield Measurement(BENCH, case, f"{CLIP}, {frames} frames", "fps", best[case], "fps")
    for case in ("framepipe inline", "framepipe threads"):
        yield Measurement(
            BENCH,
            f"{case}/PyAV loop",
            CLIP,
            "ratio",
            best[case] / best["PyAV loop"],
            "x",
            Target(">=", 0.95),
        )
