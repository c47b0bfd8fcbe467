"""The framepipe command, run as a subprocess on real clips and pipeline files.

Exit codes: 0 ok, 1 pipeline error, 2 bad usage or invalid file, 130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

import framepipe as fp
from child_signals import default_signals
from framepipe import cli
from framepipe.config import RunOptions

REPO = Path(__file__).resolve().parent.parent
ENTRY_POINT = Path(sys.executable).parent / "framepipe"
TIMEOUT = 60


def framepipe_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env.update(FRAMEPIPE_OFFLINE="1", PYTHONUNBUFFERED="1", **extra)
    return env


def framepipe(*args: str | Path, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m framepipe.cli ARGS`` to the end."""
    return subprocess.run(
        [sys.executable, "-m", "framepipe.cli", *map(str, args)],
        cwd=cwd,
        env=framepipe_env(**env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts in the background; killed if the test leaves them running."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def start(
    started: list[subprocess.Popen[str]], *args: str | Path, cwd: Path, entry_point: bool = False
) -> subprocess.Popen[str]:
    command = [str(ENTRY_POINT)] if entry_point else [sys.executable, "-m", "framepipe.cli"]
    process = subprocess.Popen(
        [*command, *map(str, args)],
        cwd=cwd,
        env=framepipe_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,  # some tests send Ctrl-C: never an inherited SIG_IGN
    )
    started.append(process)
    return process


def read_until(stream: object, marker: str) -> str:
    """Read lines from a child's pipe until one contains ``marker`` (the child says it is up)."""
    seen = []
    for line in stream:  # type: ignore[attr-defined]
        seen.append(line)
        if marker in line:
            return line
    raise AssertionError(f"{marker!r} never came; got:\n{''.join(seen)}")


def shm_prefix(pid: int) -> str | None:
    """The shared-memory prefix (``fp_<run id>``) of the run in process ``pid``, from its maps.

    Other runs may use /dev/shm at the same time; only this run's segments are ours.
    """
    try:
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                if "/dev/shm/fp_" in line:
                    name = line.rsplit("/", 1)[1].strip()
                    return "_".join(name.split("_")[:2])
    except OSError:
        pass
    return None


# -- run: pipeline files and one-liners on real clips ----------------------------------------------


def test_run_traffic_example_on_the_real_clip(
    media_video, shared_media: Path, tmp_path: Path
) -> None:
    clip = media_video("slow_traffic_small.mp4")
    summary = tmp_path / "summary.json"
    result = framepipe(
        "run",
        REPO / "examples" / "traffic.yaml",
        "--set",
        f"sources.video.path={clip}",
        "--summary",
        summary,
        cwd=tmp_path,
        FRAMEPIPE_MODELS=str(shared_media / "models"),
    )
    assert result.returncode == 0, result.stderr
    assert "traffic: offline, threads" in result.stdout  # the summary table
    report = json.loads(summary.read_text())
    assert report["exit_code"] == 0 and report["errors"] == []
    assert report["stats"]["video"]["processed"] == 914
    assert report["stats"]["detect"]["processed"] == 305  # fps: 10 of a 29.97 fps clip
    counts = [json.loads(line) for line in (tmp_path / "out" / "traffic.jsonl").open()]
    assert len(counts) == 914
    final = counts[-1]["results"]["count"]
    assert final["in_count"] + final["out_count"] >= 5
    assert fp.sources.probe(tmp_path / "out" / "traffic.mp4", count_frames=True)["frames"] == 914


def test_run_one_liner_tracks_and_writes_video_and_results(media_video, tmp_path: Path) -> None:
    clip = media_video("asl_gestures_book.mkv")  # 109 frames, no count in the header
    result = framepipe(
        "run",
        "--source",
        clip,
        "--detect",
        "motion",
        "--track",
        "--jsonl",
        tmp_path / "results.jsonl",
        "--out",
        tmp_path / "annotated.mp4",
        "--summary",
        tmp_path / "summary.json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").open()]
    assert [r["index"] for r in lines] == list(range(109))
    assert all(list(r["results"]) == ["track"] for r in lines)
    video = fp.sources.probe(tmp_path / "annotated.mp4", count_frames=True)
    assert (video["width"], video["height"], video["frames"]) == (640, 480, 109)
    stats = json.loads((tmp_path / "summary.json").read_text())["stats"]
    assert set(stats) == {"source", "detect", "track", "annotate", "video", "jsonl"}


