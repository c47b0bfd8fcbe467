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
from ._graph import Node, Pipeline
from ._policy import Queue
from ._run import Run
from ._stage import Stage, StageContext
from .stats import NodeStats, RunStats

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Frame",
    "FramepipeError",
    "GraphError",
    "ModelError",
    "Node",
    "NodeStats",
    "Pipeline",
    "Queue",
    "Run",
    "RunStats",
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
