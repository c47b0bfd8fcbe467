"""Edges between processes: frames as small messages, pixels in shared memory.

A producer connects to its consumer's listener (a Unix socket) and sends one
message per frame: its metadata, its small results (pickled) and the handles
of its shared-memory arrays. For lossless (``block``) edges the consumer sends
a credit back each time a frame leaves its queue, and the producer never has
more frames in flight than the queue holds, so nothing grows without bound.
On other edges the consumer's receiver drains the socket continuously and its
inbox drops by policy, so the producer never waits.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import threading
from multiprocessing.connection import Client, Connection

import cloudpickle
import numpy as np

from .._frame import Frame
from .._policy import Queue
from ..transport._shm import Handle, SharedFrames
from ._inbox import Inbox

log = logging.getLogger("framepipe")

#: Result arrays at least this big travel in shared memory instead of pickled.
SHARED_RESULT_BYTES = 64 * 1024
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


def encode(frame: Frame) -> bytes:
    keys = {h.key for h in frame._handles}
    results = (
        {k: v for k, v in frame.results.items() if k not in keys}
        if len(keys) > 1
        else frame.results
    )
    message = (frame.index, frame.pts, frame.timestamp, frame.source, results, frame._handles)
    try:
        return pickle.dumps(message, protocol=5)
    except (pickle.PicklingError, TypeError, AttributeError):
        return cloudpickle.dumps(message, protocol=5)


def decode(data: bytes, shared: SharedFrames) -> Frame:
    index, pts, timestamp, source, results, handles = pickle.loads(data)
    image = None
    for handle in handles:
        view = shared.view(handle)
        if handle.key:
            results[handle.key] = view
        else:
            image = view
    assert image is not None, "a frame crossed processes without its image handle"
    return Frame(image, index, pts, timestamp, source, results, handles)


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
        self.capacity = policy.size if policy.overflow == "block" else None
        self.shared = shared
        self.stop = stop
        self.conn: Connection | None = None
        self.in_flight = 0
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

    def _await_credit(self) -> bool:
        assert self.conn is not None
        while self.in_flight >= self.capacity:  # type: ignore[operator]
            if self.stop.is_set():
                return False
            if self.conn.poll(0.05):
                self.in_flight -= len(self.conn.recv_bytes())
        # Take any other credits already waiting, without blocking.
        while self.conn.poll(0):
            self.in_flight -= len(self.conn.recv_bytes())
        return True

    def deliver(self, frame: Frame) -> None:
        if self.dead or self.conn is None:
            return
        try:
            if self.capacity is not None and not self._await_credit():
                return
            for handle in frame._handles:
                self.shared.lease(handle, self.edge_id)
            try:
                self.conn.send_bytes(encode(frame))
            except BaseException:
                for handle in frame._handles:
                    self.shared.release(handle, self.edge_id)
                raise
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
    if overflow == "block":
        lock = threading.Lock()

        def credit(n: int) -> None:
            try:
                with lock:
                    conn.send_bytes(_CREDIT * n)
            except (OSError, EOFError):
                pass

        inbox.set_credit(edge_id, credit)
    try:
        while True:
            data = conn.recv_bytes()
            if data == _END:
                break
            frame = decode(data, shared)

            def release(handles: tuple[Handle, ...] = frame._handles) -> None:
                for handle in handles:
                    shared.release(handle, edge_id)

            inbox.put(edge_id, frame, release, stop)
    except (EOFError, OSError):
        pass  # the producer is gone: this edge has ended
    except Exception:
        log.exception("framepipe: edge %d into %r failed", edge_id, downstream)
    finally:
        inbox.end(edge_id)
