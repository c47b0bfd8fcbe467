"""The per-node loops every executor runs: one for sources, one for stages and sinks.

A runner owns its node's object (source, stage or sink), its inbox, its
outlets (one per output edge) and its statistics. Executors only decide where
runners run (one thread, many threads, many processes) and how outlets reach
the next inbox.

Supervision: everything a runner does is inside one boundary. An exception
raised by the user's per-frame call (``next()`` of a source aside, which ends
the source) is governed by the node's ``on_error``; any other exception
(a malformed yield, a result that cannot be sent, a framework bug) is fatal
and reported through ``on_fatal`` naming the node. ``close()``/``teardown()``
failures are reported through ``on_error`` (the run goes on, then fails). And
whatever happened, ``finish()`` runs and ends every outlet, so downstream
always sees the end of its inputs.
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
from numpy import ndarray

from .._errors import FramepipeError, SinkError, SourceError, StageError
from .._frame import NO_RESULTS, Frame, ReadOnlyResults, read_only, set_result, with_result
from .._graph import Node
from .._nested import NestedPipeline
from .._stage import FunctionStage, Stage, StageContext
from ..sinks._base import Sink, SinkContext
from ..sources._base import Source, SourceContext
from ..sources._packets import FrameEncoder, PacketRing
from ..stats import NodeStats, StatsRecorder
from ..transport._seam import Exporter, InProcessBuffers, SourceBuffers, Stopping
from ._clock import SYSTEM_CLOCK, Clock
from ._inbox import EMPTY, Inbox, Mark, Ticket, Work
from ._outlets import handoffs
from ._remote import EdgeError

log = logging.getLogger("framepipe")

Allocator = Callable[[tuple[int, ...]], tuple[np.ndarray, Any]]


class Outlet(Protocol):
    """One output edge as its producer sees it."""

    edge_id: int

    def deliver(self, frame: Frame) -> None: ...

    def advance(self, source: str, index: int, pts: float) -> None: ...

    def end(self) -> None: ...


FatalHandler = Callable[[str, BaseException], None]

#: ``on_error="restart"``: restarts in a row (no frame processed between them)
#: before the node fails for good.
RESTART_LIMIT = 5
#: Seconds before the first restart of a row; each further one waits twice as long.
RESTART_BACKOFF = 0.05
RESTART_BACKOFF_MAX = 5.0


def node_error(node: Node, exc: BaseException, what: str) -> FramepipeError:
    """Wrap ``exc`` in the error type of ``node``'s kind, naming the node."""
    if isinstance(exc, FramepipeError) and getattr(exc, "node", None) == node.name:
        return exc
    kind = {"source": SourceError, "sink": SinkError}.get(node.kind, StageError)
    if isinstance(exc, EdgeError | FramepipeError):
        error = kind(node.name, f"{what}: {exc}")
        error.__cause__ = exc.__cause__ or exc
    else:
        error = kind(node.name, f"{what}: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
    return error


_UINT8 = np.dtype(np.uint8)


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    return f"a {type(value).__name__}"


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
        on_fatal: FatalHandler,
        needed_fps: float | None = None,
        buffers: SourceBuffers | None = None,
        on_error: FatalHandler | None = None,
        clock: Clock = SYSTEM_CLOCK,
        packets: PacketRing | None = None,
    ) -> None:
        self.clock = clock
        self._now = clock.time
        self.packets = packets
        self._encoder: FrameEncoder | None = None  # for clips of video the source did not encode
        self._in_process = buffers is None or isinstance(buffers, InProcessBuffers)
        self.node, self.name = node, node.name
        self.needed_fps = needed_fps  # what consumers select: lets a decoder skip frames
        self.on_error = on_error or on_fatal
        self.source: Source = node.obj
        self.outlets = outlets
        self.recorder = recorder
        self.mode, self.start = mode, start
        # Files play at their media rate in real time (on the run's clock, simulated in a replay).
        self._paced = mode in ("realtime", "replay") and not self.source.live
        # A source that cannot seek plays from its start: frames before ``start`` are skipped.
        self._skip_before = start if not self.source.seekable else float("-inf")
        # Set when this source must end: removed, or the run stopping (``Host.stop``
        # calls ``remove``), so a source blocked in ``ctx.wait`` or pacing wakes at once.
        self.removed = threading.Event()
        self._removed = False  # the same, read on every frame
        self._awaiting_frames = False
        self._handoffs = handoffs(outlets, clock)
        self.on_fatal = on_fatal
        # Where frames live: the transport's memory when consumers are in other processes.
        self.buffers: SourceBuffers = buffers or InProcessBuffers()
        self._iterator: Iterator[Any] | None = None
        self._index = 0
        self._pace_origin: tuple[float, float] | None = None
        self._last_pts: float | None = None
        self.ended = False
        self.error: BaseException | None = None

    def open(self) -> None:
        self.context = SourceContext(
            self.name,
            mode=self.mode,
            start=self.start,
            stop_event=self.removed,
            allocate=self.buffers.buffer,
            on_state=self._report_state,
            on_drop=lambda n: self.recorder.drop("late", n),
            on_health=self.recorder.set_health,
            needed_fps=self.needed_fps,
        )
        self.context.packets = self.packets
        if self.packets is not None:
            ring = self.packets
            self.recorder.set_clip_buffer(lambda: ring.bytes)
        self._report_state("connecting" if self.source.live else "running")
        if self.source.live:
            self.recorder.set_health("ok")
        try:
            self._iterator = iter(self.source.open(self.context))
        except BaseException as exc:
            self._fail(exc, "could not open")

    def _report_state(self, state: str, reconnects: int | None = None) -> None:
        self.recorder.set_state(state, reconnects)
        # Until a frame arrives: the next one delivered shows the source running.
        self._awaiting_frames = state in ("connecting", "idle")

    def remove(self) -> None:
        """End this source soon (removed, or the run stopping); wakes its waits."""
        self._removed = True
        self.removed.set()

    def step(self) -> bool:
        """Produce and deliver one frame; False once the source has ended (or failed)."""
        if self.ended:
            return False
        if self._removed or self._iterator is None:
            self.finish()
            return False
        try:
            began = perf_counter()
            captured = self.read()
            if captured is None:
                return False
            self.deliver(captured[0], captured[1], began)
            return True
        except Stopping:  # the run stopped while this source waited for a free slot
            self.finish()
            return False
        except BaseException as exc:
            self._fail(exc, "failed")
            return False

    def read(self) -> tuple[np.ndarray, float] | None:
        """The source's next ``(image, pts)``; None once it has ended or failed."""
        try:
            captured = next(self._iterator)  # type: ignore[arg-type]  # opened
        except StopIteration:
            self.finish()
            return None
        except Stopping:
            raise
        except BaseException as exc:
            if isinstance(exc, ValueError) and "read-only" in str(exc):
                what = (
                    "failed while reading: it wrote into a frame it had yielded, which "
                    "belongs to the pipeline from then on (ask ctx.buffer() for each frame)"
                )
                self._fail(exc, what)
                return None
            self._fail(exc, "failed while reading")
            return None
        if type(captured) is tuple and len(captured) == 2:  # the common case, checked here
            image, pts = captured
            if (
                type(image) is np.ndarray
                and type(pts) is float
                and image.ndim == 3
                and image.dtype is _UINT8
            ):
                return captured
        try:
            return self._unpack(captured)
        except BaseException as exc:
            self.buffers.close()
            self._fail(exc, "failed")
            return None

    def deliver(self, image: np.ndarray, pts: float, began: float | None = None) -> None:
        """Pace a frame that was read (from ``began``, on ``perf_counter``), then hand
        it to every outlet (or drop it late)."""
        if pts < self._skip_before:
            self.buffers.close()
            return
        read_time = 0.0
        if self._paced:
            if began is not None:  # latency counts reading and delivery, not pacing
                read_time, began = perf_counter() - began, None
            if not self._pace(pts, read_time):
                self.recorder.drop("late")
                self.buffers.close()
                return
        if self.packets is not None:
            self._encode(image, pts)
        # A yielded image belongs to the pipeline: a source that would draw the next
        # frame into it again fails loudly (``_fail``) instead of changing frames
        # downstream. (write=False, positional: cheaper.)
        if image.flags.writeable:
            image.setflags(False)  # type: ignore[call-arg]
        # A paced file frame is "captured" when it is released, not when it was decoded ahead.
        timestamp = self._now()
        handed = perf_counter()
        if began is None:
            began = handed - read_time
        if self._in_process:
            held: tuple[Any, ...] = ()
        else:
            image, held = self.buffers.adopt(image)
        view = image.view()
        view.setflags(False)  # type: ignore[call-arg]  # write=False, positional: cheaper
        frame = Frame(view, self._index, pts, timestamp, self.name, NO_RESULTS, held)
        self._index += 1
        if held:
            try:
                for outlet in self.outlets:
                    outlet.deliver(frame)
            finally:
                self.buffers.drop(held)  # consumers hold their own leases now
        elif self._handoffs is not None:
            for hand in self._handoffs:
                hand(frame, timestamp, handed)
        else:
            for outlet in self.outlets:
                outlet.deliver(frame)
        # A source's latency is its own work (reading, adopting the frame), not its
        # consumers' (inline, they run inside ``deliver``).
        self.recorder.record_one(perf_counter(), handed - began, 0.0)  # replays: their own
        if self._awaiting_frames:
            self._report_state("running")

    def _encode(self, image: np.ndarray, pts: float) -> None:
        # A source without H.264/H.265 video of its own (known once it has opened its
        # input) gets its frames encoded for the clips that need them.
        packets = self.packets
        assert packets is not None
        if self._encoder is None:
            if self.source.encoded_video and packets.uncopyable is None:
                return
            self._encoder = FrameEncoder(packets)
        self._encoder.add(image, pts)

    def _unpack(self, captured: Any) -> tuple[np.ndarray, float]:
        if not _pair(captured):
            raise SourceError(
                self.name, f"open() must yield (image, pts) pairs, got {_describe(captured)}"
            )
        image, pts = captured
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.dtype != np.uint8:
            raise SourceError(
                self.name,
                f"frame {self._index}: open() must yield an HxWx3 uint8 image with its pts, "
                f"got {_describe(image)}"
                + (f" of {image.dtype}" if isinstance(image, np.ndarray) else ""),
            )
        try:
            return image, float(pts)
        except (TypeError, ValueError):
            raise SourceError(
                self.name, f"frame {self._index}: pts must be seconds, got {_describe(pts)}"
            ) from None

    def _pace(self, pts: float, read_time: float = 0.0) -> bool:
        """Wait until the frame's media time is due; False if it is already a frame late.

        A source that reads slower than its frame rate (``read_time``: this frame's
        read) delivers at its own rate: its lateness comes from reading, which
        dropping cannot win back, so the clock is re-based on the frame instead.
        Lateness from elsewhere (a stall, consumers in this thread) drops frames
        until the source has caught up with its media time again.
        """
        now = self.clock.monotonic()
        if self._pace_origin is None:
            self._pace_origin = (now, pts)
        origin_wall, origin_pts = self._pace_origin
        due = origin_wall + (pts - origin_pts)
        interval = pts - self._last_pts if self._last_pts is not None else 0.0
        self._last_pts = pts
        if due > now:
            self.clock.wait(self.removed, due - now)
            return True
        if now - due <= max(interval, 0.005) * 1.5:
            return True
        if interval > 0 and read_time >= 0.9 * interval:
            self._pace_origin = (now, pts)
            return True
        return False

    def _fail(self, exc: BaseException, what: str) -> None:
        error = node_error(self.node, exc, what)
        self.error = error
        self.recorder.set_state("failed")
        log.error(
            "source %r %s: %s", self.name, what, exc, exc_info=not isinstance(exc, FramepipeError)
        )
        try:
            self.finish(state="failed")
        finally:
            self.on_fatal(self.name, error)

    def finish(self, state: str = "ended") -> None:
        if self.ended:
            return
        self.ended = True
        try:
            if self._iterator is not None:
                close = getattr(self._iterator, "close", None)
                try:
                    if close is not None:
                        close()
                except Exception as exc:  # reported; the end of the stream still goes out
                    log.error("source %r: closing failed", self.name, exc_info=True)
                    self.on_error(self.name, node_error(self.node, exc, "closing failed"))
            self.buffers.close()
            if self._encoder is not None:
                self._encoder.close()
        finally:
            _end_all(self.outlets, self.name)
            if self.recorder.state != "failed":
                self.recorder.set_state(state)
            self.recorder.finish()

    def run(self) -> None:
        """Thread body: open, read until the end or a stop; always finish."""
        try:
            self.open()
            while self.step():
                pass
        except BaseException as exc:
            if not self.ended:
                self._fail(exc, "failed")
        finally:
            self.finish()


