"""A full disk: the first ENOSPC fails the sink clearly, and what was written stays usable.

Each test writes into a real 2 MiB tmpfs (mounting needs root; without it the tests skip
with the reason).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

import framepipe as fp
from test_cli import framepipe_env

SIZE = "2m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB filesystem, unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a small tmpfs: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def fill(disk: Path) -> None:
    """Take every free byte of ``disk``."""
    with open(disk / "filler", "wb") as file:
        try:
            while True:
                file.write(b"\0" * 65536)
        except OSError:
            pass


def noisy_pipeline(sink: fp.sinks.Sink, frames: int = 300, **options: object) -> fp.Pipeline:
    """Frames that compress badly and results that take room: 2 MiB fill up within a second."""
    pipe = fp.Pipeline("full")
    cam = pipe.source("cam", fp.sources.Synthetic(width=320, height=240, fps=30, frames=frames))
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (240, 320, 3), np.uint8)

    def roughen(frame: fp.Frame) -> np.ndarray:
        return np.roll(noise, frame.index * 7, axis=1) ^ frame.image

    rough = pipe.stage("rough", roughen, after=cam)
    pipe.stage("text", lambda frame: "x" * 20_000, after=rough)
    pipe.sink("out", sink, after="text", **options)
    return pipe


def decodable_frames(path: Path) -> int:
    """Frames of ``path`` that decode, failing on any corrupt packet."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_jsonl_on_a_full_disk_stops_the_run_and_keeps_whole_lines(
    small_disk: Path, executor: str
) -> None:
    path = small_disk / "results.jsonl"
    pipe = noisy_pipeline(fp.sinks.JsonLines(path))
    with pytest.raises(fp.SinkError, match=r"'out'.*results\.jsonl.*No space left"):
        pipe.run(mode="offline", executor=executor)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""  # the file ends with a whole line
    records = [json.loads(line) for line in lines[:-1]]
    assert 10 < len(records) < 300
    assert [r["index"] for r in records] == list(range(len(records)))


def test_video_on_a_full_disk_stops_the_run_and_plays_to_its_last_fragment(
    small_disk: Path, executor: str
) -> None:
    path = small_disk / "video.mp4"
    pipe = fp.Pipeline("full")
    cam = pipe.source("cam", fp.sources.Synthetic(width=320, height=240, fps=30, frames=600))
    noise = np.random.default_rng(1).integers(0, 255, (240, 320, 3), np.uint8)
    rough = pipe.stage("rough", lambda f: np.roll(noise, f.index * 7, axis=1), after=cam)
    pipe.sink("out", _ImageOf(path), after=rough)
    with pytest.raises(fp.SinkError, match=r"'out'.*video\.mp4.*No space left"):
        pipe.run(mode="offline", executor=executor)
    assert 0 < decodable_frames(path) < 600


class _ImageOf(fp.sinks.VideoFile):
    """Records the result of its input (a noisy image) rather than the frame."""

    def write(self, frame: fp.Frame) -> None:
        image = frame.results["rough"]
        super().write(
            fp.Frame(image, frame.index, frame.pts, frame.timestamp, frame.source, {}, ())
        )


def test_video_on_a_disk_full_before_the_first_write_fails_without_a_crash(
    small_disk: Path,
) -> None:
    fill(small_disk)
    path = small_disk / "video.mp4"
    pipe = fp.Pipeline("full")
    cam = pipe.source("cam", fp.sources.Synthetic(width=320, height=240, fps=30, frames=30))
    # mjpeg muxes the first frame at once; PyAV crashed on the second write after that failed.
    pipe.sink("out", fp.sinks.VideoFile(path, codec="mjpeg"), after=cam, on_error="skip")
    run = pipe.run(mode="offline", executor="processes")
    assert run.stats["out"].errors == 30  # every frame counted, no worker killed by a signal
    assert not path.exists()


def test_skip_keeps_running_counts_the_losses_and_logs_once(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = small_disk / "results.jsonl"
    sink = fp.sinks.JsonLines(path)
    with caplog.at_level(logging.WARNING, logger="framepipe"):
        run = noisy_pipeline(sink, on_error="skip").run(mode="offline", executor="threads")
    stats = run.stats["out"]
    assert stats.errors > 100 and stats.processed + stats.errors == 300
    assert sink.lines == stats.processed
    failures = [r for r in caplog.records if "No space left" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]


def test_cli_exits_1_naming_the_path_with_a_short_log(small_disk: Path, tmp_path: Path) -> None:
    clip = tmp_path / "noise.mkv"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("ffv1", rate=30)
        stream.width, stream.height = 320, 240
        rng = np.random.default_rng(2)
        for _ in range(90):
            image = rng.integers(0, 255, (240, 320, 3), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    out = small_disk / "annotated.mp4"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "framepipe.cli",
            "run",
            "--source",
            str(clip),
            "--out",
            str(out),
            "--quiet",
        ],
        env=framepipe_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "annotated.mp4" in done.stderr and "No space left" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) < 30
    assert decodable_frames(out) > 0
