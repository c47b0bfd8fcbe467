"""pystream-pipeline 0.2.0's serial pipeline, timed: the overhead benchmark's baseline.

Runs in its own environment (pystream-pipeline needs numpy < 2; see
benchmarks/README.md), so it imports nothing from framepipe or the benchmarks.
Usage: ``python _pystream_serial.py STAGES FRAMES``; prints one JSON object:
``{"fps": ..., "cpu_s": ...}``.

Frames are 64x64 BGR arrays made beforehand (sharing one image), pushed with
``forward`` and read back with ``get_results``, the way its docs drive a
serial pipeline; the stages return their input, like framepipe's trivial stage.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from pystream import Pipeline


def identity(data: object) -> object:
    return data


def main() -> None:
    stages, frames = int(sys.argv[1]), int(sys.argv[2])
    image = np.full((64, 64, 3), 114, np.uint8)
    pipeline = Pipeline()
    for i in range(stages):
        pipeline.add(identity, f"stage{i + 1}")
    pipeline.serialize()
    began, cpu = time.perf_counter(), time.process_time()
    for _ in range(frames):
        pipeline.forward(image)
        pipeline.get_results()
    took, used = time.perf_counter() - began, time.process_time() - cpu
    pipeline.cleanup()
    print(json.dumps({"fps": frames / took, "cpu_s": used}))


if __name__ == "__main__":
    main()
