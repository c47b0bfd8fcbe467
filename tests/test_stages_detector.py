"""Detector: output layouts, letterboxing, NMS, class filters, providers, batching, accuracy.

The YOLOv5/YOLOv8 layouts are tested with tiny ONNX models written here byte by
byte (no ``onnx`` package needed): they ignore the image and output a fixed
prediction tensor, so every decoded box can be checked to the pixel. The YOLOX
layout is tested with the real YOLOX-Nano model on real clips from
../shared/media (skipped when that folder is absent).

``video_frames`` is shared with the other ``test_stages_*`` modules.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import onnxruntime as ort
import pytest
import supervision as sv

from framepipe import ModelError
from framepipe.stages import COCO_CLASSES, Detector
from framepipe.testing import make_frame, run_stage


def video_frames(path: Path, *, stop: int | None = None, fps: float | None = None) -> Iterator:
    """Decode ``path`` with PyAV into read-only frames, one at a time (clips are large)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = fps or float(stream.average_rate or 30)
        for index, decoded in enumerate(container.decode(stream)):
            if stop is not None and index >= stop:
                return
            yield make_frame(decoded.to_ndarray(format="bgr24"), index=index, pts=index / rate)


# -- a minimal ONNX writer --------------------------------------------------------------------
# Just enough of the protobuf wire format for ModelProto: a graph that outputs a constant
# prediction tensor broadcast over the batch: output = ReduceMean(images) * 0 + preds.


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _tensor(name: str, array: np.ndarray) -> bytes:
    kind = {np.dtype(np.float32): 1, np.dtype(np.int64): 7}[array.dtype]
    dims = b"".join(_field(1, d) for d in array.shape)
    return dims + _field(2, kind) + _field(8, name) + _field(9, array.tobytes())


def _value_info(name: str, shape: list[int | str]) -> bytes:
    dims = b"".join(_field(1, _field(2, d) if isinstance(d, str) else _field(1, d)) for d in shape)
    tensor_type = _field(1, 1) + _field(2, dims)
    return _field(1, name) + _field(2, _field(1, tensor_type))


def _node(op: str, inputs: list[str], output: str, attributes: bytes = b"") -> bytes:
    body = b"".join(_field(1, i) for i in inputs) + _field(2, output) + _field(4, op)
    return body + attributes


def write_model(
    path: Path,
    preds: np.ndarray,
    *,
    size: int = 320,
    batch: int | str = 1,
    metadata: dict[str, str] | None = None,
) -> Path:
    """An ONNX model with input ``[batch, 3, size, size]`` whose output is ``preds``."""
    axes = _field(1, "axes") + b"".join(_field(8, a) for a in (1, 2, 3)) + _field(20, 7)
    keepdims = _field(1, "keepdims") + _field(3, 1) + _field(20, 2)
    nodes = [
        _node("ReduceMean", ["images"], "mean", _field(5, axes) + _field(5, keepdims)),
        _node("Reshape", ["mean", "shape"], "flat"),
        _node("Mul", ["flat", "zero"], "nothing"),
        _node("Add", ["nothing", "preds"], "output"),
    ]
    initializers = [
        _tensor("preds", preds.astype(np.float32)[None]),
        _tensor("shape", np.array([-1, 1, 1], np.int64)),
        _tensor("zero", np.zeros((), np.float32)),
    ]
    graph = b"".join(_field(1, n) for n in nodes) + _field(2, "test")
    graph += b"".join(_field(5, t) for t in initializers)
    graph += _field(11, _value_info("images", [batch, 3, size, size]))
    graph += _field(12, _value_info("output", [batch, *preds.shape]))
    model = _field(1, 8) + _field(2, "framepipe-tests") + _field(7, graph)
    model += _field(8, _field(1, "") + _field(2, 13))
    for key, value in (metadata or {}).items():
        model += _field(14, _field(1, key) + _field(2, value))
    path.write_bytes(model)
    return path


CELLS_320 = 40 * 40 + 20 * 20 + 10 * 10  # grid cells at strides 8, 16, 32 for 320x320


