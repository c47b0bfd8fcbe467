"""Camera health: stalled, frozen and lying clocks, from real RTSP streams (docs/events.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import framepipe as fp
from clip_fixtures import FROZEN, MOVING, STILL_WITH_NOISE, RtspServer, _rtsp_skip_reason
from framepipe.config import parse_pipeline
from framepipe.metrics import metrics_text
from framepipe.sources._health import HealthOptions, HealthWatch
from framepipe.stats import NodeStats, RunStats
from test_cli import framepipe
from test_sinks_webhook import Receiver, server  # noqa: F401  (the webhook receiver fixture)
from test_web import browser, open_page  # noqa: F401  (headless Chromium)

FAST = {"backoff": (0.1, 0.5)}


def picture(seed: int, noise: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((360, 640, 3), 100, np.uint8)
    image[100:200, 100:300] = 200
    if noise:
        image = np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8)
    return image


# -- the rule, on a driven clock ---------------------------------------------------------------


def test_identical_frames_freeze_and_a_change_thaws() -> None:
    watch = HealthWatch(HealthOptions(frozen_after=10.0), now=0.0)
    still = picture(0)
    changes = [(t, watch.frame(still, t, t)) for t in np.arange(0.0, 12.0, 0.5)]
    assert [(t, s) for t, s in changes if s] == [(10.0, "frozen")]
    assert watch.detail() == "the picture has not changed for 10 s"
    moved = still.copy()
    moved[200:300, 300:500] = 30
    assert watch.frame(moved, 12.0, 12.0) == "ok"


def test_sensor_noise_on_a_still_scene_stays_ok() -> None:
    watch = HealthWatch(HealthOptions(frozen_after=2.0), now=0.0)
    states = {watch.frame(picture(i, noise=1.5), i / 30, i / 30) for i in range(30 * 30)}
    assert states == {None} and watch.state == "ok"


def test_no_frame_stalls_and_frames_recover() -> None:
    watch = HealthWatch(HealthOptions(stall_after=5.0), now=0.0)
    assert watch.frame(picture(0), 0.0, 0.0) is None
    assert watch.idle(4.9) is None
    assert watch.idle(5.0) == "stalled"
    assert watch.frame(picture(1, noise=2), 5.2, 7.0) == "ok"
    # The first frames after a stall get the whole frozen_after before counting as frozen.
    assert watch.frame(picture(1, noise=2), 5.3, 7.1) is None


def test_timestamps_that_stop_or_go_back_are_a_clock_fault() -> None:
    watch = HealthWatch(HealthOptions(clock_after=2.0, frozen_after=None), now=0.0)
    states = []
    for i in range(200):
        t = i / 30
        media = min(t, 1.0)  # the clock stops at 1 s
        states.append(watch.frame(picture(i), media, t))
    assert [s for s in states if s] == ["clock"]
    # Frame 31 is the first that did not advance; 2 s later is frame 91 (92 by rounding).
    assert states.index("clock") in (91, 92)
    assert watch.frame(picture(0), 10.0, 7.0) == "ok"
    # Frames without timestamps of their own (MJPEG) are never a clock fault.
    assert all(watch.frame(picture(0), None, 7 + i) in (None, "frozen") for i in range(5))


def test_checks_turn_off_and_bad_options_name_the_source() -> None:
    watch = HealthWatch(
        HealthOptions(stall_after=None, frozen_after=None, clock_after=None), now=0.0
    )
    assert watch.idle(1e6) is None and watch.frame(picture(0), 0.0, 1e6) is None
    with pytest.raises(ValueError, match="Stream: frozen_after must be a number of seconds"):
        fp.sources.Stream("rtsp://127.0.0.1:1/live", frozen_after=0)
    with pytest.raises(ValueError, match="Camera: frozen_threshold must be a number of grey"):
        fp.sources.Camera(0, frozen_threshold=-1)


def test_the_check_is_cheap_at_1080p() -> None:
    watch = HealthWatch(HealthOptions(), now=0.0)
    frames = [picture(i, noise=2).repeat(3, axis=0).repeat(3, axis=1) for i in range(4)]
    assert frames[0].shape == (1080, 1920, 3)
    began = time.perf_counter()
    for i in range(200):
        watch.frame(frames[i % 4], i / 30, i / 30)
    per_frame = (time.perf_counter() - began) / 200
    assert per_frame < 0.3e-3 * 3, per_frame  # the target is 0.3 ms; slack for a loaded box


# -- where health shows ----------------------------------------------------------------------


def test_health_is_a_state_set_in_metrics() -> None:
    stats = RunStats(
        {
            "door": NodeStats("door", "source", state="connected", health="frozen"),
            "detect": NodeStats("detect", "stage"),
        }
    )
    text = metrics_text(stats).decode()
    assert 'framepipe_source_health{health="frozen",kind="source",node="door"} 1.0' in text
    assert 'framepipe_source_health{health="ok",kind="source",node="door"} 0.0' in text
    assert 'node="detect"' not in "".join(
        line for line in text.splitlines() if line.startswith("framepipe_source_health")
    )
    assert "connected, frozen" in str(stats)
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    family = "".join(line + "\n" for line in text.splitlines() if "framepipe_source_health" in line)
    check = subprocess.run(
        [promtool, "check", "metrics"], input=family, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_an_event_sink_must_take_records(tmp_path: Path) -> None:
    pipe = fp.Pipeline()
    pipe.source("cam", fp.sources.Synthetic(width=32, height=32, frames=3))
    with pytest.raises(fp.GraphError, match="event sink 'events': expected a sink that takes"):
        pipe.events("events", fp.sinks.VideoFile(tmp_path / "x.mp4"))
    pipe.events("events", fp.sinks.Collect())
    with pytest.raises(fp.GraphError, match="duplicate node name 'events'"):
        pipe.events("events", fp.sinks.Collect())


def test_an_event_sink_that_cannot_open_fails_the_run_before_it_starts(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=32, height=32, frames=3))
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=cam)
    pipe.events("events", fp.sinks.JsonLines(tmp_path / "file" / "events.jsonl"))
    with pytest.raises(fp.SinkError, match="'events': cannot open"):
        pipe.run(mode="offline")
    assert collect.results == {}


# -- real streams ------------------------------------------------------------------------------


@pytest.fixture
def rtsp() -> Callable[..., RtspServer]:
    reason = _rtsp_skip_reason()
    if reason is not None:
        pytest.skip(f"GStreamer RTSP server unavailable ({reason})")
    servers: list[RtspServer] = []

    def start(**options: Any) -> RtspServer:
        started = RtspServer(**options)
        started.start()
        servers.append(started)
        return started

    yield start
    for running in servers:
        running.stop()


def watch_camera(
    url: str, executor: str, events: fp.sinks.Sink | None = None, **health: Any
) -> tuple[fp.Pipeline, fp.Run]:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Stream(url, **FAST, **health))
    pipe.sink("out", fp.sinks.Collect(), after=pipe.stage("mean", lambda f: 0, after=cam))
    if events is not None:
        pipe.events("events", events)
    return pipe, pipe.start(mode="realtime", executor=executor)


def wait_until(run: fp.Run, condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``condition`` held (fails the test after ``timeout``)."""
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout, run.stats["cam"]
        time.sleep(0.05)
    return time.monotonic() - began


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_a_frozen_picture_is_reported_within_frozen_after(
    rtsp: Callable[..., RtspServer], executor: str, tmp_path: Path
) -> None:
    camera = rtsp(picture=FROZEN)
    events = fp.sinks.JsonLines(tmp_path / "events.jsonl")
    _, run = watch_camera(camera.url, executor, events, frozen_after=2.0)
    with run:
        wait_until(run, lambda: run.stats["cam"].processed > 0, 20)
        took = wait_until(run, lambda: run.stats["cam"].health == "frozen", 2.0 + 1.0 + 1.0)
    assert took <= 3.0 + 1.0  # the first frame was seen up to a poll before
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["event"], e["source"], e["was"], e["health"]) for e in lines] == [
        ("health", "cam", "ok", "frozen")
    ]
    assert lines[0]["detail"] == "the picture has not changed for 2 s"
    assert run.events == lines


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_a_server_that_stops_sending_is_stalled_then_ok_again(
    rtsp: Callable[..., RtspServer], executor: str
) -> None:
    camera = rtsp(picture=MOVING)
    collect = fp.sinks.Collect()
    _, run = watch_camera(camera.url, executor, collect, stall_after=1.0, frozen_after=5.0)
    with run:
        wait_until(run, lambda: run.stats["cam"].processed > 10, 20)
        camera.pause()  # the session stays open; nothing flows
        try:
            took = wait_until(run, lambda: run.stats["cam"].health == "stalled", 1.0 + 1.0 + 1.0)
        finally:
            camera.resume()
        assert took <= 1.0 + 1.0 + 0.5
        wait_until(run, lambda: run.stats["cam"].health == "ok", 30)
    assert [e["health"] for e in collect.records] == ["stalled", "ok"]


