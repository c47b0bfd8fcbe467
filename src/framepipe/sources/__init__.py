"""Where frames come from."""

from ._base import Captured, Source, SourceContext
from ._camera import Camera
from ._images import Images
from ._probe import probe
from ._scene import Scene
from ._stream import Stream
from ._synthetic import Generator, StillImage, Synthetic
from ._video import VideoFile

__all__ = [
    "Camera",
    "Captured",
    "Generator",
    "Images",
    "Scene",
    "Source",
    "SourceContext",
    "StillImage",
    "Stream",
    "Synthetic",
    "VideoFile",
    "probe",
]
