"""Slow consumer: a 30 fps 1080p source, a trivial consumer and a 1 s-per-frame consumer.

framepipe runs each node in its own process (``executor="processes"``,
real-time mode, default ``latest`` policy). The baseline is the pattern
users write by hand: a producer process feeding two consumer processes
through ``multiprocessing.Queue(maxsize=1)``, either skipping a busy
consumer (``if q.empty(): q.put(frame)``) or blocking on it (``q.put(frame)``).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier, Event
from typing import Any

import numpy as np

import framepipe as fp

from ._children import collect, reap
from ._memory import MemoryTrace, TreeMemory
from ._nodes import SlowWork, calibrate_spin, frame_index, work
from ._report import Measurement, Target, progress

BENCH = "slow_consumer"
WIDTH, HEIGHT, SOURCE_FPS = 1920, 1080, 30.0
#: Memory is sampled once warmed up: this long after the source starts.
WARM_UP_S = 2.0
#: What the whole scenario may hold (PSS of the process tree, MB): the frames in
#: flight and the interpreters, not buffers kept beyond them.
PSS_TARGET_MB = {"threads": 150.0, "processes": 350.0}


@dataclass(frozen=True, slots=True)
class ConsumerRun:
    """What one run of the scenario measured."""

    source_fps: float
    fast_fps: float
    slow_processed: int
    slow_seconds: float  # per frame, median
    slow_age_p50_ms: float
    slow_age_max_ms: float
    source_blocked_s: float | None  # time the baseline's producer spent in put()
    memory_start: TreeMemory
    memory_end: TreeMemory


def run_framepipe(
    kind: str, loops: int, duration: float, executor: str = "processes"
) -> ConsumerRun:
    """The scenario as a framepipe pipeline, every node in its own process (or thread)."""
    pipe = fp.Pipeline("slow-consumer")
    cam = pipe.source("cam", fp.sources.Synthetic(width=WIDTH, height=HEIGHT, fps=SOURCE_FPS))
    fast = pipe.stage("fast", frame_index, after=cam)
    slow = pipe.stage("slow", SlowWork(kind, loops), after=cam)
    pipe.sink("out", fp.sinks.Collect(), after=[fast, slow])
    run = pipe.start(mode="realtime", executor=executor, duration=duration)
    trace = MemoryTrace()
    while not run.wait(1.0):
        if time.monotonic() - trace.began < duration - 0.5:
            trace.sample()
    run.join()
    stats = run.stats
    start, end = trace.steady(WARM_UP_S)
    return ConsumerRun(
        source_fps=stats["cam"].fps,
        fast_fps=stats["fast"].fps,
        slow_processed=stats["slow"].processed,
        slow_seconds=stats["slow"].latency_ms["p50"] / 1000.0,
        slow_age_p50_ms=stats["slow"].age_ms["p50"],
        slow_age_max_ms=stats["slow"].age_ms["max"],
        source_blocked_s=None,  # a real-time source never waits on "latest" edges
        memory_start=start,
        memory_end=end,
    )


# -- the baseline: processes and multiprocessing.Queue(maxsize=1) --------------------------


def queue_producer(
    queues: list[Any], blocking: bool, ready: Barrier, stop: Event, results: Any
) -> None:
    """A 30 fps camera feeding every queue: skip a full one, or block on it."""
    frames = fp.sources.Synthetic(width=WIDTH, height=HEIGHT, fps=SOURCE_FPS).open(
        fp.sources.SourceContext("cam")
    )
    ready.wait()
    period = 1.0 / SOURCE_FPS
    first = due = time.monotonic()
    produced, blocked = 0, 0.0
    for index, (image, _pts) in enumerate(frames):
        if stop.is_set():
            break
        item = (index, time.time(), image)
        for q in queues:
            began = time.monotonic()
            # The skip test is not atomic: when the queue's feeder thread has not
            # yet written the previous frame, put() blocks until a consumer takes it.
            if blocking or q.empty():
                _put(q, item, stop)
            blocked += time.monotonic() - began
        produced += 1
        due += period
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            due = time.monotonic()  # a camera does not catch up on missed frames
    results.put(
        {
            "name": "producer",
            "processed": produced,
            "span": time.monotonic() - first,
            "blocked": blocked,
        }
    )
    for q in queues:
        q.cancel_join_thread()  # frames still in a pipe must not keep this process alive


def _put(q: Any, item: Any, stop: Event) -> None:
    """``q.put(item)``, blocking as long as it must, but giving up once stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            pass