def v8_preds(rows: list[tuple[float, float, float, float, int, float]], classes: int = 80):
    """``[4+C, N]`` YOLOv8 predictions with the given ``(cx, cy, w, h, class, score)`` rows."""
    preds = np.zeros((4 + classes, CELLS_320), np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(rows):
        preds[:4, i] = (cx, cy, w, h)
        preds[4 + cls, i] = score
    return preds


# A 640x480 frame is scaled by 0.5 into 320x240, centred at top 40 in the 320x320 input:
# input box (cx 160, cy 160, w 100, h 50) is frame box (220, 190, 420, 290).
FRAME = np.zeros((480, 640, 3), np.uint8)
EXPECTED = [220.0, 190.0, 420.0, 290.0]


def test_coco_names_are_spelled_as_coco_spells_them() -> None:
    assert len(COCO_CLASSES) == 80
    assert COCO_CLASSES[3] == "motorcycle" and COCO_CLASSES[62] == "tv"
    assert {"couch", "potted plant", "dining table", "airplane"} <= set(COCO_CLASSES)
    assert not {"motorbike", "tvmonitor", "sofa", "aeroplane"} & set(COCO_CLASSES)


def test_yolov8_layout_boxes_nms_and_names(tmp_path: Path) -> None:
    preds = v8_preds(
        [
            (160, 160, 100, 50, 2, 0.9),  # a car
            (163, 160, 100, 50, 2, 0.8),  # the same car again: removed by NMS
            (160, 160, 100, 50, 7, 0.7),  # a truck on the same spot: NMS is per class
            (300, 300, 40, 40, 0, 0.2),  # below conf
        ]
    )
    model = write_model(tmp_path / "v8.onnx", preds)
    [result] = run_stage(Detector(model, conf=0.25), [make_frame(FRAME, index=7)])
    assert isinstance(result, sv.Detections)
    assert result.xyxy.dtype == np.float32 and result.confidence.dtype == np.float32
    assert result.class_id.tolist() == [2, 7]
    assert result.data["class_name"].tolist() == ["car", "truck"]
    assert isinstance(result.data["class_name"], np.ndarray)
    np.testing.assert_allclose(result.xyxy, [EXPECTED, EXPECTED], atol=0.01)
    np.testing.assert_allclose(result.confidence, [0.9, 0.7], atol=1e-6)
    assert result.metadata["frame_index"] == 7


def test_yolov5_layout_multiplies_objectness(tmp_path: Path) -> None:
    preds = np.zeros((3 * CELLS_320, 85), np.float32)
    preds[5, :5] = (160, 160, 100, 50, 0.5)  # objectness 0.5
    preds[5, 5 + 2] = 0.9  # car 0.9 -> score 0.45
    preds[9, :5] = (10, 10, 5, 5, 0.5)
    preds[9, 5] = 0.3  # person: 0.15, under conf
    model = write_model(tmp_path / "v5.onnx", preds)
    [result] = run_stage(Detector(model, conf=0.25), [make_frame(FRAME)])
    assert result.data["class_name"].tolist() == ["car"]
    np.testing.assert_allclose(result.confidence, [0.45], atol=1e-6)
    np.testing.assert_allclose(result.xyxy, [EXPECTED], atol=0.01)


def test_boxes_are_clipped_to_the_frame(tmp_path: Path) -> None:
    model = write_model(tmp_path / "v8.onnx", v8_preds([(10, 60, 60, 60, 0, 0.9)]))
    [result] = run_stage(Detector(model), [make_frame(FRAME)])
    np.testing.assert_allclose(result.xyxy, [[0, 0, 80, 100]], atol=0.01)


def test_classes_filter_by_name_or_id_and_names_from_metadata(tmp_path: Path) -> None:
    preds = v8_preds([(160, 160, 100, 50, 0, 0.9), (60, 60, 20, 20, 1, 0.8)], classes=2)
    names = "{0: 'cat', 1: 'dog'}"  # what Ultralytics exports write
    model = write_model(tmp_path / "pets.onnx", preds, metadata={"names": names})
    frames = [make_frame(FRAME)]
    [both] = run_stage(Detector(model), frames)
    assert both.data["class_name"].tolist() == ["cat", "dog"]
    [dogs] = run_stage(Detector(model, classes=["dog"]), frames)
    assert dogs.data["class_name"].tolist() == ["dog"]
    [cats] = run_stage(Detector(model, classes=[0]), frames)
    assert cats.data["class_name"].tolist() == ["cat"]
    with pytest.raises(ModelError, match="'horse' is not one of the model's class names"):
        run_stage(Detector(model, classes=["horse"]), frames)
    with pytest.raises(ModelError, match="class_names has 3 names"):
        run_stage(Detector(model, class_names=["a", "b", "c"]), frames)


def test_no_detections_is_an_empty_result_with_every_field(tmp_path: Path) -> None:
    model = write_model(tmp_path / "v8.onnx", v8_preds([]))
    [result] = run_stage(Detector(model), [make_frame(FRAME)])
    assert len(result) == 0
    assert result.xyxy.shape == (0, 4) and result.data["class_name"].shape == (0,)
    assert result.confidence is not None and result.class_id is not None


def test_dynamic_batch_runs_one_session_call(tmp_path: Path, monkeypatch) -> None:
    preds = v8_preds([(160, 160, 100, 50, 2, 0.9)])
    model = write_model(tmp_path / "dyn.onnx", preds, batch="batch")
    calls: list[int] = []
    real_run = ort.InferenceSession.run

    def counting_run(self, names, feed, *args):  # type: ignore[no-untyped-def]
        calls.append(next(iter(feed.values())).shape[0])
        return real_run(self, names, feed, *args)

    monkeypatch.setattr(ort.InferenceSession, "run", counting_run)
    detector = Detector(model, batch=3)
    assert detector.batch == 3
    detector.setup()
    # Frames of different sizes: each result is mapped back with its own letterbox.
    frames = [
        make_frame(FRAME, index=0),
        make_frame(np.zeros((320, 320, 3), np.uint8), index=1),
        make_frame(FRAME, index=2),
    ]
    results = detector.process_batch(frames)
    assert calls == [3]
    assert [r.metadata["frame_index"] for r in results] == [0, 1, 2]
    np.testing.assert_allclose(results[0].xyxy, [EXPECTED], atol=0.01)
    np.testing.assert_allclose(results[1].xyxy, [[110, 135, 210, 185]], atol=0.01)

    # A model with a fixed batch of 1 gets one call per frame, same results.
    fixed = Detector(write_model(tmp_path / "fixed.onnx", preds), batch=3)
    fixed.setup()
    calls.clear()
    again = fixed.process_batch(frames)
    assert calls == [1, 1, 1]
    for a, b in zip(results, again, strict=True):
        np.testing.assert_allclose(a.xyxy, b.xyxy)


def test_providers(tmp_path: Path) -> None:
    model = write_model(tmp_path / "v8.onnx", v8_preds([(160, 160, 100, 50, 2, 0.9)]))
    with pytest.raises(ValueError, match="unknown execution provider 'gpu'"):
        Detector(model, providers="gpu")
    missing = next(
        p
        for p in ("cuda", "tensorrt", "coreml", "openvino")
        if Detector(model, providers=p).providers[0] not in ort.get_available_providers()
    )
    with pytest.raises(ModelError, match="was asked for but this onnxruntime offers only"):
        run_stage(Detector(model, providers=missing), [make_frame(FRAME)])
    [result] = run_stage(Detector(model, providers="auto", threads=1), [make_frame(FRAME)])
    assert len(result) == 1
    [result] = run_stage(Detector(model, providers=["cpu"]), [make_frame(FRAME)])
    assert len(result) == 1


def test_pickles_without_its_session(tmp_path: Path) -> None:
    model = write_model(tmp_path / "v8.onnx", v8_preds([(160, 160, 100, 50, 2, 0.9)]))
    detector = Detector(model, conf=0.3)
    detector.setup()
    copy = pickle.loads(pickle.dumps(detector))
    assert copy._session is None and copy.conf == 0.3
    [result] = run_stage(copy, [make_frame(FRAME)])
    assert result.data["class_name"].tolist() == ["car"]


# -- the real YOLOX-Nano on real clips ----------------------------------------------------------


@pytest.fixture(scope="module")
def nano(shared_media: Path) -> Path:
    return shared_media / "models" / "yolox_nano.onnx"


def count_per_frame(model: Path, clip: Path, label: str, *, stop: int | None = None) -> list[int]:
    results = run_stage(Detector(model, conf=0.5), video_frames(clip, stop=stop))
    return [int((r.data["class_name"] == label).sum()) for r in results]


def test_yolox_nano_counts_the_people_in_the_gifs(nano: Path, media_video) -> None:
    walking = count_per_frame(
        nano, media_video("face-demographics-walking-and-pause.gif"), "person"
    )
    assert len(walking) == 41 and set(walking) == {3}
    turning = count_per_frame(
        nano, media_video("head-pose-face-detection-female-and-male.gif"), "person"
    )
    assert len(turning) == 56 and set(turning) == {2}


def test_yolox_nano_finds_cars_in_every_traffic_frame(nano: Path, media_video) -> None:
    cars = count_per_frame(nano, media_video("slow_traffic_small.mp4"), "car")
    assert len(cars) == 914
    assert min(cars) >= 1
    assert 4.6 <= float(np.mean(cars)) <= 5.2  # 4.93 measured; ../shared/media says about 4.9
    assert max(cars) <= 9


def test_yolox_nano_letterbox_is_top_left_and_boxes_land_on_people(nano: Path, media_video) -> None:
    frame = next(video_frames(media_video("head-pose-face-detection-female-and-male.gif")))
    [result] = run_stage(Detector(nano, conf=0.5, classes=["person"]), [frame])
    # The two people stand left and right of the middle and fill the frame's height.
    boxes = result.xyxy[np.argsort(result.xyxy[:, 0])]
    assert boxes[0, 2] < 260 < boxes[1, 0] + 20
    assert (boxes[:, 3] > 250).all() and (boxes[:, 1] < 80).all()


def test_yolox_nano_batch_loops_over_a_fixed_batch_model(nano: Path, media_video) -> None:
    frames = list(video_frames(media_video("face-demographics-walking-and-pause.gif"), stop=6))
    one = run_stage(Detector(nano, conf=0.5), frames)
    detector = Detector(nano, conf=0.5, batch=4)
    detector.setup()
    batched = detector.process_batch(frames[:4]) + detector.process_batch(frames[4:])
    for a, b in zip(one, batched, strict=True):
        np.testing.assert_allclose(a.xyxy, b.xyxy)
        assert a.data["class_name"].tolist() == b.data["class_name"].tolist()


def test_max_det_caps_what_survives_nms(nano: Path, media_video) -> None:
    """A crowded image at conf 0.01: thousands of candidates, some 60 boxes after NMS.

    Capping the candidates before NMS (its ``top_k``) lost boxes that NMS keeps: 55
    instead of 65 here. The cap applies to what NMS keeps.
    """
    clip = video_frames(media_video("slow_traffic_small.mp4"), stop=301)
    tiles = [f.image for f in clip if f.index in (0, 100, 200, 300)]
    crowded = np.concatenate(
        [np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:4], axis=1)], axis=0
    )
    frame = make_frame(np.ascontiguousarray(crowded))
    [uncapped] = run_stage(Detector(nano, conf=0.01, max_det=100_000), [frame])
    [default] = run_stage(Detector(nano, conf=0.01), [frame])
    assert 50 <= len(uncapped) < 300
    # The default cap of 300 is above what NMS keeps, so it removes nothing.
    np.testing.assert_array_equal(default.xyxy, uncapped.xyxy)
    [top] = run_stage(Detector(nano, conf=0.01, max_det=5), [frame])
    assert top.confidence.tolist() == sorted(uncapped.confidence.tolist(), reverse=True)[:5]
