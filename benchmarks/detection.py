"""Detection: decode, detect, track, annotate and encode a real clip, offline.

framepipe runs ``VideoFile -> Detector -> Tracker -> Annotate -> VideoFile``
under ``executor="processes"`` (each step in its own process, so decoding,
inference, drawing and encoding overlap on the two cores), under
``executor="threads"`` (the same overlap: PyAV, onnxruntime and the encoder
release the GIL) and under ``executor="inline"``. In the same run, the
baseline a user would otherwise write: one sequential loop with PyAV
decoding, the same detector, tracker and annotator objects called one after
the other, and PyAV encoding with the same encoder settings.

Times are wall-clock from the first decoded frame to the finalized output file,
including model loading and, for framepipe, starting its workers.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import framepipe as fp

from ._report import Measurement, Target, progress, shared_media

BENCH = "detection"
CLIP = "slow_traffic_small.mp4"


def _media() -> Path | None:
    media = shared_media()
    return media if media is not None and (media / "videos" / CLIP).exists() else None


def _stages(model: str) -> tuple[Any, Any, Any]:
    return (fp.stages.Detector(model, conf=0.3), fp.stages.Tracker("detect"), fp.stages.Annotate())


def run_framepipe(executor: str, clip: Path, model: str, out: Path) -> tuple[float, Any]:
    detector, tracker, annotate = _stages(model)
    pipe = fp.Pipeline("detection")
    video = pipe.source("video", fp.sources.VideoFile(clip))
    det = pipe.stage("detect", detector, after=video)
    trk = pipe.stage("track", tracker, after=det)
    ann = pipe.stage("annotate", annotate, after=trk)
    pipe.sink("record", fp.sinks.VideoFile(out), after=ann)
    began = time.perf_counter()
    run = pipe.run(mode="offline", executor=executor)
    return time.perf_counter() - began, run.stats


def run_hand_loop(clip: Path, model: str, out: Path) -> tuple[float, int]:
    """What a user writes without framepipe: one loop, every step in turn."""
    import av
    import numpy as np

    from framepipe.testing import make_frame

    began = time.perf_counter()
    detector, tracker, annotate = _stages(model)
    for name, stage in (("detect", detector), ("track", tracker), ("annotate", annotate)):
        stage.context = fp.StageContext(name=name, mode="offline", logger=fp_logger())
        stage.setup()
    frames = 0
    with av.open(str(clip)) as source, av.open(str(out), "w") as sink:
        stream_in = source.streams.video[0]
        stream_in.thread_type = "AUTO"
        encoder = sink.add_stream("libx264", rate=round(float(stream_in.average_rate or 30)))
        encoder.width, encoder.height = (
            stream_in.codec_context.width,
            stream_in.codec_context.height,
        )
        encoder.pix_fmt = "yuv420p"
        encoder.options = {"preset": "veryfast"}
        for packet_frame in source.decode(stream_in):
            frame = make_frame(
                packet_frame.to_ndarray(format="bgr24"),
                index=frames,
                pts=float(packet_frame.time or 0.0),
                source="video",
            )
            for name, stage in (("detect", detector), ("track", tracker), ("annotate", annotate)):
                frame.results[name] = stage.process(frame)
            image = np.ascontiguousarray(frame.results["annotate"])
            out_frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            for packet in encoder.encode(out_frame):
                sink.mux(packet)
            frames += 1
        for packet in encoder.encode(None):
            sink.mux(packet)
    for stage in (detector, tracker, annotate):
        stage.teardown()
    return time.perf_counter() - began, frames


def fp_logger() -> Any:
    import logging

    return logging.getLogger("benchmarks.detection")


def run(quick: bool) -> Iterator[Measurement]:
    media = _media()
    if media is None:
        progress(f"detection: skipped, {CLIP} not found (../shared/media is absent)")
        return
    clip = media / "videos" / CLIP
    model = str(media / "models" / "yolox_nano.onnx")
    with tempfile.TemporaryDirectory(prefix="framepipe-bench-") as tmp:
        progress("detection: hand-written loop")
        hand_s, frames = run_hand_loop(clip, model, Path(tmp) / "hand.mp4")
        yield Measurement(BENCH, "hand loop", CLIP, "wall time", hand_s, "s")
        yield Measurement(BENCH, "hand loop", CLIP, "fps", frames / hand_s, "fps")
        results: dict[str, float] = {}
        steady: dict[str, float] = {}
        for executor in ("inline", "threads", "processes"):
            progress(f"detection: framepipe, {executor}")
            wall, stats = run_framepipe(executor, clip, model, Path(tmp) / f"{executor}.mp4")
            results[executor] = wall
            steady[executor] = stats["record"].fps
            done = stats["record"].processed
            yield Measurement(BENCH, "framepipe", executor, "wall time", wall, "s")
            yield Measurement(BENCH, "framepipe", executor, "fps", done / wall, "fps")
            for node in ("video", "detect", "track", "annotate", "record"):
                node_stats = stats[node]
                yield Measurement(
                    BENCH,
                    f"framepipe {node}",
                    executor,
                    "latency p50",
                    node_stats.latency_ms["p50"],
                    "ms",
                )
                yield Measurement(
                    BENCH, f"framepipe {node}", executor, "fps", node_stats.fps, "fps"
                )
            if done != frames:
                progress(f"detection: {executor} recorded {done} frames, the loop {frames}")
        for executor in ("threads", "processes"):
            yield Measurement(
                BENCH,
                "framepipe/hand loop",
                executor,
                "speed-up",
                hand_s / results[executor],
                "x",
                Target(">=", 1.3),
            )
            # Without start-up: the recorder's rate from its first frame to its last.
            yield Measurement(
                BENCH,
                "framepipe/hand loop",
                executor,
                "steady-state speed-up",
                steady[executor] / (frames / hand_s),
                "x",
            )
        yield Measurement(
            BENCH,
            "framepipe/hand loop",
            "inline",
            "time ratio",
            results["inline"] / hand_s,
            "x",
            Target("<=", 1.03),
        )
