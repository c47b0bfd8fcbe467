"""Overhead: what one hop from stage to stage costs, per executor, on tiny frames.

A chain of ``STAGES`` trivial stages between a 64x64 ``Synthetic`` source and
a sink that drops everything, run offline, next to the same run without the
stages. Two views of one hop, both as differences between the two runs, so the
source, the sink and the run itself cancel out:

- ``per_hop_wall``: ``(1/fps with stages - 1/fps without) / 5``, fps being the
  sink's steady-state rate (first frame to last: start-up excluded). For
  threads and processes this is the throughput cost of a hop on this
  machine's cores, not its latency.
- ``per_hop_cpu``: ``(CPU per frame with stages - without) / 5``, CPU being
  the whole process tree's (this process, its threads and its reaped
  children). It does not depend on how many cores were free or on what else
  ran, so it is the steadier figure on a shared machine, and the one the
  target applies to. Under processes, the CPU of starting and stopping the
  workers is measured with a short run and subtracted.

The same is measured, in the same run, for what a user would otherwise write:
a plain loop calling the 5 functions, pystream-pipeline 0.2.0's serial
pipeline (in its own environment: ``PYSTREAM_PYTHON``, by default
``.venv-pystream/bin/python``; skipped when absent), threads joined by
``queue.Queue(8)``, and processes joined by ``multiprocessing.Queue(8)``.
Ratios framepipe/baseline are reported for the hop and for the CPU a frame
costs through the whole 5-stage chain. Each figure is the best of a few runs,
except under threads, where it is their median (see ``REPEATS``).
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
import queue
import resource
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import framepipe as fp

from ._children import collect, reap
from ._nodes import Discard, frame_index
from ._report import Measurement, Target, progress

BENCH = "overhead"
STAGES = 5
SIZE = 64
QUEUE_SIZE = 8
#: Frames per run, full / quick.
FRAMES = {
    False: {"inline": 20000, "threads": 10000, "processes": 10000, "loop": 200000,
            "pystream": 100000},
    True: {"inline": 10000, "threads": 5000, "processes": 4000, "loop": 100000,
           "pystream": 50000},
}  # fmt: skip
#: Runs of each configuration, full / quick. The best is kept (noise only slows things
#: down), except under threads: there a run's CPU swings up to 2x either way with how the
#: threads happen to share the GIL and sleep, for framepipe and queue.Queue alike, so the
#: median of the runs is kept.
REPEATS = {
    False: {"inline": 3, "threads": 5, "processes": 3, "loop": 5, "pystream": 3},
    True: {"inline": 2, "threads": 3, "processes": 1, "loop": 3, "pystream": 2},
}
ROOT = Path(__file__).resolve().parent.parent
#: The interpreter of pystream-pipeline's own environment (it needs numpy < 2).
PYSTREAM_PYTHON = Path(os.environ.get("PYSTREAM_PYTHON", ROOT / ".venv-pystream/bin/python"))
PYSTREAM = "pystream-pipeline serial"
GENERATOR = "framepipe, Generator source"
#: Frames of the short run that measures what starting and stopping processes costs.
STARTUP_FRAMES = 20


@dataclass(frozen=True, slots=True)
class Sample:
    """One run: the sink's steady-state fps and the CPU seconds the run used."""

    fps: float
    cpu_s: float


def cpu_seconds() -> float:
    """CPU used so far by this process (all threads) and by its children that have exited."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _frames(count: int) -> Iterator[fp.Frame]:
    """The source's own test pattern, as Frames, for the hand-written versions."""
    source = fp.sources.Synthetic(width=SIZE, height=SIZE, frames=count)
    for index, (image, pts) in enumerate(source.open(fp.sources.SourceContext("cam"))):
        yield fp.Frame(image, index, pts, time.time(), "cam")


