"""Event clips: cut by stream copy from the camera's own packets, checked with ffprobe and PyAV."""

from __future__ import annotations

import itertools
import json
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

import framepipe as fp
from child_signals import default_signals
from clip_fixtures import MOVING, RtspServer
from framepipe.metrics import metrics_text
from framepipe.sources._packets import EncodedPacket, PacketRing, VideoFormat
from framepipe.stages._counters import CountEvent, LineCount
from test_disk_full import small_disk  # noqa: F401  (a 2 MiB tmpfs)
from test_health import rtsp  # noqa: F401  (GStreamer RTSP servers)
from test_sinks_webhook import Receiver, server  # noqa: F401  (the webhook receiver)
from test_web import browser, open_page  # noqa: F401  (headless Chromium)

TRAFFIC = "slow_traffic_small.mp4"  # 914 frames at 29.97 fps; keyframes at 0, 8.3, 16.7, 25 s


def probe(path: str | Path) -> dict[str, Any]:
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe not installed (Debian package ffmpeg)")
    done = subprocess.run(
        [
            "ffprobe", "-v", "error", "-of", "json",
            "-show_entries", "format=duration:stream=codec_name,nb_read_frames",
            "-count_frames", str(path),
        ],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout))


def packets(path: str | Path) -> list[tuple[float, bool, bytes]]:
    """(pts in seconds, keyframe, data) of a file's video packets, in decode order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [
            (float(p.pts * p.time_base), p.is_keyframe, bytes(p))
            for p in container.demux(stream)
            if p.size and p.pts is not None
        ]


def clip_pipeline(
    video: Path,
    folder: Path,
    events: Callable[[fp.Frame], Any],
    when: Any = "ev",
    **options: Any,
) -> tuple[fp.Pipeline, fp.sinks.Clips]:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(video))
    ev = pipe.stage("ev", events, after=cam)
    clips = fp.sinks.Clips(folder, when=when, **options)
    pipe.sink("clips", clips, after=ev)
    return pipe, clips


def records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "clips.jsonl").read_text().splitlines()]


def at_frames(*indices: int) -> Callable[[fp.Frame], bool]:
    chosen = set(indices)
    return lambda frame: frame.index in chosen


# -- a file, offline: every executor, the same clips -------------------------------------------


@pytest.mark.parametrize("mode", ["offline", "replay"])
def test_clips_are_the_sources_own_packets_from_a_keyframe(
    executor: str, mode: str, media_video: Any, tmp_path: Path
) -> None:
    video = media_video(TRAFFIC)
    pipe, clips = clip_pipeline(video, tmp_path, at_frames(300, 301, 600), pre=2, post=2)
    pipe.run(mode=mode, executor=executor)
    found = records(tmp_path)
    assert [r["path"] for r in found] == clips.clips
    assert [Path(p).name for p in clips.clips] == ["cam-000010.010-ev.mp4", "cam-000020.020-ev.mp4"]
    assert not list(tmp_path.glob("*.partial.mp4"))
    source = packets(video)
    origin = min(pts for pts, _, _ in source)  # the pipeline's pts count from the first frame
    source = [(pts - origin, key, data) for pts, key, data in source]
    keyframes = [pts for pts, key, _ in source if key]
    for record in found:
        first, last = record["first_event_pts"], record["last_event_pts"]
        # From the keyframe at or before pre seconds before the first event frame ...
        assert record["start_pts"] == pytest.approx(max(k for k in keyframes if k <= first - 2))
        # ... to post seconds after the last (within a few frames: B-frame order).
        assert last + 2 - 0.2 <= record["end_pts"] <= last + 2 + 1e-6
        info = probe(record["path"])
        assert info["streams"][0]["codec_name"] == "h264"
        duration = float(info["format"]["duration"])
        assert abs(duration - record["duration_s"]) < 0.2, (duration, record)
        clip = packets(record["path"])
        assert clip[0][1], "a clip starts on a keyframe"
        assert int(info["streams"][0]["nb_read_frames"]) == len(clip)
        # Stream copy: every packet is the source's, byte for byte, in the source's decode
        # order (a keyframe carries the parameter sets too, so a clip stands on its own).
        originals = span(source, record)
        assert len(clip) == len(originals)
        for (_, key, data), original in zip(clip, originals, strict=True):
            assert without_parameter_sets(data) == original if key else data == original
    assert found[0]["results"] == {"ev": True}


def without_parameter_sets(sample: bytes) -> bytes:
    """An MP4 H.264 sample without its SPS and PPS units (4-byte lengths before each unit)."""
    kept, at = b"", 0
    while at < len(sample):
        size = int.from_bytes(sample[at : at + 4], "big")
        unit = sample[at : at + 4 + size]
        if unit[4] & 0x1F not in (7, 8):
            kept += unit
        at += 4 + size
    return kept


def span(source: list[tuple[float, bool, bytes]], record: dict[str, Any]) -> list[bytes]:
    """The source's packets a clip holds: from its first keyframe, in decode order, up to
    the first packet past its end."""
    start = next(
        i for i, (pts, key, _) in enumerate(source) if key and abs(pts - record["start_pts"]) < 1e-6
    )
    kept = []
    for pts, _, data in source[start:]:
        if pts > record["end_pts"] + 1e-6:
            break
        kept.append(data)
    return kept


# -- when a clip starts and ends ---------------------------------------------------------------


def clip_spans(folder: Path) -> list[tuple[str, float, float]]:
    return [(r["name"], r["first_event_pts"], r["last_event_pts"]) for r in records(folder)]


def test_events_debounce_cool_down_and_extend_up_to_max_length(
    media_video: Any, tmp_path: Path
) -> None:
    video = media_video(TRAFFIC)
    rate = 30000 / 1001

    def when(frame: fp.Frame) -> str | bool:
        if 30 <= frame.index < 40:  # a third of a second: too short for min_duration=0.5
            return "blip"
        if 90 <= frame.index < 120:  # one second: a clip
            return "car"
        if 150 <= frame.index < 170:  # within the car clip's post: extends it
            return "car"
        if 400 <= frame.index < 900:  # a long event: cut at max_length, then again
            return "truck"
        return False

    pipe, _ = clip_pipeline(
        video,
        tmp_path,
        when,
        when=lambda frame: frame.results["ev"],  # the stage's result names the event
        pre=1,
        post=2,
        min_duration=0.5,
        cooldown=1,
        max_length=12,
    )
    pipe.run(mode="offline", executor="threads")
    found = records(tmp_path)
    names = [r["name"] for r in found]
    assert names[0] == "car" and set(names[1:]) == {"truck"} and len(names) >= 3, names
    car = found[0]
    assert car["first_event_pts"] == pytest.approx(90 / rate)  # the blip made no clip
    assert car["last_event_pts"] == pytest.approx(169 / rate)  # extended by the second burst
    trucks = found[1:]
    # The long event is cut at max_length (from the keyframe at 8.3 s, then at 16.7 s); after
    # the cooldown a new clip starts, from the event then. What is left after the second cut
    # (0.3 s) is shorter than min_duration.
    assert len(trucks) == 2, trucks
    for truck in trucks:
        assert 12 - 2 / rate <= truck["duration_s"] <= 12 + 1e-6
    for before, after in itertools.pairwise(trucks):
        assert after["first_event_pts"] >= before["end_pts"] + 1 - 1e-6


def test_counters_mark_events_by_their_crossings(media_video: Any, tmp_path: Path) -> None:
    crossing = (CountEvent("in", tracker_id=7, frame_index=450, pts=15.0),)

    def count(frame: fp.Frame) -> LineCount:
        events = crossing if frame.index == 450 else ()
        total = 1 if frame.index >= 450 else 0
        return LineCount((0, 230), (640, 230), in_count=total, out_count=0, events=events)

    pipe, _ = clip_pipeline(media_video(TRAFFIC), tmp_path, count, pre=1, post=1)
    pipe.run(mode="offline", executor="inline")
    (record,) = records(tmp_path)  # a count that stays 1 is not an event; the crossing is
    assert record["name"] == "ev" and record["first_event_pts"] == record["last_event_pts"]
    assert record["results"]["ev"]["events"][0]["tracker_id"] == 7


# -- sources without H.264/H.265 video: their frames are encoded ---------------------------------


@pytest.mark.parametrize("executor", ["inline", "threads", "processes"])
def test_a_source_without_encoded_video_is_encoded_for_its_clips(
    executor: str, tmp_path: Path
) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("synth", fp.sources.Synthetic(width=161, height=121, frames=150))
    ev = pipe.stage("ev", at_frames(90), after=cam)
    pipe.sink("clips", fp.sinks.Clips(tmp_path, when="ev", pre=1, post=1), after=ev)
    pipe.run(mode="offline", executor=executor)
    (record,) = records(tmp_path)
    assert record["first_event_pts"] == pytest.approx(3.0)
    # A keyframe every second: the clip starts at 2 s, on one, and runs to 4 s.
    assert record["start_pts"] == pytest.approx(2.0)
    assert record["end_pts"] == pytest.approx(4.0)
    info = probe(record["path"])
    assert info["streams"][0]["codec_name"] == "h264"
    assert int(info["streams"][0]["nb_read_frames"]) == 61
    assert abs(float(info["format"]["duration"]) - 2.0) < 0.1
    clip = packets(record["path"])
    assert clip[0][1], "a clip starts on a keyframe"
    with av.open(record["path"]) as container:  # odd sizes are padded to even ones
        assert (container.streams.video[0].width, container.streams.video[0].height) == (162, 122)


def test_a_gif_is_encoded_and_its_clips_are_the_same_on_every_run(
    media_video: Any, tmp_path: Path
) -> None:
    gif = media_video("face-demographics-walking-and-pause.gif")  # 41 frames at 12.5 fps
    sizes = []
    for run in range(2):
        folder = tmp_path / str(run)
        pipe, clips = clip_pipeline(gif, folder, at_frames(20), pre=1, post=1)
        pipe.run(mode="replay", executor="threads")
        (path,) = clips.clips
        assert probe(path)["streams"][0]["codec_name"] == "h264"
        sizes.append([len(data) for _, _, data in packets(path)])
    assert sizes[0] == sizes[1] and len(sizes[0]) >= 20


def test_a_source_added_while_running_is_clipped(tmp_path: Path) -> None:
    pipe = fp.Pipeline()
    first = pipe.source("a", fp.sources.Synthetic(width=64, height=48, frames=None))
    ev = pipe.stage("ev", lambda f: f.source == "b" and f.index == 45, after=first)
    pipe.sink("clips", fp.sinks.Clips(tmp_path, when="ev", pre=1, post=1), after=ev)
    with pipe.start(mode="realtime", executor="threads"):
        pipe.add_source("b", fp.sources.Synthetic(width=64, height=48, frames=120), to=["ev"])
        deadline = time.monotonic() + 30
        while not records(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
    (record,) = records(tmp_path)
    assert record["source"] == "b"
    assert probe(record["path"])["streams"][0]["codec_name"] == "h264"


# -- failures -------------------------------------------------------------------------------------


def test_bad_options_and_an_unwritable_folder(media_video: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Clips: pre must be seconds >= 0"):
        fp.sinks.Clips(tmp_path, when="ev", pre=-1)
    with pytest.raises(ValueError, match="Clips: when must be an input name"):
        fp.sinks.Clips(tmp_path, when=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Clips: on_clip must be a sink that takes records"):
        fp.sinks.Clips(tmp_path, when="ev", on_clip=fp.sinks.VideoFile(tmp_path / "x.mp4"))
    misspelt, _ = clip_pipeline(media_video(TRAFFIC), tmp_path, at_frames(3), when="cout")
    with pytest.raises(fp.GraphError, match=r"'clips': it reads the results of 'cout', which"):
        misspelt.run(mode="offline")
    (tmp_path / "file").write_text("")
    pipe, _ = clip_pipeline(media_video(TRAFFIC), tmp_path / "file" / "clips", at_frames(3))
    with pytest.raises(fp.SinkError, match="'clips': cannot make the clip folder"):
        pipe.run(mode="offline")


def test_a_full_disk_fails_the_sink_and_leaves_no_half_clip(
    media_video: Any,
    small_disk: Path,  # noqa: F811
) -> None:
    # The whole of a 2.8 MB video: more than the 2 MiB disk holds.
    pipe, _ = clip_pipeline(
        media_video("car-detection.mp4"), small_disk / "clips", at_frames(100), pre=8, post=30
    )
    with pytest.raises(fp.SinkError, match=r"'clips': cannot (write|finish) the clip"):
        pipe.run(mode="offline")
    assert not list((small_disk / "clips").glob("*.mp4"))


def test_the_clip_record_goes_to_a_webhook(
    media_video: Any,
    tmp_path: Path,
    server: tuple[str, Receiver],  # noqa: F811
) -> None:
    url, receiver = server
    hook = fp.sinks.Webhook(url, batch=1)
    pipe, clips = clip_pipeline(media_video(TRAFFIC), tmp_path, at_frames(100), on_clip=hook)
    pipe.run(mode="offline", executor="processes")
    assert receiver.wait_for(lambda: len(receiver.records()) == 1)
    assert receiver.records()[0]["path"] == clips.clips[0] == records(tmp_path)[0]["path"]


# -- a live camera --------------------------------------------------------------------------------


def test_a_live_rtsp_camera_is_clipped_and_a_reconnect_ends_the_clip(
    rtsp: Callable[..., RtspServer],  # noqa: F811
    tmp_path: Path,
) -> None:
    camera = rtsp(picture=MOVING)
    pipe = fp.Pipeline()
    cam = pipe.source("door", fp.sources.Stream(camera.url, backoff=(0.1, 0.3)))
    ev = pipe.stage("motion", lambda f: f.pts >= 2.0, after=cam)  # from 2 s on, always
    clips = fp.sinks.Clips(tmp_path, when="motion", pre=1, post=1, max_length=30)
    pipe.sink("clips", clips, after=ev)
    with pipe.start(mode="realtime", executor="threads") as run:
        deadline = time.monotonic() + 20
        while run.stats["door"].processed < 4 * 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        camera.start()  # restarts the server: the connection drops mid-clip
        while run.stats["door"].reconnects < 1 and time.monotonic() < deadline + 10:
            time.sleep(0.05)
        seen = run.stats["door"].processed
        while run.stats["door"].processed < seen + 60 and time.monotonic() < deadline + 20:
            time.sleep(0.05)
    found = records(tmp_path)
    assert len(found) == 2, found  # one up to the gap, one from the next connection
    for record in found:
        info = probe(record["path"])
        assert info["streams"][0]["codec_name"] == "h264"
        assert packets(record["path"])[0][1], "a clip starts on a keyframe"
        assert abs(float(info["format"]["duration"]) - record["duration_s"]) < 0.5
    assert found[0]["duration_s"] > 1.5  # 1 s before the event, and the event up to the gap
    assert found[1]["start_pts"] >= found[0]["end_pts"]


CLIPPING = """
import sys
import framepipe as fp