def test_run_one_liner_with_the_web_view(
    media_video, tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    clip = media_video("bottle-detection.mp4")
    process = start(
        started,
        "run",
        "--source",
        clip,
        "--detect",
        "motion",
        "--web",
        "--port",
        "0",
        "--duration",
        "3",
        cwd=tmp_path,
    )
    line = read_until(process.stderr, "web view:")
    url = line.split("web view:", 1)[1].strip()
    assert url.startswith("http://127.0.0.1:")
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200 and "framepipe" in page.text
    nodes = httpx.get(url + "api/stats", timeout=10).json()["nodes"]
    assert set(nodes) == {"source", "detect", "annotate", "web"}
    assert process.wait(TIMEOUT) == 0
    assert "run: realtime, threads" in process.stdout.read()  # type: ignore[union-attr]


# -- info ------------------------------------------------------------------------------------------


def test_info_describes_a_real_clip(media_video) -> None:
    clip = media_video("slow_traffic_small.mp4")
    result = framepipe("info", clip)
    assert result.returncode == 0, result.stderr
    for expected in ("h264", "640 x 360", "29.970", "30.50 s", "914", "yes", "aac"):
        assert expected in result.stdout, result.stdout
    as_json = framepipe("info", "--json", media_video("asl_gestures_book.mkv"), "--count-frames")
    facts = json.loads(as_json.stdout)
    assert as_json.returncode == 0 and facts["frames"] == 109 and facts["reachable"] is True


def test_info_on_what_cannot_be_read_exits_1(tmp_path: Path) -> None:
    result = framepipe("info", tmp_path / "missing.mp4")
    assert result.returncode == 1
    assert "file not found" in result.stderr
    unreachable = framepipe("info", "--json", "--timeout", "2", "rtsp://127.0.0.1:9/none")
    assert unreachable.returncode == 1
    assert json.loads(unreachable.stdout)["reachable"] is False


# -- bad usage and invalid files: exit 2 with a message that says what to fix ----------------------


BAD_FILE = """\
sources:
  - {name: cam, type: Synthetic, frames: 5}
stages:
  - {name: detect, type: Motion, fps: -1}
"""


def test_an_invalid_pipeline_file_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_FILE)
    result = framepipe("run", path)
    assert result.returncode == 2
    assert "stages[0].fps: must be > 0, got -1 (stage 'detect')" in result.stderr
    path.write_text("sources:\n  - {name: cam, type: Synthetic\n")
    result = framepipe("run", path)
    assert result.returncode == 2 and "bad.yaml:3:1: not valid YAML" in result.stderr


