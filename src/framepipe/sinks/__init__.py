"""Where results leave a pipeline."""

from ._base import Sink, SinkContext
from ._collect import Callback, Collect

__all__ = ["Callback", "Collect", "Sink", "SinkContext"]