def tick(frame):
    if frame.index == 75:
        print("ready", flush=True)

pipe = fp.Pipeline()
cam = pipe.source("cam", fp.sources.VideoFile(sys.argv[1], loop=True))
ev = pipe.stage("ev", lambda f: f.pts >= 1.0, after=cam)  # one long event from 1 s on
pipe.sink("clips", fp.sinks.Clips(sys.argv[2], when="ev", pre=1, post=1), after=ev)
pipe.sink("tick", fp.sinks.Callback(tick), after=cam)
pipe.run(mode="realtime", executor=sys.argv[3])
"""


@pytest.mark.parametrize("executor", ["threads", "processes"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_clip_being_written_at_a_signal_is_finished_and_plays(
    executor: str, signum: int, media_video: Any, tmp_path: Path
) -> None:
    args = [str(media_video(TRAFFIC)), str(tmp_path), executor]
    child = subprocess.Popen(
        [sys.executable, "-c", CLIPPING, *args],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 60)
        assert ready and child.stdout.readline() == "ready\n", "the script failed to start"
        child.send_signal(signum)
        # Stopped cleanly, then Ctrl-C's KeyboardInterrupt goes on up; SIGTERM exits 143.
        assert child.wait(60) == (-signal.SIGINT if signum == signal.SIGINT else 143)
    finally:
        child.kill()
        child.wait()
    (record,) = records(tmp_path)
    assert not list(tmp_path.glob("*.partial.mp4"))
    assert record["first_event_pts"] == pytest.approx(1.0, abs=0.04)
    assert record["duration_s"] >= 1.4  # from the keyframe at 0 s to 75 frames in, at least
    info = probe(record["path"])
    assert abs(float(info["format"]["duration"]) - record["duration_s"]) < 0.2
    assert packets(record["path"])[0][1], "a clip starts on a keyframe"


def test_the_command_line_cuts_clips(media_video: Any, tmp_path: Path) -> None:
    video = media_video("car-detection.mp4")
    folder = tmp_path / "clips"
    command = [
        sys.executable, "-m", "framepipe.cli", "run", "--source", str(video),
        "--detect", "motion", "--clips", str(folder), "--clip-when", "detect",
        "--clip-seconds", "1,1", "--mode", "offline", "--quiet",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    found = records(folder)
    assert found and all(Path(r["path"]).parent == folder for r in found)
    assert probe(found[0]["path"])["streams"][0]["codec_name"] == "h264"


def test_the_docs_example_cuts_a_clip_at_each_crossing(
    media_video: Any, shared_media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (Path(__file__).parent.parent / "docs" / "events.md").read_text()
    example = text.split("## Clips", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FRAMEPIPE_MODELS", str(shared_media / "models"))
    code = example.replace('"traffic.mp4"', repr(str(media_video(TRAFFIC))))
    scope: dict[str, Any] = {}
    exec(compile(code, "docs/events.md", "exec"), scope)
    found = records(tmp_path / "clips")
    assert found, "the traffic video has cars crossing the line"
    for record in found:
        assert record["name"] == "count" and record["results"]["count"]["events"]
        assert record["first_event_pts"] - record["start_pts"] >= 2 - 1e-6
        assert Path(record["path"]).exists()
    stats = scope["pipe"].stats()
    assert stats["cam"].clip_buffer_bytes > 0
    assert b'framepipe_source_clip_buffer_bytes{kind="source",node="cam"}' in metrics_text(stats)


def test_the_ring_keeps_whole_gops_and_is_bounded_before_the_first_keyframe() -> None:
    video = VideoFormat("h264", 64, 48, Fraction(1, 30), Fraction(30))

    def packet(index: int, key: bool) -> EncodedPacket:
        return EncodedPacket(b"x" * 100, index, index, 1, key, index / 30, 1, video)

    ring = PacketRing("cam", keep=1.0)
    for index in range(90):  # joined mid-GOP: 3 s and no keyframe
        ring.add(packet(index, key=False))
    assert ring.bytes <= 31 * 100  # what cannot start a clip is not kept past keep
    for index in range(90, 300):
        ring.add(packet(index, key=index % 60 == 0))
    kept, added = ring.since(0)
    assert added == 300 and kept[0].key and kept[0].at <= kept[-1].at - 1.0
    assert kept[0].at > kept[-1].at - 1.0 - 2.0  # no more than one GOP (2 s) beyond keep
    assert ring.bytes == 100 * len(kept)
    assert ring.start_for(9.0, 9.5)[0][0].at == 8.0  # the keyframe at or before 9 s


def test_the_web_view_lists_the_clips_and_plays_them(
    media_video: Any,
    tmp_path: Path,
    browser: Any,  # noqa: F811
) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.VideoFile(media_video(TRAFFIC), loop=True))
    ev = pipe.stage("ev", at_frames(45), after=cam)
    pipe.sink("clips", fp.sinks.Clips(tmp_path / "clips", when="ev", pre=1, post=1), after=ev)
    web = fp.sinks.Web(port=0, token="s3cret")
    pipe.sink("web", web, after=cam, policy="latest")
    with pipe.start(mode="realtime", executor="threads"):
        assert web.wait_serving(10)
        with open_page(browser, web.url) as page:
            page.wait_for_function("() => window.framepipe.clips.length === 1", timeout=30000)
            (record,) = records(tmp_path / "clips")
            page.click("#clips button")
            page.wait_for_function(
                "() => { const v = document.querySelector('#clip-player');"
                " return v.readyState >= 2 && v.videoWidth > 0; }",
                timeout=20000,
            )
            width, duration = page.evaluate(
                "() => { const v = document.querySelector('#clip-player');"
                " return [v.videoWidth, v.duration]; }"
            )
        assert width == 640
        assert abs(duration - record["duration_s"]) < 0.2
        base = web.url.split("?")[0]
        for name in [Path(record["path"]).name.replace(".mp4", ".partial.mp4"), "..%2Fx.mp4"]:
            request = urllib.request.Request(
                f"{base}clips/clips/{name}", headers={"Authorization": "Bearer s3cret"}
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 404


def slices(data: bytes, *, annex_b: bool) -> tuple[bytes, ...]:
    """A packet's coded-slice NAL units (types 1 and 5), from Annex B or 4-byte lengths."""
    units = []
    if annex_b:
        for part in data.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01"):
            if part:
                units.append(part.rstrip(b"\x00"))
    else:
        at = 0
        while at < len(data):
            size = int.from_bytes(data[at : at + 4], "big")
            units.append(data[at + 4 : at + 4 + size])
            at += 4 + size
    return tuple(unit for unit in units if unit and unit[0] & 0x1F in (1, 5))