def test_timestamps_that_stop_are_a_clock_fault(rtsp: Callable[..., RtspServer]) -> None:
    camera = rtsp(picture=MOVING, stop_clock_after=30)
    _, run = watch_camera(camera.url, "threads", clock_after=1.0)
    with run:
        wait_until(run, lambda: run.stats["cam"].health == "clock", 20)
        assert run.stats["cam"].health_detail == "its timestamps have not advanced for 1 s"
        # The picture itself still moves: frames go on, on the wall clock.
        before = run.stats["cam"].processed
        wait_until(run, lambda: run.stats["cam"].processed > before + 10, 10)


def test_reconnect_when_frozen_drops_the_session(rtsp: Callable[..., RtspServer]) -> None:
    camera = rtsp(picture=FROZEN)
    _, run = watch_camera(camera.url, "threads", frozen_after=1.0, reconnect_when_frozen=True)
    with run:
        wait_until(run, lambda: run.stats["cam"].reconnects >= 2, 30)
    assert "frozen" in {e["health"] for e in run.events}


def test_a_webhook_gets_the_health_events(
    rtsp: Callable[..., RtspServer],
    server: tuple[str, Receiver],  # noqa: F811
) -> None:
    url, receiver = server
    camera = rtsp(picture=FROZEN)
    hook = fp.sinks.Webhook(url, batch=1, max_wait_s=0.1)
    _, run = watch_camera(camera.url, "processes", hook, frozen_after=1.0)
    with run:
        assert receiver.wait_for(lambda: len(receiver.records()) >= 1, timeout=30)
    record = receiver.records()[0]
    assert (record["event"], record["source"], record["health"]) == ("health", "cam", "frozen")
    assert hook.sent == 1


