"""executor="ray" on a real two-machine Ray cluster (``ray.cluster_utils.Cluster``).

Ray binds to the machine's network address, so these tests run only inside a
network namespace that has nothing but loopback. Outside one, as root,
``test_ray_tests_in_a_loopback_namespace`` runs this file again inside
``unshare --net`` (and every other test here skips, saying so); without root
or without Ray, everything here skips with the reason.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest

import framepipe as fp
from child_signals import default_signals

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'framepipe[ray]')")

import stages_for_tests  # noqa: E402
from framepipe.config import load_pipeline, parse_pipeline  # noqa: E402
from framepipe.runtime._ray import actor_pids  # noqa: E402
from stages_for_tests import EvenOnly, Sleepy, index_of  # noqa: E402

HEAD, EDGE = "head_box", "edge_box"


def _loopback_only() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


in_namespace = pytest.mark.skipif(
    not _loopback_only(),
    reason="Ray tests run only in a network namespace with loopback only "
    "(test_ray_tests_in_a_loopback_namespace runs them there)",
)

# Stages defined in tests/ travel to Ray's workers by value (workers cannot import tests/).
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(stages_for_tests)


@pytest.mark.timeout(900)
def test_ray_tests_in_a_loopback_namespace() -> None:
    if _loopback_only():
        pytest.skip("already inside a loopback-only namespace: the tests below run here")
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip to make a loopback-only network namespace")
    command = (
        f"ip link set lo up && exec {sys.executable} -m pytest -q -p no:cacheprovider "
        f"{Path(__file__).name} -k 'not loopback_namespace'"
    )
    done = subprocess.run(
        ["unshare", "--net", "bash", "-c", command],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, done.stdout[-6000:]


# -- the cluster ---------------------------------------------------------------------------------


class Cluster:
    def __init__(self, address: str, head: str, edge: str) -> None:
        self.address, self.head, self.edge = address, head, edge


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    from ray.cluster_utils import Cluster as RayCluster

    nodes = RayCluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {HEAD: 1}, "include_dashboard": False},
    )
    try:
        nodes.add_node(num_cpus=1, resources={EDGE: 1})
        ray.init(address=nodes.address, logging_level="WARNING")
        nodes.wait_for_nodes()
        ids = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
        head = next(k for k, v in ids.items() if HEAD in v)
        edge = next(k for k, v in ids.items() if EDGE in v)
        yield Cluster(nodes.address, head, edge)
    finally:
        ray.shutdown()
        nodes.shutdown()


def _no_actors_left() -> bool:
    """Every framepipe host actor is gone (Ray ends killed actors within moments)."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        named = [
            a for a in ray.util.list_named_actors(all_namespaces=True) if "framepipe" in str(a)
        ]
        if not named and not actor_pids():
            return True
        time.sleep(0.1)
    return False


# -- stages -------------------------------------------------------------------------------------


class Where(fp.Stage):
    """The Ray node it ran on, and a checksum of the pixels."""

    def process(self, frame: fp.Frame) -> tuple[str, int]:
        return ray.get_runtime_context().get_node_id(), int(frame.image.sum())


class Checksum(fp.Stage):
    def process(self, frame: fp.Frame) -> int:
        return int(frame.image.astype(np.int64).sum() % 1_000_003)


class Doubled(fp.Stage):
    """Reads only an upstream result: its input crosses machines without pixels."""

    reads_pixels = False

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream

    def process(self, frame: fp.Frame) -> Any:
        return frame.results[self.upstream] * 2, frame.shape


class Peak(fp.Stage):
    """Claims to read no pixels, then looks at them anyway."""

    reads_pixels = False

    def process(self, frame: fp.Frame) -> int:
        return int(frame.image.max())


class Fails(fp.Stage):
    def process(self, frame: fp.Frame) -> int:
        if frame.index == 3:
            raise ValueError(f"bad frame {frame.index}")
        return frame.index


def _source(frames: int | None = 24, fps: float = 30.0) -> fp.sources.Synthetic:
    return fp.sources.Synthetic(width=160, height=120, fps=fps, frames=frames)


# -- placement, results, statistics ------------------------------------------------------------