def test_a_live_rtsp_clip_is_the_cameras_own_packets(
    rtsp: Callable[..., RtspServer],  # noqa: F811
    tmp_path: Path,
) -> None:
    camera = rtsp(picture=MOVING)
    reference: list[tuple[bytes, ...]] = []
    stop = threading.Event()

    def record() -> None:  # a second client of the same camera: what it sent
        with av.open(camera.url, options={"rtsp_transport": "tcp"}, timeout=10) as container:
            for packet in container.demux(container.streams.video[0]):
                if packet.size:
                    reference.append(slices(bytes(packet), annex_b=True))
                if stop.is_set():
                    return

    recorder = threading.Thread(target=record)
    recorder.start()
    pipe = fp.Pipeline()
    cam = pipe.source("door", fp.sources.Stream(camera.url, backoff=(0.1, 0.3)))
    ev = pipe.stage("motion", lambda f: f.pts >= 2.0, after=cam)
    clips = fp.sinks.Clips(tmp_path, when="motion", pre=1, post=1, max_length=3)
    pipe.sink("clips", clips, after=ev)
    try:
        with pipe.start(mode="realtime", executor="processes"):
            deadline = time.monotonic() + 30
            while len(clips_done := records(tmp_path)) < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        stop.set()
        recorder.join(20)
    first = clips_done[0]
    assert 2.9 <= first["duration_s"] <= 3.0 + 1e-6  # cut at max_length
    clip = [slices(data, annex_b=False) for _, _, data in packets(first["path"])]
    assert clip and all(clip)
    start = reference.index(clip[0])  # the camera sent this keyframe ...
    assert reference[start : start + len(clip)] == clip  # ... and then exactly these packets
