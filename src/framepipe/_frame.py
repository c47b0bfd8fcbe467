"""The unit of data that flows through a pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np


class ReadOnlyResults(dict[str, Any]):
    """``frame.results`` inside a pipeline: a dict that refuses changes.

    Siblings read the same results, so no consumer may change them; a stage
    passes its own value on by returning it.
    """

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(
            "frame.results is read-only (every consumer of the frame reads it): "
            "return your value from process() instead"
        )

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (ReadOnlyResults, (dict(self),))


#: The results of a frame straight from its source.
NO_RESULTS = ReadOnlyResults()
#: How framepipe itself adds to a ``ReadOnlyResults`` (looked up once: the per-hop path).
set_result = dict.__setitem__


def read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array``."""
    view = array.view()
    # write=False, positional: the keyword costs more than the call.
    view.setflags(False)  # type: ignore[call-arg]
    return view


def lent(results: dict[str, Any]) -> ReadOnlyResults:
    """``results`` as consumers see them: read-only, and so are the arrays in it.

    The borrow rule: a consumer may read a frame's results during its call, never
    change them, since its siblings read the same objects.
    """
    for key, value in results.items():
        if isinstance(value, np.ndarray) and value.flags.writeable:
            results[key] = read_only(value)
    return ReadOnlyResults(results)


@dataclass(slots=True, eq=False)
class Frame:
    """One video frame and the results attached to it on its way through the pipeline.

    Attributes:
        image: ``H x W x 3`` ``uint8`` array in BGR order, as OpenCV uses. It is
            always read-only: every consumer of a frame sees the same pixels, and
            in other processes they live in shared memory. A stage that draws
            makes its own copy first: ``canvas = frame.image.copy()``.
        index: position of the frame in its source, counted from 0.
        pts: media time of the frame in seconds.
        timestamp: ``time.time()`` when the source captured the frame; the frame's
            age is ``time.time() - timestamp``.
        source: name of the source node the frame came from.
        results: outputs of upstream stages, keyed by stage name. Lent, like
            ``image``: inside a pipeline it is a read-only dict whose arrays are
            read-only, so no consumer can change what its siblings see.
        late: True for a frame a join (``join="merge"``, real time) delivers
            after it already wrote that frame with the inputs that were on
            time: it carries only the results of the input that came late.
    """

    image: np.ndarray
    index: int
    pts: float
    timestamp: float
    source: str
    results: dict[str, Any] = field(default_factory=dict)
    #: What the transport needs to move and release this frame's data (opaque here).
    _handles: tuple[Any, ...] = field(default=(), repr=False)
    late: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the image."""
        return (int(self.image.shape[0]), int(self.image.shape[1]))

    @property
    def display_image(self) -> np.ndarray:
        """What to show or record: the newest annotated image among the results, else ``image``.

        An annotated image is any result that is an ``H x W x 3`` ``uint8`` array
        (what ``fp.stages.Annotate`` returns). Video and web sinks show this.
        """
        for value in reversed(self.results.values()):
            if (
                isinstance(value, np.ndarray)
                and value.ndim == 3
                and value.dtype == np.uint8
                and value.shape[2] == 3
            ):
                return value
        return self.image

    def derive(
        self,
        results: dict[str, Any] | None = None,
        *,
        image: np.ndarray | None = None,
        handles: tuple[Any, ...] | None = None,
        late: bool | None = None,
    ) -> Frame:
        """This frame with other results (lent), image, handles or lateness.

        The one way framepipe builds a frame from another: the identity (source,
        index, pts, timestamp) is carried, results are read-only, and the
        transport's handles go along unless new ones are given.
        """
        if results is None:
            results = self.results
        elif type(results) is not ReadOnlyResults:
            results = lent(dict(results))
        return Frame(
            self.image if image is None else image,
            self.index,
            self.pts,
            self.timestamp,
            self.source,
            results,
            self._handles if handles is None else handles,
            self.late if late is None else late,
        )

    def __repr__(self) -> str:
        h, w = self.shape
        keys = ", ".join(self.results) or "-"
        late = ", late" if self.late else ""
        return (
            f"Frame(source={self.source!r}, index={self.index}, pts={self.pts:.3f}, "
            f"{w}x{h}, results=[{keys}]{late})"
        )


def with_result(frame: Frame, name: str, value: Any) -> Frame:
    """``frame`` passed on with ``name``'s result added, lent like the others (an array
    result becomes read-only): what every hop builds for its consumers."""
    results = ReadOnlyResults(frame.results)
    if isinstance(value, np.ndarray) and value.flags.writeable:
        value = read_only(value)
    set_result(results, name, value)
    return frame.derive(results)
