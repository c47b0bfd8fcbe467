"""Pipeline files: YAML -> validated models -> ``Pipeline``.

A pipeline file names its sources, stages and sinks, with their options::

    name: traffic
    mode: realtime            # auto (default) | offline | realtime | replay
    executor: processes       # threads (default) | inline | processes | ray
    duration: 60              # seconds; omit to run until the sources end or Ctrl-C
    sources:
      - name: cam
        type: VideoFile                   # a built-in, by its name in fp.sources
        path: ../shared/media/videos/slow_traffic_small.mp4
    stages:
      - name: detect
        type: Detector                    # a built-in, by its name in fp.stages
        model: yolox_nano
        fps: 10                           # node options: fps, interval, window, policy,
      - name: track                       #   max_age, join, join_wait, on_error, executor
        type: Tracker
        after: [detect]                   # default: the stage above (or the first source)
      - name: brightness
        type: mypkg.measures:Brightness   # your own, by import path, with its args
        args: {threshold: 128}
        after: cam
    sinks:
      - name: log
        type: JsonLines
        path: out/results.jsonl
        after: [track]
    events:                               # the run's events: camera health (docs/events.md)
      - name: alerts
        type: JsonLines
        path: out/events.jsonl

Rules, all checked before anything runs:

- Constructor arguments go inline (``path:`` above) or under ``args:`` (a
  mapping, or a list for positional arguments). A name that is also a node
  option (``fps`` of ``fp.sinks.Web``) must go under ``args:``.
- ``type`` is a built-in name (``Synthetic``, ``Scene``, ``VideoFile``,
  ``Stream``, ``Camera``, ``Images``; ``Detector``, ``Motion``, ``Tracker``,
  ``LineCounter``, ``ZoneCounter``, ``Faces``, ``Annotate``; ``JsonLines``,
  ``VideoFile``, ``Webhook``, ``Web``...) or ``module:Name``. A class is called
  with the arguments; a function is the stage itself when no arguments are
  given, and is called as a factory otherwise. Modules are imported from the
  installed packages, the pipeline file's directory and the current directory.
- ``after`` names sources or stages *above* it; a stage without ``after``
  follows the stage above it (the first source for the first stage), a sink
  the last stage.
- ``${NAME}`` and ``${NAME:-default}`` in string values are replaced by
  environment variables (keep camera passwords and tokens out of the file); a
  value that is one such reference is read as YAML (``"${WIDTH}"`` -> ``640``).
- Relative paths are relative to the current directory, as for any command
  (framepipe cannot tell a path from a model name).

Every problem raises ``ConfigError`` naming the file and the key, and saying
what was expected::

    pipeline.yaml: stages[1].fps: must be > 0, got -1 (stage 'detect')

Example::

    from framepipe.config import load_pipeline

    pipe, options = load_pipeline("pipeline.yaml", overrides=["stages.detect.fps=5"])
    pipe.run(**options.run_kwargs())
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    ValidationError,
    field_validator,
)

from . import sinks, sources
from ._errors import ConfigError, FramepipeError
from ._graph import Pipeline
from ._policy import Queue, parse_window
from ._stage import Stage
from .runtime import executor_names
from .sinks import Sink
from .sources import Source

__all__ = ["NODE_OPTIONS", "PipelineSpec", "RunOptions", "load_pipeline", "parse_pipeline"]

#: Keys of a stage or sink that are node options, not constructor arguments.
NODE_OPTIONS = (
    "fps",
    "interval",
    "window",
    "policy",
    "max_age",
    "join",
    "join_wait",
    "on_error",
    "executor",
    "cost",
)
#: Node options of ``executor: ray`` (see docs/ray.md).
RAY_OPTIONS = ("resources", "transfer", "jpeg_quality")
Transfer = Literal["raw", "jpeg", "results"]
_SECTIONS = {"sources": "source", "stages": "stage", "sinks": "sink", "events": "event sink"}
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


# -- the models ------------------------------------------------------------------------------


def _known_executor(value: str, *, for_nodes: bool = False) -> str:
    known = executor_names(for_nodes=for_nodes)
    names = [repr(name) for name in known]
    if value not in known:
        raise ValueError(f"must be {', '.join(names[:-1])} or {names[-1]}, got {value!r}")
    return value


class _NodeSpec(BaseModel):
    """What every node has. Extra keys are constructor arguments."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    type: str = Field(min_length=1)
    args: Any = None

    @field_validator("args")
    @classmethod
    def _args_shape(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, dict | list):
            raise ValueError(
                "must be a mapping of argument names to values, or a list of positional arguments"
            )
        return value

    def arguments(self) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword constructor arguments (``args:`` plus inline keys)."""
        inline = dict(self.model_extra or {})
        if isinstance(self.args, list):
            return list(self.args), inline
        given = dict(self.args or {})
        both = sorted(set(given) & set(inline))
        if both:
            raise ValueError(f"{both[0]!r} is given both inline and under args:")
        return [], {**given, **inline}


class SourceSpec(_NodeSpec):
    """One entry of ``sources:``."""

    resources: dict[str, PositiveFloat] | None = None  # executor: ray


class StageSpec(_NodeSpec):
    """One entry of ``stages:``: the node, its inputs and its scheduling options."""

    after: list[str] | None = None
    fps: PositiveFloat | None = None
    interval: PositiveFloat | None = None
    window: tuple[int, int | str] | None = None
    policy: Any = None
    max_age: PositiveFloat | None = Field(default=None, description="milliseconds")
    join: Literal["each", "merge", "latest"] | None = None
    join_wait: PositiveFloat | None = Field(default=None, description="milliseconds")
    on_error: Literal["skip", "stop", "restart"] | None = None
    executor: str | None = None
    resources: dict[str, PositiveFloat] | None = None  # executor: ray
    transfer: Transfer | dict[str, Transfer] | None = None
    jpeg_quality: int | None = Field(default=None, ge=1, le=100)
    cost: NonNegativeFloat | None = Field(default=None, description="seconds per frame, replay")

    @field_validator("executor")
    @classmethod
    def _executor(cls, value: str | None) -> str | None:
        return value if value is None else _known_executor(value, for_nodes=True)

    @field_validator("after", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("window")
    @classmethod
    def _window(cls, value: tuple[int, int | str] | None) -> tuple[int, int | str] | None:
        if value is not None:
            parse_window(value)  # its ValueError says what a window is
        return value

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: Any) -> Any:
        if value is None or value in ("latest", "block"):
            return value
        if isinstance(value, dict) and set(value) <= {"size", "overflow"}:
            try:
                return Queue(**value)
            except (TypeError, ValueError) as exc:
                raise ValueError(str(exc)) from None
        raise ValueError(
            "must be 'latest', 'block' or {size: N, overflow: drop_oldest | "
            f"drop_newest | block}}, got {value!r}"
        )

    def options(self) -> dict[str, Any]:
        """The node options that were given."""
        chosen = {key: getattr(self, key) for key in (*NODE_OPTIONS, *RAY_OPTIONS)}
        return {key: value for key, value in chosen.items() if value is not None}


class SinkSpec(StageSpec):
    """One entry of ``sinks:``."""


class EventSinkSpec(_NodeSpec):
    """One entry of ``events:``: a sink of the run's events (``Pipeline.events``)."""


