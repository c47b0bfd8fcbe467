"""Results as JSON Lines: one JSON object per frame."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from .._errors import SinkError
from .._frame import Frame
from ._base import Sink
from ._json import encode, frame_record


class JsonLines(Sink):
    """Append one JSON object per frame to a ``.jsonl`` file.

    Each line is ``{"source", "index", "pts", "timestamp", "results"}``:
    ``results`` maps each input node that has a result for the frame to that
    result (encoded by the shared framepipe JSON rules: numpy values,
    ``supervision.Detections`` as one object per detection, images as
    ``{"image": [h, w, 3]}``). A sink fed by ``track`` and ``count`` writes one
    line a frame, ``{"results": {"track": [...], "count": {...}}}``: a sink
    merges its inputs (``join="merge"``) unless told otherwise. Frames without a
    result of any input write nothing.

    Every ``write()`` hands its lines to the operating system in one ``write``
    call, with no buffer in between: when the run stops, is interrupted or dies
    (even by ``SIGKILL``), every line already written is complete in the file.
    Parent directories are created. The file is truncated when the sink opens
    unless ``append=True``.

    Args:
        path: the file to write.
        append: add to an existing file instead of replacing it.

    Example::

        pipe.sink("log", fp.sinks.JsonLines("out/detections.jsonl"), after=[detect])
        # later: [json.loads(line)["results"]["detect"] for line in open("out/detections.jsonl")]
    """

    reads_pixels = False  # results only

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False) -> None:
        self.path = Path(path)
        self.append = append
        #: Lines written by the run (read it after the run, whatever the executor).
        self.lines = 0
        self._file: io.FileIO | None = None
        self._end = 0  # bytes of whole lines in the file

    def open(self) -> None:
        self.lines = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: each write() below is one system call, so no line waits in
            # user space when the process ends without close().
            # Kept open across calls, closed by close(): not a with-block.
            self._file = open(self.path, "ab" if self.append else "wb", buffering=0)  # noqa: SIM115
            self._end = self._file.seek(0, os.SEEK_END)
        except OSError as exc:
            raise SinkError(
                self.context.name,
                f"cannot open {str(self.path)!r} for writing JSON lines: {exc}",
            ) from exc

    def write(self, frame: Frame) -> None:
        record = frame_record(frame, self.context.inputs or frame.results)
        if record is not None:
            self.write_record(record)

    def write_record(self, record: dict[str, Any]) -> None:
        """Write one line: a frame's record, or an event (``pipe.events``)."""
        if self._file is None:
            raise SinkError(self.context.name, "write() before open() or after close()")
        data = (encode(record) + "\n").encode("utf-8")
        try:
            view = memoryview(data)
            while view:  # a raw write may be partial; finish the block
                view = view[self._file.write(view) :]
        except OSError as exc:
            self._cut_partial_line()
            raise SinkError(
                self.context.name, f"cannot write to {str(self.path)!r}: {exc.strerror or exc}"
            ) from exc
        self._end += len(data)
        self.lines += 1

    def _cut_partial_line(self) -> None:
        # A full disk takes part of a block: cut it off, so the file ends with a whole line.
        assert self._file is not None
        try:
            os.ftruncate(self._file.fileno(), self._end)
            self._file.seek(self._end)
        except OSError:
            pass  # the write error is what gets reported

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()

    def final_state(self) -> Any:
        return self.lines

    def adopt_final_state(self, state: Any) -> None:
        self.lines = int(state)

    def describe(self) -> dict[str, Any]:
        return {"type": "JsonLines", "path": str(self.path), "append": self.append}
