"""A failing stage never kills the pipeline silently and never hangs it."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

import framepipe as fp
from stages_for_tests import FailOn, KillSelf, RecordTeardown


def synthetic(frames: int = 20) -> fp.sources.Synthetic:
    return fp.sources.Synthetic(width=64, height=48, fps=30, frames=frames)


def test_skip_logs_counts_and_goes_on(executor: str, caplog: pytest.LogCaptureFixture) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic())
    bad = pipe.stage("flaky", FailOn({3, 7}), after=cam)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=bad)
    with caplog.at_level(logging.ERROR):
        run = pipe.run(mode="offline", executor=executor)
    assert sorted(collect.results["flaky"]) == [i for i in range(20) if i not in (3, 7)]
    assert run.stats["flaky"].errors == 2
    assert run.stats["flaky"].dropped_by["error"] == 2
    if executor != "processes":  # worker logs go to the worker's stderr
        assert "'flaky' failed" in caplog.text and "bad frame 3" in caplog.text


def test_stop_raises_an_error_naming_the_node(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic(200))
    bad = pipe.stage("flaky", FailOn({5}), after=cam, on_error="stop")
    pipe.sink("out", fp.sinks.Collect(), after=bad)
    with pytest.raises(fp.StageError, match="'flaky'") as info:
        pipe.run(mode="offline", executor=executor)
    assert isinstance(info.value.__cause__, ValueError)
    assert "bad frame 5" in str(info.value.__cause__)


def test_restart_recreates_the_stage(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic())
    bad = pipe.stage("flaky", FailOn({4, 9}), after=cam, on_error="restart")
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=bad)
    run = pipe.run(mode="offline", executor=executor)
    results = collect.results["flaky"]
    assert sorted(results) == [i for i in range(20) if i not in (4, 9)]
    # a fresh instance each time: setup() ran once on each
    assert {v["setups"] for v in results.values()} == {1}
    assert run.stats["flaky"].restarts == 2


def test_failure_while_upstream_is_blocked_still_returns(executor: str) -> None:
    """The situation that hangs supervision's process_video: the consumer fails while the
    producer is blocked on its full queue. run() must return, with the error."""
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=320, height=240, fps=30, frames=10_000))
    bad = pipe.stage(
        "slow_then_fail",
        FailOn({12}, delay=0.02),
        after=cam,
        policy=fp.Queue(2, "block"),
        on_error="stop",
    )
    pipe.sink("out", fp.sinks.Collect(), after=bad)
    began = time.monotonic()
    with pytest.raises(fp.StageError, match="'slow_then_fail'"):
        pipe.run(mode="offline", executor=executor)
    assert time.monotonic() - began < 30


def test_teardown_runs_after_a_failure(executor: str, tmp_path: Path) -> None:
    marker = tmp_path / "teardown.txt"
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic())
    bad = pipe.stage("t", RecordTeardown(str(marker), fail_at=2), after=cam, on_error="stop")
    pipe.sink("out", fp.sinks.Collect(), after=bad)
    with pytest.raises(fp.StageError):
        pipe.run(mode="offline", executor=executor)
    assert marker.read_text() == "teardown"


def test_setup_failure_is_reported(executor: str) -> None:
    class BrokenSetup(fp.Stage):
        def setup(self) -> None:
            raise FileNotFoundError("model.onnx")

        def process(self, frame: fp.Frame) -> None:
            return None

    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic())
    pipe.stage("model", BrokenSetup(), after=cam)
    with pytest.raises(fp.StageError, match=r"'model': setup\(\) failed: FileNotFoundError"):
        pipe.run(mode="offline", executor=executor)


def test_dead_worker_is_detected_and_reported() -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic(1000))
    dying = pipe.stage("dying", KillSelf(at=5), after=cam)
    pipe.sink("out", fp.sinks.Collect(), after=dying)
    began = time.monotonic()
    with pytest.raises(fp.WorkerError, match="'dying': worker process was killed by signal 9"):
        pipe.run(mode="offline", executor="processes")
    assert time.monotonic() - began < 30


def test_unpicklable_stage_under_processes_says_why() -> None:
    import threading

    class HoldsALock(fp.Stage):
        def __init__(self) -> None:
            self.lock = threading.Lock()

        def process(self, frame: fp.Frame) -> int:
            return 1

    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic())
    pipe.stage("locked", HoldsALock(), after=cam)
    with pytest.raises(fp.WorkerError, match="'locked': cannot be sent to a worker process"):
        pipe.run(mode="offline", executor="processes")


def test_a_failing_source_does_not_stop_the_others(executor: str, tmp_path: Path) -> None:
    pipe = fp.Pipeline()
    good = pipe.source("good", synthetic(15))
    bad = pipe.source("bad", fp.sources.StillImage(tmp_path / "missing.png", fps=30, frames=5))
    a = pipe.stage("a", lambda f: f.index, after=[good, bad])
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=a)
    with pytest.raises(fp.SourceError, match="'bad': image file not found"):
        pipe.run(mode="offline", executor=executor)
    # the good source still delivered everything
    assert sorted(k[1] for k in collect.results["a"] if k[0] == "good") == list(range(15))


def test_a_script_without_a_main_guard_is_told_what_to_do(tmp_path: Path) -> None:
    """Workers import the user's script again; a script that runs its pipeline at
    import time fails in every worker before framepipe runs there. The error names
    the node and the fix, and the run ends."""
    script = tmp_path / "no_guard.py"
    script.write_text(
        "import framepipe as fp\n"
        "pipe = fp.Pipeline()\n"
        "cam = pipe.source('cam', fp.sources.Synthetic(width=32, height=24, frames=5))\n"
        "pipe.stage('count', lambda frame: frame.index, after=cam)\n"
        "pipe.run(mode='offline', executor='processes')\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("framepipe._errors.WorkerError: ")
    assert "'cam'" in last or "'count'" in last
    assert "while starting" in last and 'if __name__ == "__main__":' in last
