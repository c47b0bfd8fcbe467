"""The shared JSON encoding of result values (framepipe.sinks._json)."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from framepipe.sinks._json import MAX_BYTES, dumps, frame_record, to_json
from framepipe.testing import make_frame


def strict_loads(text: str) -> Any:
    """json.loads that rejects NaN and Infinity, as browsers and most servers do."""

    def reject(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=reject)


def detections() -> sv.Detections:
    return sv.Detections(
        xyxy=np.array([[10.5, 20.25, 110.0, 220.0], [1, 2, 3, 4]], np.float32),
        confidence=np.array([0.9, 0.35], np.float32),
        class_id=np.array([2, 0]),
        tracker_id=np.array([7, 8]),
        data={"class_name": np.array(["car", "person"])},
    )


def test_native_values_pass_through() -> None:
    value = {"a": 1, "b": 2.5, "c": "x", "d": None, "e": True, "f": [1, [2, 3]]}
    assert to_json(value) == value


def test_numpy_scalars_become_python_values() -> None:
    out = to_json([np.int64(3), np.uint8(255), np.float64(0.25), np.bool_(True), np.str_("s")])
    assert out == [3, 255, 0.25, True, "s"]
    assert [type(v) for v in out] == [int, int, float, bool, str]


def test_float32_keeps_its_short_form() -> None:
    assert to_json(np.float32(0.9)) == 0.9
    assert dumps(np.array([0.1, 0.2], np.float32)) == "[0.1,0.2]"


def test_non_finite_floats_become_null() -> None:
    values = [math.nan, math.inf, np.float32("nan"), np.array([1.0, np.inf])]
    assert to_json(values) == [None, None, None, [1.0, None]]
    strict_loads(dumps(values))


def test_images_are_never_serialized() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    assert to_json(image) == {"image": [480, 640, 3]}
    assert to_json(np.zeros((2, 2, 3), np.uint8)) == {"image": [2, 2, 3]}
    assert len(dumps({"annotated": image})) < 50


def test_large_arrays_become_placeholders_and_small_ones_lists() -> None:
    assert to_json(np.zeros((100, 100), np.float32)) == {"array": [100, 100], "dtype": "float32"}
    assert to_json(np.arange(6).reshape(2, 3)) == [[0, 1, 2], [3, 4, 5]]
    assert to_json(np.array(["a", "b"])) == ["a", "b"]
    assert to_json(np.array(5)) == 5


def test_detections_become_one_object_per_detection() -> None:
    out = to_json(detections())
    assert out == [
        {
            "xyxy": [10.5, 20.25, 110.0, 220.0],
            "confidence": 0.9,
            "class_id": 2,
            "tracker_id": 7,
            "class_name": "car",
        },
        {
            "xyxy": [1.0, 2.0, 3.0, 4.0],
            "confidence": 0.35,
            "class_id": 0,
            "tracker_id": 8,
            "class_name": "person",
        },
    ]
    assert to_json(sv.Detections.empty()) == []


def test_detections_without_optional_columns_and_with_masks() -> None:
    masks = np.zeros((1, 120, 160), bool)
    out = to_json(sv.Detections(xyxy=np.array([[0, 0, 5, 5]], np.float32), mask=masks))
    # Absent columns are left out; a full-size mask becomes a placeholder, not 19200 booleans.
    assert out == [{"xyxy": [0.0, 0.0, 5.0, 5.0], "mask": {"array": [120, 160], "dtype": "bool"}}]


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass(frozen=True)
class Count:
    label: str
    total: np.int64
    boxes: np.ndarray


Point = collections.namedtuple("Point", "x y")


def test_containers_and_common_types() -> None:
    out = to_json(
        {
            "dataclass": Count("car", np.int64(4), np.array([[1, 2]])),
            "namedtuple": Point(1, 2),
            "tuple": (1, "a"),
            "set": {3, 1, 2},
            "deque": collections.deque([1, 2]),
            "enum": Colour.RED,
            "intenum": Level.HIGH,
            "path": Path("/data/out.mp4"),
            "when": datetime.datetime(2024, 5, 6, 7, 8, 9),
            3: "int key",
            ("cam", 1): "tuple key",
        }
    )
    assert out == {
        "dataclass": {"label": "car", "total": 4, "boxes": [[1, 2]]},
        "namedtuple": {"x": 1, "y": 2},
        "tuple": [1, "a"],
        "set": [1, 2, 3],
        "deque": [1, 2],
        "enum": "red",
        "intenum": 3,
        "path": "/data/out.mp4",
        "when": "2024-05-06T07:08:09",
        "3": "int key",
        '["cam",1]': "tuple key",
    }


def test_bytes_are_base64_when_short_and_a_length_when_long() -> None:
    assert to_json(b"hi") == {"bytes": 2, "base64": "aGk="}
    assert to_json(bytes(MAX_BYTES + 1)) == {"bytes": MAX_BYTES + 1}


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


class Broken:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_unknown_objects_fall_back_to_repr_and_never_raise() -> None:
    assert to_json(Opaque()) == "<Opaque thing>"
    assert "Broken" in to_json(Broken())
    looped: list[Any] = []
    looped.append(looped)
    strict_loads(dumps(looped))  # ends, and is valid JSON
    assert len(to_json("x" * 5000)) == 5000  # strings are data, not cut
    assert len(to_json(type("Long", (), {"__repr__": lambda self: "y" * 5000})())) <= 1000


def test_a_frame_record_holds_the_results_of_the_present_nodes() -> None:
    frame = make_frame(index=7, pts=0.25, source="cam", results={"detect": detections(), "n": 2})
    record = frame_record(frame, ["detect", "missing", "n"])
    assert record is not None
    assert set(record) == {"source", "index", "pts", "timestamp", "results"}
    assert (record["source"], record["index"], record["pts"]) == ("cam", 7, 0.25)
    assert record["timestamp"] == frame.timestamp
    assert list(record["results"]) == ["detect", "n"]
    assert record["results"]["detect"][0]["class_name"] == "car"
    assert record["results"]["n"] == 2
    strict_loads(json.dumps(record))
    assert frame_record(frame, ["missing"]) is None
