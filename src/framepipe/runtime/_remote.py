"""Edges between processes: frames as small messages, pixels in shared memory.

A producer connects to its consumer's listener (a Unix socket) and sends one
message per frame: its metadata, its small results (pickled) and the handles
of its shared-memory arrays. Every edge has a credit window, so a frame in
flight (and the shared-memory slot it holds) is always bounded:

- lossless (``block``) edges: the consumer sends a credit when a frame leaves
  its queue; a producer with no credit left waits.
- dropping edges: the consumer's receiver credits each frame as soon as it
  reads it, and its inbox drops by policy. If the consumer stops reading (its
  process paused or starved), the producer drops frames for that edge instead
  of piling them into the socket; the count goes with the next frame that is
  sent and shows as ``policy`` drops of the consumer. The producer never waits.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import select
import threading
from multiprocessing.connection import Client, Connection
from typing import Any

import cloudpickle
import numpy as np

from .._frame import Frame
from .._policy import Queue
from ..transport._shm import Handle, SharedFrames
from ._inbox import Inbox

log = logging.getLogger("framepipe")

#: Result arrays at least this big travel in shared memory instead of pickled.
SHARED_RESULT_BYTES = 64 * 1024
#: Frames a dropping edge may have in flight beyond what its queue holds.
WINDOW_SLACK = 2
_END = b"E"
_CREDIT = b"C"


def export(frame: Frame, shared: SharedFrames) -> tuple[Frame, list[Handle]]:
    """Make sure the frame's image and big array results live in shared memory.

    Returns the frame to send (the same one when nothing had to move) and the
    handles this call created; their owner hold is released by the caller once
    every outlet has leased them.
    """
    handles = list(frame._handles)
    keys = {h.key for h in handles}
    created: list[Handle] = []
    image = frame.image
    if "" not in keys:
        array, handle = shared.allocate(image.shape, str(image.dtype))
        np.copyto(array, image)
        array.flags.writeable = False
        image = array
        created.append(handle)
    results = frame.results
    for key, value in frame.results.items():
        if (
            key not in keys
            and isinstance(value, np.ndarray)
            and value.nbytes >= SHARED_RESULT_BYTES
            and value.dtype != object
        ):
            array, handle = shared.allocate(value.shape, str(value.dtype))
            np.copyto(array, value)
            array.flags.writeable = False
            if results is frame.results:
                results = dict(results)
            results[key] = array
            created.append(handle.with_key(key))
    if not created:
        return frame, created
    return Frame(
        image,
        frame.index,
        frame.pts,
        frame.timestamp,
        frame.source,
        results,
        tuple(handles + created),
    ), created


def encode(frame: Frame, skipped: int = 0) -> bytes:
    keys = {h.key for h in frame._handles}
    results = (
        {k: v for k, v in frame.results.items() if k not in keys}
        if len(keys) > 1
        else frame.results
    )
    message = (
        frame.index,
        frame.pts,
        frame.timestamp,
        frame.source,
        results,
        frame._handles,
        skipped,
    )
    try:
        return pickle.dumps(message, protocol=5)
    except (pickle.PicklingError, TypeError, AttributeError):
        return cloudpickle.dumps(message, protocol=5)


def decode(data: bytes, shared: SharedFrames) -> tuple[Frame, int]:
    """The frame, and how many frames the producer dropped for this edge before it."""
    index, pts, timestamp, source, results, handles, skipped = pickle.loads(data)
    image = None
    for handle in handles:
        view = shared.view(handle)
        if handle.key:
            results[handle.key] = view
        else:
            image = view
    assert image is not None, "a frame crossed processes without its image handle"
    return Frame(image, index, pts, timestamp, source, results, handles), skipped


class RemoteOutlet:
    """The producer's end of an edge to a node in another process."""

    def __init__(
        self,
        edge_id: int,
        upstream: str,
        downstream: str,
        policy: Queue,
        shared: SharedFrames,
        stop: threading.Event,
    ) -> None:
        self.edge_id, self.upstream, self.downstream = edge_id, upstream, downstream
        self.policy = policy
        self.lossless = policy.overflow == "block"
        self.window = policy.size if self.lossless else policy.size + WINDOW_SLACK
        self.shared = shared
        self.stop = stop
        self.conn: Connection | None = None
        self._poller: Any = None
        self.in_flight = 0
        self.skipped = 0  # dropped here since the last frame sent
        self.dead = False

    def connect(self, address: str) -> None:
        self.conn = Client(address, family="AF_UNIX")
        self.conn.send(
            (
                "hello",
                self.edge_id,
                self.upstream,
                self.downstream,
                (self.policy.size, self.policy.overflow),
            )
        )
        # One poller for the edge's life: Connection.poll() builds a selector per call.
        self._poller = select.poll()
        self._poller.register(self.conn.fileno(), select.POLLIN)

    def _take_credits(self, timeout_ms: int) -> None:
        assert self.conn is not None
        while self._poller.poll(timeout_ms):
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
            self._take_credits(50)
        return self.in_flight < self.window

    def deliver(self, frame: Frame) -> None:
        if self.dead or self.conn is None:
            return
        try:
            if not self._room():
                if not self.lossless:
                    self.skipped += 1
                return
            for handle in frame._handles:
                self.shared.lease(handle, self.edge_id)
            try:
                self.conn.send_bytes(encode(frame, self.skipped))
            except BaseException:
                for handle in frame._handles:
                    self.shared.release(handle, self.edge_id)
                raise
            self.skipped = 0
            self.in_flight += 1
        except (OSError, EOFError):
            # The consumer is gone; its death is reported by the run's supervisor.
            self.dead = True

    def end(self) -> None:
        if self.conn is None or self.dead:
            return
        with contextlib.suppress(OSError, EOFError):
            self.conn.send_bytes(_END)
        self.dead = True

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()


def receive(
    conn: Connection, inboxes: dict[str, Inbox], shared: SharedFrames, stop: threading.Event
) -> None:
    """The consumer's end of one remote edge: runs in its own thread until END."""
    try:
        _, edge_id, upstream, downstream, (size, overflow) = conn.recv()
    except (EOFError, OSError):
        return
    inbox = inboxes[downstream]
    if not inbox.has_edge(edge_id):  # a source added while running
        inbox.add_edge(edge_id, upstream, Queue(size, overflow))
    lock = threading.Lock()

    def credit(n: int) -> None:
        try:
            with lock:
                conn.send_bytes(_CREDIT * n)
        except (OSError, EOFError):
            pass  # the producer is gone

    lossless = overflow == "block"
    if lossless:  # credit when a frame leaves the queue
        inbox.set_credit(edge_id, credit)
    try:
        while True:
            data = conn.recv_bytes()
            if data == _END:
                break
            frame, skipped = decode(data, shared)
            if skipped:
                inbox.recorder.drop("policy", skipped)

            def release(handles: tuple[Handle, ...] = frame._handles) -> None:
                for handle in handles:
                    shared.release(handle, edge_id)

            inbox.put(edge_id, frame, release, stop)
            if not lossless:  # credit as soon as it is read: the inbox bounds the rest
                credit(1)
    except (EOFError, OSError):
        pass  # the producer is gone: this edge has ended
    except Exception:
        log.exception("framepipe: edge %d into %r failed", edge_id, downstream)
    finally:
        inbox.end(edge_id)
