"""Object detection with an ONNX model in onnxruntime: YOLOX, YOLOv5 and YOLOv8 layouts."""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
import supervision as sv

from .._errors import ModelError
from .._frame import Frame
from .._stage import Stage
from ._coco import COCO_CLASSES
from ._models import resolve_model

Layout = Literal["auto", "yolox", "yolov5", "yolov8"]

#: Short names accepted in ``providers=``, with the onnxruntime names they stand for.
PROVIDER_ALIASES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}
# Tried in this order by providers="auto".
_AUTO_ORDER = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "OpenVINOExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
)
_STRIDES = (8, 16, 32)


def make_detections(
    xyxy: npt.ArrayLike,
    confidence: npt.ArrayLike,
    class_id: npt.ArrayLike,
    class_name: npt.ArrayLike,
    **metadata: Any,
) -> sv.Detections:
    """``sv.Detections`` with framepipe's fixed set of fields, also when empty.

    Every built-in stage returns detections with ``confidence``, ``class_id`` and
    ``data["class_name"]`` filled in, so downstream code never needs to test
    which fields exist.
    """
    return sv.Detections(
        xyxy=np.asarray(xyxy, np.float32).reshape(-1, 4),
        confidence=np.asarray(confidence, np.float32).reshape(-1),
        class_id=np.asarray(class_id, np.int64).reshape(-1),
        data={"class_name": np.asarray(class_name, dtype=str).reshape(-1)},
        metadata=metadata,
    )


