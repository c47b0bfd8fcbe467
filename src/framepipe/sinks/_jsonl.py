"""Results as JSON Lines: one JSON object per frame and input node."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from .._errors import SinkError
from .._frame import Frame
from ._base import Sink
from ._json import encode, frame_records


class JsonLines(Sink):
    """Append one JSON object per frame and input node to a ``.jsonl`` file.

    Each line is ``{"source", "index", "pts", "timestamp", "node", "value"}``:
    ``node`` is the input node whose result ``value`` is (encoded by the shared
    framepipe JSON rules: numpy values, ``supervision.Detections`` as one object
    per detection, images as ``{"image": [h, w, 3]}``). A frame gets one line per
    input node that has a result in it, so a sink fed by ``detect`` and ``count``
    writes two lines a frame.

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
        # later: [json.loads(line) for line in open("out/detections.jsonl")]
    """

    reads_pixels = False  # results only

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False) -> None:
        self.path = Path(path)
        self.append = append
        #: Lines written by the run (read it after the run, whatever the executor).
        self.lines = 0
        self._file: io.FileIO | None = None

    def open(self) -> None:
        self.lines = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: each write() below is one system call, so no line waits in
            # user space when the process ends without close().
            # Kept open across calls, closed by close(): not a with-block.
            self._file = open(self.path, "ab" if self.append else "wb", buffering=0)  # noqa: SIM115
        except OSError as exc:
            raise SinkError(
                self.context.name,
                f"cannot open {str(self.path)!r} for writing JSON lines: {exc}",
            ) from exc

    def write(self, frame: Frame) -> None:
        if self._file is None:
            raise SinkError(self.context.name, "write() before open() or after close()")
        records = frame_records(frame, self.context.inputs or frame.results)
        if not records:
            return
        data = "".join(encode(record) + "\n" for record in records).encode("utf-8")
        try:
            view = memoryview(data)
            while view:  # a raw write may be partial; finish the block
                view = view[self._file.write(view) :]
        except OSError as exc:
            raise SinkError(
                self.context.name, f"cannot write to {str(self.path)!r}: {exc}"
            ) from exc
        self.lines += len(records)

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
