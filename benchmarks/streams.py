"""Streams: how many real-time cameras one box carries, measured and as the planner predicts.

N copies of ``slow_traffic_small.mp4`` (640x360, 29.97 fps), each played in
real time (looped) as its own camera, each with its own ``Motion()`` at
``fps=15`` (and, in the detector case, its own YOLOX-Nano ``Detector`` at
``fps=5``). For each N, over a window after a second of startup: every motion
node's fps (the slowest one and the mean), the share of frames the sources
dropped for being late, the CPU the run used per stream, and the planner's
prediction from a profile measured on this machine in the same run
(``planner.measure``), as measured/predicted. At 8 streams motion alone also
runs under ``processes`` (a process per node) and ``processes`` with
``workers=2``, for the choice of executor.

The goal: 8 streams with every motion node >= 95% of 15 fps and < 1% source
drops. Run alone: ``python -m benchmarks.streams [--quick] [--executor NAME]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

import framepipe as fp
from framepipe import planner

from ._report import Measurement, Report, Target, environment, progress, shared_media

BENCH = "streams"
CLIP = "slow_traffic_small.mp4"
MOTION_FPS = 15.0
DETECT_FPS = 5.0
#: The executor a user picks for many cameras: decoding (PyAV) and motion (OpenCV)
#: release the GIL, so the default, threads (see benchmarks/README.md).
EXECUTOR = "threads"


def _clip() -> Path | None:
    media = shared_media()
    path = media / "videos" / CLIP if media is not None else None
    return path if path is not None and path.exists() else None


def one_stream(path: Path, detector: bool) -> fp.Pipeline:
    """The pipeline of one camera; ``planner.replicate`` makes N of them."""
    pipe = fp.Pipeline("camera")
    cam = pipe.source("cam", fp.sources.VideoFile(path, loop=True))
    pipe.stage("motion", fp.stages.Motion(), after=cam, fps=MOTION_FPS)
    if detector:
        pipe.stage("detect", fp.stages.Detector("yolox_nano"), after=cam, fps=DETECT_FPS)
    return pipe


def _cpu_seconds(process: psutil.Process) -> float:
    """CPU time of this process and its live children (the workers of the run)."""
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


#: Drops that say a node could not keep up (``rate`` drops are what ``fps=`` asks for).
_BEHIND = ("late", "policy", "age")

#: Per node over the measured window: (fps, share of its frames dropped for being behind).
Window = dict[str, tuple[float, float]]


def measure_streams(
    pipe: fp.Pipeline, streams: int, executor: str, seconds: float, workers: int | None = None
) -> tuple[Window, float]:
    """Run N copies in real time; per-node figures over ``seconds`` after a second of startup,
    and the CPU seconds the run used per wall second."""
    many = planner.replicate(pipe, streams)
    me = psutil.Process()
    run = many.start(mode="realtime", executor=executor, workers=workers)
    try:
        time.sleep(1.0)  # startup (workers, models, the first frames): not part of the figure
        before, cpu0, wall0 = run.stats, _cpu_seconds(me), time.monotonic()
        time.sleep(seconds)
        after, cpu1, wall1 = run.stats, _cpu_seconds(me), time.monotonic()
    finally:
        run.stop()
    run.raise_error()
    window: Window = {}
    for name, node in after.items():
        processed = node.processed - before[name].processed
        behind = sum(node.dropped_by[r] - before[name].dropped_by[r] for r in _BEHIND)
        share = behind / (processed + behind) if processed + behind else 0.0
        window[name] = (processed / (wall1 - wall0), share)
    return window, (cpu1 - cpu0) / (wall1 - wall0)


def _summary(window: Window, node: str, streams: int) -> tuple[float, float, float]:
    """(slowest copy's fps, mean fps, mean dropped share) of ``node`` over the copies."""
    figures = [window[f"{node}-{k}"] for k in range(1, streams + 1)]
    fps = [f[0] for f in figures]
    return min(fps), sum(fps) / len(fps), sum(f[1] for f in figures) / len(figures)


def run(
    quick: bool,
    executor: str = EXECUTOR,
    counts: list[int] | None = None,
    detector: bool = True,
) -> Iterator[Measurement]:
    path = _clip()
    if path is None:
        progress(f"streams: skipped, {CLIP} not found (../shared/media is absent)")
        return
    counts = counts or ([1, 4, 8] if quick else [1, 2, 4, 8, 16])
    seconds = 4.0 if quick else 8.0
    cases: list[tuple[str, bool]] = [("motion", False)]
    if detector and _has_detector():
        cases.append(("motion+detector", True))
    elif detector:
        progress("streams: detector case skipped (yolox_nano not found; set FRAMEPIPE_MODELS)")
    for case, with_detector in cases:
        # The detector takes most of a core per stream here: past 4 streams it only
        # shows that it does not keep up, slowly.
        counts_here = [c for c in counts if c <= 4] if quick and with_detector else counts
        pipe = one_stream(path, with_detector)
        progress(f"streams: profiling {case} (replay, real code)")
        profile = planner.measure(pipe, duration=6.0)
        runs: list[tuple[str, int | None, list[int]]] = [(executor, None, counts_here)]
        if not with_detector and 8 in counts_here:
            # What the other choices do with the goal's 8 streams.
            others = [("processes", None), ("processes", 2), ("threads", None)]
            runs += [(ex, w, [8]) for ex, w in others if (ex, w) != (executor, None)]
        for run_executor, workers, stream_counts in runs:
            capacity = planner.forecast(
                pipe, profile, streams=stream_counts, executor=run_executor, workers=workers
            )
            how = run_executor + (f", workers={workers}" if workers else "")
            if run_executor == executor and workers is None:
                yield Measurement(
                    BENCH, f"{case}, planner", how, "largest streams", capacity.largest or 0, ""
                )
            for n, forecast in zip(stream_counts, capacity.forecasts, strict=True):
                progress(f"streams: {case}, {n} streams, {how}, {seconds:g} s")
                stats, cpu = measure_streams(pipe, n, run_executor, seconds, workers)
                yield from _measurements(case, f"{n} streams, {how}", n, stats, cpu, forecast)


def _measurements(
    case: str, detail: str, n: int, stats: Window, cpu: float, forecast: planner.Forecast
) -> Iterator[Measurement]:
    goal = n == 8 and case == "motion"
    slowest, mean, _ = _summary(stats, "motion", n)
    _, _, source_drops = _summary(stats, "cam", n)
    yield Measurement(
        BENCH,
        case,
        detail,
        "motion fps, slowest",
        slowest,
        "fps",
        Target(">=", 0.95 * MOTION_FPS) if goal else None,
    )
    yield Measurement(BENCH, case, detail, "motion fps, mean", mean, "fps")
    yield Measurement(
        BENCH,
        case,
        detail,
        "source drops",
        source_drops * 100,
        "%",
        Target("<=", 1.0) if goal else None,
    )
    yield Measurement(BENCH, case, detail, "CPU per stream", cpu / n, "cores")
    nodes = ("motion", "detect") if "detect-1" in stats else ("motion",)
    if "detect-1" in stats:
        slow_det, mean_det, _ = _summary(stats, "detect", n)
        yield Measurement(BENCH, case, detail, "detect fps, slowest", slow_det, "fps")
        yield Measurement(BENCH, case, detail, "detect fps, mean", mean_det, "fps")
    for node in nodes:
        expected = forecast.nodes[node].fps
        measured = _summary(stats, node, n)[1]
        ratio = measured / expected if expected else float("nan")
        yield Measurement(
            BENCH,
            f"{case}, measured/predicted",
            detail,
            f"{node} fps",
            ratio,
            "x",
            Target(">=", 0.85) if n in (1, 4, 8) else None,
        )


def _has_detector() -> bool:
    try:
        fp.stages.resolve_model("yolox_nano")
    except fp.FramepipeError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streams", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1, 4 and 8 streams, 4 s each")
    parser.add_argument(
        "--executor", default=EXECUTOR, choices=["threads", "processes"], help="main curve's"
    )
    parser.add_argument("--streams", help="stream counts, e.g. 1,8 (default 1,2,4,8,16)")
    parser.add_argument("--no-detector", action="store_true", help="only the motion case")
    args = parser.parse_args(argv)
    counts = planner.parse_streams(args.streams) if args.streams else None
    report = Report(None)
    report.line(environment({"quick": args.quick, "only": [BENCH], "executor": args.executor}))
    for measurement in run(args.quick, args.executor, counts, not args.no_detector):
        report.add(measurement)
    report.table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
