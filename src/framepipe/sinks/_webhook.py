"""POST results as JSON to an HTTP endpoint, in batches, from a background thread."""

from __future__ import annotations

import threading
import time
from collections import deque
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .._frame import Frame
from ._base import Sink
from ._json import encode, frame_record

if TYPE_CHECKING:
    import httpx

# Longest pause between two attempts, whatever backoff or a Retry-After header asks for.
_MAX_PAUSE_S = 30.0
# How much longer than close_timeout_s close() waits for a request already under way.
_CLOSE_GRACE_S = 1.0


class Webhook(Sink):
    """POST the results of each frame, as JSON, to ``url``, batched and retried.

    The body of each request is a JSON list of records, the same objects a
    ``JsonLines`` file holds one per line: ``{"source", "index", "pts",
    "timestamp", "results"}``, one per frame.

    ``write()`` never blocks the pipeline: it encodes the frame's results and
    appends them to a buffer of at most ``buffer`` records; when the buffer is
    full the oldest records are dropped and counted (``buffer`` drops in the
    run's statistics). A background thread, started by ``open()``, posts a batch
    as soon as ``batch`` records are waiting, or when the oldest waiting record
    is ``max_wait_s`` old. Connection errors, timeouts, ``429`` and ``5xx``
    answers are retried up to ``retries`` times, after ``backoff``, ``2 *
    backoff``, ``4 * backoff``... seconds (or the server's ``Retry-After``, at
    most 30 s); other answers (``4xx``, redirects) fail the batch at once.

    ``close()`` sends what is still buffered, then returns within
    ``close_timeout_s`` (plus at most a second for a request under way), even
    when the server is dead or hangs; what it could not send is counted as
    dropped.

    Counters, readable during the run and, after it, on the caller's instance
    whatever the executor (all in records, not requests):

    - ``sent``: delivered (answered ``2xx``);
    - ``failed``: given up after the last retry or rejected by the server;
    - ``dropped``: pushed out of a full buffer, or still unsent when ``close()``
      gave up. ``failed + dropped`` is what the run's statistics count as drops.

    Args:
        url: an ``http://`` or ``https://`` URL.
        batch: records per request (the last request may hold fewer).
        max_wait_s: longest a record waits for its batch to fill.
        timeout_s: timeout of each request (connect, send, and wait for the answer).
        retries: further attempts after a failed one.
        backoff: pause before the first retry, doubled for each next one.
        buffer: most records waiting to be sent; older ones are dropped beyond it.
        headers: extra request headers, e.g. ``{"Authorization": "Bearer ..."}``.
        close_timeout_s: how long ``close()`` may spend sending what remains.

    Example::

        hook = fp.sinks.Webhook("http://127.0.0.1:8000/events", batch=50, max_wait_s=0.5)
        pipe.sink("notify", hook, after=[count])
        pipe.run()
        print(hook.sent, hook.failed, hook.dropped)
    """

    reads_pixels = False  # results only

    def __init__(
        self,
        url: str,
        *,
        batch: int = 20,
        max_wait_s: float = 1.0,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        buffer: int = 1000,
        headers: dict[str, str] | None = None,
        close_timeout_s: float = 5.0,
    ) -> None:
        _check_url(url)
        for name, value, low in (
            ("batch", batch, 1),
            ("buffer", buffer, 1),
            ("retries", retries, 0),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"Webhook: {name} must be an integer >= {low}, got {value!r}")
        for name, number in (
            ("max_wait_s", max_wait_s),
            ("timeout_s", timeout_s),
            ("close_timeout_s", close_timeout_s),
        ):
            if not number > 0:
                raise ValueError(f"Webhook: {name} must be > 0 seconds, got {number!r}")
        if not backoff >= 0:
            raise ValueError(f"Webhook: backoff must be >= 0 seconds, got {backoff!r}")
        self.url = url
        self.batch, self.buffer, self.retries = batch, buffer, retries
        self.max_wait_s, self.timeout_s = float(max_wait_s), float(timeout_s)
        self.backoff, self.close_timeout_s = float(backoff), float(close_timeout_s)
        self.headers = dict(headers or {})
        self.sent = self.failed = self.dropped = 0
        self._thread: threading.Thread | None = None

    # -- the worker's side -------------------------------------------------------------------

    def open(self) -> None:
        # httpx is imported here, in the worker, so that importing framepipe stays quick.
        import httpx

        from .. import __version__

        self.sent = self.failed = self.dropped = 0
        self._cond = threading.Condition()
        self._queue: deque[tuple[float, dict[str, Any]]] = deque()
        self._closing = False
        self._deadline = float("inf")
        self._abandoned = False
        self._in_flight = 0
        # Drops the sender thread counts wait here: only the worker's own thread reports
        # them to context.drop(), as the statistics recorder expects.
        self._unreported = 0
        self._failing = False
        self._client = httpx.Client(
            timeout=self.timeout_s,
            headers={
                "User-Agent": f"framepipe/{__version__}",
                "Content-Type": "application/json",
                **self.headers,
            },
        )
        self._thread = threading.Thread(
            target=self._run, name=f"framepipe-webhook-{self.context.name}", daemon=True
        )
        self._thread.start()

    def write(self, frame: Frame) -> None:
        record = frame_record(frame, self.context.inputs or frame.results)
        if record is not None:
            self.write_record(record)

    def write_record(self, record: dict[str, Any]) -> None:
        """Queue one record to post: a frame's, or an event (``pipe.events``)."""
        now = time.monotonic()
        with self._cond:
            was_empty = not self._queue
            self._queue.append((now, record))
            overflow = len(self._queue) - self.buffer
            for _ in range(overflow):
                self._queue.popleft()
            if overflow > 0:
                self.dropped += overflow
                self._unreported += overflow
            report, self._unreported = self._unreported, 0
            # Wake the sender when a batch is full, or to start the max_wait_s clock.
            if len(self._queue) >= self.batch or (was_empty and self._queue):
                self._cond.notify()
        if report:
            self.context.drop(report)

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + self.close_timeout_s
            self._cond.notify_all()
        thread.join(self.close_timeout_s + _CLOSE_GRACE_S)
        with self._cond:
            lost = len(self._queue)
            self._queue.clear()
            if thread.is_alive():
                # Stuck in a request that its timeout did not cut short (a DNS lookup, a
                # server trickling bytes): leave it behind; it will count nothing more.
                self._abandoned = True
                lost += self._in_flight
            self.dropped += lost
            report, self._unreported = self._unreported + lost, 0
        if report:
            self.context.drop(report)
        if not thread.is_alive():
            self._client.close()
        if self.failed or self.dropped:
            self.context.logger.warning(
                "%s: %d records sent to %s, %d failed, %d dropped",
                self.context.name,
                self.sent,
                self.url,
                self.failed,
                self.dropped,
            )

    def final_state(self) -> Any:
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped}

    def adopt_final_state(self, state: Any) -> None:
        self.sent, self.failed, self.dropped = state["sent"], state["failed"], state["dropped"]

    def describe(self) -> dict[str, Any]:
        return {"type": "Webhook", "url": self.url, "batch": self.batch}

    # -- the sender thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            chunk = self._next_batch()
            if chunk is None:
                return
            try:
                delivered = self._post(chunk)
            except Exception:  # a bug here must not silently stop every later delivery
                self.context.logger.exception(
                    "%s: sending to %s failed", self.context.name, self.url
                )
                delivered = False
            with self._cond:
                self._in_flight = 0
                if self._abandoned:
                    return
                if delivered:
                    self.sent += len(chunk)
                else:
                    self.failed += len(chunk)
                    self._unreported += len(chunk)

    def _next_batch(self) -> list[dict[str, Any]] | None:
        """Wait until a batch is due and take it; ``None`` when the thread should end."""
        with self._cond:
            while True:
                if self._abandoned:
                    return None
                waiting = len(self._queue)
                if self._closing:
                    if not waiting or time.monotonic() >= self._deadline:
                        return None  # close() counts what is left as dropped
                    break
                if waiting >= self.batch:
                    break
                if waiting:
                    due = self._queue[0][0] + self.max_wait_s - time.monotonic()
                    if due <= 0:
                        break
                    self._cond.wait(due)
                else:
                    self._cond.wait()
            chunk = [self._queue.popleft()[1] for _ in range(min(self.batch, waiting))]
            self._in_flight = len(chunk)
            return chunk

    def _post(self, chunk: list[dict[str, Any]]) -> bool:
        """POST one batch, retrying what may pass later; True when the server took it."""
        import httpx

        body = encode(chunk).encode("utf-8")
        problem = "close() ran out of time before it could be sent"
        for attempt in range(self.retries + 1):
            timeout = self._time_left(self.timeout_s)
            if timeout <= 0:
                break
            pause = min(self.backoff * 2**attempt, _MAX_PAUSE_S)
            try:
                response = self._client.post(self.url, content=body, timeout=timeout)
            except httpx.HTTPError as exc:  # connection refused or reset, timeouts, bad answers
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.is_success:
                    if self._failing:
                        self._failing = False
                        self.context.logger.info(
                            "%s: %s accepts results again", self.context.name, self.url
                        )
                    return True
                problem = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
                if response.status_code != 429 and response.status_code < 500:
                    break  # the server will not take this batch however often it is sent
                pause = _retry_after(response, pause)
            if attempt == self.retries or not self._pause(pause):
                break
        if not self._failing:
            # Once until the server answers again: a dead server must not flood the log.
            self._failing = True
            self.context.logger.warning(
                "%s: could not deliver %d records to %s (%s)",
                self.context.name,
                len(chunk),
                self.url,
                problem,
            )
        return False

    def _time_left(self, wanted: float) -> float:
        """``wanted`` seconds, cut to what is left before the close deadline."""
        with self._cond:
            return min(wanted, self._deadline - time.monotonic())

    def _pause(self, seconds: float) -> bool:
        """Wait before a retry; False when the retry would come after close()'s deadline."""
        with self._cond:
            end = time.monotonic() + seconds
            while True:
                now = time.monotonic()
                if self._abandoned or end > self._deadline:
                    return False
                if now >= end:
                    return True
                self._cond.wait(end - now)  # close() wakes this to bring the deadline in


def _check_url(url: Any) -> None:
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        valid = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)
        if parts is not None:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"Webhook: expected an http:// or https:// URL with a host, got {url!r}")


def _retry_after(response: httpx.Response, default: float) -> float:
    """The pause a 429/503 answer asks for (seconds or an HTTP date), else ``default``."""
    value = response.headers.get("Retry-After")
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return default
    return min(max(seconds, 0.0), _MAX_PAUSE_S)
