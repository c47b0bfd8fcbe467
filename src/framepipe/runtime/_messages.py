"""Typed messages between an executor and its hosts.

Reports go from a host to its executor (a direct call in the caller's
process, a pipe from a worker process); commands go from the executor to a
worker's host. Errors cross processes as ``PortableError``.
"""

from __future__ import annotations

import pickle
import traceback
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from .._errors import FramepipeError, RemoteTraceback
from .._graph import Edge, Node
from ..stats import NodeStats

# -- reports: host -> executor --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """The host created a shared-memory segment; the run's owner unlinks it at the end."""

    name: str


@dataclass(frozen=True, slots=True)
class Listening:
    """Where the host accepts edges from other processes (None: it has no remote inputs)."""

    address: str | None


@dataclass(frozen=True, slots=True)
class Ready:
    """Every stage and sink of the host is set up (or failed to be)."""


@dataclass(frozen=True, slots=True)
class Fatal:
    """A node failed: the run stops (a ``SourceError`` only ends its source)."""

    node: str
    error: BaseException | PortableError


@dataclass(frozen=True, slots=True)
class Failure:
    """A node failed without stopping the run (``close()``, ``teardown()``)."""

    node: str
    error: BaseException | PortableError


@dataclass(frozen=True, slots=True)
class Log:
    """A log record of a worker, as the fields of a ``logging.LogRecord``."""

    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Stats:
    stats: dict[str, NodeStats]


@dataclass(frozen=True, slots=True)
class Done:
    """The host's nodes have all ended: final statistics and sinks' final states."""

    stats: dict[str, NodeStats]
    final_states: dict[str, Any] = field(default_factory=dict)


# -- commands: executor -> worker host ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    """Connect outlets to these listeners (host id -> address), then start the nodes."""

    addresses: dict[str, str]


@dataclass(frozen=True, slots=True)
class Go:
    """Start the sources."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop: sources end, stages drop queued work, sinks write what they hold and close."""


@dataclass(frozen=True, slots=True)
class AddSource:
    node: Node
    edges: list[Edge]
    columns: dict[int, int]
    addresses: dict[str, str]


@dataclass(frozen=True, slots=True)
class RemoveSource:
    name: str


Report = Segment | Listening | Ready | Fatal | Failure | Log | Stats | Done
Command = Connect | Go | Stop | AddSource | RemoveSource


@dataclass(frozen=True, slots=True)
class PortableError:
    """An exception pickled for another process, with its cause (or its traceback as text)."""

    blob: bytes
    cause: bytes | None
    text: str

    @classmethod
    def of(cls, error: BaseException) -> PortableError:
        text = "".join(traceback.format_exception(error.__cause__ or error))
        try:
            blob = pickle.dumps(error)
        except Exception:
            blob = pickle.dumps(FramepipeError(str(error)))
        cause = None
        if error.__cause__ is not None:
            try:
                cause = cloudpickle.dumps(error.__cause__)
                pickle.loads(cause)
            except Exception:
                cause = None
        return cls(blob, cause, text)

    def restore(self) -> BaseException:
        error: BaseException = pickle.loads(self.blob)
        original: BaseException | None = None
        if self.cause is not None:
            try:
                original = pickle.loads(self.cause)
            except Exception:
                original = None
        error.__cause__ = original if original is not None else RemoteTraceback(self.text)
        return error


def error_of(message: Fatal | Failure) -> BaseException:
    """The exception a ``Fatal``/``Failure`` carries, rebuilt if it crossed processes."""
    error = message.error
    return error.restore() if isinstance(error, PortableError) else error


def sendable(message: Any) -> Any:
    """``message`` ready to be pickled to another process."""
    if isinstance(message, Fatal | Failure) and not isinstance(message.error, PortableError):
        return type(message)(message.node, PortableError.of(message.error))
    return message
