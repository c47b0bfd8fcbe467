"""fp.sinks.JsonLines: one JSON object per frame and input node, nothing lost on a crash."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import supervision as sv

import framepipe as fp
from framepipe.testing import make_frame, run_sink


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def frames_with_results(count: int) -> list[fp.Frame]:
    frames = []
    for i in range(count):
        found = sv.Detections(
            xyxy=np.array([[i, i, i + 10, i + 20]], np.float32),
            confidence=np.array([0.5], np.float32),
            class_id=np.array([2]),
            data={"class_name": np.array(["car"])},
        )
        annotated = np.full((48, 64, 3), i, np.uint8)
        results = {"detect": found, "count": i % 3, "annotate": annotated}
        frames.append(make_frame(index=i, pts=i / 10, source="cam", results=results))
    return frames


def test_one_line_per_frame_with_the_results_of_every_input(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = fp.sinks.JsonLines(path)
    run_sink(sink, frames_with_results(5), inputs=("detect", "count"))
    lines = read_lines(path)
    assert len(lines) == 5 == sink.lines
    assert [r["index"] for r in lines] == list(range(5))
    first = lines[1]
    assert set(first) == {"source", "index", "pts", "timestamp", "results"}
    assert (first["source"], first["pts"]) == ("cam", 0.1)
    assert first["results"]["detect"] == [
        {"xyxy": [1.0, 1.0, 11.0, 21.0], "confidence": 0.5, "class_id": 2, "class_name": "car"}
    ]
    assert first["results"]["count"] == 1
    # "annotate" is upstream but not an input of the sink: not written.
    assert all(set(r["results"]) == {"detect", "count"} for r in lines)


def test_images_are_written_as_placeholders(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    run_sink(fp.sinks.JsonLines(path), frames_with_results(1), inputs=("annotate",))
    assert read_lines(path)[0]["results"]["annotate"] == {"image": [48, 64, 3]}


def test_frames_without_input_results_write_nothing(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    run_sink(fp.sinks.JsonLines(path), [make_frame(), make_frame(index=1)], inputs=("detect",))
    assert path.read_bytes() == b""


def test_parent_directories_are_created_and_append_is_optional(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "out.jsonl"
    run_sink(fp.sinks.JsonLines(path), frames_with_results(2), inputs=("count",))
    run_sink(fp.sinks.JsonLines(path), frames_with_results(3), inputs=("count",))
    assert len(read_lines(path)) == 3  # replaced
    run_sink(fp.sinks.JsonLines(path, append=True), frames_with_results(2), inputs=("count",))
    assert [r["index"] for r in read_lines(path)] == [0, 1, 2, 0, 1]


def test_unwritable_path_fails_at_open_naming_the_node(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(fp.SinkError, match=r"'log': cannot open .*file/out.jsonl") as info:
        run_sink(fp.sinks.JsonLines(blocker / "out.jsonl"), [], name="log")
    assert info.value.node == "log"


def test_is_a_picklable_description(tmp_path: Path) -> None:
    sink = pickle.loads(pickle.dumps(fp.sinks.JsonLines(tmp_path / "x.jsonl", append=True)))
    assert sink.append and sink.path == tmp_path / "x.jsonl"
    assert not (tmp_path / "x.jsonl").exists()  # nothing opened before the run


def writer_script(sink: str, frame: str, *, ready_at: int, setup: str = "") -> str:
    """A ``python -c`` script that writes frames through ``sink`` until it is killed.

    It drives the sink as a worker does, builds each frame with the expression
    ``frame`` (``index`` counts from 0), and prints "ready" once ``ready_at``
    frames are written; it keeps writing, so a kill lands in the middle of it.
    """
    return "\n".join(
        [
            "import logging, sys",
            "import numpy as np",
            "import framepipe as fp",
            "from framepipe.testing import make_frame",
            setup,
            f"sink = {sink}",
            'sink.context = fp.sinks.SinkContext("out", "offline", ("stage",), ("test",),',
            '                                    logging.getLogger("out"))',
            "sink.open()",
            "index = 0",
            "while True:",
            f"    sink.write({frame})",
            "    index += 1",
            f"    if index == {ready_at}:",
            '        print("ready", flush=True)',
        ]
    )


@contextlib.contextmanager
def ready_process(script: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Run ``python -c script *args``; yield it once it printed "ready"; kill it on the way out."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready and process.stdout is not None, "the script printed nothing in 60 s"
        assert process.stdout.readline() == "ready\n", "the script failed before it was ready"
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_killed_writer_leaves_every_completed_line_intact(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    script = writer_script(
        "fp.sinks.JsonLines(sys.argv[1])",
        'make_frame(index=index, results={"stage": np.arange(400.0).reshape(100, 4) + index})',
        ready_at=200,
    )
    with ready_process(script, str(path)) as writer:
        os.kill(writer.pid, signal.SIGKILL)
        assert writer.wait() == -signal.SIGKILL
    *complete, tail = path.read_bytes().split(b"\n")
    records = [json.loads(line) for line in complete]
    assert len(records) >= 200
    assert [r["index"] for r in records] == list(range(len(records)))
    assert records[-1]["results"]["stage"][0] == [float(n) + len(records) - 1 for n in range(4)]
    # A line in the middle of being written when the kill came may be cut; none other is.
    assert tail == b"" or not tail.endswith(b"}")


# -- through a pipeline ---------------------------------------------------------------------


def detect(frame: fp.Frame) -> sv.Detections:
    x = float(frame.index)
    return sv.Detections(
        xyxy=np.array([[x, 0, x + 10, 10]], np.float32),
        confidence=np.array([0.75], np.float32),
        class_id=np.array([0]),
        data={"class_name": np.array(["person"])},
    )


def test_logs_a_pipeline_under_every_executor(tmp_path: Path, executor: str) -> None:
    path = tmp_path / "run" / "detections.jsonl"
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=320, height=240, fps=30, frames=60))
    found = pipe.stage("detect", detect, after=cam)
    sink = fp.sinks.JsonLines(path)
    pipe.sink("log", sink, after=found)
    pipe.run(mode="offline", executor=executor)
    lines = read_lines(path)
    assert len(lines) == 60 == sink.lines
    assert [r["index"] for r in lines] == list(range(60))
    assert {(r["source"], *r["results"]) for r in lines} == {("cam", "detect")}
    assert lines[59]["pts"] == pytest.approx(59 / 30)
    assert lines[7]["results"]["detect"] == [
        {"xyxy": [7.0, 0.0, 17.0, 10.0], "confidence": 0.75, "class_id": 0, "class_name": "person"}
    ]
