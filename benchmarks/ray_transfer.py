"""Across machines on Ray: frames between two Ray nodes, and the slow consumer across nodes.

A local ``ray.cluster_utils.Cluster`` (a head and two more nodes, each with its
own object store, all on loopback) stands in for three machines.

- Transfer: a source on one node, a stage on another, offline (throughput,
  frames per second at the stage) and real time at 30 fps (frame age at the
  stage: capture to processing across the machines), for 1080p and 480p, with
  ``transfer="raw"``, ``"jpeg"`` and ``"results"``. The baseline is what a Ray
  user writes by hand: an actor per stage, ``ray.put`` of each frame, one
  ``.remote()`` call per frame (at most 8 in flight, as Ray's docs advise).
- Slow consumer: a 30 fps 1080p source on the head, a trivial consumer on a
  second node and a 1 s-per-frame consumer on a third (default transfer).

Ray binds to the machine's network address, so the measurements run inside a
network namespace with only loopback: ``run()`` re-runs this module inside
``unshare --net`` (as root) when it is not already in one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

import framepipe as fp

from ._report import Measurement, Target, progress

BENCH = "ray_transfer"
SIZES = {"1080p": (1920, 1080), "480p": (640, 480)}
SOURCE_FPS = 30.0
A, B, C = "bench_a", "bench_b", "bench_c"


def loopback_only() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def run(quick: bool) -> Iterator[Measurement]:
    """The measurements; in a loopback-only namespace of their own when needed."""
    if loopback_only():
        yield from measure(quick)
        return
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        progress(f"{BENCH}: skipped (needs root and unshare for a loopback-only namespace)")
        return
    command = f"ip link set lo up && exec {sys.executable} -m benchmarks.ray_transfer"
    child = subprocess.Popen(
        ["unshare", "--net", "bash", "-c", command + (" --quick" if quick else "")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    for line in child.stdout:
        data = json.loads(line)
        target = data.pop("target")
        data.pop("met")
        op, bound = target.split() if target else (None, None)
        yield Measurement(**data, target=Target(op, float(bound)) if op else None)
    if child.wait() != 0:
        raise RuntimeError(f"{BENCH}: the namespaced run failed with code {child.returncode}")


# -- stages and the hand-written baseline ------------------------------------------------------


class Touch(fp.Stage):
    """Reads one pixel: the frame's pixels must be there."""

    def process(self, frame: fp.Frame) -> int:
        return int(frame.image[0, 0, 0])


class Index(fp.Stage):
    """Reads only metadata: its input crosses machines as results."""

    reads_pixels = False

    def process(self, frame: fp.Frame) -> int:
        return frame.index


class Sleep(fp.Stage):
    def process(self, frame: fp.Frame) -> int:
        time.sleep(1.0)
        return frame.index


def frames(width: int, height: int) -> Iterator[np.ndarray]:
    source = fp.sources.Synthetic(width=width, height=height, fps=SOURCE_FPS)
    for image, _pts in source.open(fp.sources.SourceContext("cam")):
        yield image


class HandConsumer:
    """The baseline's stage actor: one call per frame."""

    def __init__(self) -> None:
        self.ages: list[float] = []

    def process(self, image: np.ndarray, timestamp: float) -> int:
        self.ages.append(time.time() - timestamp)
        return int(image[0, 0, 0])

    def age_p50_ms(self) -> float:
        return float(np.median(self.ages) * 1000) if self.ages else float("nan")


class HandProducer:
    """The baseline's source actor: ``ray.put`` each frame, call the consumer."""

    def run(self, consumer: Any, width: int, height: int, count: int, paced: bool) -> float:
        import ray

        pending: list[Any] = []
        began = time.perf_counter()
        due = time.monotonic()
        for index, image in enumerate(frames(width, height)):
            if index == count:
                break
            if paced:
                due += 1.0 / SOURCE_FPS
                time.sleep(max(0.0, due - time.monotonic()))
            pending.append(consumer.process.remote(ray.put(image), time.time()))
            if len(pending) >= 8:
                _, pending = ray.wait(pending, num_returns=1)
        ray.get(pending)
        return time.perf_counter() - began


# -- measuring ------------------------------------------------------------------------------------


def measure(quick: bool) -> Iterator[Measurement]:
    import cloudpickle
    import ray
    from ray.cluster_utils import Cluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # Object stores the size a real machine has (Ray takes 30% of memory), not the
    # test default of 150 MB that a few 1080p frames in flight would fill.
    store = 1 << 30
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": {A: 1},
            "include_dashboard": False,
            "object_store_memory": store,
        },
    )
    try:
        for name in (B, C):
            cluster.add_node(num_cpus=1, resources={name: 1}, object_store_memory=store)
        ray.init(address=cluster.address, logging_level="WARNING")
        cluster.wait_for_nodes()
        yield from transfer(quick)
        yield from slow_consumer(quick)
    finally:
        ray.shutdown()
        cluster.shutdown()


