"""The clips a run's ``Clips`` sinks finished, for the web view to list and play."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The end of a ``clips.jsonl`` read for the list: its newest records.
TAIL_BYTES = 256 * 1024
#: What the list tells of each clip (from its record).
LISTED = (
    "source", "name", "duration_s", "start_pts", "first_event_pts", "first_event_time",
    "last_event_time",
)  # fmt: skip


class ClipShelf:
    """Finds the ``Clips`` sinks' folders in the pipeline graph and reads their records."""

    def __init__(self, graph: Callable[[], dict[str, Any]] | None) -> None:
        self._graph = graph

    def folders(self) -> dict[str, Path]:
        """Each ``Clips`` sink's name and folder."""
        if self._graph is None:
            return {}
        return {
            node["name"]: Path(node["folder"])
            for node in self._graph().get("nodes", ())
            if node.get("type") == "Clips" and node.get("folder")
        }

    def latest(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest finished clips whose files still exist, newest first."""
        found = []
        for node, folder in self.folders().items():
            for record in _tail_records(folder / "clips.jsonl"):
                path = Path(record.get("path", ""))
                if path.parent != folder or not path.is_file():
                    continue
                listed = {key: record.get(key) for key in LISTED}
                found.append({"node": node, "url": f"clips/{node}/{path.name}", **listed})
        found.sort(key=lambda clip: clip["first_event_time"] or 0.0, reverse=True)
        return found[:limit]

    def file(self, node: str, name: str) -> Path | None:
        """A finished clip of sink ``node`` by file name; None for anything else."""
        folder = self.folders().get(node)
        if folder is None or os.sep in name or name.startswith(".") or "/" in name:
            return None
        if not name.endswith(".mp4") or name.endswith(".partial.mp4"):
            return None
        path = folder / name
        return path if path.is_file() else None


def _tail_records(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - TAIL_BYTES))
            data = file.read()
    except OSError:
        return []
    lines = data.split(b"\n")
    if len(data) < size:
        lines = lines[1:]  # the first line was cut
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line being written
        if isinstance(record, dict):
            records.append(record)
    return records