def queue_consumer(
    name: str, q: Any, kind: str, loops: int, ready: Barrier, stop: Event, results: Any
) -> None:
    """Take frames from ``q`` and work on them; report counts and frame ages."""
    ready.wait()
    ages: list[float] = []
    first = last = 0.0
    while not stop.is_set():
        try:
            _index, timestamp, _image = q.get(timeout=0.1)
        except queue.Empty:
            continue
        began = time.monotonic()
        ages.append(time.time() - timestamp)
        if kind != "none":
            work(kind, loops)
        first = first or began
        last = time.monotonic()
    results.put({"name": name, "processed": len(ages), "span": last - first, "ages": ages})


def run_queue_baseline(kind: str, loops: int, duration: float, blocking: bool) -> ConsumerRun:
    """The hand-written version: a producer process and two consumer processes."""
    ctx = mp.get_context("spawn")
    ready, stop, results = ctx.Barrier(4), ctx.Event(), ctx.Queue()
    fast_q, slow_q = ctx.Queue(maxsize=1), ctx.Queue(maxsize=1)
    processes = [
        ctx.Process(target=queue_consumer, args=("fast", fast_q, "none", 0, ready, stop, results)),
        ctx.Process(
            target=queue_consumer, args=("slow", slow_q, kind, loops, ready, stop, results)
        ),
        ctx.Process(target=queue_producer, args=([fast_q, slow_q], blocking, ready, stop, results)),
    ]
    for process in processes:
        process.start()
    try:
        ready.wait(timeout=120)
        trace = MemoryTrace()
        while time.monotonic() - trace.began < duration:
            time.sleep(1.0)
            if time.monotonic() - trace.began < duration - 0.5:
                trace.sample()
        stop.set()
        reports = {r["name"]: r for r in collect(results, processes, len(processes), 30)}
    finally:
        stop.set()
        reap(processes)
    start, end = trace.steady(WARM_UP_S)
    slow_ages = np.array(reports["slow"]["ages"] or [0.0]) * 1000.0
    return ConsumerRun(
        source_fps=_rate(reports["producer"]),
        fast_fps=_rate(reports["fast"]),
        slow_processed=reports["slow"]["processed"],
        slow_seconds=_per_frame(reports["slow"]),
        slow_age_p50_ms=float(np.percentile(slow_ages, 50)),
        slow_age_max_ms=float(slow_ages.max()),
        source_blocked_s=reports["producer"]["blocked"],
        memory_start=start,
        memory_end=end,
    )


def _rate(report: dict[str, Any]) -> float:
    count, span = report["processed"], report["span"]
    return (count - 1) / span if count > 1 and span > 0 else 0.0


def _per_frame(report: dict[str, Any]) -> float:
    count, span = report["processed"], report["span"]
    return span / (count - 1) if count > 1 else 0.0


# -- measurements -------------------------------------------------------------------------