def test_unknown_options_exit_2() -> None:
    result = framepipe("run", "--frobnicate")
    assert result.returncode == 2 and "No such option: --frobnicate" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run"], "nothing to run: give a pipeline file"),
        (["run", "missing.yaml"], "missing.yaml: cannot read the pipeline file"),
        (["run", "good.yaml", "--source", "x.mp4"], "not both"),
        (["run", "good.yaml", "--track"], "--track go with --source"),
        (["run", "good.yaml", "--set", "stages.nope.fps=2"], "no stage named 'nope'"),
        (["run", "good.yaml", "--set", "sources.cam.type=Camra"], "did you mean 'Camera'?"),
        (["run", "good.yaml", "--mode", "fast"], "--mode must be auto, offline, realtime or"),
        (["run", "good.yaml", "--executor", "gpu"], "--executor must be"),
        (["run", "good.yaml", "--duration", "0"], "--duration must be > 0"),
        (["run", "--source", "nowhere.mp4"], "--source nowhere.mp4: no such file"),
        (["run", "--source", "clip.mp4", "--track"], "--track needs --detect"),
        (["run", "--source", "clip.mp4", "--jsonl", "r.jsonl"], "--jsonl writes results"),
        (["run", "--source", "clip.mp4", "--set", "a=1"], "--set changes pipeline files"),
        (["run", "--source", "clip.mp4", "--web", "--port", "99999"], "port must be an int"),
        (["info", "0"], "info reads video files and streams"),
        (["demo", "--model", "m.onnx"], "--model goes with --source"),
        (["demo", "--duration", "-1"], "--duration must be > 0"),
        (["run", "--source", "rtsp://[::1/live"], "malformed URL 'rtsp://[::1/live'"),
        (["info", "rtsp://[::1/live"], "malformed URL 'rtsp://[::1/live'"),
        (["run", "--source", "clip.mp4", "--detect", "motion", "--conf", "0.5"], "--conf and"),
        (["run", "good.yaml", "--no-overlay"], "--no-overlay go with --source"),
        (["run", "good.yaml", "--clips", "out"], "--clips DIR and --clip-when NODE go together"),
        (["run", "good.yaml", "--clips", "o", "--clip-when", "x"], "'x': no such stage; the stag"),
        (
            ["run", "good.yaml", "--clips", "o", "--clip-when", "m", "--clip-seconds", "5"],
            "PRE,POS",
        ),
    ],
)
def test_bad_usage_exits_2(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same rules in-process (the subprocess tests above show the exit code is real)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.yaml").write_text(
        "sources:\n  - {name: cam, type: Synthetic, frames: 3}\n"
        "stages:\n  - {name: m, type: Motion}\n"
    )
    (tmp_path / "clip.mp4").write_bytes(b"")
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