def framepipe_run(executor: str, stages: int, count: int, *, generator: bool = False) -> Sample:
    """A chain of ``stages`` trivial stages under ``executor``.

    ``generator``: the frames come from ``fp.sources.Generator`` over one image
    made beforehand, as pystream-pipeline's are pushed, instead of being drawn.
    """
    pipe = fp.Pipeline("overhead")
    source: fp.sources.Source = fp.sources.Synthetic(width=SIZE, height=SIZE, frames=count)
    if generator:
        image = next(iter(_frames(1))).image
        source = fp.sources.Generator(itertools.repeat(image, count))
    node = pipe.source("cam", source)
    for i in range(stages):
        node = pipe.stage(f"stage{i + 1}", frame_index, after=node)
    pipe.sink("out", Discard(), after=node)
    # Workers forked by a fork server are its children, not ours, and their CPU
    # would go uncounted: spawn them here, as direct children that get reaped.
    previous = os.environ.get("FRAMEPIPE_START_METHOD")
    os.environ["FRAMEPIPE_START_METHOD"] = "spawn"
    try:
        began = cpu_seconds()
        run = pipe.run(mode="offline", executor=executor)
        used = cpu_seconds() - began
    finally:
        if previous is None:
            del os.environ["FRAMEPIPE_START_METHOD"]
        else:
            os.environ["FRAMEPIPE_START_METHOD"] = previous
    stats = run.stats["out"]
    if stats.processed != count:
        raise RuntimeError(f"overhead: the sink saw {stats.processed} of {count} frames")
    return Sample(stats.fps, used)


def loop_run(stages: int, count: int) -> Sample:
    """A plain Python loop calling ``stages`` functions on each frame.

    The frames are made beforehand (sharing one image): drawing them costs far
    more than a call, and would bury the difference in noise.
    """
    image = next(iter(_frames(1))).image
    frames = [fp.Frame(image, index, index / 30, 0.0, "cam") for index in range(count)]
    functions = [frame_index] * stages
    began, cpu = time.perf_counter(), cpu_seconds()
    for frame in frames:
        for function in functions:
            function(frame)
    return Sample(count / (time.perf_counter() - began), cpu_seconds() - cpu)


