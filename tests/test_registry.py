"""One registry of executors: every validator accepts what it lists, and only that."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import framepipe as fp
from framepipe.config import parse_pipeline
from framepipe.runtime import _registry, executor_names, register_executor

PIPELINE = """\
executor: {executor}
sources:
  - {{name: cam, type: Synthetic, width: 64, height: 48, frames: 5}}
stages:
  - {{name: a, type: Motion, executor: {executor}}}
"""


@pytest.fixture
def solo() -> Iterator[str]:
    """A registered executor (the threads one under another name), removed afterwards."""
    register_executor(
        "solo", "framepipe.runtime._executor:LocalExecutor", "for this test", threaded=True
    )
    yield "solo"
    del _registry._ENTRIES["solo"]


def test_the_built_in_executors() -> None:
    assert executor_names()[:3] == ("inline", "threads", "processes")


def test_a_registered_executor_is_valid_everywhere(solo: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, frames=5))
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=pipe.stage("a", lambda f: f.index, after=cam, executor=solo))
    run = pipe.run(mode="offline", executor=solo)
    assert collect.results["a"] == {i: i for i in range(5)}
    assert run.executor_name == solo
    parse_pipeline(PIPELINE.format(executor=solo))  # the YAML validator reads the registry too


def test_an_unknown_executor_is_refused_by_every_validator() -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, frames=5))
    with pytest.raises(fp.GraphError, match=r"executor must be one of .*'thread'.*'threads'\?"):
        pipe.run(executor="thread")
    with pytest.raises(fp.GraphError, match=r"node 'a': executor must be one of"):
        pipe.stage("a", lambda f: f.index, after=cam, executor="solo")
    with pytest.raises(fp.ConfigError, match="executor"):
        parse_pipeline(PIPELINE.format(executor="solo"))
