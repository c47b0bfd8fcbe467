"""The live web view of a pipeline: ``fp.sinks.Web``.

The sink lives in ``_sink.py``; the HTTP application it serves (page, MJPEG
streams, JSON APIs, ``/metrics``) in ``_app.py``; the per-node newest frames
in ``_feed.py``; the page itself in ``static/``. Starlette and uvicorn are
imported only when a ``Web`` sink opens.
"""

from ._sink import Web

__all__ = ["Web"]
