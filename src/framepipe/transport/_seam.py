"""What runners see of a transport: buffers for sources, export for producers.

Runners never touch shared memory: a source runner asks its ``SourceBuffers``
for arrays to decode into and to *adopt* each image it yields (the transport
decides whether it must move, and what the frame then holds); a producer whose
results cross processes hands each outgoing frame to an ``Exporter``. The
in-process case is ``InProcessBuffers`` and no exporter at all, so ``inline`` and
``threads`` pay nothing for any of this.

What a frame holds in its transport (``Frame._handles``) is opaque outside
``transport/``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from .._frame import Frame


class Stopping(Exception):
    """The run stopped while a producer waited for transport memory: end quietly."""


#: Held by a frame in its transport; opaque to runners (``()``: nothing held).
Held = tuple[Any, ...]


class SourceBuffers(Protocol):
    """One source's frame memory."""

    def buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """A writable ``uint8`` array for the source to fill and yield (``ctx.buffer``)."""
        ...

    def adopt(self, image: np.ndarray) -> tuple[np.ndarray, Held]:
        """The yielded ``image`` as consumers will read it, and what its frame holds.

        Buffers handed out and not yielded go back here.
        """
        ...

    def drop(self, held: Held) -> None:
        """Give up the source's own hold: consumers leased theirs, or nobody got it."""
        ...

    def close(self) -> None:
        """Return every buffer still handed out."""
        ...


class InProcessBuffers:
    """Consumers share the producer's memory: arrays are used as they are."""

    def buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.empty(shape, dtype=np.uint8)

    def adopt(self, image: np.ndarray) -> tuple[np.ndarray, Held]:
        return image, ()

    def drop(self, held: Held) -> None:
        pass

    def close(self) -> None:
        pass


#: Prepares an outgoing frame for consumers in other processes: the frame to send,
#: and what to call once every outlet has sent it (drops the producer's holds).
Exporter = Callable[[Frame], tuple[Frame, Callable[[], None]]]
#: Holds a frame's transport memory for one edge; returns the matching release.
Lease = Callable[[Frame, int], Callable[[], None] | None]
