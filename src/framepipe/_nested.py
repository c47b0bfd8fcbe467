"""A whole pipeline used as one stage of another."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import GraphError
from ._frame import Frame
from ._policy import RateSelector
from ._stage import Stage, StageContext

if TYPE_CHECKING:
    from ._graph import Pipeline


class NestedPipeline(Stage):
    """Runs the stages of an inner pipeline, in order, on each frame.

    The inner pipeline has one ``input()`` node and stages (no sources or
    sinks). Its stages see the outer frame's results and each other's; the
    nested stage's value is a dict of the inner stages' results. Inner ``fps=``
    and ``interval=`` options apply; policies do not (it all runs in one call).

    Example::

        inner = fp.Pipeline("measure")
        x = inner.input()
        inner.stage("mean", lambda f: float(f.image.mean()), after=x)
        pipe.stage("measure", inner, after=cam)
    """

    def __init__(self, pipeline: Pipeline) -> None:
        nodes = pipeline.nodes
        kinds = {n.kind for n in nodes.values()}
        if kinds - {"input", "stage"}:
            raise GraphError(
                f"pipeline {pipeline.name!r} nested as a stage may only have an "
                f"input() and stages, not {sorted(kinds - {'input', 'stage'})}"
            )
        inputs = [n.name for n in nodes.values() if n.kind == "input"]
        if len(inputs) != 1:
            raise GraphError(
                f"pipeline {pipeline.name!r} nested as a stage needs exactly one "
                f"input(), has {len(inputs)}"
            )
        plan = pipeline.plan("offline")
        self.name = pipeline.name
        self.steps = [
            (
                name,
                plan.nodes[name].obj,
                list(plan.nodes[name].inputs),
                plan.nodes[name].options.fps,
            )
            for name in plan.order
            if name not in inputs
        ]
        self.input = inputs[0]

    def setup(self) -> None:
        self.rates = {name: RateSelector(fps) for name, _, _, fps in self.steps if fps}
        for name, stage, _, _ in self.steps:
            stage.context = StageContext(
                name=f"{self.context.name}.{name}",
                mode=self.context.mode,
                logger=self.context.logger,
            )
            stage.setup()

    def process(self, frame: Frame) -> Any:
        produced: dict[str, Frame] = {self.input: frame}
        out: dict[str, Any] = {}
        for name, stage, inputs, _ in self.steps:
            upstream = [produced[i] for i in inputs if i in produced]
            if not upstream:
                continue
            rate = self.rates.get(name)
            if rate is not None and not rate.select(frame.source, frame.pts):
                continue
            results: dict[str, Any] = {}
            for f in upstream:
                results.update(f.results)
            current = Frame(
                frame.image, frame.index, frame.pts, frame.timestamp, frame.source, results
            )
            value = stage.process(current)
            if value is not None:
                out[name] = value
                produced[name] = Frame(
                    frame.image,
                    frame.index,
                    frame.pts,
                    frame.timestamp,
                    frame.source,
                    {**results, name: value},
                )
        return out or None

    def teardown(self) -> None:
        for _, stage, _, _ in self.steps:
            stage.teardown()
