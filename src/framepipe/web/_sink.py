"""The Web sink: a live page of the pipeline, served from a thread of the caller's process."""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import logging
import os
import socket
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .._errors import SinkError, missing_extra
from .._frame import Frame
from ..sinks._base import Sink

if TYPE_CHECKING:
    import uvicorn

    from ._feed import Feeds

log = logging.getLogger("framepipe.web")

#: Seconds ``open()`` waits for the server to listen, and ``close()`` for it to stop.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
#: Connections the server keeps at once; more get "503 Service Unavailable". Idle and slow
#: connections are closed after ``_protocol.REQUEST_TIMEOUT`` seconds, so they cannot pile up.
MAX_CONNECTIONS = 500
#: Bytes the kernel may hold unsent per connection (Linux, macOS): a few frames at most.
NOTSENT_LOWAT = 16384


class Web(Sink):
    """Serve a live page of the pipeline: video, statistics, graph and results.

    Open ``http://127.0.0.1:7001`` (``web.url``) while the pipeline runs. The
    page shows the newest (annotated: ``frame.display_image``) picture of every
    node connected to the sink, each at its own rate; per-node statistics
    (fps, latency, drops by reason, frame age, connection state and
    reconnects) updated every second; the pipeline graph; and the newest
    results as compact JSON. ``/metrics`` serves the statistics to
    Prometheus; ``/video/<node>`` is a plain MJPEG stream any player or
    ``<img>`` tag can show; ``/api/stats``, ``/api/graph`` and ``/api/results``
    are JSON. See ``docs/web.md``.

    Contract: the sink runs in the caller's process under every executor
    (``in_caller_process``), which gives it the run's live statistics and
    graph. ``open()`` starts a uvicorn server in a background thread and
    returns once it listens (``SinkError`` when the port is taken);
    ``close()`` ends every stream, stops the server within a few seconds and
    releases the port. ``write()`` never waits for viewers and never encodes:
    it hands the frame to its feed (copying the picture only while someone
    watches it), so a slow browser, a hidden tab or many viewers never slow
    the pipeline. Each feed keeps only its newest picture and its newest JPEG;
    a frame is encoded at most once, and only when a viewer asks for it.

    Args:
        host: address to listen on. The default answers this machine only;
            ``"0.0.0.0"`` serves the network (then pass a ``token``).
        port: TCP port; ``0`` picks a free one (read it from ``web.port``).
        token: when set, every request (page, streams, API, metrics) must
            carry it: ``?token=...`` or ``Authorization: Bearer ...``.
        fps: most frames per second each video shows (``None``: every frame).
        quality: JPEG quality, 1-100.

    Example::

        web = fp.sinks.Web(port=7001)
        pipe.sink("web", web, after=["annotate", "camera"], policy="latest")
        with pipe.start(mode="realtime"):
            print("open", web.url)
            ...
    """

    in_caller_process = True
    join = "each"  # every input is a video of its own

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 7001,
        token: str | None = None,
        fps: float | None = None,
        quality: int = 80,
    ) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"Web: port must be an int in 0..65535, got {port!r}")
        if not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValueError(f"Web: quality must be an int in 1..100, got {quality!r}")
        if fps is not None and not fps > 0:
            raise ValueError(f"Web: fps must be > 0 or None, got {fps!r}")
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError("Web: token must be a non-empty string or None")
        for module in ("starlette", "uvicorn", "h11"):  # the "web" extra; imported at open()
            if importlib.util.find_spec(module) is None:
                raise missing_extra(
                    "fp.sinks.Web",
                    "web",
                    ModuleNotFoundError(f"No module named {module!r}", name=module),
                )
        self.host, self.port, self.token = str(host), port, token
        self.fps, self.quality = fps, quality
        self._feeds: Feeds | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()

    def __getstate__(self) -> dict[str, Any]:
        # Only the options travel (on_error="restart" keeps a pickled copy); a copy gets
        # its own server when it opens.
        state = self.__dict__.copy()
        state.update(_feeds=None, _server=None, _thread=None, _serving=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._serving = threading.Event()

    def wait_serving(self, timeout: float | None = None) -> bool:
        """Block until the page is being served (True), or ``timeout`` seconds pass (False).

        ``pipe.start()`` may return before the sink has opened (``executor="inline"``
        opens it in the run's own thread); wait here before opening ``url``.
        """
        return self._serving.wait(timeout)

    @property
    def url(self) -> str:
        """Where to open the page (with the token, when there is one)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        query = f"?token={quote(self.token, safe='')}" if self.token else ""
        return f"http://{host}:{self.port}/{query}"

    # -- life cycle -------------------------------------------------------------------------

    def open(self) -> None:
        import uvicorn

        from ._app import create_app, is_loopback
        from ._feed import Feeds
        from ._protocol import DeadlineH11Protocol

        name = self.context.name
        self._feeds = Feeds(self.context.inputs, quality=self.quality, max_fps=self.fps)
        sock = _listen(name, self.host, self.port)
        self.port = int(sock.getsockname()[1])
        app = create_app(
            self._feeds,
            stats=self.context.pipeline_stats,
            graph=self.context.pipeline_graph,
            token=self.token,
            loopback_hosts=is_loopback(self.host),
        )
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            http=DeadlineH11Protocol,
            loop="asyncio",
            limit_concurrency=MAX_CONNECTIONS,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=self._serve,
            args=(server, sock, self._feeds),
            name=f"framepipe-web-{name}",
            daemon=True,
        )
        self._thread.start()
        # uvicorn signals readiness only through this flag; the join doubles as the wait.
        while not server.started:
            if not self._thread.is_alive():
                sock.close()
                raise SinkError(
                    name,
                    f"the web server on {self.host}:{self.port} failed to "
                    f"start (see the log above)",
                )
            self._thread.join(0.01)
        if not is_loopback(self.host) and self.token is None:
            log.warning(
                "web view %r listens on %s without a token: anyone who can reach "
                "this machine can watch; pass token=...",
                name,
                self.host,
            )
        log.info("web view %r: %s", name, self.url)
        self._serving.set()

    @staticmethod
    def _serve(server: uvicorn.Server, sock: socket.socket, feeds: Feeds) -> None:
        loop = asyncio.new_event_loop()
        feeds.loop = loop
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        except BaseException:  # a thread has no caller to raise to: log it, open() reports it
            log.exception("web server stopped with an error")
        finally:
            feeds.loop = None
            sock.close()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def write(self, frame: Frame) -> None:
        assert self._feeds is not None
        self._feeds.publish(frame)

    def close(self) -> None:
        self._serving.clear()
        feeds, server, thread = self._feeds, self._server, self._thread
        self._server = self._thread = None
        if feeds is not None:
            feeds.close()  # ends every stream, so the server has no response to wait for
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            server.force_exit = True
            thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            log.warning(
                "web view %r: the server did not stop within %.0f s",
                self.context.name,
                2 * STOP_TIMEOUT,
            )

    def describe(self) -> dict[str, Any]:
        # Never the token: descriptions are shown on the page and in logs.
        return {"type": "Web", "host": self.host, "port": self.port, "fps": self.fps}

    def __repr__(self) -> str:
        return f"Web(host={self.host!r}, port={self.port})"


def _listen(node: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket, or ``SinkError`` saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise SinkError(node, f"cannot listen on {host!r}: unknown host ({exc})") from exc
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":
            # Lets a restarted view take the port back at once (connections of the last
            # one may linger in TIME_WAIT); it never lets two servers share a port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lowat = getattr(socket, "TCP_NOTSENT_LOWAT", None)
        if lowat is not None:
            # Accepted connections inherit this: the kernel keeps at most this much unsent
            # data per viewer, so a slow viewer's next frame waits here (and is replaced by a
            # newer one) instead of queueing up by the megabyte in its socket buffer.
            # Throughput is unaffected: data in flight is not limited.
            sock.setsockopt(socket.IPPROTO_TCP, lowat, NOTSENT_LOWAT)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        hint = (
            " (another program uses it; choose another port)"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        raise SinkError(node, f"cannot listen on {host}:{port}: {reason}{hint}") from exc
    return sock
