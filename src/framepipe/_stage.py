"""What users subclass to write their own processing step."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._frame import Frame


@dataclass(frozen=True, slots=True)
class StageContext:
    """What a running stage may know about where it runs.

    Set as ``stage.context`` by the worker before ``setup()``.
    """

    name: str
    mode: str
    logger: logging.Logger


class Stage(ABC):
    """A processing step: ``setup()`` once, ``process(frame)`` per frame, ``teardown()`` at the end.

    All three run inside the worker that owns the stage (a thread, or another
    process under ``executor="processes"``), so load models in ``setup()``,
    never in ``__init__``: the instance is pickled to reach its worker.

    ``process`` returns the stage's result for that frame. It travels downstream
    as ``frame.results[stage_name]``; returning ``None`` passes nothing on.
    With ``window=(count, step)`` the stage receives a list of frames instead.

    ``teardown()`` is called at the end of the run, after a failure too.

    Batching: a stage that sets ``batch > 1`` receives up to ``batch`` frames at
    once, from any of its inputs, in ``process_batch``; frames that arrive within
    ``max_wait_ms`` of the first are batched together.

    Example::

        class Brightness(fp.Stage):
            def process(self, frame):
                return float(frame.image.mean())
    """

    #: Set by the worker before ``setup()``.
    context: StageContext
    #: Frames per ``process_batch`` call; 1 disables batching.
    batch: int = 1
    #: How long to wait for a batch to fill, in milliseconds.
    max_wait_ms: float = 0.0
    #: Whether ``process`` reads ``frame.image``. A stage that only reads
    #: ``frame.results`` sets it to False: under ``executor="ray"`` its input then
    #: crosses machines without pixels (``transfer="results"``).
    reads_pixels: bool = True

    def setup(self) -> None:
        """Acquire resources (models, files). Called once, inside the worker."""

    @abstractmethod
    def process(self, frame: Any) -> Any:
        """Return this stage's result for ``frame`` (a ``Frame``, or a list with ``window=``)."""

    def process_batch(self, frames: Sequence[Frame]) -> list[Any]:
        """Return one result per frame. The default calls ``process`` on each."""
        return [self.process(frame) for frame in frames]

    def teardown(self) -> None:
        """Release resources. Called once at the end, also after a failure."""


class FunctionStage(Stage):
    """A plain callable ``fn(frame) -> value`` used as a stage."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def process(self, frame: Any) -> Any:
        return self.fn(frame)

    def __repr__(self) -> str:
        return f"FunctionStage({getattr(self.fn, '__qualname__', self.fn)!r})"
