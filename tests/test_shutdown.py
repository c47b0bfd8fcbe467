"""Ctrl-C, SIGTERM and SIGKILL: outputs finalized, no shared memory, no processes left."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from child_signals import default_signals
from test_cli import shm_prefix

HERE = Path(__file__).resolve().parent


def shm_names(prefix: str) -> set[str]:
    """The shared-memory segments of one run: other programs' runs are not ours to count."""
    try:
        return {n for n in os.listdir("/dev/shm") if n.startswith(prefix + "_")}
    except FileNotFoundError:
        return set()


def run_prefix(pids: list[int], timeout: float = 5.0) -> str | None:
    """The shared-memory prefix (``fp_<run id>``) the processes ``pids`` map, if any."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in pids:
            prefix = shm_prefix(pid)
            if prefix is not None:
                return prefix
        time.sleep(0.05)
    return None


class Program:
    """The pipeline script in its own session (so Ctrl-C can go to its whole group)."""

    def __init__(self, executor: str, marker: Path, how: str = "run") -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "pipeline_script.py"), executor, str(marker), how],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
            preexec_fn=default_signals,  # Ctrl-C is sent: never inherit an ignored SIGINT
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if line.strip() != "running":
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            pytest.fail(f"pipeline did not start: {line!r} {err[-2000:]}")
        assert self.proc.stdout is not None
        self.workers: dict[str, int] = json.loads(self.proc.stdout.readline())
        self.family = [self.proc.pid] + [
            c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)
        ]
        # Threads share no memory between processes; the processes executor maps segments.
        self.prefix = run_prefix(self.family) if executor == "processes" else None
        if executor == "processes":
            assert self.prefix is not None, "the workers map no shared memory"

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def assert_nothing_left(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            alive = [p for p in self.family if _alive(p)]
            leaked = shm_names(self.prefix) if self.prefix is not None else set()
            folders = self.socket_folders()
            if not alive and not leaked and not folders:
                return
            time.sleep(0.1)
        assert not alive, f"processes left behind: {alive}"
        assert not leaked, f"shared memory left behind: {leaked}"
        assert not folders, f"socket folders left behind: {folders}"

    def socket_folders(self) -> list[str]:
        """The run's folder of worker sockets (``framepipe-<run id>-*``), if it is still there."""
        if self.prefix is None:
            return []
        run_id = self.prefix.split("_", 1)[1]
        return glob.glob(os.path.join(tempfile.gettempdir(), f"framepipe-{run_id}-*"))


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def start_program() -> Iterator[Callable[..., Program]]:
    """Starts pipeline programs; whatever happens in the test, kills what is left."""
    started: list[Program] = []

    def start(executor: str, marker: Path, how: str = "run") -> Program:
        prog = Program(executor, marker, how)
        started.append(prog)
        return prog

    yield start
    for prog in started:
        for pid in prog.family:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


@pytest.fixture(params=["threads", "processes"])
def program(
    request: pytest.FixtureRequest, tmp_path: Path, start_program: Callable[..., Program]
) -> tuple[Program, Path]:
    marker = tmp_path / "out.txt"
    return start_program(request.param, marker), marker


def test_ctrl_c_stops_cleanly(program: tuple[Program, Path]) -> None:
    prog, marker = program
    assert all(pid in prog.family for pid in prog.workers.values())
    os.killpg(prog.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert prog.wait() == 130
    lines = marker.read_text().splitlines()
    assert lines[-1] == "closed" and len(lines) > 10
    prog.assert_nothing_left()


def test_sigterm_stops_cleanly(program: tuple[Program, Path]) -> None:
    prog, marker = program
    os.kill(prog.proc.pid, signal.SIGTERM)
    assert prog.wait() == 143
    assert marker.read_text().splitlines()[-1] == "closed"
    prog.assert_nothing_left()


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_sigterm_while_the_caller_does_other_work(
    executor: str, tmp_path: Path, start_program: Callable[..., Program]
) -> None:
    marker = tmp_path / "out.txt"
    prog = start_program(executor, marker, how="start")
    os.kill(prog.proc.pid, signal.SIGTERM)
    assert prog.wait() == 143
    assert marker.read_text().splitlines()[-1] == "closed"
    prog.assert_nothing_left()


def test_sigkill_of_a_worker_is_reported_and_cleaned_up(
    tmp_path: Path, start_program: Callable[..., Program]
) -> None:
    marker = tmp_path / "out.txt"
    prog = start_program("processes", marker)
    assert sorted(prog.workers) == ["cam", "fast", "out", "slow"]  # a worker per node
    os.kill(prog.workers["slow"], signal.SIGKILL)
    out, err = prog.proc.communicate(timeout=40)
    assert prog.proc.returncode == 3, err[-3000:]
    assert "worker process was killed by signal 9" in out
    assert marker.read_text().splitlines()[-1] == "closed"
    prog.assert_nothing_left()


def test_sigkill_of_the_parent_leaves_nothing(
    tmp_path: Path, start_program: Callable[..., Program]
) -> None:
    prog = start_program("processes", tmp_path / "out.txt")
    os.kill(prog.proc.pid, signal.SIGKILL)
    prog.proc.wait(10)
    prog.family.remove(prog.proc.pid)
    prog.assert_nothing_left()
