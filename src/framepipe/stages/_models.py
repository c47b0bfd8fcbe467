"""Finding model weights: a path, or a known name looked up in the models directories.

``resolve_model("yolox_nano")`` looks for ``yolox_nano.onnx`` in, in order:

1. every directory in the ``FRAMEPIPE_MODELS`` environment variable
   (several are separated by ``os.pathsep``, as in ``PATH``);
2. the per-user cache, ``$XDG_CACHE_HOME/framepipe/models`` (``~/.cache/framepipe/models``;
   ``%LOCALAPPDATA%\\framepipe\\models`` on Windows).

When no directory has the file it is downloaded into the per-user cache from its
upstream URL and checked before use (sha256 where it is pinned; size and ONNX
input/output shapes otherwise). ``FRAMEPIPE_MODEL_URL`` replaces the URL's base
(``{base}/{file name}``), for a mirror or a test server; ``FRAMEPIPE_OFFLINE=1``
forbids downloading. Every failure is a ``ModelError`` that lists the directories
searched, so the message says where to put the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .._errors import ModelError

__all__ = ["KNOWN_MODELS", "KnownModel", "models_dirs", "resolve_model", "user_cache_dir"]

ENV_MODELS = "FRAMEPIPE_MODELS"
ENV_MODEL_URL = "FRAMEPIPE_MODEL_URL"
ENV_OFFLINE = "FRAMEPIPE_OFFLINE"

_log = logging.getLogger("framepipe.models")


@dataclass(frozen=True, slots=True)
class KnownModel:
    """A model framepipe can fetch by name.

    Attributes:
        name: what users pass as ``model=``.
        filename: the file looked for in the models directories.
        url: where it is downloaded from when no directory has it.
        sha256: the file's pinned digest, or ``None`` when no digest could be
            confirmed; such a file is checked by ``size_range`` and its ONNX
            input/output shapes instead.
        input_size: side of the square network input, checked for unpinned files.
        outputs: rows of the ``[1, rows, 85]`` output, checked for unpinned files.
        size_range: accepted file size in bytes for unpinned files.
    """

    name: str
    filename: str
    url: str
    sha256: str | None
    input_size: int
    outputs: int
    size_range: tuple[int, int]


_MEGVII_RELEASE = "https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0"

#: Models known by name. YOLOX-Nano comes from the ONNX export that the
#: YOLOX-ONNX-TFLite-Sample project publishes (pinned to a commit, so its sha256
#: is fixed); Tiny and S from the official YOLOX 0.1.1rc0 release, whose digests
#: are not published: those are checked by size and by their input/output shapes.
KNOWN_MODELS: dict[str, KnownModel] = {
    "yolox_nano": KnownModel(
        name="yolox_nano",
        filename="yolox_nano.onnx",
        url="https://github.com/Kazuhito00/YOLOX-ONNX-TFLite-Sample/raw/"
        "0f785c070ce8da070aeaeef46c0da7904ff7012e/model/yolox_nano.onnx",
        sha256="695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14",
        input_size=416,
        outputs=3549,
        size_range=(3_660_092, 3_660_092),
    ),
    "yolox_tiny": KnownModel(
        name="yolox_tiny",
        filename="yolox_tiny.onnx",
        url=f"{_MEGVII_RELEASE}/yolox_tiny.onnx",
        sha256=None,
        input_size=416,
        outputs=3549,
        size_range=(15_000_000, 30_000_000),
    ),
    "yolox_s": KnownModel(
        name="yolox_s",
        filename="yolox_s.onnx",
        url=f"{_MEGVII_RELEASE}/yolox_s.onnx",
        sha256=None,
        input_size=640,
        outputs=8400,
        size_range=(25_000_000, 50_000_000),
    ),
}


def user_cache_dir() -> Path:
    """The per-user directory downloaded models are kept in."""
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "framepipe" / "models"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "framepipe" / "models"


def models_dirs() -> list[Path]:
    """The directories searched for a known model, in order.

    Example::

        >>> os.environ["FRAMEPIPE_MODELS"] = "/data/models"
        >>> models_dirs()[0]
        PosixPath('/data/models')
    """
    dirs = [Path(p).expanduser() for p in os.environ.get(ENV_MODELS, "").split(os.pathsep) if p]
    cache = user_cache_dir()
    if cache not in dirs:
        dirs.append(cache)
    return dirs


def resolve_model(model: str | os.PathLike[str], *, timeout: float = 60.0) -> Path:
    """The local path of ``model``: an existing file, or a known name found or downloaded.

    Runs wherever it is called; a ``Detector`` calls it in ``setup()``, inside its
    worker. A download blocks until the file is complete and checked; it is
    written under a temporary name and renamed, so concurrent workers never see
    a partial file.

    Raises:
        ModelError: the path does not exist, the name is unknown, a found or
            downloaded file fails its check, or the file cannot be downloaded.

    Example::

        path = resolve_model("yolox_nano")         # FRAMEPIPE_MODELS, cache, or download
        path = resolve_model("models/custom.onnx")  # a path is returned as it is
    """
    path = Path(model).expanduser()
    if path.is_file():
        return path
    text = os.fspath(model)
    name = text[: -len(".onnx")] if text.endswith(".onnx") else text
    bare = path.parent == Path(".")
    known = KNOWN_MODELS.get(name) if bare else None
    if known is None:
        if not bare or text.endswith(".onnx"):
            raise ModelError(f"model file not found: {path}")
        raise ModelError(
            f"unknown model {text!r}: pass a path to an .onnx file or one of "
            f"{', '.join(sorted(KNOWN_MODELS))}"
        )
    dirs = models_dirs()
    for directory in dirs:
        candidate = directory / known.filename
        if candidate.is_file():
            _check_file(candidate, known, dirs)
            return candidate
    if os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes"):
        raise ModelError(
            f"{known.filename} is not in any models directory and {ENV_OFFLINE} forbids "
            f"downloading it. {_where_to_put(known, dirs)}"
        )
    return _download(known, dirs, timeout)


def _where_to_put(known: KnownModel, dirs: list[Path]) -> str:
    searched = ", ".join(str(d) for d in dirs)
    return (
        f"Put {known.filename} into one of: {searched} (or point {ENV_MODELS} at a "
        f"directory that has it), or pass model='path/to/{known.filename}'. "
        f"It is downloadable from {_url_of(known)}"
    )


def _url_of(known: KnownModel) -> str:
    base = os.environ.get(ENV_MODEL_URL, "").strip()
    return f"{base.rstrip('/')}/{known.filename}" if base else known.url


# A file found in a models directory is checked every time a stage starts;
# hashing the same unchanged file again is wasted work.
_checked: set[tuple[str, int, int]] = set()


def _check_file(path: Path, known: KnownModel, dirs: list[Path]) -> None:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _checked:
        return
    problem = _problem_with(path, known)
    if problem is not None:
        raise ModelError(
            f"{path} is not the expected {known.name} model: {problem}. Delete or replace it, "
            f"or pass its path as model= to use it anyway. {_where_to_put(known, dirs)}"
        )
    _checked.add(key)


def _problem_with(path: Path, known: KnownModel) -> str | None:
    """Why ``path`` is not ``known``'s file, or ``None`` when it is."""
    if known.sha256 is not None:
        digest = _sha256(path)
        if digest != known.sha256:
            return f"sha256 is {digest}, expected {known.sha256}"
        return None
    size = path.stat().st_size
    low, high = known.size_range
    if not low <= size <= high:
        return f"size is {size} bytes, expected {low}..{high}"
    return _onnx_shape_problem(path, known)


