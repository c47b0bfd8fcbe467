"""A whole pipeline used as one stage of another."""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter, time
from typing import TYPE_CHECKING, Any

from ._errors import GraphError
from ._frame import Frame
from ._policy import NodeOptions, RateSelector
from ._stage import Stage, StageContext

if TYPE_CHECKING:
    from ._graph import Pipeline
    from .stats import StatsRecorder

#: Inner options a nested stage cannot honour: it runs inside its outer stage's call,
#: so it has no inbox (policy, max_age, join), no worker (executor) and no frames of
#: its own to hold (window); its errors are the outer stage's (on_error).
_NOT_NESTABLE = {
    "window": lambda o: o.window is not None,
    "policy": lambda o: o.policy is not None,
    "max_age": lambda o: o.max_age is not None,
    "join": lambda o: o.join != "each",
    "on_error": lambda o: o.on_error != "skip",
    "executor": lambda o: o.executor is not None,
}


def _check_options(pipeline: str, stage: str, options: NodeOptions) -> None:
    for option, is_set in _NOT_NESTABLE.items():
        if is_set(options):
            raise GraphError(
                f"pipeline {pipeline!r} nested as a stage: stage {stage!r} sets {option}=, "
                f"which a nested stage cannot honour (it runs inside the outer stage's "
                f"call); set it on the outer stage instead. Inner stages take fps= and "
                f"interval="
            )


class NestedPipeline(Stage):
    """Runs the stages of an inner pipeline, in order, on each frame.

    The inner pipeline has one ``input()`` node and stages (no sources or
    sinks). Its stages see the outer frame's results and each other's; the
    nested stage's value is a dict of the inner stages' results. Inner ``fps=``
    and ``interval=`` options apply; other options are refused with a
    ``GraphError`` (everything runs in the outer stage's call, whose
    ``on_error=`` and policy govern it). Each inner stage has its own row in
    the run's statistics, named ``outer/inner``.

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
        for name in plan.order:
            if name not in inputs:
                _check_options(pipeline.name, name, plan.nodes[name].options)
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
        #: Statistics of each inner stage, set by the runtime (``outer/inner`` rows).
        self.recorders: dict[str, StatsRecorder] = {}
        #: The run's clock (simulated in a replay), set by the runtime: frame ages.
        self.now: Callable[[], float] = time

    @property
    def inner_names(self) -> list[str]:
        return [name for name, _, _, _ in self.steps]

    def setup(self) -> None:
        self.rates = {name: RateSelector(fps) for name, _, _, fps in self.steps if fps}
        for name, stage, _, _ in self.steps:
            stage.context = StageContext(
                name=f"{self.context.name}/{name}",
                mode=self.context.mode,
                logger=self.context.logger,
            )
            stage.setup()
            if name in self.recorders:
                self.recorders[name].set_state("running")

    def process(self, frame: Frame) -> Any:
        produced: dict[str, Frame] = {self.input: frame}
        out: dict[str, Any] = {}
        for name, stage, inputs, _ in self.steps:
            upstream = [produced[i] for i in inputs if i in produced]
            if not upstream:
                continue
            recorder = self.recorders.get(name)
            rate = self.rates.get(name)
            if rate is not None and not rate.select(frame.source, frame.pts):
                if recorder is not None:
                    recorder.drop("rate")
                continue
            results: dict[str, Any] = {}
            for f in upstream:
                results.update(f.results)
            current = frame.derive(results)
            began = perf_counter()
            try:
                value = stage.process(current)
            except BaseException:
                if recorder is not None:
                    recorder.error()
                raise
            if recorder is not None:
                done = perf_counter()
                recorder.record_one(done, done - began, self.now() - frame.timestamp)
            if value is not None:
                out[name] = value
                produced[name] = frame.derive({**results, name: value})
        return out or None

    def teardown(self) -> None:
        try:
            for _, stage, _, _ in self.steps:
                stage.teardown()
        finally:
            for recorder in self.recorders.values():
                if recorder.state != "failed":
                    recorder.set_state("ended")
                recorder.finish()
