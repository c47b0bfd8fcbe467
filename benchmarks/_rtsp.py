"""GStreamer RTSP servers on 127.0.0.1 for the live-camera benchmarks.

Debian's gst-rtsp-server is driven from the system python3 (its GObject
bindings are not in the benchmarks' virtual environment).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator

GI_PYTHON = "/usr/bin/python3"


def available() -> bool:
    """Whether the system python3 has GStreamer's RTSP server."""
    if not os.path.exists(GI_PYTHON):
        return False
    probe = [GI_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def serving(script: str, *args: object) -> Iterator[str]:
    """Run a server ``script`` (given a free port, then ``args``) until it prints "ready";
    yield its ``rtsp://127.0.0.1:PORT/live`` URL; stop it on the way out."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = subprocess.Popen(
        [GI_PYTHON, "-c", script, str(port), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield f"rtsp://127.0.0.1:{port}/live"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
