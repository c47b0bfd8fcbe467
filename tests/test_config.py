"""Pipeline files: YAML -> validated models -> Pipeline, and messages that point at the bad key."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

import framepipe as fp
from framepipe.config import NODE_OPTIONS, RunOptions, load_pipeline, parse_pipeline

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def write(folder: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(text: str, *overrides: str) -> str:
    with pytest.raises(fp.ConfigError) as caught:
        parse_pipeline(textwrap.dedent(text), where="p.yaml", overrides=overrides)
    return str(caught.value)


MINIMAL = """\
sources:
  - {name: cam, type: Synthetic, width: 64, height: 48, frames: 12}
sinks:
  - {name: out, type: JsonLines, path: out.jsonl}
stages:
  - {name: a, type: Motion}
"""


def test_a_file_builds_the_pipeline_it_describes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        name: cameras
        mode: offline
        executor: inline
        duration: 30
        sources:
          - name: cam
            type: Scene
            width: 320
            height: 180
            frames: 45
        stages:
          - name: motion
            type: Motion
            min_area: 200
            fps: 15
            policy: {{size: 4, overflow: drop_newest}}
            on_error: stop
          - name: track
            type: Tracker
            args: {{detections: motion}}
          - name: windowed
            type: builtins:len
            after: cam
            window: [3, 2]
        sinks:
          - name: log
            type: JsonLines
            path: {tmp_path / "out.jsonl"}
            after: [track, windowed]
            join: merge
    """,
    )
    pipe, options = load_pipeline(path)
    assert options == RunOptions("offline", "inline", 30.0)
    assert options.run_kwargs() == {"mode": "offline", "executor": "inline", "duration": 30.0}
    nodes = pipe.nodes
    assert pipe.name == "cameras"
    assert list(nodes) == ["cam", "motion", "track", "windowed", "log"]
    assert isinstance(nodes["cam"].obj, fp.sources.Scene) and nodes["cam"].obj.width == 320
    motion = nodes["motion"]
    assert motion.inputs == ["cam"]  # the first stage follows the first source
    assert motion.obj.min_area == 200
    assert motion.options.fps == 15 and motion.options.on_error == "stop"
    assert motion.options.policy == fp.Queue(4, "drop_newest")
    assert nodes["track"].inputs == ["motion"]  # then each stage follows the one above
    assert nodes["track"].obj.detections == "motion"
    assert nodes["windowed"].options.window == (3, 2)
    assert nodes["log"].inputs == ["track", "windowed"]
    assert nodes["log"].options.join == "merge"

    pipe.run(**options.run_kwargs())
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {node for r in records for node in r["results"]} == {"track", "windowed"}
    assert {r["results"]["windowed"] for r in records if "windowed" in r["results"]} == {3}


def test_sinks_follow_the_last_stage_and_positional_args_work(tmp_path: Path) -> None:
    pipe, options = parse_pipeline(
        textwrap.dedent(f"""
        sources:
          - {{name: cam, type: Synthetic, args: [64, 48, 30.0, 5]}}
        sinks:
          - {{name: raw, type: JsonLines, path: {tmp_path / "a.jsonl"}}}
        stages: []
    """)
    )
    assert options == RunOptions()
    assert pipe.nodes["raw"].inputs == ["cam"]
    assert pipe.nodes["cam"].obj.frames == 5


def test_user_stages_by_import_path(tmp_path: Path) -> None:
    (tmp_path / "my_measures.py").write_text(
        textwrap.dedent("""
        import framepipe as fp

        class Threshold(fp.Stage):
            def __init__(self, level, *, invert=False):
                self.level, self.invert = level, invert
            def process(self, frame):
                return bool(frame.image.mean() > self.level) != self.invert

        def brightness(frame):
            return float(frame.image.mean())

        def scaled(factor):
            return lambda frame: factor * frame.index
    """)
    )
    path = write(
        tmp_path,
        f"""
        mode: offline
        sources:
          - {{name: cam, type: Synthetic, width: 64, height: 48, frames: 6}}
        stages:
          - {{name: bright, type: "my_measures:Threshold", args: {{level: 10}}, after: cam}}
          - {{name: dark, type: "my_measures:Threshold", level: 10, invert: true, after: cam}}
          - {{name: mean, type: "my_measures:brightness", after: cam}}
          - {{name: double, type: "my_measures.scaled", factor: 2, after: cam}}
        sinks:
          - name: log
            type: JsonLines
            path: {tmp_path / "out.jsonl"}
            after: [bright, dark, mean, double]
    """,
    )
    pipe, options = load_pipeline(path)
    pipe.run(**options.run_kwargs())
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    values = {(node, r["index"]): value for r in records for node, value in r["results"].items()}
    assert values[("bright", 0)] is True and values[("dark", 0)] is False
    assert values[("mean", 3)] > 10
    assert values[("double", 5)] == 10


