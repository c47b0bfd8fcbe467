"""Building a pipeline: invalid graphs are rejected with messages that name the node."""

from __future__ import annotations

import pytest

import framepipe as fp


def synthetic() -> fp.sources.Synthetic:
    return fp.sources.Synthetic(width=64, height=48, fps=30, frames=5)


def test_duplicate_name_is_rejected() -> None:
    pipe = fp.Pipeline()
    pipe.source("cam", synthetic())
    with pytest.raises(fp.GraphError, match="duplicate node name 'cam'"):
        pipe.stage("cam", lambda f: 1, after="cam")


def test_unknown_input_is_named() -> None:
    pipe = fp.Pipeline()
    pipe.source("cam", synthetic())
    pipe.stage("detect", lambda f: 1, after="camera")
    with pytest.raises(fp.GraphError, match="'detect': unknown input 'camera'"):
        pipe.run()


def test_stage_without_input_is_rejected() -> None:
    pipe = fp.Pipeline()
    with pytest.raises(fp.GraphError, match="'lonely' has no input"):
        pipe.stage("lonely", lambda f: 1, after=None)  # type: ignore[arg-type]
    with pytest.raises(fp.GraphError, match="'empty' has no input"):
        pipe.stage("empty", lambda f: 1, after=[])


def test_cycle_is_named() -> None:
    pipe = fp.Pipeline()
    pipe.source("cam", synthetic())
    pipe.stage("a", lambda f: 1, after=["cam", "b"])
    pipe.stage("b", lambda f: 1, after="a")
    with pytest.raises(fp.GraphError, match=r"cycle through \['a', 'b'\]"):
        pipe.run()


def test_sink_cannot_feed_a_node() -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic())
    out = pipe.sink("out", fp.sinks.Collect(), after=cam)
    pipe.stage("after_sink", lambda f: 1, after=out)
    with pytest.raises(fp.GraphError, match="'after_sink': input 'out' is a sink"):
        pipe.run()


def test_no_source() -> None:
    with pytest.raises(fp.GraphError, match="no source"):
        fp.Pipeline().run()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fps": 0}, "fps must be > 0"),
        ({"fps": 5, "interval": 1}, "fps= or interval="),
        ({"window": (0, 1)}, "window must be"),
        ({"policy": "newest"}, "policy must be"),
        ({"on_error": "ignore"}, "on_error must be"),
        ({"join": "zip"}, "join must be"),
        ({"executor": "gpu"}, "executor must be"),
        ({"max_age": -1}, "max_age must be"),
        ({"speed": 2}, r"unknown option\(s\) \['speed'\]"),
    ],
)
def test_bad_options_name_the_node(options: dict, message: str) -> None:
    pipe = fp.Pipeline()
    cam = pipe.source("cam", synthetic())
    with pytest.raises(fp.GraphError, match=f"'det'.*{message}|{message}.*'det'|'det': {message}"):
        pipe.stage("det", lambda f: 1, after=cam, **options)


def test_wrong_object_types() -> None:
    pipe = fp.Pipeline()
    with pytest.raises(fp.GraphError, match=r"source 'cam': expected an fp\.sources\.Source"):
        pipe.source("cam", "video.mp4")  # type: ignore[arg-type]
    cam = pipe.source("cam", synthetic())
    with pytest.raises(fp.GraphError, match="stage 'x': expected a callable"):
        pipe.stage("x", 42, after=cam)  # type: ignore[arg-type]
    with pytest.raises(fp.GraphError, match=r"sink 'y': expected an fp\.sinks\.Sink"):
        pipe.sink("y", print, after=cam)  # type: ignore[arg-type]


def test_bad_mode_and_executor() -> None:
    pipe = fp.Pipeline()
    pipe.source("cam", synthetic())
    with pytest.raises(fp.GraphError, match="mode must be"):
        pipe.run(mode="fast")
    with pytest.raises(fp.GraphError, match="executor must be"):
        pipe.run(executor="gpu")


def test_queue_validation() -> None:
    with pytest.raises(ValueError, match="size must be"):
        fp.Queue(0)
    with pytest.raises(ValueError, match="overflow must be"):
        fp.Queue(2, "explode")  # type: ignore[arg-type]


def test_node_from_another_pipeline() -> None:
    one, two = fp.Pipeline(), fp.Pipeline()
    cam = one.source("cam", synthetic())
    with pytest.raises(fp.GraphError, match="belongs to another pipeline"):
        two.stage("x", lambda f: 1, after=cam)


def test_public_api_is_sorted_and_complete() -> None:
    assert fp.__all__ == sorted(fp.__all__)
    for name in fp.__all__:
        assert hasattr(fp, name), name
    for module in (fp.sources, fp.sinks, fp.stages):
        assert module.__all__ == sorted(module.__all__), module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
