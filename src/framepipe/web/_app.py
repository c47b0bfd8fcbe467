"""The web view's HTTP application: the page, MJPEG streams, JSON APIs and ``/metrics``.

Endpoints (all behind the token, when one is set):

===========================  ==============================================================
``GET /``                    the page (``static/index.html``)
``GET /static/{name}``       the page's files; only the files of ``static/``, by exact name
``GET /video/{node}``        MJPEG (``multipart/x-mixed-replace``) of the node's newest frames;
                             ``?source=`` picks a source, ``?fps=`` caps this client's rate
``GET /snapshot/{node}``     the node's newest frame as one JPEG
``GET /api/stats``           per-node statistics and the streams, JSON
``GET /api/graph``           nodes and edges of the pipeline, JSON
``GET /api/results``         the newest results of every stream, JSON
``GET /api/clips``           the newest clips the run's ``Clips`` sinks finished, JSON
``GET /clips/{node}/{file}`` one finished clip (MP4, with ranges, for ``<video>``)
``GET /metrics``             Prometheus text format
===========================  ==============================================================

Each MJPEG part carries the frame's ``X-Frame-Index``, ``X-Frame-Pts``,
``X-Frame-Timestamp`` (capture time, Unix seconds) and ``X-Frame-Sent`` (when
the server sent it), so a client can measure its latency.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import mimetypes
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.applications import Starlette
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..metrics import RunStatsCollector
from ..sinks._json import to_json
from ..stats import RunStats
from ._clips import ClipShelf
from ._feed import Feed, Feeds, Picture

STATIC = Path(__file__).parent / "static"
BOUNDARY = "frame"
#: How long /video and /snapshot wait for a node's first frame before giving up.
FIRST_FRAME_WAIT = 10.0

_PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
)


def static_files(directory: Path = STATIC) -> dict[str, tuple[bytes, str]]:
    """Every file directly in ``directory``: name -> (content, media type).

    Read once when the app is made. Requests are answered from this table by
    exact name, so no request path ever reaches the file system: ``..``,
    encoded slashes and absolute paths simply are not names in it.
    """
    files = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if media.startswith("text/") or media.endswith("javascript"):
                media += "; charset=utf-8"
            files[path.name] = (path.read_bytes(), media)
    return files


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address) only reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:7001`` -> ``::1``)."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """ASGI middleware: the token check, the Host check, and safe response headers.

    - With a ``token``, every request must carry it as ``?token=`` or
      ``Authorization: Bearer``; otherwise 401.
    - With ``loopback_hosts=True`` (the server listens on loopback only), the
      ``Host`` header must name this machine, so a web page elsewhere cannot
      reach the server through DNS rebinding; otherwise 400.
    - A request with both ``Content-Length`` and ``Transfer-Encoding`` is
      answered 400 and its connection closed: a proxy in front may frame its body
      the other way and hide a second request in it (request smuggling).
    """

    def __init__(self, app: ASGIApp, *, token: str | None, loopback_hosts: bool) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.loopback_hosts = loopback_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if "content-length" in headers and "transfer-encoding" in headers:
            await PlainTextResponse(
                "Content-Length and Transfer-Encoding together are ambiguous",
                400,
                headers={"Connection": "close"},  # nothing after this request is read
            )(scope, receive, send)
            return
        if self.loopback_hosts and not is_loopback(_host_name(headers.get("host", ""))):
            await PlainTextResponse(
                "Host not allowed: this server answers to loopback names only", 400
            )(scope, receive, send)
            return
        if self.token is not None and not self._authorized(scope, headers):
            response = PlainTextResponse(
                "a token is required: add ?token=... or an 'Authorization: Bearer ...' header",
                401,
                headers={"WWW-Authenticate": 'Bearer realm="framepipe"'},
            )
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _authorized(self, scope: Scope, headers: Headers) -> bool:
        assert self.token is not None
        given = QueryParams(scope.get("query_string", b"").decode("latin-1")).get("token")
        if given is None:
            scheme, _, value = headers.get("authorization", "").partition(" ")
            given = value.strip() if scheme.lower() == "bearer" else None
        return given is not None and hmac.compare_digest(given.encode(), self.token)


class _WebCollector(Collector):
    """The web view's own series: viewers, and frames encoded and sent, per stream."""

    def __init__(self, feeds: Feeds) -> None:
        self.feeds = feeds

    def collect(self) -> Iterator[Metric]:
        labels = ["node", "source"]
        viewers = GaugeMetricFamily("framepipe_web_viewers", "Open video streams.", labels=labels)
        encoded = CounterMetricFamily(
            "framepipe_web_frames_encoded", "Frames encoded as JPEG.", labels=labels
        )
        sent = CounterMetricFamily(
            "framepipe_web_frames_sent", "Frames sent, summed over viewers.", labels=labels
        )
        for feed in self.feeds.feeds():
            key = [feed.node, feed.source]
            viewers.add_metric(key, feed.watchers)
            encoded.add_metric(key, feed.encoded)
            sent.add_metric(key, feed.sent)
        yield from (viewers, encoded, sent)


def _part(picture: Picture) -> bytes:
    info = picture.info
    head = (
        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(picture.jpeg)}\r\n"
        f"X-Frame-Index: {info.index}\r\nX-Frame-Pts: {info.pts:.6f}\r\n"
        f"X-Frame-Timestamp: {info.timestamp:.6f}\r\nX-Frame-Sent: {time.time():.6f}\r\n"
        f"X-Frame-Source: {quote(info.source)}\r\n\r\n"
    )
    return head.encode("ascii") + picture.jpeg + b"\r\n"


