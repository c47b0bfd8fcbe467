"""The per-node loops every executor runs: one for sources, one for stages and sinks.

A runner owns its node's object (source, stage or sink), its inbox, its
outlets (one per output edge) and its statistics. Executors only decide where
runners run (one thread, many threads, many processes) and how outlets reach
the next inbox.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from time import perf_counter
from typing import Any, Protocol

import cloudpickle
import numpy as np

from .._errors import FramepipeError, SinkError, SourceError, StageError
from .._frame import Frame
from .._graph import Node
from .._stage import FunctionStage, Stage, StageContext
from ..sinks._base import Sink, SinkContext
from ..sources._base import Source, SourceContext
from ..stats import StatsRecorder
from ._inbox import EMPTY, Inbox, WorkItem

log = logging.getLogger("framepipe")

Allocator = Callable[[tuple[int, ...]], tuple[np.ndarray, Any]]


class Outlet(Protocol):
    """One output edge as its producer sees it."""

    edge_id: int

    def deliver(self, frame: Frame) -> None: ...

    def end(self) -> None: ...


class Slots(Protocol):
    """Shared-memory frame slots of this worker (processes only)."""

    def allocate(self, shape: tuple[int, ...]) -> tuple[np.ndarray, Any]: ...

    def release_owner(self, handle: Any) -> None: ...


FatalHandler = Callable[[str, BaseException], None]


def node_error(node: Node, exc: BaseException, what: str) -> FramepipeError:
    """Wrap ``exc`` in the error type of ``node``'s kind, naming the node."""
    if isinstance(exc, FramepipeError) and getattr(exc, "node", None) == node.name:
        return exc
    kind = {"source": SourceError, "sink": SinkError}.get(node.kind, StageError)
    error = kind(node.name, f"{what}: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


class SourceRunner:
    """Reads a source, paces it in real time, and hands each frame to the outlets."""

    def __init__(
        self,
        node: Node,
        outlets: list[Outlet],
        recorder: StatsRecorder,
        *,
        mode: str,
        start: float,
        stop: threading.Event,
        on_fatal: FatalHandler,
        slots: Slots | None = None,
        export: bool = False,
        needed_fps: float | None = None,
    ) -> None:
        self.node, self.name = node, node.name
        self.needed_fps = needed_fps  # what consumers select: lets a decoder skip frames
        self.source: Source = node.obj
        self.outlets = outlets
        self.recorder = recorder
        self.mode, self.start = mode, start
        self.stop_event = stop  # the whole run stopping
        self.removed = threading.Event()  # just this source (remove_source)
        self.on_fatal = on_fatal
        self.slots = slots
        self.export = export  # frames must go to shared memory (remote consumers)
        self._outstanding: dict[int, Any] = {}
        self._iterator: Iterator[Any] | None = None
        self._index = 0
        self._pace_origin: tuple[float, float] | None = None
        self._last_pts: float | None = None
        self.ended = False
        self.error: BaseException | None = None

    # The source sees one stop flag for both a run stop and its own removal.
    def _stopping(self) -> bool:
        return self.stop_event.is_set() or self.removed.is_set()

    def open(self) -> None:
        stop_any = _AnyEvent(self.stop_event, self.removed)
        self.context = SourceContext(
            self.name,
            mode=self.mode,
            start=self.start,
            stop_event=stop_any,  # type: ignore[arg-type]
            allocate=self._allocate if self.export else None,
            on_state=self.recorder.set_state,
            on_drop=lambda n: self.recorder.drop("late", n),
            needed_fps=self.needed_fps,
        )
        self.recorder.set_state("connecting" if self.source.live else "running")
        try:
            self._iterator = iter(self.source.open(self.context))
        except BaseException as exc:
            self._fail(exc, "could not open")

    def _allocate(self, shape: tuple[int, ...]) -> np.ndarray:
        assert self.slots is not None
        array, handle = self.slots.allocate(shape)
        self._outstanding[id(array)] = handle
        return array

    def step(self) -> bool:
        """Produce and deliver one frame; False once the source has ended."""
        if self.ended:
            return False
        if self._iterator is None or self._stopping():
            self.finish()
            return False
        began = time.perf_counter()
        try:
            captured = next(self._iterator)
        except StopIteration:
            self.finish()
            return False
        except BaseException as exc:
            self._fail(exc, "failed while reading")
            return False
        image, pts = captured
        read_time = time.perf_counter() - began
        handle = self._outstanding.pop(id(image), None)
        self._release_outstanding()
        if not self.source.seekable and pts < self.start:
            self._drop_unused(handle)
            return True
        if self.mode == "realtime" and not self.source.live and not self._pace(pts):
            self.recorder.drop("late")
            self._drop_unused(handle)
            return True
        # A paced file frame is "captured" when it is released, not when it was decoded ahead.
        timestamp = time.time()
        began = time.perf_counter() - read_time  # latency counts reading and delivery, not pacing
        frame = self._frame(image, pts, timestamp, handle)
        for outlet in self.outlets:
            outlet.deliver(frame)
        if handle is not None and self.slots is not None:
            self.slots.release_owner(handle)
        self.recorder.record(latency=time.perf_counter() - began)
        if self.recorder.state in ("connecting", "idle"):
            self.recorder.set_state("running")
        return True

    def _frame(self, image: np.ndarray, pts: float, timestamp: float, handle: Any) -> Frame:
        if handle is None and self.export and self.slots is not None:
            array, handle = self.slots.allocate(image.shape)
            np.copyto(array, image)
            image = array
        view = image.view()
        view.flags.writeable = False
        frame = Frame(
            view,
            self._index,
            float(pts),
            timestamp,
            self.name,
            {},
            (handle,) if handle is not None else (),
        )
        self._index += 1
        return frame

    def _drop_unused(self, handle: Any) -> None:
        if handle is not None and self.slots is not None:
            self.slots.release_owner(handle)

    def _release_outstanding(self) -> None:
        # Buffers a source asked for but did not yield go back at once.
        if self._outstanding and self.slots is not None:
            for handle in self._outstanding.values():
                self.slots.release_owner(handle)
            self._outstanding.clear()

    def _pace(self, pts: float) -> bool:
        """Wait until the frame's media time is due; False if it is already a frame late."""
        now = time.monotonic()
        if self._pace_origin is None:
            self._pace_origin = (now, pts)
        origin_wall, origin_pts = self._pace_origin
        due = origin_wall + (pts - origin_pts)
        interval = pts - self._last_pts if self._last_pts is not None else 0.0
        self._last_pts = pts
        if due > now:
            self.stop_event.wait(due - now)
            return True
        return now - due <= max(interval, 0.005) * 1.5

    def _fail(self, exc: BaseException, what: str) -> None:
        error = node_error(self.node, exc, what)
        self.error = error
        self.recorder.set_state("failed")
        log.error(
            "source %r %s: %s", self.name, what, exc, exc_info=not isinstance(exc, FramepipeError)
        )
        self.finish(state="failed")
        self.on_fatal(self.name, error)

    def finish(self, state: str = "ended") -> None:
        if self.ended:
            return
        self.ended = True
        if self._iterator is not None:
            close = getattr(self._iterator, "close", None)
            try:
                if close is not None:
                    close()
            except Exception:  # a failing close must not hide the end of the stream
                log.exception("source %r: error while closing", self.name)
        self._release_outstanding()
        for outlet in self.outlets:
            outlet.end()
        if self.recorder.state != "failed":
            self.recorder.set_state(state)
        self.recorder.finish()

    def run(self) -> None:
        """Thread body: open, read until the end or a stop."""
        self.open()
        while self.step():
            pass


class _AnyEvent:
    """Looks like a threading.Event that is set when either of two events is."""

    def __init__(self, a: threading.Event, b: threading.Event) -> None:
        self.a, self.b = a, b

    def is_set(self) -> bool:
        return self.a.is_set() or self.b.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.is_set():
                return True
            step = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if step <= 0:
                return self.is_set()
            self.a.wait(step)


class NodeRunner:
    """Takes work from the inbox, runs the stage or sink, forwards results."""

    def __init__(
        self,
        node: Node,
        inbox: Inbox,
        outlets: list[Outlet],
        recorder: StatsRecorder,
        *,
        mode: str,
        sources: tuple[str, ...],
        stop: threading.Event,
        on_fatal: FatalHandler,
        sink_context: dict[str, Any] | None = None,
        shared: Any = None,
    ) -> None:
        self.node, self.name, self.kind = node, node.name, node.kind
        # Set when some outlet leads to another process: results are moved to
        # shared memory once, before the first outlet sends them.
        self.shared = shared
        self.obj: Any = node.obj
        self.inbox = inbox
        self.outlets = outlets
        self.recorder = recorder
        self.mode = mode
        self.sources = sources
        self.stop_event = stop
        self.on_fatal = on_fatal
        self.on_error = node.options.on_error
        self.sink_context = sink_context or {}
        self.logger = logging.getLogger(f"framepipe.{node.kind}.{node.name}")
        self._blob = cloudpickle.dumps(self.obj) if self.on_error == "restart" else None
        self.started = False
        self.ended = False
        self.failed = False
        self._call: Callable[[Any], Any] = (
            self.obj.process if node.kind != "sink" else self.obj.write
        )
        self._rate = inbox._rate
        self._max_age = node.options.max_age
        self.batch = max(1, int(getattr(self.obj, "batch", 1) or 1))
        self.max_wait = float(getattr(self.obj, "max_wait_ms", 0.0) or 0.0) / 1000.0

    # -- life cycle ------------------------------------------------------------

    def setup(self) -> bool:
        """Open the sink or set up the stage; False (and fatal) if that failed."""
        try:
            self._setup_obj()
        except BaseException as exc:
            self.failed = True
            self.recorder.set_state("failed")
            what = "could not open" if self.kind == "sink" else "setup() failed"
            self.logger.error("%s %r %s", self.kind, self.name, what, exc_info=True)
            self.on_fatal(self.name, node_error(self.node, exc, what))
            return False
        self.started = True
        self.recorder.set_state("running")
        return True

    def _setup_obj(self) -> None:
        if self.kind == "sink":
            sink: Sink = self.obj
            sink.context = SinkContext(
                name=self.name,
                mode=self.mode,
                inputs=tuple(self.node.inputs),
                sources=self.sources,
                logger=self.logger,
                on_drop=lambda n: self.recorder.drop("buffer", n),
                **self.sink_context,
            )
            sink.open()
        else:
            stage: Stage = self.obj
            stage.context = StageContext(name=self.name, mode=self.mode, logger=self.logger)
            stage.setup()
        obj = self.obj
        if self.kind == "sink":
            self._call = obj.write
        elif isinstance(obj, FunctionStage):
            self._call = obj.fn
        else:
            self._call = obj.process

    def teardown(self) -> None:
        if not self.started:
            return
        self.started = False
        try:
            if self.kind == "sink":
                self.obj.close()
            else:
                self.obj.teardown()
        except BaseException as exc:
            what = "close() failed" if self.kind == "sink" else "teardown() failed"
            self.logger.error("%s %r %s", self.kind, self.name, what, exc_info=True)
            if self.on_error == "stop":
                self.on_fatal(self.name, node_error(self.node, exc, what))

    def finish(self) -> None:
        """Tear down, tell downstream nothing more comes, close the books."""
        if self.ended:
            return
        self.ended = True
        self.inbox.close()  # nobody reads it any more: release what waits, wake producers
        self.teardown()
        for outlet in self.outlets:
            outlet.end()
        if not self.failed:
            self.recorder.set_state("ended")
        self.recorder.finish()

    # -- work --------------------------------------------------------------------

    def take(self, block: bool = True) -> list[WorkItem] | Any | None:
        """The next batch of work items; None at the end; EMPTY if not blocking and idle."""
        first = self.inbox.take(None if block else 0)
        if first is None or first is EMPTY:
            return first
        items = [first]
        if self.batch > 1:
            deadline = time.monotonic() + self.max_wait
            while len(items) < self.batch:
                more = self.inbox.take(max(0.0, deadline - time.monotonic()))
                if more is None or more is EMPTY:
                    break
                items.append(more)
        return items

    def handle(self, items: list[WorkItem]) -> None:
        """Process a batch (usually of one) and forward the results."""
        now = time.time()
        began = time.perf_counter()
        try:
            if self.kind == "sink":
                for item in items:
                    self.obj.write(item.frame)
                values: list[Any] = [None] * len(items)
            elif len(items) == 1:
                values = [self.obj.process(items[0].payload)]
            else:
                values = list(self.obj.process_batch([item.payload for item in items]))
                if len(values) != len(items):
                    raise StageError(
                        self.name,
                        f"process_batch returned {len(values)} results for {len(items)} frames",
                    )
        except BaseException as exc:
            for item in items:
                item.done()
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            self._failed(exc, len(items))
            return
        took = time.perf_counter() - began
        ages = [now - item.frame.timestamp for item in items]
        self.recorder.record(
            latency=took, age=max(ages), wait=max(i.wait for i in items), count=len(items)
        )
        for item, value in zip(items, values, strict=True):
            if value is not None:
                self.forward(item.frame, value)
            item.done()

    def accept(self, frame: Frame) -> None:
        """Inline fast path: process one frame now, in the producer's call.

        Used for nodes with a single input and no window, join or batch, where
        an inbox would only add cost: selection and age checks happen here.
        """
        if self.ended or self.failed:
            return
        rate = self._rate
        if rate is not None and not rate.select(frame.source, frame.pts):
            self.recorder.drop("rate")
            return
        age = time.time() - frame.timestamp
        if self._max_age is not None and age > self._max_age:
            self.recorder.drop("age")
            return
        began = perf_counter()
        try:
            value = self._call(frame)  # bound at setup: the hot path of inline runs
        except Exception as exc:
            self._failed(exc, 1)
            return
        done = perf_counter()
        self.recorder.record_one(done, done - began, age)
        if value is not None:
            self.forward(frame, value)

    def forward(self, frame: Frame, value: Any) -> None:
        """Send ``frame`` on with this node's result attached, to every outlet."""
        outlets = self.outlets
        if not outlets:
            return
        out = Frame(
            frame.image,
            frame.index,
            frame.pts,
            frame.timestamp,
            frame.source,
            {**frame.results, self.name: value},
            frame._handles,
        )
        if self.shared is None:
            for outlet in outlets:
                outlet.deliver(out)
            return
        # Some outlet leads to another process: move big results to shared memory
        # once, before the first outlet sends them.
        from ._remote import export

        out, created = export(out, self.shared)
        for outlet in outlets:
            outlet.deliver(out)
        for handle in created:
            self.shared.release_owner(handle)

    def _failed(self, exc: BaseException, count: int) -> None:
        for _ in range(count):
            self.recorder.error()
        if self.on_error == "stop":
            self.failed = True
            self.recorder.set_state("failed")
            self.logger.error(
                "%s %r failed; stopping the pipeline", self.kind, self.name, exc_info=exc
            )
            self.on_fatal(self.name, node_error(self.node, exc, "failed"))
            return
        self.logger.error(
            "%s %r failed on a frame (on_error=%r):\n%s",
            self.kind,
            self.name,
            self.on_error,
            "".join(traceback.format_exception(exc)).rstrip(),
        )
        if self.on_error == "restart":
            self._restart()

    def _restart(self) -> None:
        self.teardown()
        if self._blob is not None:
            self.obj = cloudpickle.loads(self._blob)
        self.recorder.restarts += 1
        if self.setup():
            self.logger.warning(
                "%s %r restarted (%d restarts)", self.kind, self.name, self.recorder.restarts
            )

    def run(self, on_set_up: Callable[[], None] | None = None) -> None:
        """Thread body: set up, process until the inputs end or a stop, finish.

        ``on_set_up`` is called once setup is over, whether it worked or not (an
        executor waits for every node before starting the sources).
        """
        try:
            ok = self.setup()
            if on_set_up is not None:
                on_set_up()
            if ok:
                while not self.failed:
                    items = self.take()
                    if items is None:
                        break
                    self.handle(items)
        finally:
            self.finish()
