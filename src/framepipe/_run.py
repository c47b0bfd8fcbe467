"""A run of a pipeline: start, stop, wait, and its results."""

from __future__ import annotations

import atexit
import logging
import signal
import threading
import time
import weakref
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from ._errors import FramepipeError
from ._graph import Edge, Node, Plan, edge_policy
from .stats import RunStats

if TYPE_CHECKING:
    from ._events import EventWatch
    from ._profile import Profile
    from .runtime._executor import Executor

log = logging.getLogger("framepipe")


class _Terminated(SystemExit):
    """SIGTERM arrived: exit with status 143 once running pipelines have stopped cleanly.

    A ``SystemExit``, so ``with`` blocks and ``finally`` clauses in the caller's
    code run, and any run still going is stopped at exit (see ``_stop_all``).
    """

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


_running: weakref.WeakSet[Run] = weakref.WeakSet()
_signal_lock = threading.Lock()
_previous_sigterm: Any = None


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


def _watch_sigterm(run: Run) -> None:
    """While any run is going, SIGTERM stops runs cleanly instead of killing the process."""
    global _previous_sigterm
    with _signal_lock:
        _running.add(run)
        if threading.current_thread() is not threading.main_thread():
            return
        if _previous_sigterm is None and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            _previous_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)


def _unwatch_sigterm(run: Run) -> None:
    global _previous_sigterm
    with _signal_lock:
        _running.discard(run)
        if (
            not _running
            and _previous_sigterm is not None
            and threading.current_thread() is threading.main_thread()
        ):
            signal.signal(signal.SIGTERM, _previous_sigterm)
            _previous_sigterm = None


@atexit.register
def _stop_all() -> None:
    """At interpreter exit (SystemExit, end of script), stop runs still going: sinks
    close and flush, workers exit, shared memory is unlinked."""
    for run in list(_running):
        try:
            run.stop()
        except BaseException:  # exiting anyway: stop the others too
            log.exception("framepipe: error while stopping a run at exit")