def _json(data: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(to_json(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False),
        status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def create_app(
    feeds: Feeds,
    *,
    stats: Callable[[], RunStats] | None = None,
    graph: Callable[[], dict[str, Any]] | None = None,
    token: str | None = None,
    loopback_hosts: bool = True,
    labels: dict[str, str] | None = None,
) -> ASGIApp:
    """The ASGI app of a web sink.

    Args:
        feeds: the sink's live frames.
        stats: returns the run's live ``RunStats`` (``None``: no statistics).
        graph: returns the pipeline graph as JSON-friendly data.
        token: required on every request when set.
        loopback_hosts: answer only requests whose ``Host`` names this machine.
        labels: constant labels on every ``/metrics`` series.
    """
    files = static_files()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunStatsCollector(stats or RunStats, labels=labels))
    registry.register(_WebCollector(feeds))

    def closing() -> bool:
        return feeds.closing

    async def feed_of(request: Request) -> Feed | Response:
        node = request.path_params["node"]
        source = request.query_params.get("source")
        if node not in feeds.inputs:
            return PlainTextResponse(
                f"no video for node {node!r}; this view shows "
                f"{', '.join(feeds.inputs) or 'nothing'}",
                404,
            )
        deadline = time.monotonic() + FIRST_FRAME_WAIT
        # The feed appears with the node's first frame; until then, poll (cheaply) for it.
        while (feed := feeds.find(node, source)) is None:
            if feeds.closing or time.monotonic() > deadline:
                return PlainTextResponse(
                    f"node {node!r} has produced no frame yet", 503, headers={"Retry-After": "1"}
                )
            await asyncio.sleep(0.1)
        return feed

    # The page's own <link> and <script> cannot send a header, so with a token their
    # URLs carry it; everything else the page fetches sends it as a Bearer header.
    page = files["index.html"][0].replace(
        b"__QUERY__", f"?token={quote(token, safe='')}".encode() if token else b""
    )

    async def index(request: Request) -> Response:
        return Response(
            page,
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": _PAGE_POLICY, "Cache-Control": "no-store"},
        )

    async def static(request: Request) -> Response:
        found = files.get(request.path_params["name"])
        if found is None:
            return PlainTextResponse("not found", 404)
        return Response(found[0], media_type=found[1], headers={"Cache-Control": "no-cache"})

    async def video(request: Request) -> Response:
        feed = await feed_of(request)
        if isinstance(feed, Response):
            return feed
        try:
            max_fps = float(request.query_params.get("fps", 0))
        except ValueError:
            return PlainTextResponse("fps must be a number", 400)
        period = 1.0 / max_fps if max_fps > 0 else 0.0

        async def parts(feed: Feed) -> AsyncIterator[bytes]:
            feed.watchers += 1
            try:
                seq = 0
                while True:
                    began = time.monotonic()
                    picture = await feed.next_picture(seq, closing)
                    if picture is None:
                        return
                    seq = picture.seq
                    feed.sent += 1
                    yield _part(picture)
                    if period:
                        await asyncio.sleep(max(0.0, period - (time.monotonic() - began)))
            finally:
                feed.watchers -= 1

        return StreamingResponse(
            parts(feed),
            media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def snapshot(request: Request) -> Response:
        feed = await feed_of(request)
        if isinstance(feed, Response):
            return feed
        feed.watchers += 1  # keep the next frame's picture
        try:
            picture = await asyncio.wait_for(feed.next_picture(0, closing), FIRST_FRAME_WAIT)
        except TimeoutError:
            picture = None
        finally:
            feed.watchers -= 1
        if picture is None:
            return PlainTextResponse(f"node {feed.node!r} sent no frame", 503)
        info = picture.info
        return Response(
            picture.jpeg,
            media_type="image/jpeg",
            headers={
                "Cache-Control": "no-store",
                "X-Frame-Index": str(info.index),
                "X-Frame-Timestamp": f"{info.timestamp:.6f}",
            },
        )

    async def api_stats(request: Request) -> Response:
        current = stats() if stats is not None else RunStats()
        return _json(
            {
                "time": time.time(),
                "nodes": current.to_dict(),
                "streams": [feed.describe() for feed in feeds.feeds()],
                "inputs": list(feeds.inputs),
            }
        )

    async def api_graph(request: Request) -> Response:
        data = graph() if graph is not None else {"nodes": [], "edges": []}
        return _json({**data, "streamed": list(feeds.inputs)})

    async def api_results(request: Request) -> Response:
        feeds.want_results()
        return _json(
            [
                {"node": feed.node, **feed.results}
                for feed in feeds.feeds()
                if feed.results is not None
            ]
        )

    shelf = ClipShelf(graph)

    async def api_clips(request: Request) -> Response:
        return _json(await asyncio.to_thread(shelf.latest))

    async def clip(request: Request) -> Response:
        node, name = request.path_params["node"], request.path_params["name"]
        path = await asyncio.to_thread(shelf.file, node, name)
        if path is None:
            return PlainTextResponse(f"no finished clip {name!r} of sink {node!r}", 404)
        # Ranges: a <video> element seeks in the file.
        return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "no-cache"})

    async def metrics(request: Request) -> Response:
        return Response(
            generate_latest(registry),
            media_type=CONTENT_TYPE_LATEST,
            headers={"Cache-Control": "no-store"},
        )

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/static/{name:path}", static),
            Route("/video/{node:path}", video),
            Route("/snapshot/{node:path}", snapshot),
            Route("/api/stats", api_stats),
            Route("/api/graph", api_graph),
            Route("/api/results", api_results),
            Route("/api/clips", api_clips),
            Route("/clips/{node}/{name}", clip),
            Route("/metrics", metrics),
        ]
    )
    return Guard(app, token=token, loopback_hosts=loopback_hosts)