def test_overrides_and_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FP_TEST_WIDTH", "96")
    monkeypatch.delenv("FP_TEST_UNSET", raising=False)
    text = textwrap.dedent("""
        sources:
          - {name: cam, type: Synthetic, width: "${FP_TEST_WIDTH}", height: 48, frames: 3}
        stages:
          - {name: a, type: Motion, args: {min_area: 10}}
          - {name: b, type: Motion, fps: 5}
        sinks:
          - {name: out, type: JsonLines, path: "${FP_TEST_UNSET:-default.jsonl}"}
    """)
    pipe, options = parse_pipeline(
        text,
        overrides=[
            "duration=2.5",
            "mode=realtime",
            "stages.a.min_area=99",
            "stages.1.fps=12",
            "stages.b.warmup=3",
            "sources.cam.height=64",
            "sinks.out.append=true",
        ],
    )
    nodes = pipe.nodes
    assert options == RunOptions("realtime", "threads", 2.5)
    assert nodes["cam"].obj.width == 96 and nodes["cam"].obj.height == 64
    assert nodes["a"].obj.min_area == 99  # the key stays under args:
    assert nodes["b"].options.fps == 12 and nodes["b"].obj.warmup == 3
    assert str(nodes["out"].obj.path) == "default.jsonl" and nodes["out"].obj.append is True


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_the_example_files_are_valid(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    pipe, options = load_pipeline(path)
    assert pipe.nodes and options.executor in ("threads", "processes")


BAD = [
    pytest.param(
        MINIMAL.replace("{name: a, type: Motion}", "{name: a, type: Motion, fps: -1}"),
        (),
        ["p.yaml: stages[0].fps: must be > 0, got -1 (stage 'a')"],
        id="fps",
    ),
    pytest.param(
        MINIMAL.replace("type: Motion}", "type: Motion, interval: 0}"),
        (),
        ["stages[0].interval: must be > 0"],
        id="interval",
    ),
    pytest.param(
        MINIMAL,
        ["stages.a.join=sometimes"],
        ["stages[0].join: must be 'each', 'merge' or 'latest', got 'sometimes'"],
        id="join",
    ),
    pytest.param(
        MINIMAL,
        ["stages.a.policy=newest"],
        ["stages[0].policy: must be 'latest', 'block' or {size: N"],
        id="policy",
    ),
    pytest.param(
        MINIMAL,
        ["stages.a.policy={size: 0}"],
        ["stages[0].policy: Queue size must be an int >= 1"],
        id="queue",
    ),
    pytest.param(
        MINIMAL, ["stages.a.window=[3]"], ["stages[0].window[1]: is required"], id="window"
    ),
    pytest.param(
        MINIMAL,
        ["stages.a.executor=gpu"],
        ["stages[0].executor: must be 'inline', 'threads', 'processes' or 'ray'"],
        id="executor",
    ),
    pytest.param(
        MINIMAL,
        ["mode=fast"],
        ["mode: must be 'auto', 'offline', 'realtime' or 'replay', got 'fast'"],
        id="mode",
    ),
    pytest.param(MINIMAL, ["duration=0"], ["duration: must be > 0, got 0"], id="duration"),
    pytest.param(
        MINIMAL + "\nsink: []\n",
        (),
        ["sink: unknown key (did you mean 'sinks'?); expected one of:"],
        id="top-key",
    ),
    pytest.param(
        MINIMAL.replace("type: Motion}", "type: Motoin}"),
        (),
        [
            "stages[0].type: unknown stage type 'Motoin' (did you mean 'Motion'?)",
            "built-in stages:",
            "'mypkg.module:MyStage'",
        ],
        id="type",
    ),
    pytest.param(
        MINIMAL,
        ["stages.a.min_aera=5"],
        [
            "stages[0].min_aera: Motion has no argument 'min_aera' (did you mean "
            "'min_area'?); it takes: history, var_threshold, min_area"
        ],
        id="argument",
    ),
    pytest.param(
        MINIMAL,
        ["stages.a.args.treshold=5"],
        ["stages[0].args.treshold: Motion has no argument"],
        id="args-argument",
    ),
    pytest.param(
        MINIMAL.replace("path: out.jsonl", "append: true"),
        (),
        ["sinks[0]: JsonLines: missing a required argument: 'path'"],
        id="missing-arg",
    ),
    pytest.param(
        MINIMAL.replace("type: Motion}", "type: Motion, min_area: 1, args: {min_area: 2}}"),
        (),
        ["stages[0]: 'min_area' is given both inline and under args:"],
        id="both",
    ),
    pytest.param(
        MINIMAL,
        ["sources.cam.width=8"],
        ["sources[0]: Synthetic rejected its arguments: Synthetic: width and height must be >= 16"],
        id="constructor",
    ),
    pytest.param(
        MINIMAL,
        ["sinks.out.after=b"],
        ["sinks[0].after: unknown node 'b'; expected one of: cam, a (sink 'out')"],
        id="after",
    ),
    pytest.param(
        MINIMAL + "  - {name: b, type: Motion, after: c}\n  - {name: c, type: Motion}\n",
        (),
        ["stages[1].after: unknown node 'c'", "only follow nodes declared above"],
        id="forward",
    ),
    pytest.param(
        MINIMAL.replace("{name: a,", "{name: cam,"),
        (),
        ["stages[0].name: duplicate node name 'cam' (also sources[0])"],
        id="duplicate",
    ),
    pytest.param(
        MINIMAL,
        ["stages.a.type=no_such_module_here:Stage"],
        ["stages[0].type: cannot import 'no_such_module_here'"],
        id="import",
    ),
    pytest.param(
        MINIMAL,
        ["stages.a.type=json:NoSuchThing"],
        ["stages[0].type: module 'json' has no 'NoSuchThing'"],
        id="attribute",
    ),
    pytest.param(
        MINIMAL,
        ["sinks.out.type=Motion"],
        ["sinks[0].type: unknown sink type 'Motion'"],
        id="wrong-kind",
    ),
    pytest.param(
        "sources:\n  - {name: cam, type: 'json:loads', args: ['1']}\n",
        (),
        [
            "sources[0].type: json:loads returned an object of type int, expected an "
            "fp.sources.Source"
        ],
        id="not-a-source",
    ),
    pytest.param(
        MINIMAL,
        ["sources.cam.width=${FP_TEST_SURELY_UNSET}"],
        ["sources[0].width: environment variable FP_TEST_SURELY_UNSET is not set"],
        id="env",
    ),
    pytest.param("sources: []\n", (), ["sources: needs at least one source"], id="no-source"),
    pytest.param("stages: []\n", (), ["sources: is required"], id="no-sources"),
    pytest.param("- a\n- b\n", (), ["p.yaml: expected a mapping at the top"], id="list"),
    pytest.param("sources:\n  - {name: cam\n", (), ["p.yaml:3:1: not valid YAML"], id="yaml"),
    pytest.param(
        MINIMAL,
        ["stages.nope.fps=1"],
        ["--set 'stages.nope.fps=1': no stage named 'nope'", "stages: a"],
        id="set-name",
    ),
    pytest.param(MINIMAL, ["stages.a"], ["--set 'stages.a': expected key=value"], id="set-form"),
    pytest.param(
        MINIMAL, ["stages.a=1"], ["expected stages.<name or index>.<key>=value"], id="set-short"
    ),
    pytest.param(MINIMAL, ["duration.x=1"], ["'duration' has no sub-keys"], id="set-deep"),
]


@pytest.mark.parametrize(("text", "overrides", "expected"), BAD)
def test_invalid_files_say_where_and_what_was_expected(
    text: str, overrides: tuple[str, ...], expected: list[str]
) -> None:
    message = config_error(text, *overrides)
    for part in expected:
        assert part in message, message


def test_several_problems_are_reported_together() -> None:
    message = config_error(MINIMAL, "stages.a.fps=-1", "stages.a.join=x", "bogus=1")
    assert message.startswith("p.yaml: 3 problems:")
    assert "stages[0].fps" in message and "stages[0].join" in message and "bogus" in message


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(fp.ConfigError, match="cannot read the pipeline file"):
        load_pipeline(tmp_path / "nope.yaml")


def test_node_options_are_the_pipelines() -> None:
    pipe = fp.Pipeline()
    pipe.source("s", fp.sources.Synthetic(frames=1))
    for option in NODE_OPTIONS:  # every option the file format knows, the Pipeline accepts
        value = {
            "fps": 1,
            "interval": None,
            "window": (1, 1),
            "policy": "latest",
            "max_age": 10,
            "join": "each",
            "on_error": "skip",
            "executor": "threads",
            "cost": 0.1,
            "join_wait": 50,
        }[option]
        extra = {"join": "merge"} if option == "join_wait" else {}  # what it applies to
        pipe.stage(f"n_{option}", lambda f: 1, after="s", **{option: value}, **extra)


ALIAS_BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
sources: [{name: cam, type: Synthetic, frames: 3}]
"""


def test_a_yaml_alias_bomb_is_refused_within_a_second(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    began = time.monotonic()
    with pytest.raises(fp.ConfigError, match=r"bomb\.yaml: the YAML expands to more than"):
        load_pipeline(path)
    with pytest.raises(fp.ConfigError, match="expands to more than"):
        parse_pipeline(ALIAS_BOMB, overrides=["duration=3"])
    assert time.monotonic() - began < 1.0


def test_modest_anchors_and_aliases_still_work() -> None:
    pipe, _ = parse_pipeline(
        textwrap.dedent(
            """
            sources:
              - &cam {name: cam, type: Synthetic, frames: 3, width: 64, height: 48}
              - {<<: *cam, name: cam2}
            """
        )
    )
    assert set(pipe.nodes) == {"cam", "cam2"}
