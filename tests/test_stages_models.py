"""Model resolution: paths, FRAMEPIPE_MODELS, the user cache, downloads and their checks."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from framepipe import ModelError
from framepipe.stages import Detector, _models, models_dirs, resolve_model
from framepipe.testing import make_frame, run_stage

NANO_SHA256 = "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No inherited model settings; the per-user cache lives in tmp_path/cache."""
    for name in ("FRAMEPIPE_MODELS", "FRAMEPIPE_MODEL_URL", "FRAMEPIPE_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(_models, "_checked", set())
    return tmp_path / "cache" / "framepipe" / "models"


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def file_server() -> Iterator[Callable[[Path], tuple[str, list[str]]]]:
    """``serve(folder) -> (base URL, list of requested paths)`` on 127.0.0.1."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(folder: Path) -> tuple[str, list[str]]:
        requests: list[str] = []

        class Handler(_Files):
            def do_GET(self) -> None:
                requests.append(self.path)
                super().do_GET()

        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
        )
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", requests

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting fails at once, like being offline."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/models"


def test_a_path_is_returned_as_it_is(tmp_path: Path) -> None:
    model = tmp_path / "custom.onnx"
    model.write_bytes(b"anything")
    assert resolve_model(model) == model
    assert resolve_model(str(model)) == model


def test_a_missing_path_and_an_unknown_name_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        resolve_model(tmp_path / "missing.onnx")
    with pytest.raises(ModelError, match=r"unknown model 'yolov99'.*yolox_nano"):
        resolve_model("yolov99")


def test_found_in_framepipe_models(
    shared_media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(
        "FRAMEPIPE_MODELS", os.pathsep.join([str(empty), str(shared_media / "models")])
    )
    monkeypatch.setenv("FRAMEPIPE_MODEL_URL", closed_port_url())  # proves nothing is downloaded
    assert models_dirs()[:2] == [empty, shared_media / "models"]
    assert resolve_model("yolox_nano") == shared_media / "models" / "yolox_nano.onnx"
    assert resolve_model("yolox_nano.onnx") == shared_media / "models" / "yolox_nano.onnx"


def test_found_in_the_user_cache(
    shared_media: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated.mkdir(parents=True)
    shutil.copy(shared_media / "models" / "yolox_nano.onnx", isolated)
    monkeypatch.setenv("FRAMEPIPE_OFFLINE", "1")
    assert models_dirs() == [isolated]
    assert resolve_model("yolox_nano") == isolated / "yolox_nano.onnx"


def test_a_file_with_the_wrong_sha256_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "yolox_nano.onnx").write_bytes(b"not the model")
    monkeypatch.setenv("FRAMEPIPE_MODELS", str(tmp_path))
    with pytest.raises(ModelError) as info:
        resolve_model("yolox_nano")
    message = str(info.value)
    assert str(tmp_path / "yolox_nano.onnx") in message
    assert NANO_SHA256 in message and "sha256 is" in message


def test_downloaded_from_a_server_and_checked(
    shared_media: Path, tmp_path: Path, isolated: Path, file_server: Callable, monkeypatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(shared_media / "models" / "yolox_nano.onnx", mirror)
    url, requests = file_server(mirror)
    monkeypatch.setenv("FRAMEPIPE_MODEL_URL", url + "/")
    path = resolve_model("yolox_nano")
    assert path == isolated / "yolox_nano.onnx"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == NANO_SHA256
    assert requests == ["/yolox_nano.onnx"]
    # Found in the cache from now on: no second download, no partial files left.
    assert resolve_model("yolox_nano") == path
    assert requests == ["/yolox_nano.onnx"]
    assert sorted(p.name for p in isolated.iterdir()) == ["yolox_nano.onnx"]


def test_a_download_that_fails_its_check_leaves_nothing(
    tmp_path: Path, isolated: Path, file_server: Callable, monkeypatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "yolox_nano.onnx").write_bytes(b"<html>a captive portal</html>")
    (mirror / "yolox_tiny.onnx").write_bytes(b"truncated")
    url, _ = file_server(mirror)
    monkeypatch.setenv("FRAMEPIPE_MODEL_URL", url)
    with pytest.raises(ModelError, match=r"sha256 is .*Nothing was kept"):
        resolve_model("yolox_nano")
    # yolox_tiny has no pinned digest: its size and ONNX shapes are checked instead.
    with pytest.raises(ModelError, match="size is 9 bytes"):
        resolve_model("yolox_tiny")
    assert not isolated.exists() or list(isolated.iterdir()) == []


def test_offline_without_the_file_says_where_to_put_it(
    tmp_path: Path, isolated: Path, monkeypatch
) -> None:
    monkeypatch.setenv("FRAMEPIPE_MODELS", str(tmp_path / "models"))
    url = closed_port_url()
    monkeypatch.setenv("FRAMEPIPE_MODEL_URL", url)
    with pytest.raises(ModelError) as info:
        resolve_model("yolox_nano")
    message = str(info.value)
    assert "downloading it from" in message and f"{url}/yolox_nano.onnx" in message
    assert f"Put yolox_nano.onnx into one of: {tmp_path / 'models'}, {isolated}" in message
    assert "FRAMEPIPE_MODELS" in message

    monkeypatch.setenv("FRAMEPIPE_OFFLINE", "1")
    with pytest.raises(ModelError, match="FRAMEPIPE_OFFLINE forbids downloading"):
        resolve_model("yolox_nano")


def test_the_detector_reports_a_missing_model_from_setup(monkeypatch) -> None:
    monkeypatch.setenv("FRAMEPIPE_OFFLINE", "1")
    detector = Detector("yolox_nano")  # cheap: nothing is resolved before setup()
    with pytest.raises(ModelError, match=r"Put yolox_nano\.onnx into one of"):
        run_stage(detector, [make_frame()])
