"""``executor="processes"``: each node in its own process, frames in shared memory.

The caller's process supervises: it starts one worker per node, tells them
where to connect, starts the sources once every stage is set up, merges their
statistics, notices a worker that dies, and at the end unlinks every shared
memory segment of the run and reaps every process, whatever happened.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

import cloudpickle

from .._errors import WorkerError
from .._graph import Edge, Node, Plan
from ..stats import NodeStats
from ..transport import _shm
from ._executor import MAIN, SupervisedExecutor
from ._host import Host, HostSpec, host_main, portable
from ._messages import (
    AddSource,
    Command,
    Connect,
    Done,
    Go,
    Listening,
    Ready,
    RemoveSource,
    Report,
    Segment,
    Stats,
    Stop,
)
from ._placement import keep_with_sources
from ._remote import Waker

log = logging.getLogger("framepipe")

#: Modules a worker almost always needs; the fork server imports them once.
PRELOAD = ["numpy", "cv2", "av", "framepipe", "framepipe.runtime._host", "framepipe.stages"]


def start_context() -> Any:
    """How workers start: from a fork server where the OS has one, else spawned.

    Both start a clean process (never a fork of the caller with its threads).
    A fork server imports numpy, OpenCV, PyAV and framepipe's stages once; each
    worker forks from it in milliseconds, where a spawned worker would import
    them all again. ``FRAMEPIPE_START_METHOD=spawn`` chooses spawning.
    """
    method = os.environ.get("FRAMEPIPE_START_METHOD", "forkserver")
    if method not in mp.get_all_start_methods() or method == "fork":
        method = "spawn"
    context = mp.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(PRELOAD)
    return context


#: How long a worker may take to start and import before it is declared dead.
START_TIMEOUT = 120.0


class _Worker:
    def __init__(
        self, host_id: str, nodes: list[str], process: BaseProcess, conn: Connection
    ) -> None:
        self.host_id, self.nodes, self.process, self.conn = host_id, nodes, process, conn
        self.pid = process.pid
        #: The process object was closed (the run's end): only ``pid`` is left of it.
        self.closed = False
        self.address: str | None = None
        self.listening = threading.Event()
        self.ready = threading.Event()
        self.done = threading.Event()
        self.dead = False
        self.heard = False  # any report at all: the worker got as far as framepipe's code
        self.segments: list[str] = []
        self.stats: dict[str, NodeStats] = {}

    def send(self, message: Command) -> None:
        with contextlib.suppress(OSError, EOFError, ValueError):
            self.conn.send(message)


class ProcessExecutor(SupervisedExecutor):
    """Runs each node in its own process (nodes may opt out with ``executor="threads"``)."""

    def __init__(self, plan: Plan, *, workers: int | None = None) -> None:
        super().__init__(plan)
        self.run_id = secrets.token_hex(4)
        self.prefix = f"fp_{self.run_id}"
        self.socket_dir = tempfile.mkdtemp(prefix=f"framepipe-{self.run_id}-")
        self.placement = {name: self._place(plan.nodes[name]) for name in plan.order}
        self.grouped = workers is not None
        self._retired = 0  # workers of removed sources, kept for their stats and cleanup
        if workers is not None:  # a bounded number of worker processes
            from ._placement import group_workers

            self.placement = group_workers(plan, self._place, workers, main=MAIN)
        self.placement = keep_with_sources(plan, self.placement)
        self.workers: dict[str, _Worker] = {}
        self.main_segments: list[str] = []
        self.addresses: dict[str, str] = {}
        self._cleaned = False
        self._ctx = start_context()
        self._main_ready = threading.Event()
        # Notified when a worker reports listening or ready, dies, or the run stops.
        self._progress = threading.Condition()
        # Set when a worker is added, the caller's host goes or the run stops: the
        # supervisor looks again at what it waits on.
        self._rescan = Waker()
        self._host_index = 0
        # Every edge may carry frames held in shared memory: each gets a flag column.
        self.columns = _shm.FlagColumns(e.id for e in plan.edges)

    def _place(self, node: Node) -> str:
        override = node.options.executor
        if getattr(node.obj, "in_caller_process", False) or override in ("threads", "inline"):
            return MAIN
        return node.name

    def _spec(self, host_id: str, names: list[str], index: int) -> HostSpec:
        return self.host_spec(
            host_id,
            names,
            segment_prefix=f"{self.prefix}_{index}",
            socket_dir=self.socket_dir,
            columns=self.columns.mapping(),
        )

    # -- start -------------------------------------------------------------------------

    def start(self) -> None:
        groups = self.hosts()
        try:
            for host_id, names in groups.items():
                if host_id == MAIN:
                    continue
                self._host_index += 1  # segment names of each worker start with it
                self._spawn_worker(host_id, names, self._host_index)
            if MAIN in groups:
                spec = self._spec(MAIN, groups[MAIN], 0)
                spec.nodes = [self.plan.nodes[n] for n in groups[MAIN]]  # keep the caller's objects
                self.main_host = Host(
                    spec,
                    stop=self.stop_event,
                    report=self._main_report,
                    sink_context=self.sink_context(),
                )
            self._supervisor = threading.Thread(
                target=self._supervise, daemon=True, name="framepipe-supervisor"
            )
            self._supervisor.start()
            if self.main_host is not None:
                address = self.main_host.listen()
                if address is not None:
                    self.addresses[MAIN] = address
            self._await("listening", lambda w: w.listening.is_set())
            for worker in self.workers.values():
                if worker.address is not None:
                    self.addresses[worker.host_id] = worker.address
            if self.stop_event.is_set():
                return
            for worker in self.workers.values():
                worker.send(Connect(self.addresses))
            if self.main_host is not None:
                self.main_host.connect(self.addresses)
                self.main_host.start_nodes()
            self._await("ready", lambda w: w.ready.is_set())
            if self.main_host is not None:
                self._until(self._main_ready.is_set, START_TIMEOUT)
            if self.stop_event.is_set():
                return
            for worker in self.workers.values():
                worker.send(Go())
            if self.main_host is not None:
                self.main_host.go()
                self._rescan.set()  # the supervisor now waits for its end
        except BaseException:
            self.request_stop()
            raise

    def _spawn_worker(self, host_id: str, names: list[str], index: int) -> _Worker:
        try:
            blob = cloudpickle.dumps(self._spec(host_id, names, index))
        except Exception as exc:
            raise WorkerError(
                names[0],
                f"cannot be sent to a worker process: {exc}. "
                f"Everything a node holds must pickle under "
                f"executor='processes' (load models in setup())",
            ) from exc
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=host_main, args=(child_end, blob), daemon=True, name=f"framepipe:{host_id}"
        )
        process.start()
        child_end.close()
        worker = _Worker(host_id, names, process, parent_end)
        with self._lock:
            self.workers[host_id] = worker
        self._rescan.set()
        return worker

    def _await(self, what: str, reported: Callable[[_Worker], bool]) -> None:
        """Wait until every worker has ``reported`` (or died), or the run stops; a worker
        silent for ``START_TIMEOUT`` seconds is fatal."""
        workers = list(self.workers.values())
        if self._until(lambda: all(reported(w) for w in workers), START_TIMEOUT):
            return
        late = next(w for w in workers if not reported(w))
        self.on_fatal(
            late.host_id,
            WorkerError(late.host_id, f"worker did not report {what} within {START_TIMEOUT}s"),
        )

    def _until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait up to ``timeout`` for ``condition`` (checked at each report, death and the
        stop); True if it holds or the run stopped."""
        with self._progress:
            return self._progress.wait_for(lambda: self.stop_event.is_set() or condition(), timeout)

    def _progressed(self) -> None:
        with self._progress:
            self._progress.notify_all()

    def _main_report(self, message: Report) -> None:
        match message:
            case Segment(name):
                with self._lock:
                    self.main_segments.append(name)
            case Ready():
                self._main_ready.set()
                self._progressed()
            case _:
                self.report(message)

    # -- supervise -----------------------------------------------------------------------

    def _supervise(self) -> None:
        try:
            while True:
                main = self.main_host
                if main is not None and main.ended.is_set:
                    # Re-armed before main_done() is read, so whatever ends next sets
                    # it again: its threads may have ended before its sources went (a
                    # failed setup: the stop, or the go, sets _rescan), and sources
                    # started since end later.
                    main.ended.clear()
                with self._lock:
                    workers = [
                        w for w in self.workers.values() if not w.dead and not w.done.is_set()
                    ]
                main_done = self.main_done()
                if not workers and main_done and (self.workers or main):
                    break
                waitables: list[Any] = [w.conn for w in workers] + [
                    w.process.sentinel for w in workers
                ]
                if main is not None and not main_done:
                    waitables.append(main.ended)  # its threads all ending wakes this wait
                waitables.append(self._rescan)
                for ready in wait(waitables):
                    if ready is self._rescan:
                        self._rescan.clear()  # a worker added, a go, a stop: look again
                        continue
                    worker = next(
                        (w for w in workers if ready in (w.conn, w.process.sentinel)), None
                    )
                    if worker is None:
                        continue
                    if ready is worker.conn:
                        self._drain(worker)
                    elif not worker.process.is_alive():
                        self._drain(worker)
                        self._died(worker)
        except Exception:
            log.exception("framepipe: supervisor failed")
            self.request_stop()
        finally:
            self._finish()

    def _drain(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll(0):
                self._handle(worker, worker.conn.recv())
        except (EOFError, OSError):
            if not worker.done.is_set():
                worker.process.join(2.0)
                self._died(worker)

    def _handle(self, worker: _Worker, message: Report) -> None:
        worker.heard = True
        match message:
            case Segment(name):
                worker.segments.append(name)
            case Listening(address):
                worker.address = address
                worker.listening.set()
                self._progressed()
            case Ready():
                worker.ready.set()
                self._progressed()
            case Stats(stats):
                worker.stats = stats
            case Done(stats, final_states):
                worker.stats = stats
                self._final_states.update(final_states)
                worker.done.set()
            case _:
                if not self.report(message):
                    raise TypeError(f"unknown report from worker {worker.host_id!r}: {message!r}")

    def _died(self, worker: _Worker) -> None:
        if worker.dead or worker.done.is_set():
            return
        worker.dead = True
        worker.listening.set()
        worker.ready.set()
        self._progressed()
        code = worker.process.exitcode
        how = (
            f"was killed by signal {-code}"
            if code is not None and code < 0
            else f"exited with code {code}"
        )
        node = worker.nodes[0]
        worker.stats = {
            name: replace(stats, state="died") for name, stats in worker.stats.items()
        } or worker.stats
        what = f"worker process {how}"
        if not worker.heard and code is not None and code > 0:
            # It failed before framepipe's code ran in it: while Python started it.
            what += (
                " while starting, before it ran any of framepipe (its error is printed "
                "above). Workers are new Python processes that import your script: a "
                "script that runs a pipeline with executor='processes' must do so under "
                '`if __name__ == "__main__":`'
            )
        error = WorkerError(node, what)
        log.error("framepipe: %s", error)
        self.on_fatal(node, error)

    def _finish(self) -> None:
        if self.main_host is not None:
            self.main_host.stop()
            self.main_host.wait(10.0)
            self._final_states.update(self.main_host.final_states())
        self._reap(grace=5.0)
        self._cleanup()
        self._done.set()

    def _open_workers(self) -> list[_Worker]:
        return [worker for worker in list(self.workers.values()) if not worker.closed]

    def _reap(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        workers = self._open_workers()
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
        for worker in workers:
            if worker.process.is_alive():
                worker.process.terminate()
        for worker in workers:
            worker.process.join(2.0)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(2.0)

    def _cleanup(self) -> None:
        with self._lock:
            if self._cleaned:
                return
            self._cleaned = True
        if self.main_host is not None:
            self.main_host.close()
        names = list(self.main_segments)
        for worker in self.workers.values():
            names.extend(worker.segments)
            with contextlib.suppress(OSError):
                worker.conn.close()
            # The process object holds a pipe to watch it by (its sentinel): closed
            # now, not when the garbage collector gets to it.
            with contextlib.suppress(ValueError):  # still running: join() gave up on it
                worker.process.close()
                worker.closed = True
        for name in names:
            _shm.unlink(name)
        leftover = _shm.sweep(self.prefix)
        if leftover:
            log.debug("framepipe: swept %d unreported segments", len(leftover))
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        self._rescan.close()

    # -- control ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        super().request_stop()
        self._progressed()
        self._rescan.set()
        for worker in list(self.workers.values()):
            worker.send(Stop())
        if self.main_host is not None:
            self.main_host.stop()
        if self._supervisor is None:  # stopped before the supervisor ever ran
            self._reap(grace=1.0)
            self._cleanup()
            self._done.set()

    def kill(self) -> None:
        self.request_stop()
        workers = self._open_workers()
        for worker in workers:
            if worker.process.is_alive():
                worker.process.terminate()
        deadline = time.monotonic() + 3.0
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()

    def host_stats(self) -> list[dict[str, NodeStats]]:
        return [worker.stats for worker in list(self.workers.values())]

    def worker_pids(self) -> dict[str, int]:
        return {
            node: worker.pid
            for worker in list(self.workers.values())
            for node in worker.nodes
            if worker.pid is not None
        }

    # -- hot add / remove ----------------------------------------------------------------------

    def add_source(self, node: Node, edges: list[Edge]) -> None:
        self.placement[node.name] = self._place(node)
        group = self._group_of(edges) if self.placement[node.name] != MAIN else None
        if group is not None:
            # workers=: a camera goes where the stages it feeds already run.
            self.placement[node.name] = group.host_id
            columns = {e.id: self.columns.assign(e.id, lambda _: False) for e in edges}
            group.nodes.append(node.name)
            group.send(AddSource(portable(node), edges, columns, dict(self.addresses)))
            return
        main = self.main_host if self.placement[node.name] == MAIN else None
        # A freed column is reused only once no slot of the new source's host holds
        # a flag in it (a worker of its own starts with none).
        reusable = main.shared.column_clear if main is not None else None
        columns = {edge.id: self.columns.assign(edge.id, reusable) for edge in edges}
        if main is not None:
            main.add_source(node, edges, columns, self.addresses)
            return
        # Consumers learn the new edges from each connection's hello.
        self._host_index += 1
        worker = self._spawn_worker(node.name, [node.name], self._host_index)
        self._until(worker.listening.is_set, START_TIMEOUT)
        worker.send(Connect(self.addresses))
        self._until(worker.ready.is_set, START_TIMEOUT)
        worker.send(Go())

    def _group_of(self, edges: list[Edge]) -> _Worker | None:
        """Under ``workers=``, the worker that runs every node ``edges`` lead to, if one does."""
        if not self.grouped:
            return None
        hosts = {self.placement.get(edge.downstream) for edge in edges}
        if len(hosts) != 1:
            return None
        worker = self.workers.get(str(hosts.pop()))
        return worker if worker is not None and not worker.dead else None

    def remove_source(self, name: str) -> None:
        for edge in self.plan.edges:
            if edge.upstream == name:
                self.columns.free(edge.id)
        host_id = self.placement.get(name)
        if host_id == MAIN and self.main_host is not None:
            self.main_host.remove_source(name)
            return
        worker = self.workers.get(host_id) if host_id is not None else None
        if worker is None or host_id is None:
            return
        if worker.nodes != [name]:  # workers=: the others in its process go on
            worker.nodes.remove(name)
            worker.send(RemoveSource(name))
            return
        # Its own process ends; the name is free for a source added later.
        with self._lock:
            self._retired += 1
            self.workers[f"{host_id}\0removed-{self._retired}"] = self.workers.pop(host_id)
            self.addresses.pop(host_id, None)
        worker.send(Stop())