@pytest.mark.parametrize(("picture", "seconds"), [(STILL_WITH_NOISE, 60.0), (MOVING, 10.0)])
def test_a_live_scene_stays_ok(
    rtsp: Callable[..., RtspServer], picture: str, seconds: float
) -> None:
    # Encoded finely enough that the sensor noise reaches the decoder, as a real camera's does.
    camera = rtsp(picture=picture, encoder="pass=quant quantizer=12")
    _, run = watch_camera(camera.url, "threads", frozen_after=2.0, stall_after=2.0)
    with run:
        wait_until(run, lambda: run.stats["cam"].processed > 0, 20)
        time.sleep(seconds)  # the length of the check itself: health must not change meanwhile
        assert run.stats["cam"].processed > seconds * 10
    assert run.events == []


def test_the_web_view_shows_a_frozen_camera(
    rtsp: Callable[..., RtspServer],
    browser: Any,  # noqa: F811
) -> None:
    camera = rtsp(picture=FROZEN)
    pipe = fp.Pipeline()
    pipe.source("cam", fp.sources.Stream(camera.url, frozen_after=1.0, **FAST))
    web = fp.sinks.Web(port=0)
    pipe.sink("web", web, after="cam", policy="latest")
    state = "#stats tr[data-node='cam'] td:nth-child(3)"
    with pipe.start(mode="realtime"):
        assert web.wait_serving(10)
        with open_page(browser, web.url) as page:
            page.wait_for_function(
                "s => document.querySelector(s)?.textContent === 'connected frozen'",
                arg=state,
                timeout=20000,
            )
            title = page.get_attribute(f"{state} .health", "title")
    assert title == "the picture has not changed for 1 s"


