"""Edges between processes: frames as small messages, pixels in shared memory.

A producer connects to its consumer's listener (a Unix socket) and sends one
message per frame: its metadata, its small results (pickled) and the handles
of its shared-memory arrays. Every edge has a credit window, so a frame in
flight (and the shared-memory slot it holds) is always bounded:

- lossless (``block``) edges: the consumer credits frames as they leave its
  queue (in batches of half the window); a producer with no credit left waits.
- dropping edges: the consumer's receiver credits each frame as soon as it
  reads it, and its inbox drops by policy. If the consumer stops reading (its
  process paused or starved), the producer drops frames for that edge instead
  of piling them into the socket; the count goes with the next frame that is
  sent and shows as ``policy`` drops of the consumer. The producer never waits.

Failures on an edge are never mistaken for its end: a result that cannot be
pickled fails its producer, one that cannot be rebuilt fails its consumer,
both through the run's one error path (``on_fatal``). Frames a producer could
not send because the run was stopping are counted as ``stop`` drops of the
consumer (the count travels with the edge's end).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import threading
from collections.abc import Callable
from multiprocessing.connection import Client, Connection
from typing import Any

import cloudpickle

from .._frame import Frame, lent
from .._policy import Queue
from ..transport._shm import Handle, SharedFrames
from ._inbox import Inbox

#: Frames a dropping edge may have in flight beyond what its queue holds.
WINDOW_SLACK = 2
_END = b"E"  # followed by "<policy drops> <stop drops>" not yet reported
_CREDIT = b"C"
_MARK = b"M"  # followed by a pickled (source, index, pts): a watermark (see ``_inbox``)


class EdgeError(Exception):
    """A frame could not be sent on, or rebuilt from, an edge between processes."""


class Waker:
    """A file descriptor that turns readable once ``set()`` (until ``clear()``): lets a
    wait on sockets (``poll``, ``multiprocessing.connection.wait``) wake on an event."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self.is_set = False
        # A set() racing with close() must not write to a number reused by another file.
        self._closing = threading.Lock()

    def clear(self) -> None:
        # Read first: a set() racing with this sees is_set still True and writes
        # nothing, and its cause (registered before it) is seen by the caller next.
        with contextlib.suppress(OSError):  # nothing to read
            os.read(self._read, 4096)
        self.is_set = False

    def set(self) -> None:
        if not self.is_set:
            self.is_set = True
            with self._closing, contextlib.suppress(OSError):  # full: readable already
                if self._write >= 0:
                    os.write(self._write, b"x")

    def fileno(self) -> int:
        return self._read

    def close(self) -> None:
        with self._closing:
            fds, self._read, self._write = (self._read, self._write), -1, -1
        for fd in fds:
            if fd >= 0:  # never twice: the number may belong to another file by then
                with contextlib.suppress(OSError):
                    os.close(fd)


def encode(frame: Frame, skipped: int = 0) -> bytes:
    keys = {h.key for h in frame._handles}
    results = {k: v for k, v in frame.results.items() if k not in keys}
    message = (
        frame.index,
        frame.pts,
        frame.timestamp,
        frame.source,
        results,
        frame._handles,
        skipped,
        frame.late,
    )
    try:
        return pickle.dumps(message, protocol=5)
    except Exception:
        pass  # lambdas, local classes: cloudpickle knows them
    try:
        return cloudpickle.dumps(message, protocol=5)
    except Exception as exc:
        raise EdgeError(f"{type(exc).__name__}: {exc}") from exc


def decode(data: bytes, shared: SharedFrames) -> tuple[Frame, int]:
    """The frame, and how many frames the producer dropped for this edge before it."""
    try:
        index, pts, timestamp, source, results, handles, skipped, late = pickle.loads(data)
    except Exception as exc:
        raise EdgeError(f"{type(exc).__name__}: {exc}") from exc
    image = None
    for handle in handles:
        view = shared.view(handle)
        if handle.key:
            results[handle.key] = view
        else:
            image = view
    if image is None:
        raise EdgeError("a frame crossed processes without its image handle")
    return Frame(image, index, pts, timestamp, source, lent(results), handles, late), skipped


