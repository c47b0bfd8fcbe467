"""Where results leave a pipeline."""

from ..web import Web
from ._base import Sink, SinkContext
from ._collect import Callback, Collect
from ._json import to_json
from ._jsonl import JsonLines
from ._video import VideoFile
from ._webhook import Webhook

__all__ = [
    "Callback",
    "Collect",
    "JsonLines",
    "Sink",
    "SinkContext",
    "VideoFile",
    "Web",
    "Webhook",
    "to_json",
]