def docs_examples() -> list[str]:
    text = (Path(__file__).parent.parent / "docs" / "events.md").read_text()
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


def test_the_docs_examples_run(
    rtsp: Callable[..., RtspServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, *_ = docs_examples()  # the health examples
    camera = rtsp(picture=FROZEN)
    monkeypatch.chdir(tmp_path)
    code = first.replace("rtsp://192.0.2.10/1", camera.url).replace(
        "frozen_after=10", "frozen_after=1"
    )
    scope: dict[str, Any] = {}
    exec(compile(code, "docs/events.md", "exec"), scope)
    run = scope["run"]
    assert run.stats["door"].health == "frozen"
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert (
        [(e["source"], e["health"]) for e in lines]
        == [("door", "frozen")]
        == [(e["source"], e["health"]) for e in run.events]
    )
    assert (tmp_path / "people.jsonl").read_text().count("\n") > 3
    scope = {}
    exec(compile(second, "docs/events.md", "exec"), scope)
    assert list(scope["pipe"].plan("realtime").event_sinks) == ["page-me"]


def test_pipeline_files_take_event_sinks(tmp_path: Path) -> None:
    text = f"""
    sources:
      - {{name: cam, type: Stream, url: "rtsp://127.0.0.1:9/live", frozen_after: 3}}
    sinks:
      - {{name: log, type: JsonLines, path: {tmp_path / "log.jsonl"}}}
    events:
      - {{name: alerts, type: JsonLines, path: {tmp_path / "events.jsonl"}}}
    """
    pipe, _ = parse_pipeline(textwrap.dedent(text), where="p.yaml")
    assert list(pipe.plan("realtime").event_sinks) == ["alerts"]
    assert pipe.nodes["cam"].obj.health.frozen_after == 3
    with pytest.raises(fp.ConfigError, match=r"events\[0\]: event sink 'alerts': expected a sink"):
        parse_pipeline(
            textwrap.dedent(text).replace(
                "JsonLines, path: " + str(tmp_path / "events"),
                "VideoFile, path: " + str(tmp_path / "events"),
            ),
            where="p.yaml",
        )
    with pytest.raises(fp.ConfigError, match=r"events\[0\].name: duplicate node name 'log'"):
        parse_pipeline(textwrap.dedent(text).replace("name: alerts", "name: log"), where="p.yaml")


def test_the_command_line_writes_events(rtsp: Callable[..., RtspServer], tmp_path: Path) -> None:
    camera = rtsp(picture=FROZEN)
    pipeline = tmp_path / "door.yaml"
    pipeline.write_text(
        "sources:\n"
        f"  - {{name: door, type: Stream, url: '{camera.url}', frozen_after: 1}}\n"
        "sinks:\n"
        f"  - {{name: log, type: JsonLines, path: '{tmp_path / 'log.jsonl'}'}}\n"
    )
    events = tmp_path / "out" / "events.jsonl"
    result = framepipe("run", pipeline, "--events", events, "--duration", "10", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(e["source"], e["health"]) for e in lines] == [("door", "frozen")]