class RemoteOutlet:
    """The producer's end of an edge to a node in another process."""

    def __init__(
        self,
        edge_id: int,
        column: int,
        upstream: str,
        downstream: str,
        policy: Queue,
        shared: SharedFrames,
        stop: threading.Event,
        wake: Waker,
    ) -> None:
        self.edge_id, self.upstream, self.downstream = edge_id, upstream, downstream
        self.column = column
        self.wake = wake  # set when the run stops: a producer waiting for credit wakes
        self.policy = policy
        self.lossless = policy.overflow == "block"
        self.window = policy.size if self.lossless else policy.size + WINDOW_SLACK
        self.shared = shared
        self.stop = stop
        self.conn: Connection | None = None
        self._poller: Any = None
        self.in_flight = 0
        self.skipped = 0  # dropped here since the last frame sent
        self.stopped = 0  # not sent because the run was stopping
        self.dead = False

    def connect(self, address: str) -> None:
        self.conn = Client(address, family="AF_UNIX")
        self.conn.send(
            (
                "hello",
                self.edge_id,
                self.column,
                self.upstream,
                self.downstream,
                (self.policy.size, self.policy.overflow),
            )
        )
        # One poller for the edge's life: Connection.poll() builds a selector per call.
        self._poller = select.poll()
        self._poller.register(self.conn.fileno(), select.POLLIN)
        self._poller.register(self.wake.fileno(), select.POLLIN)

    def _take_credits(self, timeout_ms: int | None) -> None:
        """Read the credits that came back; wait up to ``timeout_ms`` (None: until a
        credit or the run's stop) for the first."""
        assert self.conn is not None
        fd = self.conn.fileno()
        while any(ready == fd for ready, _ in self._poller.poll(timeout_ms)):
            self.in_flight -= len(self.conn.recv_bytes())
            timeout_ms = 0

    def _room(self) -> bool:
        """Whether a frame may be sent now; waits for a credit on lossless edges."""
        if self.in_flight < self.window:
            return True
        self._take_credits(0)
        while self.lossless and self.in_flight >= self.window:
            if self.stop.is_set():
                return False
            self._take_credits(None)
        return self.in_flight < self.window

    def deliver(self, frame: Frame) -> None:
        """Send ``frame``; raises ``EdgeError`` if it cannot be pickled."""
        if self.dead or self.conn is None:
            return
        try:
            if not self._room():
                if not self.lossless:
                    self.skipped += 1
                else:
                    self.stopped += 1
                return
            try:
                data = encode(frame, self.skipped)
            except EdgeError as exc:
                raise EdgeError(f"result could not be sent to {self.downstream!r}: {exc}") from (
                    exc.__cause__
                )
            for handle in frame._handles:
                self.shared.lease(handle, self.column)
            try:
                self.conn.send_bytes(data)
            except BaseException:
                for handle in frame._handles:
                    self.shared.release(handle, self.column)
                raise
            self.skipped = 0
            self.in_flight += 1
        except (OSError, EOFError):
            # The consumer is gone; its death is reported by the run's supervisor.
            self.dead = True

    def advance(self, source: str, index: int, pts: float) -> None:
        """Send a watermark: it takes no credit (the consumer holds nothing for it)."""
        if self.dead or self.conn is None:
            return
        try:
            self.conn.send_bytes(_MARK + pickle.dumps((source, index, pts)))
        except (OSError, EOFError):
            self.dead = True

    def end(self) -> None:
        if self.conn is None or self.dead:
            return
        with contextlib.suppress(OSError, EOFError):
            self.conn.send_bytes(_END + f"{self.skipped} {self.stopped}".encode())
        self.dead = True

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()


def receive(
    conn: Connection,
    inboxes: dict[str, Inbox],
    shared: SharedFrames,
    stop: threading.Event,
    on_fatal: Callable[[str, BaseException], None],
) -> None:
    """The consumer's end of one remote edge: runs in its own thread until END.

    A frame that cannot be rebuilt here is a fatal error of the consuming node;
    the edge then ends, so the node still sees the end of its inputs.
    """
    try:
        _, edge_id, column, upstream, downstream, (size, overflow) = conn.recv()
    except (EOFError, OSError):
        return
    inbox = inboxes[downstream]
    if not inbox.has_edge(edge_id):  # a source added while running
        inbox.add_edge(edge_id, upstream, Queue(size, overflow), sources=(upstream,))
    lock = threading.Lock()
    lossless = overflow == "block"
    # A lossless edge credits in batches of half its window: a message for every few
    # frames, and the producer never waits on credits held back (it can only be out of
    # credit while frames are queued here, whose departures send the rest).
    batch = max(1, size // 2) if lossless else 1
    owed = 0

    def credit(n: int) -> None:
        nonlocal owed
        try:
            with lock:
                owed += n
                if owed < batch:
                    return
                n, owed = owed, 0
                conn.send_bytes(_CREDIT * n)
        except (OSError, EOFError):
            pass  # the producer is gone

    if lossless:  # credit when a frame leaves the queue
        inbox.set_credit(edge_id, credit)
    try:
        while True:
            data = conn.recv_bytes()
            if data[:1] == _END:
                skipped, stopped = (int(n) for n in data[1:].split())
                if skipped:
                    inbox.recorder.drop("policy", skipped)
                if stopped:
                    inbox.recorder.drop("stop", stopped)
                break
            if data[:1] == _MARK:
                inbox.advance(edge_id, *pickle.loads(data[1:]))
                continue
            try:
                frame, skipped = decode(data, shared)
            except EdgeError as exc:
                error = EdgeError(f"a frame from {upstream!r} could not be rebuilt: {exc}")
                error.__cause__ = exc.__cause__
                on_fatal(downstream, error)
                break
            if skipped:
                inbox.recorder.drop("policy", skipped)

            def release(handles: tuple[Handle, ...] = frame._handles) -> None:
                for handle in handles:
                    shared.release(handle, column)

            inbox.put(edge_id, frame, release, stop)
            if not lossless:  # credit as soon as it is read: the inbox bounds the rest
                credit(1)
    except (EOFError, OSError):
        pass  # the producer is gone: this edge has ended (a dead worker is reported apart)
    except BaseException as exc:  # a framework failure: fatal, never a silent end
        on_fatal(downstream, EdgeError(f"the edge from {upstream!r} failed: {exc!r}"))
    finally:
        inbox.end(edge_id)