def clip_boxes(xyxy: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clip ``N x 4`` xyxy boxes to a ``width`` x ``height`` frame, in place; returns them."""
    np.clip(xyxy, 0, np.array([width, height, width, height], xyxy.dtype), out=xyxy)
    return xyxy


def shrink(image: np.ndarray, max_width: int | None) -> tuple[np.ndarray, float]:
    """``image`` scaled down to at most ``max_width`` wide, and the scale used (1.0: as is)."""
    if max_width is None or image.shape[1] <= max_width:
        return image, 1.0
    scale = max_width / image.shape[1]
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), scale


@dataclass(frozen=True, slots=True)
class _Letterbox:
    """How one frame was fitted into the network input; ``undo`` maps boxes back."""

    ratio: float
    left: int
    top: int
    width: int
    height: int

    def undo(self, xyxy: np.ndarray) -> np.ndarray:
        out = xyxy.copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.left) / self.ratio
        out[:, [1, 3]] = (out[:, [1, 3]] - self.top) / self.ratio
        return clip_boxes(out, self.width, self.height)


class Detector(Stage):
    """Detect objects in every frame with an ONNX model run by onnxruntime.

    The result is an ``sv.Detections``: ``xyxy`` in the frame's pixels (float32,
    clipped to the frame), ``confidence``, ``class_id``, ``data["class_name"]``
    (a numpy array of str) and ``metadata["frame_index"]``.

    Three output layouts are understood, told apart by the output shape (and the
    model's metadata when the shape is dynamic); ``layout=`` forces one:

    - ``"yolox"``: ``[B, N, 5+C]`` with N one cell per grid position at strides
      8/16/32, boxes not decoded, score = obj * cls. Input: raw 0..255 BGR,
      letterboxed at the top-left with grey 114 (as YOLOX is trained).
    - ``"yolov5"``: ``[B, 3N, 5+C]`` (three anchors per cell), ``cx, cy, w, h``
      already in input pixels, score = obj * cls. Input: RGB / 255, centred
      letterbox (as Ultralytics does).
    - ``"yolov8"``: ``[B, 4+C, N]``, ``cx, cy, w, h`` in input pixels, no
      objectness. Input as for YOLOv5.

    Class names come from ``class_names=``, else the model's metadata (the
    ``names`` Ultralytics exports write), else COCO's 80 names for 80-class
    models. NMS is class-aware.

    The onnxruntime session is created in ``setup()``, inside the worker: the
    stage object itself is cheap and pickles. Batching: with ``batch=N`` the
    stage gets up to N frames per ``process_batch`` call and runs them in one
    session call when the model's batch dimension is dynamic (one call per
    frame otherwise); results come back in frame order.

    Args:
        model: a path to an ``.onnx`` file, or a known name (``"yolox_nano"``,
            ``"yolox_tiny"``, ``"yolox_s"``) resolved by ``resolve_model``.
        conf: minimum score kept.
        iou: NMS IoU threshold.
        classes: keep only these classes, by name or id.
        providers: execution providers by name (``"cuda"``, ``"tensorrt"``,
            ``"openvino"``, ``"coreml"``, full onnxruntime names, or a list in
            order of preference), ``"auto"`` for the best one available;
            CPU by default and always the last fallback. Asking for one
            onnxruntime does not offer raises ``ModelError``.
        threads: onnxruntime intra-op threads; default ``min(4, cpu count)``.
        batch, max_wait_ms: see ``fp.Stage``.
        layout: ``"auto"`` or the layout to assume.
        class_names: names for the model's class ids.
        imgsz: input side for models whose input size is dynamic.
        max_det: most detections returned per frame: the highest-scoring ones
            left after non-maximum suppression.

    Example::

        det = fp.stages.Detector("yolox_nano", conf=0.5, classes=["person", "car"])
        pipe.stage("detect", det, fps=5)
        # downstream: frame.results["detect"].data["class_name"]
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "yolox_nano",
        conf: float = 0.25,
        iou: float = 0.45,
        classes: Iterable[str | int] | None = None,
        providers: str | Sequence[str] | None = None,
        batch: int = 1,
        max_wait_ms: float = 5.0,
        *,
        threads: int | None = None,
        layout: Layout = "auto",
        class_names: Sequence[str] | None = None,
        imgsz: int = 640,
        max_det: int = 300,
    ) -> None:
        if not 0.0 <= conf <= 1.0 or not 0.0 < iou <= 1.0:
            raise ValueError(
                f"Detector: conf must be in [0, 1] and iou in (0, 1], got conf={conf}, iou={iou}"
            )
        if batch < 1:
            raise ValueError(f"Detector: batch must be >= 1, got {batch}")
        if layout not in ("auto", "yolox", "yolov5", "yolov8"):
            raise ValueError(
                f"Detector: layout must be auto, yolox, yolov5 or yolov8, got {layout!r}"
            )
        self.model = model
        self.conf, self.iou = float(conf), float(iou)
        self.classes = None if classes is None else tuple(classes)
        self.providers = _provider_names(providers)
        self.batch, self.max_wait_ms = int(batch), float(max_wait_ms)
        self.threads = threads
        self.layout: Layout = layout
        self.class_names = None if class_names is None else tuple(class_names)
        self.imgsz, self.max_det = int(imgsz), int(max_det)
        self._session: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # A live session never travels to another worker; setup() makes a new one.
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    # -- lifecycle ------------------------------------------------------------------------

    def setup(self) -> None:
        """Resolve the model, create the session and read its input/output format."""
        import onnxruntime as ort

        path = resolve_model(self.model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or min(4, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # Spinning worker threads keep cores busy between frames, which starves the
        # other stages of a pipeline on small machines.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        chosen = _choose_providers(self.providers, ort.get_available_providers())
        try:
            self._session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as exc:  # onnxruntime's errors have no common base class
            raise ModelError(f"onnxruntime cannot load {path}: {exc}") from exc
        self._read_format(path)

    def teardown(self) -> None:
        self._session = None

    def _read_format(self, path: Path) -> None:
        session = self._session
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1:
            raise ModelError(f"{path}: expected one image input, found {[i.name for i in inputs]}")
        shape = list(inputs[0].shape)
        if len(shape) != 4:
            raise ModelError(f"{path}: expected an input of shape [B, 3, H, W], got {shape}")
        meta = session.get_modelmeta().custom_metadata_map or {}
        size = _meta_imgsz(meta) or (self.imgsz, self.imgsz)
        self._input_name = inputs[0].name
        self._input_hw = (
            shape[2] if isinstance(shape[2], int) and shape[2] > 0 else size[0],
            shape[3] if isinstance(shape[3], int) and shape[3] > 0 else size[1],
        )
        self._input_dtype = np.float16 if "float16" in inputs[0].type else np.float32
        self._dynamic_batch = not (isinstance(shape[0], int) and shape[0] > 0)
        self._output_name = outputs[0].name
        self._meta = meta
        self._path = path
        self._decoder: _Decoder | None = None
        declared = outputs[0].shape
        if all(isinstance(d, int) and d > 0 for d in declared[1:]):
            self._decoder = self._make_decoder(tuple(declared))

    def _make_decoder(self, out_shape: tuple[int, ...]) -> _Decoder:
        layout, num_classes = _infer_layout(self.layout, self._input_hw, out_shape, self._meta)
        names = self._names_for(num_classes)
        keep = _class_filter(self.classes, names)
        return _Decoder(layout, self._input_hw, num_classes, names, keep)

    def _names_for(self, num_classes: int) -> tuple[str, ...]:
        if self.class_names is not None:
            if len(self.class_names) != num_classes:
                raise ModelError(
                    f"{self._path}: class_names has {len(self.class_names)} "
                    f"names but the model outputs {num_classes} classes"
                )
            return self.class_names
        from_meta = _meta_names(self._meta)
        if from_meta is not None and len(from_meta) == num_classes:
            return from_meta
        if num_classes == len(COCO_CLASSES):
            return COCO_CLASSES
        return tuple(f"class_{i}" for i in range(num_classes))

    # -- per frame -------------------------------------------------------------------------

    def process(self, frame: Frame) -> sv.Detections:
        """Detections for one frame."""
        return self.process_batch([frame])[0]

    def process_batch(self, frames: Sequence[Frame]) -> list[sv.Detections]:
        """Detections for each frame, in order; one session call when the batch is dynamic."""
        if self._session is None:
            raise RuntimeError("Detector.process called before setup()")
        if not frames:
            return []
        if self._dynamic_batch and len(frames) > 1:
            groups: list[Sequence[Frame]] = [frames]
        else:
            groups = [[frame] for frame in frames]
        results: list[sv.Detections] = []
        for group in groups:
            tensor, boxes = self._preprocess(group)
            output = self._session.run([self._output_name], {self._input_name: tensor})[0]
            if self._decoder is None:
                self._decoder = self._make_decoder(tuple(output.shape))
            for i, frame in enumerate(group):
                results.append(self._postprocess(output[i], boxes[i], frame.index))
        return results

    def _preprocess(self, frames: Sequence[Frame]) -> tuple[np.ndarray, list[_Letterbox]]:
        # The layout decides the preprocessing; before the first run of a model with
        # dynamic output shapes it is only known from the metadata.
        layout = self._decoder.layout if self._decoder else _guess_layout(self.layout, self._meta)
        height, width = self._input_hw
        tensor = np.empty((len(frames), 3, height, width), np.float32)
        boxes = []
        for i, frame in enumerate(frames):
            canvas, box = _letterbox(frame.image, (height, width), centred=layout != "yolox")
            if layout == "yolox":
                tensor[i] = canvas.transpose(2, 0, 1)
            else:
                tensor[i] = canvas[:, :, ::-1].transpose(2, 0, 1)
                tensor[i] *= 1.0 / 255.0
            boxes.append(box)
        return tensor.astype(self._input_dtype, copy=False), boxes

    def _postprocess(self, raw: np.ndarray, box: _Letterbox, index: int) -> sv.Detections:
        assert self._decoder is not None
        decoder = self._decoder
        xyxy, scores, class_ids = decoder.decode(raw.astype(np.float32, copy=False), self.conf)
        if len(scores):
            xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
            picked = cv2.dnn.NMSBoxesBatched(
                xywh.tolist(), scores.tolist(), class_ids.tolist(), self.conf, self.iou
            )
            keep = np.asarray(picked, np.int64).reshape(-1)
            # max_det caps what survives suppression; a cap before it (top_k) would
            # drop boxes that suppression keeps.
            keep = keep[np.argsort(-scores[keep], kind="stable")[: self.max_det]]
            xyxy, scores, class_ids = box.undo(xyxy[keep]), scores[keep], class_ids[keep]
        names = np.asarray(decoder.names, dtype=str)[class_ids]
        return make_detections(xyxy, scores, class_ids, names, frame_index=index)

    def __repr__(self) -> str:
        return f"Detector(model={os.fspath(self.model)!r}, conf={self.conf}, iou={self.iou})"


class _Decoder:
    """Turns one image's raw output into candidate boxes in network-input pixels."""

    def __init__(
        self,
        layout: str,
        input_hw: tuple[int, int],
        num_classes: int,
        names: tuple[str, ...],
        keep: np.ndarray | None,
    ) -> None:
        self.layout, self.num_classes, self.names, self.keep = layout, num_classes, names, keep
        if layout == "yolox":
            self.grid, self.stride = _yolox_grid(input_hw)

    def decode(self, raw: np.ndarray, conf: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.layout == "yolov8":
            rows = raw.T  # [4+C, N] -> [N, 4+C]
            class_scores = rows[:, 4:]
            objectness = None
        else:
            rows = raw
            class_scores = rows[:, 5:]
            objectness = rows[:, 4]
        if self.keep is not None:
            class_scores = np.where(self.keep, class_scores, 0.0)
        class_ids = class_scores.argmax(axis=1)
        scores = class_scores[np.arange(len(rows)), class_ids]
        if objectness is not None:
            scores = scores * objectness
        mask = scores >= conf
        rows, scores, class_ids = rows[mask], scores[mask], class_ids[mask]
        if self.layout == "yolox":
            grid, stride = self.grid[mask], self.stride[mask]
            centre = (rows[:, :2] + grid) * stride
            size = np.exp(rows[:, 2:4]) * stride
        else:
            centre, size = rows[:, :2], rows[:, 2:4]
        xyxy = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        return xyxy.astype(np.float32), scores.astype(np.float32), class_ids


def _yolox_grid(input_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    grids, strides = [], []
    for stride in _STRIDES:
        h, w = input_hw[0] // stride, input_hw[1] // stride
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        grids.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full((h * w, 1), stride))
    return (np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32))


def _yolox_cells(input_hw: tuple[int, int]) -> int:
    return sum((input_hw[0] // s) * (input_hw[1] // s) for s in _STRIDES)


def _infer_layout(
    requested: Layout, input_hw: tuple[int, int], out_shape: tuple[int, ...], meta: dict[str, str]
) -> tuple[str, int]:
    """``(layout, number of classes)`` for a model with output shape ``out_shape``."""
    if len(out_shape) != 3:
        raise ModelError(
            f"expected a detection output of rank 3 ([B, N, 5+C] or [B, 4+C, N]), "
            f"got shape {list(out_shape)}"
        )
    _, a, b = out_shape
    cells = _yolox_cells(input_hw)
    if requested == "yolov8" or (requested == "auto" and a < b):
        layout, num_classes = "yolov8", a - 4
    elif requested in ("yolox", "yolov5"):
        layout, num_classes = requested, b - 5
    elif a == cells:
        layout, num_classes = "yolox", b - 5
    elif a == 3 * cells:
        layout, num_classes = "yolov5", b - 5
    else:
        layout, num_classes = _guess_layout("auto", meta), b - 5
        if layout == "yolov8":
            layout = "yolov5"
    if num_classes < 1:
        raise ModelError(
            f"output shape {list(out_shape)} leaves no class scores for layout {layout}"
        )
    return layout, num_classes


def _guess_layout(requested: Layout, meta: dict[str, str]) -> str:
    """The layout before any output was seen: from the request, else the metadata."""
    if requested != "auto":
        return requested
    if "ultralytics" in meta.get("author", "").lower() or "task" in meta:
        return "yolov8"
    if "stride" in meta or "names" in meta:
        return "yolov5"
    return "yolox"


def _meta_value(meta: dict[str, str], key: str) -> Any:
    """A Python literal stored as text in the model's metadata, or None."""
    text = meta.get(key)
    if not text:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None


def _meta_names(meta: dict[str, str]) -> tuple[str, ...] | None:
    value = _meta_value(meta, "names")
    if isinstance(value, dict):
        return tuple(str(value[k]) for k in sorted(value))
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    return None


def _meta_imgsz(meta: dict[str, str]) -> tuple[int, int] | None:
    value = _meta_value(meta, "imgsz")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, list | tuple) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    return None


def _class_filter(
    classes: tuple[str | int, ...] | None, names: tuple[str, ...]
) -> np.ndarray | None:
    """A boolean mask over class ids, or ``None`` to keep every class."""
    if classes is None:
        return None
    keep = np.zeros(len(names), bool)
    index = {name: i for i, name in enumerate(names)}
    for item in classes:
        if isinstance(item, str):
            if item not in index:
                raise ModelError(
                    f"classes: {item!r} is not one of the model's class names "
                    f"(e.g. {', '.join(names[:8])}...)"
                )
            keep[index[item]] = True
        else:
            if not 0 <= int(item) < len(names):
                raise ModelError(
                    f"classes: id {item} is out of range for a model with {len(names)} classes"
                )
            keep[int(item)] = True
    return keep


def _letterbox(
    image: np.ndarray, size: tuple[int, int], centred: bool
) -> tuple[np.ndarray, _Letterbox]:
    """Fit ``image`` into ``size`` keeping its aspect ratio; grey 114 fills the rest."""
    height, width = image.shape[:2]
    ratio = min(size[0] / height, size[1] / width)
    if centred:
        new_w, new_h = round(width * ratio), round(height * ratio)
        # Ultralytics splits odd padding so the extra pixel goes right/bottom.
        left, top = round((size[1] - new_w) / 2 - 0.1), round((size[0] - new_h) / 2 - 0.1)
    else:
        new_w, new_h = int(width * ratio), int(height * ratio)
        left = top = 0
    canvas = np.full((size[0], size[1], 3), 114, np.uint8)
    resized = (
        image
        if (new_w, new_h) == (width, height)
        else cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    )
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas, _Letterbox(ratio, left, top, width, height)


def _provider_names(providers: str | Sequence[str] | None) -> tuple[str, ...]:
    """Full onnxruntime provider names for ``providers=``; checked for typos only."""
    if providers is None:
        return ("CPUExecutionProvider",)
    items = [providers] if isinstance(providers, str) else list(providers)
    names = []
    for item in items:
        if item == "auto":
            names.append("auto")
            continue
        full = PROVIDER_ALIASES.get(item.lower(), item)
        if not full.endswith("ExecutionProvider"):
            raise ValueError(
                f"Detector: unknown execution provider {item!r}; use one of "
                f"{', '.join(PROVIDER_ALIASES)}, 'auto', or a full onnxruntime "
                f"name such as 'CUDAExecutionProvider'"
            )
        names.append(full)
    return tuple(names)


def _choose_providers(requested: tuple[str, ...], available: Sequence[str]) -> list[str]:
    """The providers to create the session with, CPU last; ``ModelError`` if one is missing."""
    chosen: list[str] = []
    for name in requested:
        if name == "auto":
            chosen.extend(p for p in _AUTO_ORDER if p in available and p not in chosen)
            continue
        if name not in available:
            raise ModelError(
                f"execution provider {name} was asked for but this onnxruntime "
                f"offers only {', '.join(available)} (a GPU provider needs the "
                f"matching onnxruntime package, e.g. onnxruntime-gpu)"
            )
        if name not in chosen:
            chosen.append(name)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen
