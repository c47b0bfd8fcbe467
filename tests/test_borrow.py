"""The borrow rule: frame data is lent for one call; whatever is kept is an owned copy."""

from __future__ import annotations

import numpy as np
import pytest

import framepipe as fp
from framepipe.testing import run_source


def test_collect_keeps_its_own_copies_of_array_results(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=30, frames=60))
    fill = pipe.stage("fill", lambda f: np.full((256, 256, 3), f.index, np.uint8), after=cam)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=fill)
    pipe.run(mode="offline", executor=executor)
    results = collect.results["fill"]
    assert sorted(results) == list(range(60))
    wrong = [i for i, array in results.items() if not (array == i % 256).all()]
    assert wrong == []


def test_collect_detaches_nested_arrays(executor: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=160, height=120, fps=30, frames=30))
    box = pipe.stage("crop", lambda f: {"crop": f.image, "index": f.index}, after=cam)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=box)
    pipe.run(mode="offline", executor=executor)
    expected = [img for img, _ in run_source(fp.sources.Synthetic(160, 120, fps=30, frames=30))]
    for index, value in collect.results["crop"].items():
        assert value["index"] == index
        assert np.array_equal(value["crop"], expected[index])


def test_results_are_read_only_for_each_consumer(executor: str) -> None:
    def meddle(frame: fp.Frame) -> bool:
        frame.results["note"] = "written by a sibling"  # type: ignore[index]
        return True

    def look(frame: fp.Frame) -> bool:
        return "note" in frame.results

    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=30, frames=10))
    base = pipe.stage("base", lambda f: f.index, after=cam)
    writer = pipe.stage("writer", meddle, after=base)
    reader = pipe.stage("reader", look, after=base)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=[writer, reader])
    run = pipe.run(mode="offline", executor=executor)
    assert collect.results["reader"] == {i: False for i in range(10)}
    assert run.stats["writer"].errors == 10  # writing into a lent mapping is the stage's error
    assert collect.results["writer"] == {}


def test_array_results_are_lent_read_only(executor: str) -> None:
    def scribble(frame: fp.Frame) -> int:
        frame.results["mask"][0, 0] = 99
        return 1

    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=30, frames=5))
    mask = pipe.stage("mask", lambda f: np.zeros((4, 4), np.uint8), after=cam)
    bad = pipe.stage("scribble", scribble, after=mask)
    good = pipe.stage("check", lambda f: int(f.results["mask"].max()), after=mask)
    collect = fp.sinks.Collect()
    pipe.sink("out", collect, after=[bad, good])
    run = pipe.run(mode="offline", executor=executor)
    assert run.stats["scribble"].errors == 5
    assert collect.results["check"] == {i: 0 for i in range(5)}


def test_a_stage_keeping_a_result_copy_is_unaffected(executor: str) -> None:
    """What the docs tell users to do: copy what they keep."""
    kept: list[np.ndarray] = []

    def keep(frame: fp.Frame) -> None:
        kept.append(np.array(frame.results["fill"], copy=True))

    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, fps=30, frames=40))
    fill = pipe.stage("fill", lambda f: np.full((256, 256, 3), f.index, np.uint8), after=cam)
    pipe.sink("keep", fp.sinks.Callback(keep), after=fill)
    pipe.run(mode="offline", executor=executor)
    assert [int(a[0, 0, 0]) for a in kept] == list(range(40))


@pytest.mark.parametrize("value", [np.arange(5), [np.arange(5)], {"a": (np.arange(5),)}])
def test_detach_copies_every_array(value: object) -> None:
    from framepipe.sinks._collect import detach

    copy = detach(value)

    def arrays(v: object) -> list[np.ndarray]:
        if isinstance(v, np.ndarray):
            return [v]
        if isinstance(v, dict):
            return [a for x in v.values() for a in arrays(x)]
        if isinstance(v, list | tuple):
            return [a for x in v for a in arrays(x)]
        return []

    for original, copied in zip(arrays(value), arrays(copy), strict=True):
        assert copied is not original and not np.shares_memory(copied, original)
        assert np.array_equal(copied, original)


def test_a_source_that_reuses_one_buffer_is_stopped_not_believed(executor: str) -> None:
    """A source drawing every frame into the one ``ctx.buffer()`` it asked for would
    change frames already downstream (39 of 40 frames under threads read another
    frame's pixels at cadd68f, silently): a yielded frame is read-only, so the source
    fails at its next write, with an error that says why, and no frame is wrong."""
    from stages_for_tests import OneBuffer, SlowPixel

    collect = fp.sinks.Collect()
    pipe = fp.Pipeline()
    cam = pipe.source("cam", OneBuffer(40))
    pipe.sink("out", collect, after=pipe.stage("pixel", SlowPixel(), after=cam))
    with pytest.raises(fp.SourceError, match=r"'cam': .*ask ctx.buffer\(\) for each frame"):
        pipe.run(mode="offline", executor=executor)
    pixels = collect.results.get("pixel", {})
    assert all(index == value for index, value in pixels.items()), pixels