class PipelineSpec(BaseModel):
    """A whole pipeline file, validated."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="pipeline", min_length=1)
    mode: Literal["auto", "offline", "realtime", "replay"] = "auto"
    executor: str = "threads"
    duration: PositiveFloat | None = None

    @field_validator("executor")
    @classmethod
    def _executor(cls, value: str) -> str:
        return _known_executor(value)

    sources: list[SourceSpec] = Field(min_length=1)
    stages: list[StageSpec] = Field(default_factory=list)
    sinks: list[SinkSpec] = Field(default_factory=list)
    events: list[EventSinkSpec] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How a pipeline file asks to be run: the top-level ``mode``, ``executor``, ``duration``."""

    mode: str = "auto"
    executor: str = "threads"
    duration: float | None = None

    def run_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Pipeline.run`` / ``Pipeline.start``."""
        return {"mode": self.mode, "executor": self.executor, "duration": self.duration}


# -- loading ------------------------------------------------------------------------------------


def load_pipeline(
    path: str | os.PathLike[str], overrides: Iterable[str] = ()
) -> tuple[Pipeline, RunOptions]:
    """Read, validate and build the pipeline file at ``path``.

    ``overrides`` are ``key=value`` strings applied before validation (what
    ``framepipe run --set`` passes): ``duration=10``, ``stages.detect.fps=5``,
    ``sinks.web.args.port=8080``, ``sources.0.path=clip.mp4``. Values are read
    as YAML (``5`` is a number, ``[1, 2]`` a list).

    Raises ``ConfigError`` naming the file and the bad key.
    """
    where = os.fspath(path)
    try:
        text = Path(where).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the pipeline file: {exc.strerror or exc}") from exc
    folder = str(Path(where).resolve().parent)
    return parse_pipeline(text, where=where, overrides=overrides, import_dirs=(folder,))


def parse_pipeline(
    text: str,
    *,
    where: str = "<pipeline>",
    overrides: Iterable[str] = (),
    import_dirs: Sequence[str] = (),
) -> tuple[Pipeline, RunOptions]:
    """``load_pipeline`` for YAML text; ``where`` names it in error messages."""
    try:
        data = load_yaml(text)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}{at}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: expected a mapping at the top (name:, sources:, stages:, "
            f"sinks:), got {type(data).__name__}"
        )
    for override in overrides:
        _apply_override(data, override, where)
    data = _expand_env(data, where, ())
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_explain(exc, data)}") from None
    for folder in (*import_dirs, os.getcwd()):
        if folder not in sys.path:
            # Appended, never prepended: a file next to the pipeline must not shadow a package.
            sys.path.append(folder)
    pipe = _build(spec, where)
    return pipe, RunOptions(spec.mode, spec.executor, spec.duration)


# -- building -------------------------------------------------------------------------------------


def _build(spec: PipelineSpec, where: str) -> Pipeline:
    pipe = Pipeline(spec.name)
    declared: dict[str, str] = {}  # node name -> where it was declared
    previous: str | None = None

    def declare(loc: str, name: str) -> None:
        if name in declared:
            raise ConfigError(
                f"{where}: {loc}.name: duplicate node name {name!r} "
                f"(also {declared[name]}); names must be unique"
            )
        declared[name] = loc

    for i, source in enumerate(spec.sources):
        loc = f"sources[{i}]"
        declare(loc, source.name)
        pipe.source(
            source.name, _construct(source, "source", loc, where), resources=source.resources
        )
    first_source = spec.sources[0].name
    feeders = [s.name for s in spec.sources]  # what a stage may name in after:
    for section, specs in (("stages", spec.stages), ("sinks", spec.sinks)):
        kind = _SECTIONS[section]
        for i, node in enumerate(specs):
            loc = f"{section}[{i}]"
            after = node.after or [previous or first_source]
            for name in after:
                if name not in feeders:
                    hint = _did_you_mean(name, feeders)
                    later = (
                        " (nodes may only follow nodes declared above them)"
                        if name in {s.name for s in (*spec.stages, *spec.sinks)}
                        else ""
                    )
                    raise ConfigError(
                        f"{where}: {loc}.after: unknown node {name!r}{hint}{later}; "
                        f"expected one of: {', '.join(feeders)} ({kind} "
                        f"{node.name!r})"
                    )
            declare(loc, node.name)
            obj = _construct(node, kind, loc, where)
            try:
                if kind == "stage":
                    pipe.stage(node.name, obj, after=after, **node.options())
                else:
                    pipe.sink(node.name, obj, after=after, **node.options())
            except FramepipeError as exc:
                raise ConfigError(f"{where}: {loc}: {exc}") from exc
            if kind == "stage":
                feeders.append(node.name)
                previous = node.name
    for i, event_sink in enumerate(spec.events):
        loc = f"events[{i}]"
        declare(loc, event_sink.name)
        obj = _construct(event_sink, "sink", loc, where)
        try:
            pipe.events(event_sink.name, obj)
        except FramepipeError as exc:
            raise ConfigError(f"{where}: {loc}: {exc}") from exc
    try:
        pipe.plan(spec.mode if spec.mode != "auto" else "offline")
    except FramepipeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return pipe


def builtins(kind: str) -> dict[str, type]:
    """Built-in types by name for ``kind`` ``"source"``, ``"stage"`` or ``"sink"``."""
    module: Any
    base: type
    if kind == "stage":
        from . import stages  # the "vision" extra: raises ModuleNotFoundError saying so

        module, base = stages, Stage
    else:
        module, base = {"source": (sources, Source), "sink": (sinks, Sink)}[kind]
    found = {}
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) and issubclass(value, base) and not inspect.isabstract(value):
            found[name] = value
    return found


def _resolve(type_name: str, kind: str, loc: str, where: str) -> Any:
    try:
        known = builtins(kind)
    except ModuleNotFoundError as exc:
        if ":" not in type_name and "." not in type_name:
            raise ConfigError(f"{where}: {loc}.type: {type_name!r}: {exc}") from None
        known = {}  # an import path needs no built-in stage
    if type_name in known:
        return known[type_name]
    if ":" not in type_name and "." not in type_name:
        hint = _did_you_mean(type_name, known)
        raise ConfigError(
            f"{where}: {loc}.type: unknown {kind} type {type_name!r}{hint}; "
            f"built-in {kind}s: {', '.join(sorted(known))}; or give an import "
            f"path such as 'mypkg.module:My{kind.title()}'"
        )
    module_name, _, attr = (
        type_name.partition(":") if ":" in type_name else type_name.rpartition(".")
    )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}: {loc}.type: cannot import {module_name!r}: {exc}") from exc
    try:
        value = module
        for part in attr.split("."):
            value = getattr(value, part)
    except AttributeError:
        raise ConfigError(f"{where}: {loc}.type: module {module_name!r} has no {attr!r}") from None
    return value


def _construct(node: _NodeSpec, kind: str, loc: str, where: str) -> Any:
    target = _resolve(node.type, kind, loc, where)
    label = f"({kind} {node.name!r})"
    try:
        positional, keywords = node.arguments()
    except ValueError as exc:
        raise ConfigError(f"{where}: {loc}: {exc} {label}") from None
    if not callable(target):
        raise ConfigError(f"{where}: {loc}.type: {node.type!r} is not a class or a function")
    if kind == "stage" and not inspect.isclass(target) and not positional and not keywords:
        return target  # a plain function fn(frame) -> value is the stage itself
    _check_arguments(target, positional, keywords, node, loc, where)
    try:
        obj = target(*positional, **keywords)
    except FramepipeError as exc:
        raise ConfigError(f"{where}: {loc}: {exc} {label}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{where}: {loc}: {node.type} rejected its arguments: {exc} {label}"
        ) from exc
    expected: dict[str, Callable[[Any], bool]] = {
        "source": lambda o: isinstance(o, Source),
        "stage": lambda o: isinstance(o, Stage) or callable(o),
        "sink": lambda o: isinstance(o, Sink),
    }
    if not expected[kind](obj):
        wanted = {
            "source": "an fp.sources.Source",
            "stage": "an fp.Stage or a callable",
            "sink": "an fp.sinks.Sink",
        }[kind]
        raise ConfigError(
            f"{where}: {loc}.type: {node.type} returned an object of type "
            f"{type(obj).__name__}, expected {wanted} {label}"
        )
    return obj


def _check_arguments(
    target: Any,
    positional: list[Any],
    keywords: dict[str, Any],
    node: _NodeSpec,
    loc: str,
    where: str,
) -> None:
    """Name the unknown or missing argument before calling, when the signature is known."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return
    params = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = [
        name
        for name, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    inline = set(node.model_extra or {})
    for key in keywords:
        if key not in params and not takes_any:
            prefix = "" if key in inline else "args."
            hint = _did_you_mean(key, [*named, *NODE_OPTIONS, *RAY_OPTIONS])
            raise ConfigError(
                f"{where}: {loc}.{prefix}{key}: {node.type} has no argument "
                f"{key!r}{hint}; it takes: {', '.join(named) or 'no arguments'} "
                f"({_kind_of(loc)} {node.name!r})"
            )
    try:
        signature.bind(*positional, **keywords)
    except TypeError as exc:
        raise ConfigError(
            f"{where}: {loc}: {node.type}: {exc}; it takes: "
            f"{', '.join(named) or 'no arguments'} ({_kind_of(loc)} "
            f"{node.name!r})"
        ) from None


def _kind_of(loc: str) -> str:
    return _SECTIONS[loc.split("[", 1)[0]]


# -- overrides and environment variables ------------------------------------------------------


def _apply_override(data: dict[str, Any], override: str, where: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected key=value, e.g. stages.detect.fps=5")
    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    if parts[0] not in _SECTIONS:
        if len(parts) != 1:
            raise ConfigError(
                f"--set {override!r}: {parts[0]!r} has no sub-keys; node keys "
                f"start with sources., stages., sinks. or events."
            )
        data[parts[0]] = value
        return
    if len(parts) < 3:
        raise ConfigError(f"--set {override!r}: expected {parts[0]}.<name or index>.<key>=value")
    section, which, rest = parts[0], parts[1], parts[2:]
    nodes = data.get(section)
    if not isinstance(nodes, list):
        raise ConfigError(f"--set {override!r}: {where} has no {section}: list")
    node = _find_node(nodes, which)
    if node is None:
        names = [str(n.get("name")) for n in nodes if isinstance(n, dict)]
        raise ConfigError(
            f"--set {override!r}: no {_SECTIONS[section]} named {which!r} in "
            f"{where}{_did_you_mean(which, names)}; {section}: {', '.join(names)}"
        )
    target = node
    if len(rest) == 1 and isinstance(node.get("args"), dict) and rest[0] in node["args"]:
        target = node["args"]  # the key already lives under args:, keep it there
    for part in rest[:-1]:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {part!r} is not a mapping")
        target = child
    target[rest[-1]] = value


def _find_node(nodes: list[Any], which: str) -> dict[str, Any] | None:
    for node in nodes:
        if isinstance(node, dict) and node.get("name") == which:
            return node
    if which.isdigit() and int(which) < len(nodes):
        chosen = nodes[int(which)]
        if isinstance(chosen, dict):
            return chosen
    return None


def _expand_env(value: Any, where: str, loc: tuple[Any, ...]) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            if found is not None:
                return found
            if default is not None:
                return default
            raise ConfigError(
                f"{where}: {_path(loc)}: environment variable {name} is not set "
                f"(write ${{{name}:-default}} for a default)"
            )

        whole = _ENV.fullmatch(value)
        text = _ENV.sub(replace, value)
        if whole is not None:
            # A value that is one reference takes the variable's YAML type: "96" is 96.
            try:
                return load_yaml(text) if text else text
            except yaml.YAMLError:
                return text
        return text
    if isinstance(value, dict):
        return {k: _expand_env(v, where, (*loc, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, where, (*loc, i)) for i, v in enumerate(value)]
    return value


# -- YAML -----------------------------------------------------------------------------------------

#: Most values a pipeline file may hold once its aliases are expanded. Real files hold
#: hundreds; an alias bomb ("billion laughs") holds billions in a few lines.
MAX_YAML_VALUES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses a document whose aliases expand beyond ``MAX_YAML_VALUES``."""

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            size = _expanded_size(node, {})
            if size > MAX_YAML_VALUES:
                raise ConfigError(
                    f"the YAML expands to more than {MAX_YAML_VALUES:,} values through its "
                    f"aliases (*name) ({size:,}); refusing it"
                )
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values under ``node`` with every alias expanded, counting each shared node once per use."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = 1  # a node that contains itself counts once (the recursion stops here)
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, sizes) for item in node.value)
    else:
        size = 1
    sizes[id(node)] = size
    return size


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``, refusing alias bombs with a ``ConfigError`` (within milliseconds)."""
    return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader: no arbitrary objects


# -- messages -------------------------------------------------------------------------------------


def _path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _explain(exc: ValidationError, data: Mapping[str, Any]) -> str:
    """One line per problem: ``stages[1].fps: must be > 0, got -1 (stage 'detect')``."""
    lines = []
    for error in exc.errors():
        loc = error["loc"]
        kind = error["type"]
        ctx = error.get("ctx") or {}
        got = error.get("input")
        if kind == "missing":
            message = "is required"
            got = None
        elif kind == "extra_forbidden":
            allowed = list(PipelineSpec.model_fields)
            message = (
                f"unknown key{_did_you_mean(str(loc[-1]), allowed)}; expected one of: "
                f"{', '.join(allowed)}"
            )
            got = None
        elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            sign = {
                "greater_than": ">",
                "greater_than_equal": ">=",
                "less_than": "<",
                "less_than_equal": "<=",
            }[kind]
            bound = next(iter(ctx.values()))
            message = (
                f"must be {sign} {bound:g}"
                if isinstance(bound, float)
                else f"must be {sign} {bound}"
            )
        elif kind == "value_error":
            message = str(ctx.get("error", error["msg"]))
            got = None
        elif kind == "too_short" and loc == ("sources",):
            message = "needs at least one source"
            got = None
        else:
            message = error["msg"]
            message = (
                message.replace("Input should be", "must be")
                .replace("String should have", "must have")
                .replace("List should have", "must have")
            )
            message = message[0].lower() + message[1:]
        text = f"{_path(loc)}: {message}"
        if got is not None and not isinstance(got, dict | list):
            text += f", got {got!r}"
        owner = _owner(loc, data)
        if owner:
            text += f" ({owner})"
        lines.append(text)
    if len(lines) == 1:
        return lines[0]
    return f"{len(lines)} problems:\n  " + "\n  ".join(lines)


def _owner(loc: Sequence[Any], data: Mapping[str, Any]) -> str:
    """``stage 'detect'`` for a location inside a named node."""
    if len(loc) >= 2 and loc[0] in _SECTIONS and isinstance(loc[1], int):
        nodes = data.get(str(loc[0]))
        if isinstance(nodes, list) and loc[1] < len(nodes) and isinstance(nodes[loc[1]], dict):
            name = nodes[loc[1]].get("name")
            if isinstance(name, str) and name:
                return f"{_SECTIONS[str(loc[0])]} {name!r}"
    return ""


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
