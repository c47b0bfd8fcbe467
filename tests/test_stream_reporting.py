"""What a Stream tells its user: malformed URLs at once, each reconnect, a source never heard."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

import framepipe as fp
from clip_fixtures import MjpegServer, SourceRun, free_port, record_source
from framepipe.sources import Stream

FAST = {"backoff": (0.1, 0.5)}


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("rtsp://[::1/live", "Invalid IPv6 URL"),
        ("rtsp://cam:99999/live", "Port out of range"),
        ("rtsp:///live", "no host"),
    ],
)
def test_a_malformed_url_fails_when_the_stream_is_made(url: str, problem: str) -> None:
    began = time.monotonic()
    with pytest.raises(ValueError, match=f"malformed URL .*{problem}"):
        Stream(url)
    assert time.monotonic() - began < 1.0


def test_a_password_in_a_malformed_url_is_not_shown() -> None:
    with pytest.raises(ValueError) as caught:
        Stream("rtsp://admin:hunter2@[::1/live")
    assert "hunter2" not in str(caught.value) and "admin:***@" in str(caught.value)


def test_a_reconnect_is_logged_once(
    mjpeg_server: MjpegServer, caplog: pytest.LogCaptureFixture
) -> None:
    def on_frame(run: SourceRun, image: np.ndarray, pts: float) -> bool:
        if len(run.pts) == 5:
            mjpeg_server.stop()
            mjpeg_server.start()
        return len(run.pts) >= 15

    with caplog.at_level(logging.INFO, logger="framepipe"):
        run = record_source(Stream(mjpeg_server.url, **FAST), name="door", on_frame=on_frame)
    assert run.reconnects >= 1 and run.states[-1] == "connected"
    reconnected = [r for r in caplog.records if "reconnected to" in r.getMessage()]
    assert len(reconnected) == 1, [r.getMessage() for r in caplog.records]
    assert mjpeg_server.url in reconnected[0].getMessage()


def test_a_stream_never_connected_ends_failed(caplog: pytest.LogCaptureFixture) -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/live"
    with caplog.at_level(logging.WARNING, logger="framepipe"):
        run = record_source(Stream(url, **FAST), stop_after=1.0, catch=True)
    assert run.error is None and run.pts == []
    assert run.states[-1] == "failed"
    assert any("never connected to" in r.getMessage() for r in caplog.records)


def test_a_stream_that_connected_then_stopped_does_not_fail(mjpeg_server: MjpegServer) -> None:
    run = record_source(Stream(mjpeg_server.url, **FAST), stop_after=1.5)
    assert run.pts and run.states[-1] != "failed"


def test_the_run_stats_of_a_source_never_connected_say_failed() -> None:
    pipe = fp.Pipeline()
    pipe.source("door", Stream(f"rtsp://127.0.0.1:{free_port()}/live", **FAST))
    run = pipe.run(mode="realtime", executor="threads", duration=1.0)
    assert run.stats["door"].state == "failed" and run.stats["door"].processed == 0
    assert run.errors == []
