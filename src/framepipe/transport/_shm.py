"""Frames in shared memory, written once and read by every consumer without a copy.

A worker that produces frames for other processes owns *segments*
(``multiprocessing.shared_memory``), each a row of equally sized *slots*.
Every segment starts with a small header, then a table of release flags, one
byte per slot and *column*: a producer sets ``flags[slot, column]`` before it
sends a frame on the edge that owns the column; the consumer clears it when it
is done with the frame (processed, dropped or forwarded, in which case the
next edge's flag is set first). Column 0 is the owner's own hold while it
writes. A slot is free again once its whole row is zero: each byte has a single
writer at a time, so no lock is needed across processes.

A producer that finds every slot held and its memory budget spent waits for a
release, not for a timer: it raises the *waiting* byte of its segments' headers
and sleeps. Whoever clears a flag while that byte is up tells the owner: in
its own process through a condition, from another process with a datagram to
the owner's notice socket, whose path the header holds. A release reads one
byte more, and makes a syscall only while the owner waits.

Columns belong to the transport, not to the graph: ``FlagColumns`` gives each
cross-process edge one when the run is planned (as many as there are edges: no
fixed limit) and takes it back when the edge's source is removed, so hot
add/remove cycles reuse them. A segment's table is as wide as the columns were
when it was created; slots of narrower segments are not handed out once the
table has grown.

Segments are unlinked by the process that started the run, after every
worker has exited, whatever happened to them (the names are reported to it
when created, and are prefixed by the run's id so a sweep finds any that were
not).
"""

from __future__ import annotations

import contextlib
import logging
import math
import mmap
import os
import select
import socket
import threading
from collections.abc import Callable, Iterable
from multiprocessing import resource_tracker, shared_memory
from typing import Any, NamedTuple, Protocol

import numpy as np

from .._frame import Frame
from ._seam import Stopping

#: Result arrays at least this big travel in shared memory instead of pickled.
SHARED_RESULT_BYTES = 64 * 1024
#: Column 0 of every flag table is the owner's hold.
OWNER = 0
#: Width of a flag table when nobody says how many edges there are (tests, tools).
DEFAULT_COLUMNS = 8
_PAGE = 4096
_HEADER_ALIGN = 64
#: Header bytes before the flag table: [waiting, length of the notice path, notice path].
_HEADER = 128
_WAITING = 0
_PATH_LENGTH = 1
_PATH = 2
#: A producer waiting for a slot looks again this often even unwoken: a backstop for a
#: notice lost (a release whose flag store and this byte's load crossed in the CPU).
RECHECK = 1.0

log = logging.getLogger("framepipe")


class Readable(Protocol):
    """Anything whose file descriptor turns readable on an event (``Waker``)."""

    def fileno(self) -> int: ...


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


class Handle(NamedTuple):
    """Where one array lives: segment, slot, shape. A plain tuple, so it pickles cheaply
    (one goes with every frame that crosses processes).

    ``key`` says which array of a frame it backs: ``""`` for the image, else
    the name of the result it holds.
    """

    segment: str
    slot: int
    shape: tuple[int, ...]
    dtype: str
    nslots: int
    slot_bytes: int
    columns: int
    key: str = ""

    def with_key(self, key: str) -> Handle:
        return self._replace(key=key)