def _figures(
    case: str, detail: str, result: ConsumerRun, *, targets: bool, pss_target: float | None = None
) -> Iterator[Measurement]:
    def m(metric: str, value: float, unit: str, target: Target | None = None) -> Measurement:
        return Measurement(BENCH, case, detail, metric, value, unit, target if targets else None)

    growth = result.memory_end.rss_mb - result.memory_start.rss_mb
    yield m("source_fps", result.source_fps, "fps")
    if result.source_blocked_s is not None:
        yield m("source_blocked_in_put", result.source_blocked_s, "s")
    yield m("fast_fps", result.fast_fps, "fps")
    yield m("fast_fps/source_nominal", result.fast_fps / SOURCE_FPS, "x", Target(">=", 0.99))
    yield m("slow_processed", result.slow_processed, "frames")
    yield m("slow_seconds_per_frame", result.slow_seconds, "s")
    yield m("slow_age_p50", result.slow_age_p50_ms, "ms", Target("<=", 33))
    yield m("slow_age_max", result.slow_age_max_ms, "ms")
    yield m("tree_rss_start", result.memory_start.rss_mb, "MB")
    yield m("tree_rss_end", result.memory_end.rss_mb, "MB")
    yield m("tree_pss_start", result.memory_start.pss_mb, "MB")
    pss = Target("<=", pss_target) if pss_target is not None else None
    yield m("tree_pss_end", result.memory_end.pss_mb, "MB", pss)
    # "Flat": the steady state grows by less than 5% of where it started.
    yield m(
        "tree_rss_growth", growth, "MB", Target("<=", round(0.05 * result.memory_start.rss_mb, 1))
    )


def _ratios(
    detail: str, ours: ConsumerRun, theirs: ConsumerRun, baseline: str
) -> Iterator[Measurement]:
    case = f"framepipe/{baseline}"
    for metric, a, b in (
        ("source_fps", ours.source_fps, theirs.source_fps),
        ("fast_fps", ours.fast_fps, theirs.fast_fps),
        ("slow_age_p50", ours.slow_age_p50_ms, theirs.slow_age_p50_ms),
        ("tree_rss_end", ours.memory_end.rss_mb, theirs.memory_end.rss_mb),
        ("tree_pss_end", ours.memory_end.pss_mb, theirs.memory_end.pss_mb),
    ):
        yield Measurement(BENCH, case, detail, metric, a / b if b else float("nan"), "x")


def run(quick: bool) -> Iterator[Measurement]:
    """Both kinds of slow work, framepipe then the hand-written baselines."""
    duration = 8.0 if quick else 20.0
    loops = calibrate_spin(1.0)
    sleep_result: ConsumerRun | None = None
    # Threads first: the caller's process then holds nothing of the runs before it.
    detail = "1080p@30, sleep 1s/frame"
    progress(f"{BENCH}: framepipe threads, sleep, {duration:g} s")
    threaded = run_framepipe("sleep", loops, duration, executor="threads")
    yield from _figures(
        "framepipe threads", detail, threaded, targets=True, pss_target=PSS_TARGET_MB["threads"]
    )
    for kind in ("sleep", "cpu"):
        detail = f"1080p@30, {kind} 1s/frame"
        progress(f"{BENCH}: framepipe, {kind}, {duration:g} s")
        ours = run_framepipe(kind, loops, duration)
        yield from _figures(
            "framepipe", detail, ours, targets=True, pss_target=PSS_TARGET_MB["processes"]
        )
        progress(f"{BENCH}: mp.Queue(1) if empty: put, {kind}, {duration:g} s")
        theirs = run_queue_baseline(kind, loops, duration, blocking=False)
        yield from _figures("mp.Queue(1) skip", detail, theirs, targets=False)
        yield from _ratios(detail, ours, theirs, "mp.Queue(1) skip")
        if kind == "sleep":
            sleep_result = ours
    assert sleep_result is not None
    detail = "1080p@30, sleep 1s/frame"
    progress(f"{BENCH}: mp.Queue(1) blocking put, sleep, {duration / 2:g} s")
    blocked = run_queue_baseline("sleep", loops, duration / 2, blocking=True)
    yield from _figures("mp.Queue(1) block", detail, blocked, targets=False)
    yield from _ratios(detail, sleep_result, blocked, "mp.Queue(1) block")