def ordered_stats(
    recorders: dict[str, StatsRecorder] | dict[str, NodeStats], order: list[str]
) -> dict[str, NodeStats]:
    """Snapshots in plan order, each nested pipeline's ``outer/inner`` rows after it."""
    rank = {name: i for i, name in enumerate(order)}
    names = sorted(
        (n for n in recorders if n.split("/", 1)[0] in rank),
        key=lambda n: (rank[n.split("/", 1)[0]], "/" in n),
    )
    out: dict[str, NodeStats] = {}
    for name in names:
        value = recorders[name]
        out[name] = value.snapshot() if isinstance(value, StatsRecorder) else value
    return out


def _pair(captured: Any) -> bool:
    return isinstance(captured, tuple) and len(captured) == 2


def _end_all(outlets: list[Outlet], node: str) -> None:
    """End every outlet, even if one fails: downstream must always see the end."""
    for outlet in outlets:
        try:
            outlet.end()
        except Exception:
            log.exception("%r: could not end an output edge", node)


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
        exporter: Exporter | None = None,
        on_failure: FatalHandler | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.clock = clock
        self._now = clock.time
        self.node, self.name, self.kind = node, node.name, node.kind
        # Set when some outlet leads to another process (see ``forward``).
        self.exporter = exporter
        self.obj: Any = node.obj
        self.inbox = inbox
        self.outlets = outlets
        self.recorder = recorder
        self.mode = mode
        self.sources = sources
        self.stop_event = stop
        self.on_fatal = on_fatal
        self.on_failure = on_failure or on_fatal  # close()/teardown(): reported, not stopping
        self.on_error = node.options.on_error
        # Restarts in a row: failures with no frame processed between them.
        self.failures_in_a_row = 0
        self._processed_at_failure = -1
        self.sink_context = sink_context or {}
        self.logger = logging.getLogger(f"framepipe.{node.kind}.{node.name}")
        self._blob = cloudpickle.dumps(self.obj) if self.on_error == "restart" else None
        #: Rows of a nested pipeline's inner stages (``outer/inner``), kept across restarts.
        self.children: dict[str, StatsRecorder] = (
            {
                inner: StatsRecorder(f"{node.name}/{inner}", "stage")
                for inner in self.obj.inner_names
            }
            if isinstance(self.obj, NestedPipeline)
            else {}
        )
        self.started = False
        self.ended = False
        self.failed = False
        self._sink_error = ""  # the last SinkError logged, so repeats are not
        self._call: Callable[[Any], Any] = (
            self.obj.process if node.kind != "sink" else self.obj.write
        )
        # Sinks, and stages without a window, are called with the frame (the payload).
        self._takes_frames = node.kind == "sink" or node.options.window is None
        self._rate = inbox._rate
        self._max_age = node.options.max_age
        self._selective = self._rate is not None or self._max_age is not None
        # ``accept`` builds and hands on the next frame itself (else ``forward`` does).
        self._forwards_here = bool(outlets) and exporter is None
        self._handoffs = handoffs(outlets, clock)
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
            self._log_failure(what, exc)
            self.on_fatal(self.name, node_error(self.node, exc, what))
            return False
        self.started = True
        self.recorder.set_state("running")
        return True

    def _log_failure(self, what: str, exc: BaseException) -> None:
        # framepipe's own errors name the node and the cause: no traceback for them.
        ours = isinstance(exc, FramepipeError)
        self.logger.error(
            "%s %r %s%s",
            self.kind,
            self.name,
            what,
            f": {exc}" if ours else "",
            exc_info=None if ours else exc,
        )

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
            if isinstance(stage, NestedPipeline):
                stage.recorders = self.children
                stage.now = self.clock.time
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
            # Whatever on_error says: a sink that could not finalize its output
            # (or a stage that could not let go of a resource) fails the run.
            what = "close() failed" if self.kind == "sink" else "teardown() failed"
            self._log_failure(what, exc)
            self.on_failure(self.name, node_error(self.node, exc, what))

    def finish(self) -> None:
        """Tear down, tell downstream nothing more comes, close the books. Always ends."""
        if self.ended:
            return
        self.ended = True
        try:
            self.inbox.close()  # nobody reads it any more: release what waits, wake producers
            self.teardown()
        finally:
            _end_all(self.outlets, self.name)
            if not self.failed:
                self.recorder.set_state("ended")
            self.recorder.finish()

    # -- work --------------------------------------------------------------------

    def take(self, block: bool = True) -> list[Work] | Any | None:
        """The next batch of work items; None at the end; EMPTY if not blocking and idle."""
        first = self.inbox.take(None if block else 0)
        if first is None or first is EMPTY:
            return first
        items = [first]
        if self.batch > 1 and type(first) is not Mark:
            deadline = self.clock.time() + self.max_wait
            while len(items) < self.batch:
                more = self.inbox.take(max(0.0, deadline - self.clock.time()))
                if more is None or more is EMPTY:
                    break
                items.append(more)
                if type(more) is Mark:
                    break  # passed on after the batch, in order
        return items

    def poll(self) -> list[Work] | None:
        """One-thread schedulers: the batch waiting now, else None. At the end of its
        inputs the runner finishes (``ended``)."""
        items = self.take(block=False)
        if items is None:
            self.finish()
            return None
        return None if items is EMPTY else items

    def handle(self, items: list[Any]) -> None:
        """Process a batch (usually of one) and forward the results."""
        if len(items) == 1:
            self._handle_one(items[0])
            return
        marks = [item for item in items if type(item) is Mark]
        if marks:
            items = [item for item in items if type(item) is not Mark]
            if items:
                self.handle(items)
            for mark in marks:
                self.advance(mark.source, mark.index, mark.pts)
            return
        now = self.clock.time()
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
            self._decided(items[-1].frame)
            return
        took = time.perf_counter() - began
        ages = [now - item.frame.timestamp for item in items]
        wait = began - min(item.arrived for item in items)
        self.recorder.record(latency=took, age=max(ages), wait=wait, count=len(items))
        try:
            for item, value in zip(items, values, strict=True):
                if value is None:
                    self._decided(item.frame)
                elif not self.failed:
                    self.forward(item.frame, value)
        finally:
            for item in items:
                item.done()

    def _handle_one(self, item: Any) -> None:
        """``handle`` for one work item: the per-frame path of threads and workers."""
        if type(item) is Mark:
            self.advance(item.source, item.index, item.pts)
            return
        now = self._now()
        began = perf_counter()
        try:
            value = self._call(item.frame if self._takes_frames else item.payload)
        except Exception as exc:
            item.done()
            self._failed(exc, 1)
            self._decided(item.frame)
            return
        except BaseException:
            item.done()
            raise
        done = perf_counter()
        self.recorder.record_one(
            done, done - began, now - item.frame.timestamp, began - item.arrived
        )
        try:
            if value is None:
                self._decided(item.frame)
            elif not self.failed:
                self.forward(item.frame, value)
        finally:
            item.done()

    def accept(
        self, frame: Frame, now: float = 0.0, began: float = 0.0, arrived: float = 0.0
    ) -> None:
        """Process one frame now and hand the result on: the per-frame fast path.

        Inline, producers call it directly for nodes with a single input and no
        window, join or batch, where an inbox would only add cost: selection and
        age checks happen here. ``now``/``began``: the wall and ``perf_counter``
        times the producer handed the frame on (0: read the clock here).

        Under threads, the worker calls it for each frame its inbox selected
        (``arrived``: when that frame arrived, on ``perf_counter``).
        """
        if self.ended or self.failed:
            return
        if not began:
            now = self._now()
            began = perf_counter()
        age = now - frame.timestamp
        if self._selective and not self._selected(frame, age):
            self._decided(frame)
            return
        try:
            value = self._call(frame)  # bound at setup: the hot path of inline runs
        except Exception as exc:
            self._failed(exc, 1)
            self._decided(frame)
            return
        done = perf_counter()
        recorder = self.recorder  # ``record_one``, inlined: the per-hop path
        recorder.processed += 1
        recorder.sample((done, done - began, age, began - arrived if arrived else 0.0))
        if recorder.processed >= recorder.fold_at:
            recorder.fold()
        if value is None:
            self._decided(frame)
            return
        if not self._forwards_here:
            self.forward(frame, value)
            return
        # ``forward`` and ``with_result``, inlined, handing on the time: two calls are
        # 7% of an inline hop (benchmarks/README.md, overhead).
        try:
            results = ReadOnlyResults(frame.results)
            if isinstance(value, ndarray) and value.flags.writeable:
                value = read_only(value)
            set_result(results, self.name, value)
            out = frame.derive(results)
            if self._handoffs is not None:
                now += done - began
                for hand in self._handoffs:
                    hand(out, now, done)
            else:
                for outlet in self.outlets:
                    outlet.deliver(out)
        except Stopping:
            return  # the run stopped while waiting for a slot: the frame is not sent
        except Exception as exc:
            self._fatal(exc, "could not pass its result on")

    def advance(self, source: str, index: int, pts: float) -> None:
        """Pass on a watermark: nothing more comes from here for frames of ``source`` up
        to ``index`` (see ``_inbox``). Inline, a producer calls it directly."""
        if self.ended:
            return
        try:
            for outlet in self.outlets:
                outlet.advance(source, index, pts)
        except Stopping:
            return
        except Exception as exc:
            self._fatal(exc, "could not pass a watermark on")

    def _decided(self, frame: Frame) -> None:
        """``frame`` goes no further from here: tell the joins downstream at once."""
        if self.outlets:
            self.advance(frame.source, frame.index, frame.pts)

    def _selected(self, frame: Frame, age: float) -> bool:
        """Whether ``accept`` processes ``frame``: its ``fps=`` and ``max_age`` say so."""
        rate = self._rate
        if rate is not None and not rate.select(frame.source, frame.pts):
            self.recorder.drop("rate")
            return False
        if self._max_age is not None and age > self._max_age:
            self.recorder.drop("age")
            return False
        return True

    def forward(self, frame: Frame, value: Any) -> None:
        """Send ``frame`` on with this node's result attached, to every outlet.

        A failure here is not the user's: it is fatal whatever ``on_error`` says.
        """
        outlets = self.outlets
        if not outlets:
            return
        try:
            out = with_result(frame, self.name, value)
            if self.exporter is None:
                for outlet in outlets:
                    outlet.deliver(out)
                return
            # Some outlet leads to another process: the transport moves the frame's
            # data once, before the first outlet sends it.
            out, sent = self.exporter(out)
            try:
                for outlet in outlets:
                    outlet.deliver(out)
            finally:
                sent()
        except Stopping:
            return  # the run stopped while waiting for a slot: the frame is not sent
        except Exception as exc:
            self._fatal(exc, "could not pass its result on")

    def _fatal(self, exc: BaseException, what: str) -> None:
        """A failure outside the user's per-frame call: the run stops, naming this node."""
        if self.failed:
            return
        self.failed = True
        self.recorder.set_state("failed")
        self.logger.error(
            "%s %r %s; stopping the pipeline", self.kind, self.name, what, exc_info=exc
        )
        self.on_fatal(self.name, node_error(self.node, exc, what))

    def _failed(self, exc: BaseException, count: int) -> None:
        for _ in range(count):
            self.recorder.error()
        if self.on_error == "stop":
            self.failed = True
            self.recorder.set_state("failed")
            self._log_failure("failed; stopping the pipeline", exc)
            self.on_fatal(self.name, node_error(self.node, exc, "failed"))
            return
        if self.kind == "sink" and isinstance(exc, SinkError):
            # A sink's own error (a full disk) repeats for every later frame: log it once;
            # the frames it costs are counted as errors.
            if str(exc) != self._sink_error:
                self._sink_error = str(exc)
                self.logger.error("%s (on_error=%r; later frames counted)", exc, self.on_error)
            return
        self.logger.error(
            "%s %r failed on a frame (on_error=%r):\n%s",
            self.kind,
            self.name,
            self.on_error,
            "".join(traceback.format_exception(exc)).rstrip(),
        )
        if self.on_error == "restart":
            self._restart(exc)

    def _restart(self, exc: BaseException) -> None:
        """Recreate the node and set it up again, after a back-off; give up after a limit."""
        processed = self.recorder.processed
        if processed != self._processed_at_failure:  # a frame went through since the last
            self.failures_in_a_row = 0
        self._processed_at_failure = processed
        self.failures_in_a_row += 1
        if self.failures_in_a_row > RESTART_LIMIT:
            self._fatal(
                exc,
                f"failed {self.failures_in_a_row} times in a row; gave up after "
                f"{RESTART_LIMIT} restarts",
            )
            return
        self.teardown()
        pause = min(RESTART_BACKOFF * 2 ** (self.failures_in_a_row - 1), RESTART_BACKOFF_MAX)
        if self.stop_event.wait(pause):
            return  # stopping: no restart; finish() ends the node
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
            if ok and self.batch == 1:
                take, accept, handle_one = self.inbox.take, self.accept, self._handle_one
                # A frame taken on its own, with no selection left to do: the fast path.
                plain = self._takes_frames and not self._selective
                while not self.failed and (item := take()) is not None:
                    if plain and type(item) is Ticket:
                        try:
                            if item.sent:  # the producer's hand-off time: no wall clock here
                                began = perf_counter()
                                now = item.sent + (began - item.arrived)
                                accept(item.frame, now, began, item.arrived)
                            else:
                                accept(item.frame, 0.0, 0.0, item.arrived)
                        finally:
                            item.unref()
                    else:
                        handle_one(item)
            elif ok:
                while not self.failed:
                    items = self.take()
                    if items is None:
                        break
                    self.handle(items)
        except BaseException as exc:  # the framework's own failure: fatal, never silent
            self._fatal(exc, "failed")
        finally:
            self.finish()
