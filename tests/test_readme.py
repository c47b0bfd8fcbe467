"""The README's examples run as written, and their outputs hold what the README says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import framepipe as fp
from conftest import REPO, SHARED_MEDIA

README = (REPO / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def block(heading: str) -> str:
    """The first Python block after the README heading that starts with ``heading``."""
    section = README.split(f"## {heading}", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, f"no Python block under {heading!r}"
    return code.group(1)


def run_script(code: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    script = cwd / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "FRAMEPIPE_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_every_example_imports_only_what_it_uses() -> None:
    assert len(PYTHON_BLOCKS) >= 3
    for code in PYTHON_BLOCKS:
        for module, alias in re.findall(r"^import (\w+)(?: as (\w+))?$", code, re.M):
            name = alias or module
            uses = len(re.findall(rf"\b{name}\.", code))
            assert uses > 0, f"README example imports {module} without using it:\n{code}"


def test_the_20_line_example(tmp_path: Path) -> None:
    code = block("In 20 lines")
    assert len(code.strip().splitlines()) <= 21
    done = run_script(code, tmp_path)
    assert done.returncode == 0, done.stderr
    detections = re.search(r"^(\d+) detections$", done.stdout, re.M)
    assert detections is not None, done.stdout
    # 5 s of a 30 fps camera at 5 fps: about 25 detections (slack for a loaded machine).
    assert 10 <= int(detections.group(1)) <= 30
    assert "preview" in done.stdout and "detect" in done.stdout  # the statistics


@pytest.mark.slow
def test_the_video_file_example_writes_each_frame_once(tmp_path: Path) -> None:
    clip = SHARED_MEDIA / "videos" / "slow_traffic_small.mp4"
    models = SHARED_MEDIA / "models"
    if not clip.exists() or not (models / "yolox_nano.onnx").exists():
        pytest.skip(f"the README's clip or model is not in {SHARED_MEDIA}")
    # The example names ../shared/media/...: run it from a folder that has it there.
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED_MEDIA.parent)
    code = block("A video file")
    os.environ.setdefault("FRAMEPIPE_MODELS", str(models))
    done = run_script(code, work, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (work / "out" / "results.jsonl").open()]
    assert len(lines) == 914  # the clip's frames, each once
    assert [r["index"] for r in lines] == list(range(914))
    assert all(set(r["results"]) == {"track", "count"} for r in lines)
    counts = lines[-1]["results"]["count"]
    assert counts["in_count"] + counts["out_count"] >= 3
    video = fp.sources.probe(work / "out" / "annotated.mp4", count_frames=True)
    assert video["frames"] == 914


def test_the_camera_example_builds(tmp_path: Path) -> None:
    # It runs until Ctrl-C against a camera that is not here: build it without running.
    code = block("An RTSP camera")
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    pipe = namespace["pipe"]
    assert isinstance(pipe, fp.Pipeline)
    assert set(pipe.nodes) == {"cam", "preview", "motion", "record", "events"}
