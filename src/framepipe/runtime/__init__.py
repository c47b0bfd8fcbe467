"""Executors: where and how the nodes of a planned pipeline run.

``executor_names()`` lists the executors every validator accepts;
``register_executor`` adds one (see ``_registry``).
"""

from ._registry import executor_names
from ._registry import register as register_executor

__all__ = ["executor_names", "register_executor"]
