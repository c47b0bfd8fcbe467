"""framepipe: real-time video analysis pipelines.

Sources -> stages -> sinks, each node with its own rate and back-pressure
policy, running inline, in threads, or in separate processes with frames in
shared memory.
"""

from typing import TYPE_CHECKING, Any

from . import sinks, sources
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
from ._profile import NodeCost, Profile
from ._run import Run
from ._stage import Stage, StageContext
from .stats import NodeStats, RunStats

if TYPE_CHECKING:
    from . import stages

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The vision stages pull in supervision, scipy and onnxruntime (the "vision" extra):
    # load them on first use, so worker processes that never run a vision stage start
    # fast and the engine works without them.
    if name == "stages":
        import importlib

        return importlib.import_module(".stages", __name__)
    raise AttributeError(f"module 'framepipe' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "Frame",
    "FramepipeError",
    "GraphError",
    "ModelError",
    "Node",
    "NodeCost",
    "NodeStats",
    "Pipeline",
    "Profile",
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
