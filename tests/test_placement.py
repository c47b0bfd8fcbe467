"""Where nodes run under the processes executor, whatever they are called."""

from __future__ import annotations

import os

import framepipe as fp
from stages_for_tests import index_of


def pid_of(frame: fp.Frame) -> int:
    return os.getpid()


def test_a_stage_named_main_gets_a_process_of_its_own() -> None:
    """No node name can stand for the caller's process (a stage named ``main`` ran in the
    caller's process at cadd68f, silently)."""
    collect = fp.sinks.Collect()
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, frames=5))
    main = pipe.stage("main", pid_of, after=cam)
    pipe.sink("out", collect, after=[main, pipe.stage("i", index_of, after=cam)])
    with pipe.start(mode="offline", executor="processes") as run:
        pids = run.worker_pids()
        run.wait()
    assert set(collect.results["main"].values()) != {os.getpid()}
    assert "main" in pids and pids["main"] != os.getpid()