@in_namespace
def test_nodes_run_on_the_machine_their_resources_name(cluster: Cluster) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", _source(), resources={HEAD: 1})
    where = pipe.stage("where", Where(), after=cam, resources={EDGE: 1})
    back = pipe.stage("back", Where(), after=where, resources={HEAD: 1})
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=[where, back])
    run = pipe.run(executor="ray")
    assert len(collect.results["where"]) == 24
    assert {node for node, _ in collect.results["where"].values()} == {cluster.edge}
    assert {node for node, _ in collect.results["back"].values()} == {cluster.head}
    machines = {name: stats.machine for name, stats in run.stats.items()}
    assert machines["cam"].endswith(cluster.head[:8])
    assert machines["where"].endswith(cluster.edge[:8])
    # A node without resources follows its first input.
    assert machines["out"] == machines["where"]
    header, *rows = run.stats.rows()
    assert header[-1] == "machine" and [row[-1] for row in rows] == list(machines.values())
    assert _no_actors_left()


@in_namespace
def test_callback_sinks_run_in_the_callers_process(cluster: Cluster) -> None:
    seen: list[tuple[int, str]] = []
    pipe = fp.Pipeline()
    cam = pipe.source("cam", _source(frames=10), resources={HEAD: 1})
    where = pipe.stage("where", Where(), after=cam, resources={EDGE: 1})
    pipe.sink(
        "call",
        fp.sinks.Callback(lambda f: seen.append((f.index, f.results["where"][0]))),
        after=where,
    )
    run = pipe.run(mode="offline", executor="ray")
    assert seen == [(i, cluster.edge) for i in range(10)]
    assert run.stats["call"].machine.endswith("(caller)")
    assert run.stats["call"].processed == 10


@in_namespace
def test_an_offline_merge_across_machines_is_exact(cluster: Cluster) -> None:
    """Watermarks cross machines: frames a branch on another machine skips (a 10 s
    interval, ``None``) are decided at once, and each frame is written once with exactly
    the results of the branches that carried it; frames are read-only there too."""
    seen: list[tuple[int, tuple[str, ...], bool]] = []
    pipe = fp.Pipeline()
    cam = pipe.source("cam", _source(frames=360), resources={HEAD: 1})
    a = pipe.stage("a", index_of, after=cam, resources={EDGE: 1})
    b = pipe.stage("b", EvenOnly(), after=cam, resources={EDGE: 1})
    # Slow: its result for frame 0 comes long after the other branches are far ahead.
    c = pipe.stage("c", Sleepy(0.5), after=cam, interval=10, resources={EDGE: 1})

    def record(frame: fp.Frame) -> None:
        seen.append(
            (
                frame.index,
                tuple(sorted(frame.results)),
                type(frame.results).__name__ == "ReadOnlyResults",
            )
        )

    pipe.sink("out", fp.sinks.Callback(record), after=[a, b, c])
    pipe.run(mode="offline", executor="ray")
    expected = [
        (
            i,
            tuple(
                sorted(
                    {"a"} | ({"b"} if i % 2 == 0 else set()) | ({"c"} if i % 300 == 0 else set())
                )
            ),
            True,
        )
        for i in range(360)
    ]
    assert sorted(seen) == expected


@in_namespace
def test_nodes_on_one_machine_share_one_host(cluster: Cluster) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", _source(frames=None), resources={HEAD: 1})
    a = pipe.stage("a", Checksum(), after=cam, resources={EDGE: 1})
    b = pipe.stage("b", Checksum(), after=a)
    pipe.sink("out", fp.sinks.Collect(), after=b)
    with pipe.start(mode="realtime", executor="ray") as run:
        pids = run.worker_pids()
    assert pids["a"] == pids["b"] == pids["out"] != pids["cam"]
    assert _no_actors_left()


@in_namespace
def test_a_node_that_asks_for_processes_stays_on_the_cluster(cluster: Cluster) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", _source(frames=10), resources={HEAD: 1})
    where = pipe.stage("where", Where(), after=cam, resources={EDGE: 1}, executor="processes")
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=where)
    run = pipe.run(mode="offline", executor="ray")
    assert {node for node, _ in collect.results["where"].values()} == {cluster.edge}
    assert run.stats["where"].machine.endswith(cluster.edge[:8])


def test_ray_is_an_executor_everywhere_names_are_checked() -> None:
    from framepipe.runtime import executor_names

    assert "ray" in executor_names()
    with pytest.raises(fp.GraphError, match="did you mean 'ray'"):
        pipe = fp.Pipeline()
        pipe.sink("out", fp.sinks.Collect(), after=pipe.source("cam", _source()), executor="rey")


