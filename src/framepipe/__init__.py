"""framepipe: real-time video analysis pipelines.

Sources -> stages -> sinks, each node with its own rate and back-pressure
policy, running inline, in threads, or in separate processes with frames in
shared memory.
"""

from . import sinks, sources, stages
from ._errors import (
    ConfigError,
    FramepipeError,
    GraphError,
    ModelError,
    SinkError,
    SourceError,
    StageError,
    WorkerError,
)
from ._frame import Frame
from ._stage import Stage, StageContext

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Frame",
    "FramepipeError",
    "GraphError",
    "ModelError",
    "SinkError",
    "SourceError",
    "Stage",
    "StageContext",
    "StageError",
    "WorkerError",
    "__version__",
    "sinks",
    "sources",
    "stages",
]
