"""The framepipe exception tree.

Every error framepipe raises on purpose derives from ``FramepipeError`` and
names the node, source, sink or key at fault::

    FramepipeError
    ├── GraphError        an invalid pipeline: unknown or duplicate name, cycle, no input
    ├── ConfigError       a pipeline file or option with a bad key or value
    ├── StageError        a stage raised (``on_error="stop"``); the original is ``__cause__``
    ├── SourceError       a source could not be opened or read
    ├── SinkError         a sink could not be opened or written
    ├── ModelError        a model could not be found, loaded or understood
    └── WorkerError       a worker process died or stopped answering
"""

from __future__ import annotations


class FramepipeError(Exception):
    """Base class of every error framepipe raises on purpose."""


class GraphError(FramepipeError):
    """The pipeline graph is invalid; the message names the node."""


class ConfigError(FramepipeError):
    """A pipeline file or an option is invalid; the message names the key."""


class _NodeError(FramepipeError):
    """An error that belongs to one node of a running pipeline."""

    def __init__(self, node: str, message: str) -> None:
        super().__init__(f"{node!r}: {message}")
        self.node = node
        self.detail = message

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Exceptions cross process boundaries pickled; keep both fields.
        return (type(self), (self.node, self.detail))


class StageError(_NodeError):
    """A stage failed; ``__cause__`` holds the original exception when it could be kept."""


class SourceError(_NodeError):
    """A source could not be opened or read."""


class SinkError(_NodeError):
    """A sink could not be opened or written."""


class ModelError(FramepipeError):
    """A model could not be found, loaded or understood."""


class WorkerError(_NodeError):
    """A worker process died or stopped answering."""


class RemoteTraceback(Exception):
    """The formatted traceback of an exception raised in another process.

    Used as ``__cause__`` when the original exception could not be pickled.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def missing_extra(what: str, extra: str, exc: ModuleNotFoundError) -> ModuleNotFoundError:
    """The error for ``what`` needing an optional part of framepipe that is not installed.

    Example: ``fp.stages needs scipy, from framepipe's "vision" extra: pip install
    'framepipe[vision]'``.
    """
    error = ModuleNotFoundError(
        f"{what} needs {exc.name}, from framepipe's {extra!r} extra: "
        f"pip install 'framepipe[{extra}]' (or 'framepipe[all]')",
        name=exc.name,
    )
    error.__cause__ = exc
    return error