def _checksum_pipeline(transfer: str) -> tuple[fp.Pipeline, fp.sinks.Collect]:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", _source(frames=40), resources={HEAD: 1})
    check = pipe.stage("check", Checksum(), after=cam, resources={EDGE: 1}, transfer=transfer)
    double = pipe.stage("double", Doubled("check"), after=check, resources={HEAD: 1})
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=[check, double], resources={EDGE: 1})
    return pipe, collect


@in_namespace
def test_offline_results_are_those_of_processes(cluster: Cluster) -> None:
    pipe, on_ray = _checksum_pipeline("raw")
    run = pipe.run(mode="offline", executor="ray")
    reference, by_processes = _checksum_pipeline("raw")
    reference.run(mode="offline", executor="processes")
    assert len(on_ray.results["check"]) == 40
    assert on_ray.results == by_processes.results
    # "double" reads no pixels: its input crossed machines as results only.
    assert run.stats["double"].machine != run.stats["check"].machine
    assert {shape for _, shape in on_ray.results["double"].values()} == {(120, 160)}


@in_namespace
def test_a_stage_that_reads_no_pixels_receives_results_only(cluster: Cluster) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", _source(frames=5), resources={HEAD: 1})
    peak = pipe.stage("peak", Peak(), after=cam, resources={EDGE: 1})
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=peak)
    pipe.run(mode="offline", executor="ray")
    # No pixels crossed: the frame keeps its shape, its pixels read as zeros.
    assert collect.results["peak"] == dict.fromkeys(range(5), 0)


# -- transfer -------------------------------------------------------------------------------------


@in_namespace
def test_jpeg_is_the_default_for_pixels_and_close_to_raw(cluster: Cluster) -> None:
    pipe, jpeg = _checksum_pipeline("jpeg")
    pipe.run(mode="offline", executor="ray")
    raw_pipe, raw = _checksum_pipeline("raw")
    raw_pipe.run(mode="offline", executor="ray")
    assert jpeg.results["check"].keys() == raw.results["check"].keys()
    differs = [jpeg.results["check"][i] != raw.results["check"][i] for i in raw.results["check"]]
    assert any(differs)  # JPEG is lossy: proof that it, not raw, crossed

    pipe = fp.Pipeline()
    cam = pipe.source("cam", _source(frames=5), resources={HEAD: 1})
    mean = pipe.stage("mean", lambda f: float(f.image.mean()), after=cam, resources={EDGE: 1})
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=mean)
    pipe.run(mode="offline", executor="ray")
    local = fp.sinks.Collect()
    ref = fp.Pipeline()
    ref.sink(
        "out",
        local,
        after=ref.stage(
            "mean", lambda f: float(f.image.mean()), after=ref.source("cam", _source(frames=5))
        ),
    )
    ref.run(mode="offline")
    for index, value in local.results["mean"].items():
        assert abs(collect.results["mean"][index] - value) < 3.0


@in_namespace
def test_results_transfer_to_a_stage_that_reads_pixels_is_refused(cluster: Cluster) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", _source(), resources={HEAD: 1})
    check = pipe.stage("check", Checksum(), after=cam, resources={EDGE: 1}, transfer="results")
    pipe.sink("out", fp.sinks.Collect(), after=check)
    with pytest.raises(
        fp.GraphError, match=r"'check': transfer='results'.*'cam'.*reads frame.image"
    ):
        pipe.run(executor="ray")
    assert _no_actors_left()


@in_namespace
def test_a_request_no_machine_offers_is_a_graph_error(cluster: Cluster) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", _source())
    pipe.sink("out", fp.sinks.Collect(), after=cam, resources={"GPU": 1})
    with pytest.raises(fp.GraphError, match=r"'out': no machine .* \{'GPU': 1.0\}; machines offer"):
        pipe.run(executor="ray")


# -- failures and stopping ----------------------------------------------------------------------


@in_namespace
def test_a_stage_error_on_another_machine_is_a_stage_error_with_its_cause(
    cluster: Cluster,
) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", _source(), resources={HEAD: 1})
    fails = pipe.stage("fails", Fails(), after=cam, resources={EDGE: 1}, on_error="stop")
    pipe.sink("out", fp.sinks.Collect(), after=fails)
    with pytest.raises(fp.StageError, match="'fails'") as caught:
        pipe.run(executor="ray")
    assert isinstance(caught.value.__cause__, ValueError)
    assert "bad frame 3" in str(caught.value.__cause__)
    assert _no_actors_left()


