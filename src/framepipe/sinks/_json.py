"""One JSON encoding of result values, shared by the JSON Lines and webhook sinks and the web view.

``to_json(value)`` turns whatever a stage returned into JSON-native data
(``dict`` with ``str`` keys, ``list``, ``str``, ``int``, ``float``, ``bool``,
``None``); ``dumps(value)`` is that as one compact line of text. The rules, in
the order they are tried:

==========================  ===============================================================
value                       becomes
==========================  ===============================================================
``float`` NaN / infinity    ``None`` (strict JSON has neither; browsers reject them)
numpy scalar                the Python number, ``bool`` or ``str``; ``float32`` keeps its
                            shortest form (``0.9``, not ``0.8999999761581421``)
``H x W x C`` uint8 array   ``{"image": [h, w, c]}``: pictures are never serialized
larger array (> 4096 items) ``{"array": [shape...], "dtype": "float32"}``
smaller array               nested lists
``supervision.Detections``  one object per detection: ``xyxy``, ``confidence``,
                            ``class_id``, ``tracker_id``, ``mask`` (as an array, so a large
                            mask is a placeholder) and every ``data`` column such as
                            ``class_name``; ``metadata`` is left out
mapping                     object; non-string keys become their JSON text (``3`` -> ``"3"``)
named tuple, dataclass      object of its fields
list, tuple, set, deque     list (sets sorted when their items can be)
enum                        its value
path                        ``str``
bytes                       ``{"bytes": n, "base64": "..."}``; past 4 KiB only ``{"bytes": n}``
date / time / datetime      ISO 8601 text
``Fraction``, ``Decimal``   ``float``
anything else               its ``repr`` (cut at 1000 characters), never an exception
==========================  ===============================================================

Example::

    dumps({"count": np.int64(3), "frame": np.zeros((480, 640, 3), np.uint8)})
    # '{"count":3,"frame":{"image":[480,640,3]}}'
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import fractions
import json
import math
import os
import sys
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .._frame import Frame

__all__ = ["MAX_ARRAY_ITEMS", "MAX_BYTES", "dumps", "encode", "frame_record", "to_json"]

#: Arrays with more items than this become a ``{"array": shape, "dtype": ...}`` placeholder.
MAX_ARRAY_ITEMS = 4096
#: ``bytes`` longer than this keep only their length.
MAX_BYTES = 4096
# Nesting deeper than this is cut short with repr(): it also ends self-referencing containers.
_MAX_DEPTH = 32
_MAX_REPR = 1000


def to_json(value: Any) -> Any:
    """Return ``value`` as JSON-native data, by the rules in the module docstring.

    Never raises for an odd value (it falls back to ``repr``) and never copies
    an image into the output.
    """
    return _convert(value, 0)


def dumps(value: Any) -> str:
    """``to_json(value)`` as compact JSON text on one line (UTF-8 characters kept)."""
    return encode(to_json(value))


def encode(data: Any) -> str:
    """Compact one-line JSON text of data that is already JSON-native (``to_json`` output)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def frame_record(frame: Frame, nodes: Iterable[str]) -> dict[str, Any] | None:
    """The JSON-native record of one frame, or None when none of ``nodes`` has a result in it.

    The record is ``{"source", "index", "pts", "timestamp", "results"}``, ``results``
    holding ``to_json(frame.results[node])`` for each node of ``nodes`` the frame has a
    result of. JSON Lines files hold one record a line; webhooks post lists of them. A
    result that reached a real-time join after its frame was written (``frame.late``)
    gets a record of its own with ``"late": true``.
    """
    results = {node: _convert(frame.results[node], 0) for node in nodes if node in frame.results}
    if not results:
        return None
    record = {
        "source": frame.source,
        "index": int(frame.index),
        "pts": _convert(float(frame.pts), 0),
        "timestamp": _convert(float(frame.timestamp), 0),
        "results": results,
    }
    if frame.late:
        record["late"] = True
    return record