class Run:
    """One run of a pipeline.

    ``pipe.run()`` returns it finished; ``pipe.start()`` returns it running.
    ``stats`` is live while running and final afterwards; ``errors`` lists
    node errors that did not stop the run (a source that could not be opened).

    Use it as a context manager to stop it on exit::

        with pipe.start(mode="realtime") as run:
            time.sleep(5)
            print(run.stats)
    """

    def __init__(
        self,
        plan: Plan,
        executor: str,
        *,
        duration: float | None,
        stop_timeout: float,
        profile: Profile | None = None,
        workers: int | None = None,
    ) -> None:
        self.plan = plan
        self.workers = workers
        self.replay_profile = profile
        self.executor_name = executor
        self.duration = duration
        self.stop_timeout = stop_timeout
        self.ray_address: str | None = None  # executor="ray": the cluster to join
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.interrupted = False
        self._executor: Executor | None = None
        self._events: EventWatch | None = None
        self._final: RunStats | None = None
        self._timer: threading.Timer | None = None
        self._finalize_lock = threading.Lock()
        self._stopping = False

    # -- life cycle ----------------------------------------------------------------

    def start(self) -> None:
        from .runtime._registry import create

        options: dict[str, Any] = {}
        if self.ray_address is not None:
            options["address"] = self.ray_address
        if self.workers is not None:
            options["workers"] = self.workers
        if self.plan.mode == "replay":
            options.update(duration=self.duration, profile=self.replay_profile)
        self._executor = create(self.executor_name, self.plan, **options)
        self.started_at = time.monotonic()
        self._events = self._event_watch(self._executor)
        if self._events is not None:
            # Before the sources start: an event sink that cannot open fails the run at once.
            self._events.start()
        _watch_sigterm(self)
        try:
            self._executor.start()
        except BaseException:
            self._executor.request_stop()
            self._executor.kill()
            self._finalize()
            raise
        if self.duration is not None and self.plan.mode != "replay":  # replays count media time
            self._timer = threading.Timer(self.duration, self._executor.request_stop)
            self._timer.daemon = True
            self._timer.start()

    def _event_watch(self, executor: Executor) -> EventWatch | None:
        """The run's event watch, when it has event sinks or live sources to watch."""
        sources = tuple(n.name for n in self.plan.nodes.values() if n.kind == "source")
        live = any(getattr(self.plan.nodes[s].obj, "live", False) for s in sources)
        if not self.plan.event_sinks and not live:
            return None
        from ._events import EventWatch

        assert self.started_at is not None
        return EventWatch(
            executor.stats,
            self.plan.event_sinks,
            mode=self.plan.mode,
            sources=sources,
            started=self.started_at,
        )

    @property
    def events(self) -> list[dict[str, Any]]:
        """The run's latest events (camera health), oldest first; see ``Pipeline.events``."""
        return list(self._events.events) if self._events is not None else []

    @property
    def running(self) -> bool:
        return self._executor is not None and self._final is None

    @property
    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.ended_at or time.monotonic()) - self.started_at

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the run to end; True if it has (errors not raised)."""
        assert self._executor is not None
        done = self._executor.join(timeout)
        if done:
            self._finalize()
        return done

    def join(self) -> None:
        """Wait for the end; handle Ctrl-C and SIGTERM; raise the run's error, if any.

        On Ctrl-C the run stops cleanly and ``KeyboardInterrupt`` is re-raised; on
        SIGTERM it stops cleanly and ``SystemExit(143)`` is raised.
        """
        try:
            # Blocks on the executor's end; a signal's handler still runs (and raises)
            # in this thread while it waits: Python's lock waits are interruptible.
            self.wait()
        except (KeyboardInterrupt, _Terminated) as exc:
            self.interrupted = True
            how = "interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated"
            log.warning("framepipe: %s, stopping the pipeline cleanly", how)
            self.stop()
            raise
        self.raise_error()

    def stop(self, timeout: float | None = None) -> None:
        """Stop: sources end, stages drop queued work, sinks write what they hold and close.
        Waits up to ``timeout`` (default ``stop_timeout``) for nodes to finish, then kills
        what is left."""
        if self._executor is None or self._final is not None:
            return
        timeout = self.stop_timeout if timeout is None else timeout
        self._executor.request_stop()
        try:
            if not self._executor.join(timeout):
                log.warning("framepipe: nodes did not stop within %.1f s; killing them", timeout)
                self._executor.kill()
                self._executor.join(5.0)
        except KeyboardInterrupt:
            # A second Ctrl-C: no more waiting.
            self._executor.kill()
            self._finalize()
            raise
        self._finalize()

    def _finalize(self) -> None:
        with self._finalize_lock:
            if self._final is not None or self._executor is None:
                return
            if self._timer is not None:
                self._timer.cancel()
            self.ended_at = time.monotonic()
            self._final = self._executor.stats()
            if self._events is not None:
                self._events.close(self._final)
            _unwatch_sigterm(self)
            for name, state in self._executor.final_states().items():
                node = self.plan.nodes.get(name)
                if node is not None:
                    node.obj.adopt_final_state(state)

    def worker_pids(self) -> dict[str, int]:
        """Node name -> process id of its worker (processes executor; empty otherwise)."""
        pids = getattr(self._executor, "worker_pids", None)
        return pids() if pids is not None else {}

    # -- results -----------------------------------------------------------------------

    def profile(self) -> Profile:
        """Each node's cost per frame in this run, to save as JSON and replay or plan with.

        A replay measures the real time and CPU of every node's own code; a
        real-time or offline run gives each node's median time per frame
        (``cpu_s`` and ``gil`` unknown).
        """
        from ._profile import profile_of

        return profile_of(self.plan, self.stats, self._executor, self.executor_name)

    @property
    def stats(self) -> RunStats:
        """Statistics of every node: live while running, final afterwards."""
        if self._final is not None:
            return self._final
        if self._executor is None:
            return RunStats()
        return self._executor.stats()

    @property
    def error(self) -> FramepipeError | None:
        """The error that stopped the run, if any."""
        return self._executor.fatal if self._executor is not None else None

    @property
    def errors(self) -> list[FramepipeError]:
        """Every node error: the fatal one first, then those that did not stop the run
        (a source that failed, a sink whose ``close()`` failed)."""
        if self._executor is None:
            return []
        fatal = [self._executor.fatal] if self._executor.fatal is not None else []
        events = self._events.errors if self._events is not None else []
        return fatal + list(self._executor.source_errors) + events

    def raise_error(self) -> None:
        """Raise the error that stopped the run, or the first of the others."""
        errors = self.errors
        if errors:
            raise errors[0]

    # -- hot add / remove (called by Pipeline) -------------------------------------------

    def add_source(self, node: Node, targets: list[str]) -> None:
        assert self._executor is not None
        edges = []
        for target in targets:
            downstream = self.plan.nodes[target]
            edges.append(
                Edge(
                    self.plan.next_edge_id,
                    node.name,
                    target,
                    edge_policy(downstream, self.plan.mode),
                )
            )
            self.plan.next_edge_id += 1
        # The executors read the running plan's edges: the new ones are in it while
        # the source starts, and taken out again if it could not.
        came_back = node.name in self.plan.nodes  # removed earlier: its row stays
        self.plan.nodes[node.name] = node
        if not came_back:
            self.plan.order.insert(0, node.name)
        self.plan.edges.extend(edges)
        try:
            self._executor.add_source(node, edges)
        except BaseException:
            self._drop_edges(node.name)
            if not came_back:
                del self.plan.nodes[node.name]
                self.plan.order.remove(node.name)
            raise

    def remove_source(self, name: str) -> None:
        assert self._executor is not None
        self._executor.remove_source(name)
        # Its statistics stay (the node, ended); its edges go, so the name can come back.
        self._drop_edges(name)

    def _drop_edges(self, name: str) -> None:
        self.plan.edges[:] = [e for e in self.plan.edges if e.upstream != name]

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None:
            self.raise_error()

    def __repr__(self) -> str:
        state = "running" if self.running else "ended"
        return f"<Run {state} mode={self.plan.mode} executor={self.executor_name}>"

    def summary(self) -> dict[str, Any]:
        """JSON-friendly: mode, executor, elapsed seconds, stats, errors."""
        return {
            "mode": self.plan.mode,
            "executor": self.executor_name,
            "elapsed_s": round(self.elapsed, 3),
            "interrupted": self.interrupted,
            "stats": self.stats.to_dict(),
            "errors": [str(e) for e in self.errors],
        }