@in_namespace
def test_logs_on_another_machine_reach_the_callers_logging(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", _source(frames=10), resources={HEAD: 1})
    pipe.stage("fails", Fails(), after=cam, resources={EDGE: 1})
    with caplog.at_level(logging.ERROR):
        run = pipe.run(mode="offline", executor="ray")
    assert run.stats["fails"].errors == 1
    records = [r for r in caplog.records if "bad frame 3" in r.getMessage() + (r.exc_text or "")]
    assert records, caplog.text
    assert records[0].name == "framepipe.stage.fails"


class NoModel(fp.Stage):
    def setup(self) -> None:
        raise FileNotFoundError("model.onnx")

    def process(self, frame: fp.Frame) -> int:
        return frame.index


@in_namespace
def test_a_setup_failure_on_another_machine_stops_the_run(cluster: Cluster) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", _source(frames=None), resources={HEAD: 1})
    model = pipe.stage("model", NoModel(), after=cam, resources={EDGE: 1})
    pipe.sink("out", fp.sinks.Collect(), after=model)
    with pytest.raises(fp.StageError, match=r"'model': setup\(\) failed") as caught:
        pipe.run(mode="realtime", executor="ray")
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    assert _no_actors_left()


class Unpicklable(fp.Stage):
    reads_pixels = False

    def process(self, frame: fp.Frame) -> Any:
        return threading.Lock()


@in_namespace
def test_a_result_that_cannot_cross_machines_is_an_error_naming_the_edge(
    cluster: Cluster,
) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", _source(), resources={HEAD: 1})
    lock = pipe.stage("lock", Unpicklable(), after=cam)
    pipe.sink("out", fp.sinks.Collect(), after=lock, resources={EDGE: 1})
    with pytest.raises(fp.WorkerError, match=r"'out': its input from 'lock' failed"):
        pipe.run(executor="ray")
    assert _no_actors_left()


@in_namespace
def test_a_killed_actor_is_a_worker_error_naming_its_nodes(cluster: Cluster) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", _source(frames=None), resources={HEAD: 1})
    stage = pipe.stage("victim", Checksum(), after=cam, resources={EDGE: 1})
    pipe.sink("out", fp.sinks.Collect(), after=stage)
    run = pipe.start(mode="realtime", executor="ray")
    try:
        os.kill(run.worker_pids()["victim"], signal.SIGKILL)
        killed = time.monotonic()
        with pytest.raises(fp.WorkerError, match=r"'victim'.*died"):
            run.join()
        assert time.monotonic() - killed < 5.0
        assert run.stats["victim"].state == "died"
    finally:
        run.stop()
    assert _no_actors_left()


SCRIPT = """
import sys, time
import framepipe as fp

class Slow(fp.Stage):
    def process(self, frame):
        time.sleep(0.05)
        return frame.index

if __name__ == "__main__":
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(160, 120, fps=30), resources={"head_box": 1})
    slow = pipe.stage("slow", Slow(), after=cam, resources={"edge_box": 1})
    pipe.sink("out", fp.sinks.JsonLines(sys.argv[1]), after=slow)
    with pipe.start(mode="realtime", executor="ray", ray_address=sys.argv[2]) as run:
        while run.stats.get("out") is None or run.stats["out"].processed == 0:
            time.sleep(0.05)
        print("running", flush=True)
        run.join()
"""


@in_namespace
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_leave_nothing_on_the_cluster(
    cluster: Cluster, tmp_path: Path, signum: int
) -> None:
    script = tmp_path / "pipeline.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = tmp_path / "out.jsonl"
    child = subprocess.Popen(
        [sys.executable, str(script), str(out), cluster.address],
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,  # the signal is sent: never an inherited SIG_IGN
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "running", child.stderr.read()  # type: ignore[union-attr]
        assert actor_pids()
        child.send_signal(signum)
        code = child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # SIGTERM: Ray's own handler in the driver exits with 15 once the run has stopped.
    assert code in ((143, 15) if signum == signal.SIGTERM else (1,))
    assert _no_actors_left()
    lines = out.read_text().splitlines()
    assert lines and lines[-1].endswith("}")  # the sink closed cleanly


# -- real time across machines ------------------------------------------------------------------


@in_namespace
def test_a_slow_consumer_on_another_machine_sees_fresh_frames(cluster: Cluster) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", _source(frames=None), resources={HEAD: 1})
    fast = pipe.stage("fast", Checksum(), after=cam, resources={EDGE: 1})
    slow = pipe.stage("slow", Sleepy(1.0), after=cam, resources={EDGE: 1})
    pipe.sink("out", fp.sinks.Collect(), after=[fast, slow], resources={EDGE: 1})
    run = pipe.run(mode="realtime", executor="ray", duration=8)
    stats = run.stats
    # Bounds with generous slack for a loaded 2-core machine (benchmarks/ray_transfer.py
    # measures): held back by the slow consumer, the fast one would process ~1 frame a
    # second, and a backlog would make the slow one's frames seconds old.
    assert stats["fast"].processed >= 0.5 * stats["cam"].processed
    assert stats["slow"].processed >= 4
    assert stats["slow"].age_ms["p50"] <= 500.0
    assert stats["slow"].dropped_by["policy"] > 0


@in_namespace
def test_sources_added_while_running_are_placed_by_resources(cluster: Cluster) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", _source(frames=None), resources={HEAD: 1})
    where = pipe.stage("where", Where(), after=cam, resources={HEAD: 1})
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=where)
    with pipe.start(mode="realtime", executor="ray") as run:
        pipe.add_source("cam2", _source(frames=None), to=[where], resources={EDGE: 1})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            live = pipe.stats()
            if "cam2" in live and live["cam2"].processed >= 10 and live["where"].processed > 20:
                break
            time.sleep(0.1)
        live = pipe.stats()
        assert live["cam2"].machine.endswith(cluster.edge[:8])
        assert live["where"].machine.endswith(cluster.head[:8])
        assert live["cam2"].state == "running"
        pipe.remove_source("cam2")
        removed = time.monotonic()
        while pipe.stats()["cam2"].state != "ended" and time.monotonic() - removed < 10:
            time.sleep(0.1)
        assert pipe.stats()["cam2"].state == "ended"
    assert run.stats["where"].processed > 20
    assert {key[0] for key in collect.results["where"]} == {"cam", "cam2"}
    assert _no_actors_left()


# -- pipeline files and the command line ---------------------------------------------------------

PIPELINE_FILE = """
name: across
mode: offline
executor: ray
sources:
  - name: cam
    type: Synthetic
    width: 160
    height: 120
    frames: 12
    resources: {head_box: 1}
stages:
  - name: motion
    type: Motion
    resources: {edge_box: 1}
    transfer: raw
sinks:
  - name: log
    type: JsonLines
    path: OUT
"""


def test_pipeline_files_take_ray_options(tmp_path: Path) -> None:
    path = tmp_path / "across.yaml"
    path.write_text(PIPELINE_FILE.replace("OUT", str(tmp_path / "out.jsonl")))
    pipe, options = load_pipeline(path)
    assert options.executor == "ray"
    assert pipe.nodes["cam"].options.resources == {HEAD: 1.0}
    assert pipe.nodes["motion"].options.resources == {EDGE: 1.0}
    assert pipe.nodes["motion"].options.transfer == "raw"
    bad = PIPELINE_FILE.replace("transfer: raw", "transfer: png")
    with pytest.raises(fp.ConfigError, match=r"stages\[0\]\.transfer"):
        parse_pipeline(bad)


@in_namespace
def test_framepipe_run_executor_ray(cluster: Cluster, tmp_path: Path) -> None:
    path = tmp_path / "across.yaml"
    out = tmp_path / "out.jsonl"
    path.write_text(PIPELINE_FILE.replace("OUT", str(out)).replace("executor: ray", ""))
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("framepipe")),
            "run",
            str(path),
            "--executor",
            "ray",
            "--quiet",
        ],
        env={**os.environ, "RAY_ADDRESS": cluster.address},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(out.read_text().splitlines()) == 12
    assert _no_actors_left()


def test_ray_address_is_only_for_the_ray_executor() -> None:
    pipe = fp.Pipeline()
    pipe.sink("out", fp.sinks.Collect(), after=pipe.source("cam", _source()))
    with pytest.raises(fp.GraphError, match="ray_address= is for executor='ray', not 'threads'"):
        pipe.run(executor="threads", ray_address="127.0.0.1:6379")