def _convert(value: Any, depth: int) -> Any:
    # The common JSON-native cases first: this runs for every value of every frame.
    kind = type(value)
    if value is None or kind is str or kind is bool or kind is int:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if depth >= _MAX_DEPTH:
        return _fallback(value)
    if isinstance(value, enum.Enum):  # before int and str: IntEnum and StrEnum are both
        return _convert(value.value, depth + 1)
    # Subclasses of the native types (np.float64 and np.str_ among them) as their base type.
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _convert(float(value), depth)
    if isinstance(value, np.generic):
        return _scalar(value)
    if isinstance(value, np.ndarray):
        return _array(value, depth)
    # Only look for Detections when supervision is loaded: importing it takes most of a second,
    # and no Detections object can exist without it.
    sv = sys.modules.get("supervision")
    if sv is not None and isinstance(value, sv.Detections):
        return _detections(value, depth)
    if isinstance(value, Mapping):
        return {_key(k): _convert(v, depth + 1) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return _convert(value._asdict(), depth)
    if isinstance(value, (list, tuple, deque)):
        return [_convert(item, depth + 1) for item in value]
    if isinstance(value, (set, frozenset)):
        return [_convert(item, depth + 1) for item in _sorted_if_possible(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Field by field rather than dataclasses.asdict(), which deep-copies every array.
        return {
            f.name: _convert(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)
        }
    if isinstance(value, os.PathLike):
        return os.fsdecode(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _bytes(memoryview(value))
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (fractions.Fraction, decimal.Decimal)):
        return _convert(float(value), depth)
    return _fallback(value)


def _scalar(value: np.generic) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        if not np.isfinite(value):
            return None
        # str() of a float32 is its shortest round-trip form; float() of it reads well.
        return float(value) if isinstance(value, np.float64) else float(str(value))
    if isinstance(value, (np.str_, np.bytes_)):
        return _convert(value.item(), 0)
    return str(value)


def _array(array: np.ndarray, depth: int) -> Any:
    if array.ndim == 0:
        return _convert(array[()], depth)
    if array.ndim == 3 and array.dtype == np.uint8 and array.shape[2] in (1, 3, 4):
        return {"image": [int(n) for n in array.shape]}
    if array.size > MAX_ARRAY_ITEMS:
        return {"array": [int(n) for n in array.shape], "dtype": str(array.dtype)}
    if array.dtype.kind in "biu":
        return array.tolist()
    if array.dtype.kind == "f":
        if array.dtype == np.float64:
            items = array.tolist()
            return items if np.isfinite(array).all() else _convert(items, depth)
        return _short_floats(array)
    # Strings, bytes, objects, dates: tolist() gives Python objects; convert them one by one.
    return _convert(array.tolist(), depth)


def _short_floats(array: np.ndarray) -> list[Any]:
    if array.ndim > 1:
        return [_short_floats(row) for row in array]
    return [_scalar(item) for item in array]


def _detections(detections: Any, depth: int) -> list[dict[str, Any]]:
    columns: list[tuple[str, Any]] = [("xyxy", detections.xyxy)]
    for name in ("confidence", "class_id", "tracker_id", "mask"):
        column = getattr(detections, name, None)
        if column is not None:
            columns.append((name, column))
    columns.extend((str(key), column) for key, column in (detections.data or {}).items())
    return [
        {name: _convert(column[i], depth + 1) for name, column in columns}
        for i in range(len(detections))
    ]


def _key(key: Any) -> str:
    if isinstance(key, str):
        return str(key)
    return encode(_convert(key, _MAX_DEPTH - 1))


def _sorted_if_possible(items: Iterable[Any]) -> list[Any]:
    try:
        return sorted(items)
    except TypeError:
        return list(items)


def _bytes(data: memoryview) -> dict[str, Any]:
    # nbytes first: a large buffer is described without being copied.
    if data.nbytes > MAX_BYTES:
        return {"bytes": data.nbytes}
    return {"bytes": data.nbytes, "base64": base64.b64encode(data).decode("ascii")}


def _fallback(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not stop a sink
        text = f"<{type(value).__qualname__} (repr failed: {type(exc).__name__})>"
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 1] + "…"
