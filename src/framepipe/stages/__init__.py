"""Built-in vision stages: detection, faces, motion, tracking, counting, drawing.

Each is an ``fp.Stage``: cheap to build and to pickle, with its model or state
created in ``setup()`` inside the worker that runs it. Detections travel as
``supervision.Detections``; counters return small frozen dataclasses; ``Annotate``
returns the drawn image::

    pipe.stage("detect", fp.stages.Detector("yolox_nano", classes=["car"]), fps=10)
    pipe.stage("track", fp.stages.Tracker("detect"))
    pipe.stage("count", fp.stages.LineCounter((190, 220), (640, 220)))
    pipe.stage("annotate", fp.stages.Annotate())

They need the ``vision`` extra (supervision, scipy, onnxruntime):
``pip install 'framepipe[vision]'``.
"""

from .._errors import missing_extra

try:
    from ._annotate import Annotate
    from ._coco import COCO_CLASSES
    from ._counters import CountEvent, LineCount, LineCounter, ZoneCount, ZoneCounter
    from ._detector import Detector
    from ._faces import Faces
    from ._models import KNOWN_MODELS, models_dirs, resolve_model
    from ._motion import Motion
    from ._tracker import Tracker
except ModuleNotFoundError as exc:  # supervision, scipy: installed with the "vision" extra
    if exc.name not in ("supervision", "scipy", "onnxruntime"):
        raise
    raise missing_extra("fp.stages", "vision", exc) from None

# Plain sorted(), as for framepipe.__all__ (a test compares with sorted()).
__all__ = [  # noqa: RUF022
    "Annotate",
    "COCO_CLASSES",
    "CountEvent",
    "Detector",
    "Faces",
    "KNOWN_MODELS",
    "LineCount",
    "LineCounter",
    "Motion",
    "Tracker",
    "ZoneCount",
    "ZoneCounter",
    "models_dirs",
    "resolve_model",
]