class _Segment:
    """One mapped segment: its header, its flag table and its slots."""

    def __init__(
        self,
        name: str,
        nslots: int,
        slot_bytes: int,
        columns: int,
        buf: Any,
        closer: Callable[[], None],
        owned: bool = False,
    ) -> None:
        self.name, self.nslots, self.slot_bytes = name, nslots, slot_bytes
        self.columns = columns
        self.buf = buf
        self.closer = closer
        self.owned = owned
        self.owner_path = ""  # another worker's segment: where to tell it of releases
        self.data_offset = _round_up(_HEADER + nslots * columns, _HEADER_ALIGN)
        self.header = np.ndarray((_HEADER,), np.uint8, buffer=buf)
        self.flags = np.ndarray((nslots, columns), np.uint8, buffer=buf, offset=_HEADER)

    @staticmethod
    def size(nslots: int, slot_bytes: int, columns: int) -> int:
        return _round_up(_HEADER + nslots * columns, _HEADER_ALIGN) + nslots * slot_bytes

    @property
    def notice_path(self) -> str:
        """Where the owner hears of releases ("": nowhere, it only re-checks)."""
        length = int(self.header[_PATH_LENGTH])
        return bytes(self.header[_PATH : _PATH + length]).decode()

    @notice_path.setter
    def notice_path(self, path: str) -> None:
        data = path.encode()
        self.header[_PATH_LENGTH] = len(data)
        self.header[_PATH : _PATH + len(data)] = np.frombuffer(data, np.uint8)

    def array(self, slot: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        return np.ndarray(
            shape,
            np.dtype(dtype),
            buffer=self.buf,
            offset=self.data_offset + slot * self.slot_bytes,
        )

    def close(self) -> None:
        self.flags = None  # type: ignore[assignment]
        self.header = None  # type: ignore[assignment]
        # A view may still be alive somewhere: then the mapping goes with the process.
        with contextlib.suppress(BufferError):
            self.closer()


def _attach(name: str) -> tuple[Any, Callable[[], None]]:
    """Map an existing segment without registering it with the resource tracker.

    Attaching through ``SharedMemory`` would register the name a second time
    in Python < 3.13, and the tracker would then warn about (or unlink) a
    segment its owner still uses.
    """
    try:
        from _posixshmem import shm_open

        fd = shm_open("/" + name, os.O_RDWR, mode=0o600)
    except ImportError:  # pragma: no cover - non-POSIX
        fd = os.open(os.path.join("/dev/shm", name), os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        mapped = mmap.mmap(fd, size)
    finally:
        os.close(fd)
    return memoryview(mapped), mapped.close


class FlagColumns:
    """Which column of the flag tables each edge that crosses processes uses.

    Columns are handed out from 1 (0 is the owner's hold), as many as there are
    edges; ``free`` gives one back when its edge is gone and ``assign`` reuses it
    when ``reusable(column)`` agrees (no slot still holds a flag in it).
    """

    def __init__(self, edge_ids: Iterable[int] = ()) -> None:
        self._of: dict[int, int] = {}
        self._free: list[int] = []
        self._next = OWNER + 1
        for edge_id in edge_ids:
            self.assign(edge_id)

    def assign(self, edge_id: int, reusable: Callable[[int], bool] | None = None) -> int:
        for column in sorted(self._free):
            if reusable is None or reusable(column):
                self._free.remove(column)
                break
        else:
            column = self._next
            self._next += 1
        self._of[edge_id] = column
        return column

    def free(self, edge_id: int) -> None:
        column = self._of.pop(edge_id, None)
        if column is not None:
            self._free.append(column)

    def __getitem__(self, edge_id: int) -> int:
        return self._of[edge_id]

    @property
    def width(self) -> int:
        """How wide a flag table must be for every column handed out so far."""
        return self._next

    def mapping(self) -> dict[int, int]:
        return dict(self._of)


class SharedFrames:
    """This worker's view of shared memory: the segments it owns and those it reads.

    Args:
        prefix: segment names start with it (the run id and the worker).
        on_segment: called with each new segment's name before it is used,
            so the run's owner can unlink it whatever happens to this worker.
        stop: while waiting for a free slot, give up once this is set.
        stopped: readable once ``stop`` is set (a ``Waker``): wakes that wait at
            once. Without it a stop is seen within ``RECHECK`` seconds.
        socket_dir: where to open the socket on which other processes say they
            released a slot of this worker's. Without it only releases made in
            this process wake a waiting producer (the others within ``RECHECK``).
        max_bytes: how much memory this worker's segments may take in all.
        columns: width of the flag tables of new segments (see ``FlagColumns``).
    """

    def __init__(
        self,
        prefix: str,
        on_segment: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
        max_bytes: int = 2 << 30,
        columns: int = DEFAULT_COLUMNS,
        *,
        stopped: Readable | None = None,
        socket_dir: str | None = None,
    ) -> None:
        self.prefix = prefix
        self.on_segment = on_segment
        self.stop = stop or threading.Event()
        self.stopped = stopped
        self.socket_dir = socket_dir
        self.max_bytes = max_bytes
        self.columns = max(columns, OWNER + 2)
        self._owned: dict[int, list[_Segment]] = {}  # slot_bytes -> segments
        self._owned_bytes = 0
        self._mapped: dict[str, _Segment] = {}
        self._shms: list[shared_memory.SharedMemory] = []
        self._counter = 0
        self._lock = threading.Lock()
        # Waiting for a free slot: notified by releases and by the stop.
        self._freed = threading.Condition(self._lock)
        self._waiters = 0
        self._notices: socket.socket | None = None  # bound once this worker owns a segment
        self._notice_path = ""
        self._listener: threading.Thread | None = None  # wakes waiters: notices, the stop
        self._sender: socket.socket | None = None  # tells other owners of releases
        self._closing = False

    def widen(self, columns: int) -> None:
        """New segments get flag tables at least ``columns`` wide (edges were added)."""
        with self._lock:
            self.columns = max(self.columns, columns)

    def column_clear(self, column: int) -> bool:
        """Whether no slot of this worker's segments holds a flag in ``column``."""
        with self._lock:
            return not any(
                column < s.columns and s.flags[:, column].any()
                for group in self._owned.values()
                for s in group
            )

    # -- owner side ----------------------------------------------------------------

    def allocate(self, shape: tuple[int, ...], dtype: str = "uint8") -> tuple[np.ndarray, Handle]:
        """A writable array in a free slot, held by this worker until ``release_owner``.

        Waits while every slot is held and the memory budget is spent, until a
        consumer (in any process) releases one; raises ``Stopping`` once the run
        stops.
        """
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        slot_bytes = _round_up(max(nbytes, 1), _PAGE)
        shape = tuple(shape)
        waiting = False
        with self._lock:
            try:
                while True:
                    found = self._take(slot_bytes, shape, dtype)
                    if found is not None:
                        return found
                    if self._grow(slot_bytes):
                        continue
                    if self.stop.is_set():
                        raise Stopping("the run stopped while waiting for a free frame slot")
                    if not waiting:
                        # Raise the flag, then look once more: a release from now on
                        # announces itself, one made before it shows in the scan.
                        waiting = True
                        self._begin_waiting()
                        continue
                    self._freed.wait(RECHECK)
            finally:
                if waiting:
                    self._end_waiting()

    def _take(
        self, slot_bytes: int, shape: tuple[int, ...], dtype: str
    ) -> tuple[np.ndarray, Handle] | None:
        for segment in self._owned.get(slot_bytes, ()):
            if segment.columns < self.columns:
                continue  # too narrow for today's edges: it drains and stays unused
            free = np.flatnonzero(~segment.flags.any(axis=1))
            if free.size:
                slot = int(free[0])
                segment.flags[slot, OWNER] = 1
                handle = Handle(
                    segment.name, slot, shape, dtype, segment.nslots, slot_bytes, segment.columns
                )
                return segment.array(slot, shape, dtype), handle
        return None

    def _begin_waiting(self) -> None:
        self._waiters += 1
        if self._waiters == 1:
            for group in self._owned.values():
                for segment in group:
                    segment.header[_WAITING] = 1
        if self._listener is None and self._notices is not None and not self._closing:
            self._listener = threading.Thread(
                target=self._listen, daemon=True, name="framepipe-slot-notices"
            )
            self._listener.start()

    def _end_waiting(self) -> None:
        self._waiters -= 1
        if self._waiters == 0:
            for group in self._owned.values():
                for segment in group:
                    segment.header[_WAITING] = 0

    def _listen(self) -> None:
        """Wakes waiting producers when another process releases a slot, or the run stops."""
        assert self._notices is not None
        poller = select.poll()
        poller.register(self._notices, select.POLLIN)
        if self.stopped is not None:
            poller.register(self.stopped, select.POLLIN)
        notices = self._notices.fileno()
        while True:
            ready = {fd for fd, _ in poller.poll()}
            with contextlib.suppress(OSError):  # drained: the owner looks at every slot anyway
                while self._notices.recv(64, socket.MSG_DONTWAIT):
                    pass
            with self._lock:
                self._freed.notify_all()
                if self._closing or ready - {notices}:  # closing, or the run stopped
                    return

    def _open_notices(self) -> None:
        """Bind the socket other processes tell releases on (once, with the first segment)."""
        if self.socket_dir is None or self._notices is not None:
            return
        path = os.path.join(self.socket_dir, f"{self.prefix}.free")
        if len(path.encode()) > _HEADER - _PATH:
            log.debug("framepipe: %s is too long for a notice socket", path)
            return
        notices = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            notices.bind(path)
        except OSError as exc:  # then waits re-check every RECHECK seconds
            notices.close()
            log.debug("framepipe: no notice socket at %s: %s", path, exc)
            return
        self._notices, self._notice_path = notices, path

    def _grow(self, slot_bytes: int) -> bool:
        segments = self._owned.setdefault(slot_bytes, [])
        held = sum(s.nslots for s in segments if s.columns >= self.columns)
        # Start with room for a few frames, then double: a run settles on what
        # its queues and windows actually hold.
        nslots = max(4, held)
        size = _Segment.size(nslots, slot_bytes, self.columns)
        if self._owned_bytes + size > self.max_bytes and segments:
            return False
        self._open_notices()
        self._counter += 1
        name = f"{self.prefix}_{self._counter}"
        shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        if self.on_segment is not None:
            self.on_segment(shm.name)
        self._shms.append(shm)
        segment = _Segment(
            shm.name, nslots, slot_bytes, self.columns, shm.buf, shm.close, owned=True
        )
        segment.header[:] = 0
        segment.flags[:] = 0
        segment.notice_path = self._notice_path
        segment.header[_WAITING] = 1 if self._waiters else 0
        segments.append(segment)
        self._mapped[segment.name] = segment
        self._owned_bytes += size
        return True

    def release_owner(self, handle: Handle) -> None:
        self.release(handle, OWNER)

    # -- any side -------------------------------------------------------------------

    def _segment(self, handle: Handle) -> _Segment:
        segment = self._mapped.get(handle.segment)
        if segment is None:
            with self._lock:
                segment = self._mapped.get(handle.segment)
                if segment is None:
                    buf, closer = _attach(handle.segment)
                    segment = _Segment(
                        handle.segment,
                        handle.nslots,
                        handle.slot_bytes,
                        handle.columns,
                        buf,
                        closer,
                    )
                    segment.owner_path = segment.notice_path
                    self._mapped[handle.segment] = segment
        return segment

    def view(self, handle: Handle) -> np.ndarray:
        """A read-only view of the array behind ``handle`` (no copy)."""
        array = self._segment(handle).array(handle.slot, handle.shape, handle.dtype)
        array.flags.writeable = False
        return array

    def lease(self, handle: Handle, column: int) -> None:
        if not 0 < column < handle.columns:
            raise ValueError(
                f"flag column {column} is outside the {handle.columns} columns of "
                f"segment {handle.segment!r}"
            )
        self._segment(handle).flags[handle.slot, column] = 1

    def release(self, handle: Handle, column: int) -> None:
        segment = self._mapped.get(handle.segment)
        if segment is None:
            return
        flags, header = segment.flags, segment.header
        if flags is None or header is None:
            return  # closed
        flags[handle.slot, column] = 0
        if header[_WAITING]:  # the owner waits for a slot: tell it
            self._announce(segment)

    def _announce(self, segment: _Segment) -> None:
        if segment.owned:
            with self._lock:
                self._freed.notify_all()
        elif segment.owner_path:
            self._tell(segment.owner_path)

    def _tell(self, path: str) -> None:
        try:
            if self._sender is None:
                with self._lock:
                    if self._sender is None:
                        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                        sender.setblocking(False)
                        self._sender = sender
            self._sender.sendto(b"r", path)
        except OSError:
            pass  # the owner is gone, or has notices enough queued to wake it

    def lease_frame(self, handles: tuple[Handle, ...], column: int) -> Callable[[], None]:
        """Hold every slot of a frame in ``column``; return the matching release."""
        for handle in handles:
            self.lease(handle, column)

        def release() -> None:
            for handle in handles:
                self.release(handle, column)

        return release

    def export(self, frame: Frame) -> tuple[Frame, Callable[[], None]]:
        """The frame with its image and big array results in shared memory (an ``Exporter``).

        Returns the frame to send (the same one when nothing had to move) and
        the call that drops this worker's holds on the slots it filled, once
        every outlet has leased them.
        """
        handles = list(frame._handles)
        keys = {h.key for h in handles}
        created: list[Handle] = []
        image = frame.image
        if "" not in keys:
            array, handle = self.allocate(image.shape, str(image.dtype))
            np.copyto(array, image)
            array.flags.writeable = False
            image = array
            created.append(handle)
        results: dict[str, Any] | None = None
        for key, value in frame.results.items():
            if (
                key not in keys
                and isinstance(value, np.ndarray)
                and value.nbytes >= SHARED_RESULT_BYTES
                and value.dtype != object
            ):
                array, handle = self.allocate(value.shape, str(value.dtype))
                np.copyto(array, value)
                array.flags.writeable = False
                if results is None:
                    results = dict(frame.results)
                results[key] = array
                created.append(handle.with_key(key))
        if not created:
            return frame, _nothing

        def done() -> None:
            for handle in created:
                self.release_owner(handle)

        out = frame.derive(results, image=image, handles=tuple(handles + created))
        return out, done

    def in_use(self) -> int:
        """Slots of this worker's own segments that are still held (for tests)."""
        with self._lock:
            return sum(
                int(s.flags.any(axis=1).sum()) for group in self._owned.values() for s in group
            )

    def close(self) -> None:
        """Unmap everything. Owned segments are unlinked by the run's owner, not here."""
        with self._lock:
            self._closing = True
            listener = self._listener
        if listener is not None:
            self._tell(self._notice_path)  # wakes it: it sees the close and ends
            listener.join(RECHECK)
        for sock in (self._notices, self._sender):
            if sock is not None:
                sock.close()
        if self._notices is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._notice_path)
        with self._lock:
            for segment in self._mapped.values():
                segment.close()
            self._mapped.clear()
            self._owned.clear()
            self._shms.clear()


def _nothing() -> None:
    pass


def unlink(name: str, *, tracked: bool = True) -> bool:
    """Remove a segment by name; True if it existed.

    Every worker's segments are registered with the run owner's resource
    tracker when created (spawned workers share it), so that a run owner killed
    with SIGKILL still has its segments removed. The owner unregisters them
    here, once, after unlinking.
    """
    if tracked:
        # If the tracker is gone there is nothing to tell it.
        with contextlib.suppress(Exception):
            resource_tracker.unregister(
                "/" + name if not name.startswith("/") else name, "shared_memory"
            )
    try:
        from _posixshmem import shm_unlink

        shm_unlink("/" + name)
    except FileNotFoundError:
        return False
    except ImportError:  # pragma: no cover - non-POSIX
        try:
            os.unlink(os.path.join("/dev/shm", name))
        except FileNotFoundError:
            return False
    return True


def sweep(prefix: str) -> list[str]:
    """Unlink every segment whose name starts with ``prefix`` (Linux: lists /dev/shm).

    These are segments nobody reported (a worker killed between creating and
    reporting one); the resource tracker is left alone for them.
    """
    removed: list[str] = []
    try:
        names = os.listdir("/dev/shm")
    except OSError:
        return removed
    for name in names:
        if name.startswith(prefix) and unlink(name, tracked=False):
            removed.append(name)
    return removed


class SharedSourceBuffers:
    """``SourceBuffers`` in shared memory: what a source yields ends up in a slot.

    An array handed out by ``buffer`` is adopted as it is (decoded in place: no
    copy); any other image is copied into a fresh slot once.
    """

    def __init__(self, shared: SharedFrames) -> None:
        self.shared = shared
        self._handed_out: dict[int, Handle] = {}

    def buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        array, handle = self.shared.allocate(shape)
        self._handed_out[id(array)] = handle
        return array

    def adopt(self, image: np.ndarray) -> tuple[np.ndarray, tuple[Handle, ...]]:
        handle = self._handed_out.pop(id(image), None)
        self.close()  # buffers handed out but not yielded go back at once
        if handle is None:
            array, handle = self.shared.allocate(image.shape, str(image.dtype))
            np.copyto(array, image)
            image = array
        return image, (handle,)

    def drop(self, held: tuple[Handle, ...]) -> None:
        for handle in held:
            self.shared.release_owner(handle)

    def close(self) -> None:
        for handle in self._handed_out.values():
            self.shared.release_owner(handle)
        self._handed_out.clear()