def pystream_run(stages: int, count: int) -> Sample:
    """pystream-pipeline 0.2.0's serial pipeline, in its own interpreter (see the docstring)."""
    done = subprocess.run(
        [str(PYSTREAM_PYTHON), str(Path(__file__).with_name("_pystream_serial.py")),
         str(stages), str(count)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    figures = json.loads(done.stdout)
    return Sample(float(figures["fps"]), float(figures["cpu_s"]))


def pystream_available() -> bool:
    if not PYSTREAM_PYTHON.exists():
        return False
    check = [str(PYSTREAM_PYTHON), "-c", "import pystream"]
    return subprocess.run(check, capture_output=True).returncode == 0


# -- threads joined by queue.Queue ------------------------------------------------------


def _relay(inbox: Any, outbox: Any, function: Callable[[Any], Any]) -> None:
    while (frame := inbox.get()) is not None:
        function(frame)
        outbox.put(frame)
    outbox.put(None)


def _count(inbox: Any) -> tuple[int, float]:
    count, first, last = 0, 0.0, 0.0
    while inbox.get() is not None:
        last = time.monotonic()
        first = first or last
        count += 1
    return count, last - first


def threads_run(stages: int, count: int) -> Sample:
    """A producer thread, ``stages`` worker threads and a consumer, joined by queue.Queue."""
    queues: list[queue.Queue[Any]] = [queue.Queue(QUEUE_SIZE) for _ in range(stages + 1)]

    def produce() -> None:
        for frame in _frames(count):
            queues[0].put(frame)
        queues[0].put(None)

    threads = [threading.Thread(target=produce, daemon=True)]
    threads += [
        threading.Thread(target=_relay, args=(queues[i], queues[i + 1], frame_index), daemon=True)
        for i in range(stages)
    ]
    began = cpu_seconds()
    for thread in threads:
        thread.start()
    received, span = _count(queues[-1])
    for thread in threads:
        thread.join()
    return Sample(_checked_rate(received, span, count), cpu_seconds() - began)


# -- processes joined by multiprocessing.Queue ---------------------------------------------


def mp_produce(outbox: Any, count: int, ready: Barrier) -> None:
    ready.wait()
    for frame in _frames(count):
        outbox.put(frame)
    outbox.put(None)


def mp_relay(inbox: Any, outbox: Any, ready: Barrier) -> None:
    ready.wait()
    _relay(inbox, outbox, frame_index)


def mp_count(inbox: Any, ready: Barrier, results: Any) -> None:
    ready.wait()
    results.put(_count(inbox))


def processes_run(stages: int, count: int) -> Sample:
    """A producer process, ``stages`` worker processes and a consumer, joined by mp.Queue."""
    ctx = mp.get_context("spawn")
    queues = [ctx.Queue(QUEUE_SIZE) for _ in range(stages + 1)]
    ready, results = ctx.Barrier(stages + 2), ctx.Queue()
    processes = [ctx.Process(target=mp_produce, args=(queues[0], count, ready))]
    processes += [
        ctx.Process(target=mp_relay, args=(queues[i], queues[i + 1], ready)) for i in range(stages)
    ]
    processes.append(ctx.Process(target=mp_count, args=(queues[-1], ready, results)))
    began = cpu_seconds()
    for process in processes:
        process.start()
    try:
        [(received, span)] = collect(results, processes, 1)
    finally:
        reap(processes)
    return Sample(_checked_rate(received, span, count), cpu_seconds() - began)


def _checked_rate(received: int, span: float, count: int) -> float:
    if received != count:
        raise RuntimeError(f"overhead: the consumer saw {received} of {count} frames")
    return (received - 1) / span


@dataclass(frozen=True, slots=True)
class Chain:
    """Best figures of one configuration, without and with the stages."""

    fps_bare: float
    fps_chain: float
    cpu_bare_us: float  # per frame
    cpu_chain_us: float

    @property
    def hop_wall_us(self) -> float:
        return (1.0 / self.fps_chain - 1.0 / self.fps_bare) / STAGES * 1e6

    @property
    def hop_cpu_us(self) -> float:
        return (self.cpu_chain_us - self.cpu_bare_us) / STAGES


def measure_chains(
    run_chains: list[Callable[[int, int], Sample]],
    count: int,
    repeats: int,
    spawns: bool,
    median: bool = False,
) -> list[Chain]:
    """Best (or ``median``) of ``repeats`` runs of each chain, without and with the
    stages, interleaved (framepipe, then its baseline, and again) so that whatever
    else the machine does falls on all of them alike.

    ``spawns``: the runs start processes; their start-up CPU, measured with a
    short run, is taken off before dividing by the frames.
    """
    samples: list[dict[int, list[Sample]]] = [{0: [], STAGES: []} for _ in run_chains]
    for _ in range(repeats):
        for stages in (0, STAGES):
            for run_chain, runs in zip(run_chains, samples, strict=True):
                runs[stages].append(run_chain(stages, count))
    chains = []
    for run_chain, runs in zip(run_chains, samples, strict=True):
        per_frame, fps = {}, {}
        for stages, sampled in runs.items():
            rates, cpus = [s.fps for s in sampled], [s.cpu_s for s in sampled]
            fps[stages] = statistics.median(rates) if median else max(rates)
            cpu = statistics.median(cpus) if median else min(cpus)
            fixed = run_chain(stages, STARTUP_FRAMES).cpu_s if spawns else 0.0
            frames = count - STARTUP_FRAMES if spawns else count
            per_frame[stages] = (cpu - fixed) / frames * 1e6
        chains.append(Chain(fps[0], fps[STAGES], per_frame[0], per_frame[STAGES]))
    return chains


Case = tuple[str, str, Callable[[int, int], Sample]]


def run(quick: bool) -> Iterator[Measurement]:
    """framepipe under each executor, each measured interleaved with what a user would
    otherwise write, then the ratios."""
    frames, repeats = FRAMES[quick], REPEATS[quick]
    groups: list[list[Case]] = [
        [("framepipe", "inline", lambda n, c: framepipe_run("inline", n, c))],
        [("plain loop", "inline", loop_run)],
        [
            (GENERATOR, "inline", lambda n, c: framepipe_run("inline", n, c, generator=True)),
            (PYSTREAM, "inline", pystream_run),
        ],
        [
            ("framepipe", "threads", lambda n, c: framepipe_run("threads", n, c)),
            ("queue.Queue threads", "threads", threads_run),
        ],
        [
            ("framepipe", "processes", lambda n, c: framepipe_run("processes", n, c)),
            ("mp.Queue processes", "processes", processes_run),
        ],
    ]
    if not pystream_available():
        progress(
            f"{BENCH}: {PYSTREAM} skipped: no {PYSTREAM_PYTHON} with pystream-pipeline "
            f"(see benchmarks/README.md, or set PYSTREAM_PYTHON)"
        )
        groups = [[case for case in group if case[0] != PYSTREAM] for group in groups]
    keys = {"plain loop": "loop", PYSTREAM: "pystream", GENERATOR: "pystream"}
    inline: Chain | None = None
    for group in groups:
        first, executor = group[0][0], group[0][1]
        key = keys.get(first, executor)
        statistic = "median" if executor == "threads" else "best"
        progress(
            f"{BENCH}: {' / '.join(case for case, _, _ in group)}, {executor}: 0 and "
            f"{STAGES} stages, {frames[key]} frames, {statistic} of {repeats[key]}"
        )
        chains = measure_chains(
            [run_chain for _, _, run_chain in group],
            frames[key],
            repeats[key],
            spawns=executor == "processes",
            median=executor == "threads",
        )
        detail = f"{executor}, {SIZE}x{SIZE}"
        for (case, _, _), chain in zip(group, chains, strict=True):
            yield from _figures(case, detail, chain, case == "framepipe" and executor == "inline")
        if first == "framepipe" and executor == "inline":
            inline = chains[0]
        if first == "plain loop" and inline is not None:  # no framework: shown, not a bar
            yield from _ratios(first, detail, inline, chains[0], None)
        # A baseline is compared with the framepipe run it was interleaved with.
        for (case, _, _), chain in zip(group[1:], chains[1:], strict=True):
            yield from _ratios(case, detail, chains[0], chain, Target("<=", 1))


def _figures(case: str, detail: str, chain: Chain, inline: bool) -> Iterator[Measurement]:
    def m(metric: str, value: float, unit: str, target: Target | None = None) -> Measurement:
        return Measurement(BENCH, case, detail, metric, value, unit, target)

    yield m("fps_0_stages", chain.fps_bare, "fps")
    yield m(f"fps_{STAGES}_stages", chain.fps_chain, "fps")
    yield m("cpu_per_frame_0_stages", chain.cpu_bare_us, "us")
    yield m(f"cpu_per_frame_{STAGES}_stages", chain.cpu_chain_us, "us")
    yield m("per_hop_wall", chain.hop_wall_us, "us")
    yield m("per_hop_cpu", chain.hop_cpu_us, "us", Target("<=", 2) if inline else None)


def _ratios(
    case: str, detail: str, mine: Chain, theirs: Chain, target: Target | None
) -> Iterator[Measurement]:
    def m(metric: str, value: float, target: Target | None = None) -> Measurement:
        return Measurement(BENCH, f"framepipe/{case}", detail, metric, value, "x", target)

    yield m("per_hop_wall", _ratio(mine.hop_wall_us, theirs.hop_wall_us))
    yield m("per_hop_cpu", _ratio(mine.hop_cpu_us, theirs.hop_cpu_us), target)
    # A whole frame is the bar only against pystream-pipeline's serial pipeline.
    yield m(
        f"cpu_per_frame_{STAGES}_stages",
        _ratio(mine.cpu_chain_us, theirs.cpu_chain_us),
        target if case == PYSTREAM else None,
    )


def _ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs > 0 else float("nan")