def transfer(quick: bool) -> Iterator[Measurement]:
    import ray

    rounds = 1 if quick else 2  # offline: alternate framepipe and the baseline, keep the best
    for size, (width, height) in SIZES.items():
        count = (60 if quick else 200) * (1 if size == "1080p" else 3)
        seconds = 4.0 if quick else 10.0
        fps: dict[str, float] = {}
        hand = 0.0
        producer_cls, consumer_cls = ray.remote(HandProducer), ray.remote(HandConsumer)
        for _ in range(rounds):
            for kind in ("raw", "jpeg", "results"):
                progress(f"{BENCH}: framepipe {kind} {size}, offline")
                stage = Index() if kind == "results" else Touch()
                run = _two_nodes(stage, kind, width, height, count).run(executor="ray")
                fps[kind] = max(fps.get(kind, 0.0), run.stats["stage"].fps)
            progress(f"{BENCH}: hand-written Ray {size}, offline")
            consumer = consumer_cls.options(resources={B: 1}, num_cpus=0).remote()
            producer = producer_cls.options(resources={A: 1}, num_cpus=0).remote()
            took = ray.get(producer.run.remote(consumer, width, height, count, False))
            hand = max(hand, count / took)
            for actor in (producer, consumer):
                ray.kill(actor)
        yield Measurement(BENCH, "hand-written Ray", size, "offline fps", hand, "fps")
        for kind in ("raw", "jpeg", "results"):
            yield Measurement(BENCH, f"framepipe {kind}", size, "offline fps", fps[kind], "fps")
            yield Measurement(
                BENCH,
                f"framepipe {kind}/hand-written",
                size,
                "offline fps ratio",
                fps[kind] / hand,
                "x",
                Target(">=", 1.0),
            )
        for kind in ("raw", "jpeg", "results"):
            progress(f"{BENCH}: framepipe {kind} {size}, 30 fps")
            stage = Index() if kind == "results" else Touch()
            pipe = _two_nodes(stage, kind, width, height, frames=None)
            run = pipe.run(mode="realtime", executor="ray", duration=seconds)
            stats = run.stats["stage"]
            yield Measurement(
                BENCH, f"framepipe {kind}", size, "30 fps age p50", stats.age_ms["p50"], "ms"
            )
            yield Measurement(
                BENCH,
                f"framepipe {kind}",
                size,
                "30 fps kept",
                stats.processed / max(1, run.stats["cam"].processed),
                "ratio",
            )
        progress(f"{BENCH}: hand-written Ray {size}, 30 fps")
        consumer = consumer_cls.options(resources={B: 1}, num_cpus=0).remote()
        producer = producer_cls.options(resources={A: 1}, num_cpus=0).remote()
        ray.get(producer.run.remote(consumer, width, height, int(seconds * SOURCE_FPS), True))
        age = ray.get(consumer.age_p50_ms.remote())
        yield Measurement(BENCH, "hand-written Ray", size, "30 fps age p50", age, "ms")
        for actor in (producer, consumer):
            ray.kill(actor)


def _two_nodes(
    stage: fp.Stage, kind: str, width: int, height: int, frames: int | None
) -> fp.Pipeline:
    pipe = fp.Pipeline()
    source = fp.sources.Synthetic(width=width, height=height, fps=SOURCE_FPS, frames=frames)
    cam = pipe.source("cam", source, resources={A: 1})
    pipe.stage("stage", stage, after=cam, resources={B: 1}, transfer=kind)
    return pipe


def slow_consumer(quick: bool) -> Iterator[Measurement]:
    width, height = SIZES["1080p"]
    seconds = 8.0 if quick else 20.0
    progress(f"{BENCH}: slow consumer across three nodes, {seconds:.0f} s")
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width, height, SOURCE_FPS), resources={A: 1})
    pipe.stage("fast", Touch(), after=cam, resources={B: 1})
    pipe.stage("slow", Sleep(), after=cam, resources={C: 1})
    run = pipe.run(mode="realtime", executor="ray", duration=seconds)
    stats = run.stats
    detail = "1080p, jpeg, 3 nodes"
    yield Measurement(
        BENCH,
        "slow consumer",
        detail,
        "fast / source frames",
        stats["fast"].processed / max(1, stats["cam"].processed),
        "ratio",
        Target(">=", 0.99),
    )
    yield Measurement(BENCH, "slow consumer", detail, "source fps", stats["cam"].fps, "fps")
    yield Measurement(
        BENCH,
        "slow consumer",
        detail,
        "slow age p50",
        stats["slow"].age_ms["p50"],
        "ms",
        Target("<=", 2000.0 / SOURCE_FPS),
    )
    yield Measurement(
        BENCH, "slow consumer", detail, "slow processed", stats["slow"].processed, "frames"
    )


def main() -> None:
    for measurement in measure("--quick" in sys.argv):
        print(json.dumps(measurement.to_dict()), flush=True)


if __name__ == "__main__":
    main()