def test_version() -> None:
    result = framepipe("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"framepipe {fp.__version__}"


@pytest.mark.parametrize(
    "command", [[], ["run"], ["info"], ["demo"], ["bench"], ["profile"], ["plan"]]
)
def test_help_shows_no_raw_type_labels(command: list[str]) -> None:
    result = CliRunner().invoke(cli.app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    for label in ("<bool>", "<str>", "<int>", "<float>", "<path>", "--no-"):
        if label == "--no-" and "--no-overlay" in result.output:
            continue
        assert label not in result.output, result.output


def test_bench_help_lists_its_options() -> None:
    result = CliRunner().invoke(cli.app, ["bench", "--help"])
    assert "--quick" in result.output and "--only NAME" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--detect", "nosuch"], "unknown model 'nosuch'"),
        (["--detect", "models/missing.onnx"], "model file not found"),
    ],
)
def test_a_missing_or_unknown_model_is_a_message_with_a_cli_hint(
    args: list[str], message: str, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    result = framepipe("run", "--source", clip, *args, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr and "--detect path/to/model.onnx" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_known_model_not_on_the_machine_offline_says_where_to_put_it(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    result = framepipe(
        "run", "--source", clip, "--detect", "yolox_nano", cwd=tmp_path,
        FRAMEPIPE_MODELS=str(tmp_path / "none"), XDG_CACHE_HOME=str(tmp_path / "cache"),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    text = " ".join(result.stderr.split())
    assert "FRAMEPIPE_OFFLINE forbids downloading" in text
    assert "--detect 'path/to/yolox_nano.onnx'" in text and "model=" not in text


def test_an_unwritable_output_folder_is_a_message(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    (tmp_path / "file").write_text("not a folder")
    result = framepipe("run", "--source", clip, "--out", tmp_path / "file" / "out.mp4")
    assert result.returncode == 1 and "cannot write" in result.stderr
    assert "Traceback" not in result.stderr


def occupied_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("command", [["demo"], ["run", "--source", "SYNTHETIC", "--web"]])
def test_a_taken_port_exits_1_within_seconds_naming_it(
    command: list[str], media_video, tmp_path: Path
) -> None:
    clip = media_video("bottle-detection.mp4")
    for port in occupied_port():
        args = [str(clip) if a == "SYNTHETIC" else a for a in command]
        began = time.monotonic()
        result = framepipe(*args, "--port", str(port), "--duration", "30", "--quiet", cwd=tmp_path)
        assert time.monotonic() - began < 20  # not the 30 s of --duration
        assert result.returncode == 1, result.stderr
        assert f"127.0.0.1:{port}" in result.stderr and "Address already in use" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_stream_that_never_connected_exits_1(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        result = framepipe(
            "run", "--source", f"rtsp://127.0.0.1:{port}/x", "--duration", "3", "--quiet",
            cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "never connected" in result.stderr and "Traceback" not in result.stderr


def test_a_stream_that_connected_and_stopped_exits_0(mjpeg_server, tmp_path: Path) -> None:
    result = framepipe("run", "--source", mjpeg_server.url, "--duration", "3", "--quiet")
    assert result.returncode == 0, result.stderr


# -- failures, interruptions, signals --------------------------------------------------------------


def test_a_failing_stage_exits_1_and_names_it(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text(
        textwrap.dedent("""
        def explode(frame):
            if frame.index == 3:
                raise RuntimeError("the model fell over")
            return frame.index
    """)
    )
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent("""
        sources:
          - {name: cam, type: Synthetic, width: 64, height: 48, frames: 50}
        stages:
          - {name: model, type: "broken:explode", on_error: stop}
    """)
    )
    result = framepipe("run", "p.yaml", "--summary", "s.json", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "pipeline error:" in result.stderr and "'model'" in result.stderr
    assert json.loads((tmp_path / "s.json").read_text())["exit_code"] == 1


def test_ctrl_c_stops_cleanly_with_exit_130(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    (tmp_path / "live.yaml").write_text(
        textwrap.dedent(f"""
        mode: realtime
        executor: processes
        sources:
          - {{name: cam, type: Synthetic, width: 320, height: 240, fps: 30}}
        stages:
          - {{name: index, type: "operator:attrgetter", args: [index], after: cam}}
        sinks:
          - {{name: log, type: JsonLines, path: {tmp_path / "log.jsonl"}, after: [index]}}
          - {{name: web, type: Web, port: 0, after: [cam]}}
    """)
    )
    process = start(started, "run", "live.yaml", "--summary", "s.json", cwd=tmp_path)
    url = read_until(process.stderr, "web view:").split("web view:", 1)[1].strip()
    assert httpx.get(url + "snapshot/cam", timeout=20).status_code == 200  # frames flow
    prefix = shm_prefix(process.pid)
    process.send_signal(signal.SIGINT)
    assert process.wait(TIMEOUT) == 130
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["interrupted"] is True and summary["exit_code"] == 130
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert lines and all("index" in json.loads(line)["results"] for line in lines)  # all whole
    if prefix is not None:  # Linux: nothing of this run is left in shared memory
        assert not [n for n in os.listdir("/dev/shm") if n.startswith(prefix + "_")]


def test_demo_runs_for_its_duration_and_serves_the_page(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    process = start(started, "demo", "--duration", "5", "--port", "0", cwd=tmp_path)
    url = process.stdout.readline().strip()  # type: ignore[union-attr]
    assert url.startswith("http://127.0.0.1:"), url
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200 and "static/app.js" in page.text
    assert httpx.get(url + "static/app.js", timeout=10).status_code == 200
    snapshot = httpx.get(url + "snapshot/annotate", timeout=10)
    assert snapshot.headers["content-type"] == "image/jpeg"
    stats = httpx.get(url + "api/stats", timeout=10).json()
    assert set(stats["nodes"]) == {
        "scene",
        "motion",
        "track",
        "count",
        "annotate",
        "web",
        "results",
    }
    assert process.wait(TIMEOUT) == 0
    table = process.stdout.read()  # type: ignore[union-attr]
    assert "demo: realtime, threads" in table
    counts = [json.loads(line) for line in (tmp_path / "framepipe-demo.jsonl").open()]
    assert len(counts) > 60 and "count" in counts[-1]["results"]


def test_sigterm_stops_the_entry_point_with_exit_143(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    if not ENTRY_POINT.exists():
        pytest.skip(f"the framepipe entry point is not installed at {ENTRY_POINT}")
    process = start(started, "demo", "--port", "0", "--quiet", cwd=tmp_path, entry_point=True)
    url = process.stdout.readline().strip()  # type: ignore[union-attr]
    assert httpx.get(url + "api/graph", timeout=10).json()["mode"] == "realtime"
    process.send_signal(signal.SIGTERM)
    assert process.wait(TIMEOUT) == 143
    assert "terminated: stopped cleanly" in process.stderr.read()  # type: ignore[union-attr]


# -- bench -----------------------------------------------------------------------------------------


def test_bench_needs_a_checkout(tmp_path: Path) -> None:
    result = framepipe("bench", cwd=tmp_path)
    assert result.returncode == 2 and "no benchmarks/run.py" in result.stderr


def test_bench_hands_its_options_to_the_benchmarks() -> None:
    if not (REPO / "benchmarks" / "run.py").is_file():
        pytest.skip("benchmarks/run.py is not in this checkout")
    result = framepipe("bench", "--only", "no-such-scenario")
    assert result.returncode == 2  # the benchmarks' own argument check, passed through
    assert "no-such-scenario" in result.stderr


# -- what the terminal shows -----------------------------------------------------------------------


def render(renderable: object) -> str:
    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def test_offline_runs_over_finite_sources_show_a_progress_bar_with_eta() -> None:
    pipe = fp.Pipeline()
    pipe.source("cam", fp.sources.Synthetic(width=64, height=48, frames=40))
    pipe.stage("slow", lambda f: f.index, after="cam")
    run = pipe.start(mode="offline")
    try:
        text = render(cli._display(pipe, run, RunOptions("offline"), "")())
    finally:
        run.join()
    assert "frames" in text and "/40" in text and "eta" in text
    assert "slow" in text  # and the statistics under it


def test_real_time_runs_show_live_statistics() -> None:
    pipe = fp.Pipeline()
    pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=30))
    pipe.stage("index", lambda f: f.index, after="cam")
    with pipe.start(mode="realtime", duration=1) as run:
        text = render(cli._display(pipe, run, RunOptions("realtime", duration=1), "hello")())
    assert "realtime · threads" in text and "of 1 s" in text and "hello" in text
    assert "index" in text and "running" in text


@pytest.mark.parametrize("term", ["dumb", "xterm"])
def test_the_final_table_is_printed_once(term: str, tmp_path: Path) -> None:
    # FORCE_TERMINAL: rich believes it writes to a terminal; a dumb one cannot redraw.
    env = {"FORCE_TERMINAL": "1", "TERM": term}
    result = framepipe(
        "run", "--source", "rtsp://127.0.0.1:9/x", "--duration", "2", cwd=tmp_path, **env
    )
    output = result.stdout + result.stderr
    headers = [line for line in output.splitlines() if "node" in line and "processed" in line]
    assert len(headers) == 1, output


def test_no_overlay_and_classes_reach_the_stages(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    pipe = cli.one_liner(
        str(clip),
        detect=cli.Detection("motion"),
        track=False,
        web=None,
        video=tmp_path / "out.mp4",
        jsonl=None,
        overlay=False,
    )
    assert pipe.nodes["annotate"].obj.overlay is False
