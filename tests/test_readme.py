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


CLIP = SHARED_MEDIA / "videos" / "slow_traffic_small.mp4"
MODELS = SHARED_MEDIA / "models"
# The README's examples run offline, with the model the tests have.
ENV = {**os.environ, "FRAMEPIPE_OFFLINE": "1", "FRAMEPIPE_MODELS": str(MODELS)}


def beside_the_media(tmp_path: Path, *, model: bool = False) -> Path:
    """A folder from which ``../shared/media/...`` (the README's paths) is the real media."""
    if not CLIP.exists() or (model and not (MODELS / "yolox_nano.onnx").exists()):
        pytest.skip(f"the README's clip or model is not in {SHARED_MEDIA}")
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED_MEDIA.parent)
    return work


def run_script(code: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    script = cwd / "example.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env=ENV,
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
    work = beside_the_media(tmp_path, model=True)
    done = run_script(block("A video file"), work, timeout=600)
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


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, re.S)


def test_ci_runs_the_readmes_test_command_as_written() -> None:
    test_command = next(b.strip() for b in bash_blocks() if "pytest" in b)
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_command in ci


def test_the_readmes_install_commands_install_what_they_run() -> None:
    demo = next(b.strip() for b in bash_blocks() if "framepipe demo" in b and "pip" in b)
    assert '-e ".[all]"' in demo  # the demo uses fp.stages (vision) and fp.sinks.Web (web)
    test = next(b.strip() for b in bash_blocks() if "pytest" in b)
    assert '-e ".[test]"' in test
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    assert "framepipe[all]" in extras["test"] and extras["all"] == ["framepipe[vision,web]"]
    heavy = ("onnxruntime", "supervision", "scipy", "starlette", "uvicorn", "psutil")
    assert not [d for d in project["dependencies"] if d.startswith(heavy)]


def test_the_license_file_is_the_declared_license() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def readme_commands() -> list[list[str]]:
    """The ``framepipe ...`` lines of the README (continuations joined, comments cut)."""
    block = next(b for b in bash_blocks() if b.lstrip().startswith("framepipe demo --duration"))
    lines = block.replace("\\\n", " ").splitlines()
    return [line.split("#", 1)[0].split() for line in lines if line.startswith("framepipe ")]


def test_the_readmes_info_command(tmp_path: Path) -> None:
    command = next(c for c in readme_commands() if c[1] == "info")
    work = beside_the_media(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "framepipe.cli", *command[1:]],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "914" in done.stdout


@pytest.mark.slow
def test_the_readmes_one_liner(tmp_path: Path) -> None:
    command = next(c for c in readme_commands() if c[1] == "run" and "--detect" in c)
    work = beside_the_media(tmp_path, model=True)
    done = subprocess.run(
        [sys.executable, "-m", "framepipe.cli", *command[1:], "--quiet"],
        cwd=work,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (work / "out" / "results.jsonl").open()]
    assert [r["index"] for r in lines] == list(range(914))
    found = {d["class_name"] for r in lines for d in r["results"]["track"]}
    assert found and found <= {"car", "truck"}
    assert fp.sources.probe(work / "out" / "annotated.mp4", count_frames=True)["frames"] == 914
