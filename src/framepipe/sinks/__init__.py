"""Where results leave a pipeline."""

from ..web import Web
from ._base import Sink, SinkContext
from ._clips import Clips
from ._collect import Callback, Collect
from ._json import to_json
from ._jsonl import JsonLines
from ._video import VideoFile
from ._webhook import Webhook

__all__ = [
    "Callback",
    "Clips",
    "Collect",
    "JsonLines",
    "Sink",
    "SinkContext",
    "VideoFile",
    "Web",
    "Webhook",
    "to_json",
]