def _onnx_shape_problem(path: Path, known: KnownModel) -> str | None:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        return f"onnxruntime cannot load it ({exc})"
    inputs, outputs = session.get_inputs(), session.get_outputs()
    want_in = [1, 3, known.input_size, known.input_size]
    want_out = [1, known.outputs, 85]
    if len(inputs) != 1 or list(inputs[0].shape) != want_in:
        return f"input shape is {[i.shape for i in inputs]}, expected {want_in}"
    if len(outputs) != 1 or list(outputs[0].shape) != want_out:
        return f"output shape is {[o.shape for o in outputs]}, expected {want_out}"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _download(known: KnownModel, dirs: list[Path], timeout: float) -> Path:
    url = _url_of(known)
    target_dir = user_cache_dir()
    dest = target_dir / known.filename
    part = dest.with_name(f"{known.filename}.part-{os.getpid()}")
    _log.info("downloading %s from %s to %s", known.name, url, dest)
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        request = urllib.request.Request(url, headers={"User-Agent": "framepipe"})
        with urllib.request.urlopen(request, timeout=timeout) as response, part.open("wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        raise ModelError(
            f"{known.filename} is not in any models directory and downloading it from "
            f"{url} failed ({exc}). {_where_to_put(known, dirs)}"
        ) from exc
    problem = _problem_with(part, known)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise ModelError(
            f"the file downloaded from {url} is not the expected {known.name} model: "
            f"{problem}. Nothing was kept. {_where_to_put(known, dirs)}"
        )
    os.replace(part, dest)
    return dest
