"""Executors: where and how the nodes of a planned pipeline run."""
