"""fp.sinks.Webhook against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import pickle
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import framepipe as fp
from framepipe.testing import make_frame


class Receiver:
    """What the test server was sent, and how it should answer.

    ``answers`` are the statuses of the next requests (then 200); while ``gate``
    is clear every request waits for it, like a server that stopped answering.
    """

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.requests = 0
        self.headers: list[dict[str, str]] = []
        self.answers: deque[tuple[int, dict[str, str]]] = deque()
        self.gate = threading.Event()
        self.gate.set()
        self.changed = threading.Condition()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def records(self) -> list[dict[str, Any]]:
        return [record for batch in self.batches for record in batch]


@pytest.fixture
def server() -> Iterator[tuple[str, Receiver]]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with receiver.changed:
                receiver.requests += 1
                receiver.changed.notify_all()
                status, headers = receiver.answers.popleft() if receiver.answers else (200, {})
            receiver.gate.wait(30)
            if status == 200:
                with receiver.changed:
                    receiver.batches.append(json.loads(body))
                    receiver.headers.append(dict(self.headers))
                    receiver.changed.notify_all()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", receiver
    finally:
        receiver.gate.set()
        httpd.shutdown()
        httpd.server_close()


class Driver:
    """Runs a sink the way a worker does, counting what it reports to context.drop()."""

    def __init__(self, sink: fp.sinks.Webhook, inputs: tuple[str, ...] = ("count",)) -> None:
        self.sink = sink
        self.drops = 0
        sink.context = fp.sinks.SinkContext(
            "notify",
            "realtime",
            inputs,
            ("cam",),
            logging.getLogger("framepipe.sink.notify"),
            on_drop=self._count,
        )
        sink.open()

    def _count(self, n: int) -> None:
        self.drops += n

    def write(self, count: int, start: int = 0) -> None:
        for i in range(start, start + count):
            self.sink.write(make_frame(index=i, source="cam", results={"count": i}))

    def close(self) -> float:
        started = time.monotonic()
        self.sink.close()
        return time.monotonic() - started


def test_records_are_posted_in_batches(server: tuple[str, Receiver]) -> None:
    url, receiver = server
    driver = Driver(fp.sinks.Webhook(url, batch=4, max_wait_s=60, headers={"X-Token": "abc"}))
    driver.write(10)
    # Two full batches go at once; the last two records wait for close().
    assert receiver.wait_for(lambda: len(receiver.batches) == 2)
    assert [len(b) for b in receiver.batches] == [4, 4]
    driver.close()
    assert [len(b) for b in receiver.batches] == [4, 4, 2]
    records = receiver.records()
    assert [r["results"]["count"] for r in records] == list(range(10))
    assert set(records[0]) == {"source", "index", "pts", "timestamp", "results"}
    assert (records[3]["source"], records[3]["index"]) == ("cam", 3)
    assert receiver.headers[0]["X-Token"] == "abc"
    assert receiver.headers[0]["Content-Type"] == "application/json"
    assert (driver.sink.sent, driver.sink.failed, driver.sink.dropped, driver.drops) == (
        10,
        0,
        0,
        0,
    )


def test_a_partial_batch_goes_after_max_wait(server: tuple[str, Receiver]) -> None:
    url, receiver = server
    driver = Driver(fp.sinks.Webhook(url, batch=100, max_wait_s=0.2))
    started = time.monotonic()
    driver.write(3)
    assert receiver.wait_for(lambda: len(receiver.batches) == 1)
    assert time.monotonic() - started >= 0.15
    assert len(receiver.batches[0]) == 3
    driver.close()
    assert driver.sink.sent == 3


def test_server_errors_are_retried_with_backoff(server: tuple[str, Receiver]) -> None:
    url, receiver = server
    receiver.answers.extend([(500, {}), (500, {})])
    driver = Driver(fp.sinks.Webhook(url, batch=5, retries=3, backoff=0.05))
    started = time.monotonic()
    driver.write(5)
    assert receiver.wait_for(lambda: len(receiver.batches) == 1)
    assert time.monotonic() - started >= 0.05 + 0.1  # two pauses, the second one doubled
    driver.close()
    assert receiver.requests == 3
    assert (driver.sink.sent, driver.sink.failed, driver.drops) == (5, 0, 0)


def test_429_is_retried_after_the_servers_retry_after(server: tuple[str, Receiver]) -> None:
    url, receiver = server
    receiver.answers.append((429, {"Retry-After": "0"}))
    driver = Driver(fp.sinks.Webhook(url, batch=2, retries=1, backoff=20))
    driver.write(2)
    # backoff=20 would outlast the wait below: the server's "Retry-After: 0" is what counts.
    assert receiver.wait_for(lambda: len(receiver.batches) == 1, timeout=10)
    driver.close()
    assert receiver.requests == 2 and driver.sink.sent == 2


def test_retries_give_up_and_client_errors_are_not_retried(server: tuple[str, Receiver]) -> None:
    url, receiver = server
    receiver.answers.extend([(503, {}), (503, {}), (400, {})])
    driver = Driver(fp.sinks.Webhook(url, batch=3, retries=1, backoff=0.01))
    driver.write(3)  # 503, then 503 again: given up after one retry
    assert receiver.wait_for(lambda: receiver.requests == 2)
    driver.write(3, start=3)  # 400: the server will never take it
    driver.write(3, start=6)  # delivered
    assert receiver.wait_for(lambda: len(receiver.batches) == 1)
    driver.close()
    assert receiver.requests == 4
    assert [r["results"]["count"] for r in receiver.records()] == [6, 7, 8]
    sink = driver.sink
    assert (sink.sent, sink.failed, sink.dropped) == (3, 6, 0)
    assert driver.drops == 6  # failures are reported as drops too


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_dead_server_does_not_hold_up_close() -> None:
    sink = fp.sinks.Webhook(
        f"http://127.0.0.1:{closed_port()}/", batch=5, retries=2, backoff=0.1, close_timeout_s=1
    )
    driver = Driver(sink)
    driver.write(500)
    elapsed = driver.close()
    assert elapsed < 1 + 1 + 1.5  # close_timeout_s, the grace for a request, slack
    # Tried and refused (failed) or not tried before the deadline (dropped): all counted.
    assert sink.sent == 0 and sink.failed > 0
    assert sink.failed + sink.dropped == 500
    assert driver.drops == 500


def test_a_server_that_never_answers_does_not_hold_up_close() -> None:
    # The kernel accepts the connection; nobody ever reads the request or answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        sink = fp.sinks.Webhook(
            f"http://127.0.0.1:{port}/", batch=2, timeout_s=30, retries=5, close_timeout_s=0.5
        )
        driver = Driver(sink)
        driver.write(4)
        elapsed = driver.close()
    assert elapsed < 0.5 + 1 + 1.5
    assert (sink.sent, sink.failed + sink.dropped, driver.drops) == (0, 4, 4)


def test_a_slow_server_never_blocks_write(server: tuple[str, Receiver]) -> None:
    url, receiver = server
    receiver.gate.clear()  # every request now hangs until the test ends
    sink = fp.sinks.Webhook(url, batch=5, buffer=20, timeout_s=30, close_timeout_s=0.5)
    driver = Driver(sink)
    driver.write(5)
    assert receiver.wait_for(lambda: receiver.requests == 1)  # one batch stuck in flight
    slowest = 0.0
    for i in range(5, 500):
        started = time.monotonic()
        driver.write(1, start=i)
        slowest = max(slowest, time.monotonic() - started)
    assert slowest < 0.25  # a request hangs for 30 s; write() waits for none of it
    # 5 in flight, the newest 20 buffered, the rest pushed out, counted as they went.
    assert sink.dropped == driver.drops == 500 - 5 - 20
    elapsed = driver.close()
    assert elapsed < 0.5 + 1 + 1.5
    assert (sink.sent, sink.failed, sink.dropped, driver.drops) == (0, 0, 500, 500)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "example.com/hook", "http://", "http://host:port/", 42]
)
def test_bad_urls_are_refused_at_construction(url: Any) -> None:
    with pytest.raises(ValueError, match=r"expected an http:// or https:// URL"):
        fp.sinks.Webhook(url)


def test_bad_numbers_are_refused_at_construction() -> None:
    for kwargs in [
        {"batch": 0},
        {"buffer": 0},
        {"retries": -1},
        {"timeout_s": 0},
        {"max_wait_s": -1},
        {"backoff": -0.5},
    ]:
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            fp.sinks.Webhook("http://127.0.0.1:9/", **kwargs)


def test_is_a_picklable_description_whose_counters_come_back() -> None:
    sink = pickle.loads(pickle.dumps(fp.sinks.Webhook("https://example.com/x", batch=7)))
    assert (sink.url, sink.batch) == ("https://example.com/x", 7)
    sink.adopt_final_state({"sent": 3, "failed": 2, "dropped": 1})
    assert (sink.sent, sink.failed, sink.dropped) == (3, 2, 1)


# -- through a pipeline ---------------------------------------------------------------------


def brightness(frame: fp.Frame) -> float:
    return round(float(frame.image.mean()), 2)


def test_posts_a_pipeline_under_every_executor(server: tuple[str, Receiver], executor: str) -> None:
    url, receiver = server
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=320, height=240, fps=30, frames=60))
    level = pipe.stage("level", brightness, after=cam)
    sink = fp.sinks.Webhook(url, batch=16, max_wait_s=30)
    pipe.sink("notify", sink, after=level)
    run = pipe.run(mode="offline", executor=executor)
    assert [len(b) for b in receiver.batches] == [16, 16, 16, 12]  # the last one sent by close()
    records = receiver.records()
    assert [r["index"] for r in records] == list(range(60))
    assert all(list(r["results"]) == ["level"] for r in records)
    assert all(isinstance(r["results"]["level"], float) for r in records)
    assert (sink.sent, sink.failed, sink.dropped) == (60, 0, 0)  # counters reach the caller
    assert run.stats["notify"].dropped == 0


def test_lost_records_are_buffer_drops_in_the_run_statistics(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=320, height=240, fps=30, frames=60))
    level = pipe.stage("level", brightness, after=cam)
    sink = fp.sinks.Webhook(
        f"http://127.0.0.1:{closed_port()}/", batch=5, retries=0, buffer=10, close_timeout_s=0.5
    )
    pipe.sink("notify", sink, after=level)
    stats = pipe.run(mode="offline", executor=executor).stats["notify"]
    assert sink.sent == 0 and sink.failed + sink.dropped == 60
    assert stats.processed == 60 and stats.dropped_by["buffer"] == 60
