"""Where frames come from."""

from ._base import Captured, Source, SourceContext
from ._synthetic import Generator, StillImage, Synthetic

__all__ = ["Captured", "Generator", "Source", "SourceContext", "StillImage", "Synthetic"]
