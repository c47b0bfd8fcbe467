"""The ``framepipe`` command: run pipeline files and one-liners, inspect sources, see the demo.

::

    framepipe demo                                   # no camera, file or download needed
    framepipe run pipeline.yaml --set stages.detect.fps=5
    framepipe run --source clip.mp4 --detect yolox_nano --track --web --out annotated.mp4
    framepipe info rtsp://camera.local/stream
    framepipe bench

Exit codes scripts can rely on (``docs/cli.md``):

====  ======================================================================
0     the run ended normally (sources ended or ``--duration`` passed)
1     the pipeline failed: a node raised with ``on_error: stop``, a source or
      sink could not be opened, a worker died; ``info``: the source cannot be read
2     bad usage: unknown option, invalid pipeline file or ``--set``, missing file
130   interrupted by Ctrl-C (SIGINT); the run was stopped cleanly
143   terminated by SIGTERM; the run was stopped cleanly
====  ======================================================================

Only the public API of framepipe is used here.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

import framepipe as fp
from framepipe.config import RunOptions, load_pipeline
from framepipe.runtime import executor_names

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

app = typer.Typer(
    name="framepipe",
    help="Real-time video analysis pipelines. Start with: framepipe demo",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"framepipe {fp.__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and exit.",
            show_default=False,
        ),
    ] = False,
) -> None:
    """Real-time video analysis pipelines. Start with: framepipe demo"""


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # Logs and CI capture get room for the statistics table instead of rich's 80 columns.
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=160 if wide else None)


out = _console(stderr=False)
err = _console(stderr=True)

_STATE_STYLES = {
    "running": "green",
    "connected": "green",
    "connecting": "yellow",
    "reconnecting": "yellow",
    "starting": "yellow",
    "failed": "bold red",
    "ended": "dim",
    "idle": "dim",
}


# Options that several commands share.
HostOption = Annotated[
    str, typer.Option(metavar="ADDRESS", help="Address the web view listens on.")
]
PortOption = Annotated[int, typer.Option(metavar="PORT", help="Web view port (0: any free port).")]
DurationOption = Annotated[
    float | None,
    typer.Option(
        metavar="SECONDS",
        help="Stop after this many seconds (default: when the sources end, or Ctrl-C).",
        show_default=False,
    ),
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", help="No live display; only the summary.", show_default=False)
]


# -- shared pieces -----------------------------------------------------------------------------


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def _check_run_options(mode: str | None, executor: str | None, duration: float | None) -> None:
    """Usage errors (exit 2) for --mode, --executor and --duration."""
    if mode is not None and mode not in ("auto", "offline", "realtime", "replay"):
        raise _fail(f"--mode must be auto, offline, realtime or replay, got {mode!r}", EXIT_USAGE)
    if executor is not None and executor not in executor_names():
        raise _fail(
            f"--executor must be one of {', '.join(executor_names())}, got {executor!r}",
            EXIT_USAGE,
        )
    if duration is not None and not duration > 0:
        raise _fail(f"--duration must be > 0 seconds, got {duration}", EXIT_USAGE)


def _setup_logging(verbose: bool) -> None:
    handler = RichHandler(console=err, show_path=False, show_time=False, markup=False)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[handler],
        force=True,
    )


def stats_table(stats: fp.RunStats, title: str | None = None) -> Table:
    """``RunStats.rows()`` as a rich table, states coloured."""
    rows = stats.rows()
    table = Table(title=title, title_justify="left", header_style="bold", expand=False)
    numeric = {"processed", "fps", "wait p50 ms", "errors"}
    for name in rows[0]:
        table.add_column(
            name, justify="right" if name in numeric else "left", no_wrap=name in ("node", "state")
        )
    for row in rows[1:]:
        state = row[2].split(" ", 1)[0]
        cells: list[RenderableType] = list(row)
        cells[2] = Text(row[2], style=_STATE_STYLES.get(state, ""))
        table.add_row(*cells)
    return table


def _total_frames(pipe: fp.Pipeline) -> int | None:
    """Frames the sources will produce, when every source is finite and says how many."""
    total = 0
    for node in pipe.nodes.values():
        if node.kind != "source":
            continue
        source = node.obj
        if getattr(source, "live", False) or getattr(source, "loop", False):
            return None
        try:
            if isinstance(source, fp.sources.Images):
                frames: Any = len(source.files())
            else:
                frames = getattr(source, "frames", None)
        except fp.FramepipeError:
            return None  # the run itself will report it
        if not isinstance(frames, int) or frames <= 0:
            return None
        total += frames
    return total or None


def _resolve_mode(pipe: fp.Pipeline, mode: str) -> str:
    if mode != "auto":
        return mode
    live = any(
        node.kind == "source" and getattr(node.obj, "live", False) for node in pipe.nodes.values()
    )
    return "realtime" if live else "offline"


def _display(
    pipe: fp.Pipeline, run: fp.Run, options: RunOptions, note: str
) -> Callable[[], RenderableType]:
    """What the live display shows: a progress bar for finite offline runs, else live stats."""
    sources = [n.name for n in pipe.nodes.values() if n.kind == "source"]
    total = _total_frames(pipe) if run.plan.mode == "offline" else None
    duration = options.duration
    if total is None and not (run.plan.mode == "offline" and duration):

        def live_table() -> RenderableType:
            header = Text(
                f"{run.plan.mode} · {run.executor_name} · {run.elapsed:5.1f} s"
                f"{f' of {duration:g} s' if duration else ''} · Ctrl-C stops",
                style="dim",
            )
            return Group(header, *([Text(note)] if note else []), stats_table(pipe.stats()))

        return live_table

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        auto_refresh=False,
    )
    by_time = total is None
    task = progress.add_task(
        "seconds" if by_time else "frames", total=duration if by_time else total
    )

    def progress_view() -> RenderableType:
        if by_time:
            done: float = min(run.elapsed, duration or run.elapsed)
        else:
            stats = pipe.stats()
            done = sum(stats[name].processed for name in sources if name in stats)
        progress.update(task, completed=done)
        return Group(progress, stats_table(pipe.stats()))

    return progress_view


def execute(
    pipe: fp.Pipeline,
    options: RunOptions,
    *,
    quiet: bool = False,
    summary: Path | None = None,
    announce: Callable[[fp.Run], None] | None = None,
    note: str = "",
) -> int:
    """Run ``pipe`` with a live display; print the summary; return the exit code."""
    options = RunOptions(_resolve_mode(pipe, options.mode), options.executor, options.duration)
    code = EXIT_OK
    run: fp.Run | None = None
    try:
        run = pipe.start(**options.run_kwargs())
        if announce is not None:
            announce(run)
        if quiet or not err.is_terminal or err.is_dumb_terminal:
            # A display that cannot be redrawn in place would print the table every refresh.
            run.join()
        else:
            with Live(
                get_renderable=_display(pipe, run, options, note),
                console=err,
                refresh_per_second=4,
                transient=True,
                redirect_stdout=False,
            ):
                run.join()
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except SystemExit as exc:  # Pipeline.run turns SIGTERM into SystemExit(143)
        code = exc.code if isinstance(exc.code, int) else EXIT_TERMINATED
    except fp.GraphError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except fp.FramepipeError as exc:
        err.print(f"[bold red]pipeline error:[/] {escape(str(exc))}", highlight=False)
        code = EXIT_ERROR
    if run is None:
        pipe.stop()  # interrupted inside start(): whatever started, stop it
        return code
    if run.running:  # only when start() itself was interrupted
        run.stop()
    out.print(
        stats_table(
            run.stats,
            title=f"{pipe.name}: {run.plan.mode}, {run.executor_name}, {run.elapsed:.1f} s",
        )
    )
    for error in run.errors[1:] if code == EXIT_ERROR else run.errors:
        err.print(f"[yellow]node error:[/] {escape(str(error))}", highlight=False)
    silent = _never_connected(pipe, run)
    if silent and code == EXIT_OK:
        for name, target in silent:
            err.print(
                f"[bold red]error:[/] source {name!r} never connected to {escape(target)}",
                highlight=False,
            )
        code = EXIT_ERROR
    if code == EXIT_INTERRUPTED:
        err.print("interrupted: stopped cleanly (exit 130)")
    elif code == EXIT_TERMINATED:
        err.print("terminated: stopped cleanly (exit 143)")
    if summary is not None:
        data = run.summary()
        # A signal may land just before or after join() (which sets the flag itself).
        data["interrupted"] = run.interrupted or code in (EXIT_INTERRUPTED, EXIT_TERMINATED)
        data["exit_code"] = code
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return code


def _never_connected(pipe: fp.Pipeline, run: fp.Run) -> list[tuple[str, str]]:
    """(name, target) of the live sources that failed without an error: never connected."""
    failed_with_error = {getattr(error, "node", None) for error in run.errors}
    found = []
    for name, stats in run.stats.items():
        node = pipe.nodes.get(name)
        if (
            node is not None
            and node.kind == "source"
            and getattr(node.obj, "live", False)
            and stats.state == "failed"
            and name not in failed_with_error
        ):
            described = node.obj.describe()
            found.append((name, str(described.get("url") or described.get("device") or name)))
    return found


def _serving(web: fp.sinks.Web, run: fp.Run) -> bool:
    """Wait until the web view serves, or the run ends (a taken port: the sink failed)."""
    while run.error is None and not run.wait(0):
        if web.wait_serving(0.1):
            return True
    return False


# -- run -------------------------------------------------------------------------------------


def source_for(target: str) -> fp.sources.Source:
    """The source a ``--source`` value means: a camera, a stream, images, or a video file."""
    if target.isdigit() or target.startswith("/dev/video"):
        return fp.sources.Camera(int(target) if target.isdigit() else target)
    if "://" in target:
        try:
            return fp.sources.Stream(target)
        except ValueError as exc:
            raise _fail(f"--source: {exc}", EXIT_USAGE) from None
    if os.path.isdir(target) or any(c in target for c in "*?["):
        return fp.sources.Images(target)
    if not os.path.exists(target):
        raise _fail(
            f"--source {target}: no such file (give a video file, a directory or "
            f"glob of images, a URL, or a camera index)",
            EXIT_USAGE,
        )
    return fp.sources.VideoFile(target)


@dataclass(frozen=True)
class Detection:
    """What ``--detect``, ``--conf`` and ``--classes`` ask for."""

    model: str
    conf: float | None = None
    classes: str | None = None

    def stage(self) -> fp.Stage:
        """The detecting stage; usage errors and a missing model end the command here."""
        if self.model in ("motion", "faces"):
            if self.conf is not None or self.classes is not None:
                raise _fail(
                    f"--conf and --classes go with a detector model, not --detect {self.model}",
                    EXIT_USAGE,
                )
            return fp.stages.Motion() if self.model == "motion" else fp.stages.Faces()
        try:
            # Found (or fetched) now, so a missing model is reported before the run starts.
            fp.stages.resolve_model(self.model)
        except fp.ModelError as exc:
            # The library's hint is Python (model='path/to/...'); say it the CLI's way.
            message = str(exc).replace("pass model='", "pass --detect '")
            raise _fail(
                f"--detect {self.model}: {message}\n(give a model file: "
                "--detect path/to/model.onnx, or --detect motion to need no model)",
                EXIT_ERROR,
            ) from None
        options: dict[str, Any] = {}
        if self.conf is not None:
            options["conf"] = self.conf
        if self.classes is not None:
            names = [name.strip() for name in self.classes.split(",") if name.strip()]
            if not names:
                raise _fail("--classes: give class names, e.g. --classes car,truck", EXIT_USAGE)
            options["classes"] = names
        try:
            return fp.stages.Detector(self.model, **options)
        except (ValueError, fp.FramepipeError) as exc:
            raise _fail(f"--detect {self.model}: {exc}", EXIT_USAGE) from None


def one_liner(
    source: str,
    *,
    detect: Detection | None,
    track: bool,
    web: fp.sinks.Web | None,
    video: Path | None,
    jsonl: Path | None,
    overlay: bool = True,
) -> fp.Pipeline:
    """The pipeline of ``framepipe run --source ...``."""
    if track and not detect:
        raise _fail("--track needs --detect MODEL (or --detect motion)", EXIT_USAGE)
    if jsonl and not detect:
        raise _fail("--jsonl writes results: add --detect MODEL (or --detect motion)", EXIT_USAGE)
    for output in (video, jsonl):
        if output is not None:
            _check_writable(output)
    pipe = fp.Pipeline("run")
    pipe.source("source", source_for(source))
    last = "source"
    if detect:
        pipe.stage("detect", detect.stage(), after=last)
        last = "detect"
    if track:
        pipe.stage("track", fp.stages.Tracker("detect"), after=last)
        last = "track"
    shown = "source"
    if detect and (web or video):
        pipe.stage("annotate", fp.stages.Annotate(trace=track, overlay=overlay), after=last)
        shown = "annotate"
    if video:
        pipe.sink("video", fp.sinks.VideoFile(video), after=shown)
    if jsonl:
        pipe.sink("jsonl", fp.sinks.JsonLines(jsonl), after=last)
    if web:
        pipe.sink("web", web, after=shown, policy="latest")
    return pipe


def _check_writable(path: Path) -> None:
    """Exit with a message when ``path``'s folder cannot be made or written to."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise _fail(
            f"cannot write {path}: {folder} is not a folder this user can write to", EXIT_ERROR
        )


def _add_clips(pipe: fp.Pipeline, folder: Path | None, when: str | None, seconds: str) -> None:
    if folder is None or when is None:
        raise _fail(
            "--clips DIR and --clip-when NODE go together: the folder for the clips and the "
            "stage whose results mark events",
            EXIT_USAGE,
        )
    stages = [name for name, node in pipe.nodes.items() if node.kind == "stage"]
    if when not in stages:
        raise _fail(
            f"--clip-when {when!r}: no such stage; the stages are {', '.join(stages) or 'none'}",
            EXIT_USAGE,
        )
    try:
        pre, post = (float(part) for part in seconds.split(","))
        sink = fp.sinks.Clips(folder, when=when, pre=pre, post=post)
    except ValueError:
        raise _fail(
            f"--clip-seconds {seconds!r}: expected PRE,POST in seconds >= 0, e.g. 5,5",
            EXIT_USAGE,
        ) from None
    _check_writable(folder / "clips.jsonl")
    try:
        pipe.sink("clips", sink, after=when)
    except fp.GraphError as exc:
        raise _fail(f"--clips: {exc}", EXIT_USAGE) from None


@app.command()
def run(
    pipeline: Annotated[
        Path | None,
        # Described in the docstring: typer's help would label it with a raw "<path>".
        typer.Argument(metavar="PIPELINE_FILE", hidden=True, show_default=False),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            metavar="PATH_OR_URL",
            help="Instead of a file: a video file, image directory or glob, URL or camera index.",
            show_default=False,
        ),
    ] = None,
    detect: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL",
            help="With --source: a detector model (path/to/model.onnx or a known name such as "
            "yolox_nano), or 'motion' or 'faces'.",
            show_default=False,
        ),
    ] = None,
    conf: Annotated[
        float | None,
        typer.Option(
            metavar="0..1",
            help="With --detect MODEL: keep detections at least this confident (default 0.25).",
            show_default=False,
        ),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            metavar="NAMES",
            help="With --detect MODEL: keep only these classes, comma-separated: car,truck,bus.",
            show_default=False,
        ),
    ] = None,
    track: Annotated[
        bool, typer.Option("--track", help="With --source: track detections.", show_default=False)
    ] = False,
    web: Annotated[
        bool, typer.Option("--web", help="With --source: serve the live page.", show_default=False)
    ] = False,
    out_video: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="VIDEO_FILE",
            help="With --source: write the annotated video here.",
            show_default=False,
        ),
    ] = None,
    jsonl: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="With --source: write results as JSON Lines here.",
            show_default=False,
        ),
    ] = None,
    events: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Write the run's events (camera health: stalled, frozen, clock) as JSON "
            "Lines here.",
            show_default=False,
        ),
    ] = None,
    clips: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Cut an MP4 clip around each event into this folder (needs --clip-when).",
            show_default=False,
        ),
    ] = None,
    clip_when: Annotated[
        str | None,
        typer.Option(
            metavar="NODE",
            help="With --clips: the stage whose results mark events (a counter's crossings, "
            "any truthy result).",
            show_default=False,
        ),
    ] = None,
    clip_seconds: Annotated[
        str,
        typer.Option(
            metavar="PRE,POST",
            help="With --clips: seconds of video before the first and after the last event frame.",
        ),
    ] = "5,5",
    no_overlay: Annotated[
        bool,
        typer.Option(
            "--no-overlay",
            help="With --source: draw boxes only, without the fps and frame age overlay.",
            show_default=False,
        ),
    ] = False,
    host: HostOption = "127.0.0.1",
    port: PortOption = 7001,
    token: Annotated[
        str | None,
        typer.Option(
            metavar="TOKEN",
            help="Web view token (required by every request).",
            envvar="FRAMEPIPE_WEB_TOKEN",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            metavar="MODE",
            help="auto, offline, realtime or replay (overrides the file).",
            show_default=False,
        ),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            metavar="EXECUTOR",
            help=f"{', '.join(executor_names())} (overrides the file).",
            show_default=False,
        ),
    ] = None,
    duration: DurationOption = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override a key of the file: --set stages.detect.fps=5 (repeatable).",
            show_default=False,
        ),
    ] = None,
    summary: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Write the run's summary (stats, errors, exit code) as JSON here.",
            show_default=False,
        ),
    ] = None,
    quiet: QuietOption = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Log at INFO level.", show_default=False)
    ] = False,
) -> None:
    """Run a pipeline file, or a one-liner built from --source and friends.

    PIPELINE_FILE is a YAML pipeline file (docs/pipeline-files.md).

    Offline runs over finite sources show a progress bar with ETA; real-time
    runs a live statistics table. Ctrl-C and SIGTERM stop cleanly.
    """
    _setup_logging(verbose)
    _check_run_options(mode, executor, duration)
    if pipeline is None and source is None:
        raise _fail(
            "nothing to run: give a pipeline file (framepipe run examples/traffic.yaml) or "
            "--source PATH_OR_URL (a video file, image folder, stream URL or camera index)",
            EXIT_USAGE,
        )
    if pipeline is not None and source is not None:
        raise _fail("give a pipeline file or --source PATH_OR_URL, not both", EXIT_USAGE)
    one_liner_only = {
        "--detect": detect,
        "--conf": conf is not None,
        "--classes": classes,
        "--track": track,
        "--web": web,
        "--out": out_video,
        "--jsonl": jsonl,
        "--no-overlay": no_overlay,
    }
    web_sink: fp.sinks.Web | None = None
    if pipeline is not None:
        given = [name for name, value in one_liner_only.items() if value]
        if given:
            raise _fail(
                f"{', '.join(given)} go with --source; in a pipeline file, add "
                f"stages and sinks instead",
                EXIT_USAGE,
            )
        try:
            pipe, options = load_pipeline(pipeline, overrides=set_ or ())
        except fp.ConfigError as exc:
            raise _fail(str(exc), EXIT_USAGE) from None
        web_sink = next(
            (n.obj for n in pipe.nodes.values() if isinstance(n.obj, fp.sinks.Web)), None
        )
    else:
        assert source is not None
        if set_:
            raise _fail("--set changes pipeline files; it does not apply to --source", EXIT_USAGE)
        if web:
            try:
                web_sink = fp.sinks.Web(host=host, port=port, token=token)
            except ValueError as exc:
                raise _fail(str(exc), EXIT_USAGE) from None
        pipe = one_liner(
            source,
            detect=Detection(detect, conf, classes) if detect else None,
            track=track,
            web=web_sink,
            video=out_video,
            jsonl=jsonl,
            overlay=not no_overlay,
        )
        options = RunOptions("realtime" if web else "auto", "threads", None)
    if events is not None:
        _check_writable(events)
        try:
            pipe.events("events", fp.sinks.JsonLines(events))
        except fp.GraphError as exc:
            raise _fail(f"--events: {exc}", EXIT_USAGE) from None
    if clips is not None or clip_when is not None:
        _add_clips(pipe, clips, clip_when, clip_seconds)
    options = RunOptions(
        mode or options.mode,
        executor or options.executor,
        duration if duration is not None else options.duration,
    )

    def announce(run: fp.Run) -> None:
        if web_sink is not None and _serving(web_sink, run):
            err.print(f"web view: [bold]{web_sink.url}[/]", highlight=False)

    raise typer.Exit(execute(pipe, options, quiet=quiet, summary=summary, announce=announce))


# -- info ------------------------------------------------------------------------------------


@app.command()
def info(
    source: Annotated[str, typer.Argument(metavar="SOURCE", hidden=True)],
    count_frames: Annotated[
        bool,
        typer.Option(
            "--count-frames",
            help="Count the frames of a file by reading it (when the header has no count).",
            show_default=False,
        ),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(metavar="SECONDS", help="Give up on a stream after this long."),
    ] = 10.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.", show_default=False)
    ] = False,
) -> None:
    """Describe a video file or stream: codec, size, fps, duration, frames, reachability.

    SOURCE is a video file or a stream URL (rtsp://, http://...).

    Exits 0 when the source can be read, 1 when it cannot (the reason is printed).
    """
    _setup_logging(False)
    if source.isdigit() or source.startswith("/dev/video"):
        raise _fail(
            "info reads video files and streams; to try a camera, run "
            f"framepipe run --source {source} --web",
            EXIT_USAGE,
        )
    if "://" in source:
        try:
            fp.sources.Stream(source)  # checks that the URL can be parsed
        except ValueError as exc:
            raise _fail(str(exc), EXIT_USAGE) from None
    try:
        facts = fp.sources.probe(source, timeout=timeout, count_frames=count_frames)
    except fp.SourceError as exc:
        if as_json:
            out.print_json(data={"source": source, "reachable": False, "error": exc.detail})
        else:
            err.print(
                f"[bold red]cannot read {escape(source)}:[/] {escape(exc.detail)}", highlight=False
            )
        raise typer.Exit(EXIT_ERROR) from None
    if as_json:
        out.print_json(data=facts)
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    fps = facts.get("fps")
    duration = facts.get("duration")
    frames = facts.get("frames")
    if frames is None and facts.get("frames_estimated"):
        frames_text = f"about {facts['frames_estimated']} (from duration x fps)"
    else:
        frames_text = "unknown (try --count-frames)" if frames is None else str(frames)
    rows = [
        ("source", str(facts["source"])),
        ("reachable", "yes" if facts.get("reachable") else "no"),
        ("kind", "live stream" if facts.get("live") else "file or recorded stream"),
        ("container", str(facts.get("format"))),
        (
            "codec",
            f"{facts.get('codec')}"
            + (f" ({facts['profile']})" if facts.get("profile") else "")
            + (f", {facts['pix_fmt']}" if facts.get("pix_fmt") else ""),
        ),
        ("size", f"{facts.get('width')} x {facts.get('height')}"),
        ("fps", "unknown" if fps is None else f"{fps:.3f}"),
        ("duration", "unknown" if duration is None else f"{duration:.2f} s"),
        ("frames", frames_text),
        (
            "bit rate",
            "unknown" if not facts.get("bit_rate") else f"{facts['bit_rate'] / 1000:.0f} kb/s",
        ),
        (
            "audio",
            ", ".join(
                f"{a['codec']} {a['sample_rate']} Hz x{a['channels']}"
                for a in facts.get("audio") or []
            )
            or "none",
        ),
    ]
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)


# -- demo ------------------------------------------------------------------------------------


def _local_model(name: str = "yolox_nano") -> Path | None:
    """A known model already on this machine (never downloads)."""
    for folder in fp.stages.models_dirs():
        path = Path(folder) / f"{name}.onnx"
        if path.is_file():
            return path
    return None


def demo_pipeline(
    *, web: fp.sinks.Web, jsonl: Path, source: str | None = None, model: str | None = None
) -> tuple[fp.Pipeline, str]:
    """The demo: a scene (or ``source``) -> detection -> tracking -> line counting -> web + JSON.

    Returns the pipeline and a line saying what it detects with.
    """
    pipe = fp.Pipeline("demo")
    if source is None:
        scene = fp.sources.Scene(width=960, height=540, fps=30)
        pipe.source("scene", scene)
        pipe.stage("motion", fp.stages.Motion(min_area=1200), after="scene")
        pipe.stage("track", fp.stages.Tracker("motion"), after="motion")
        pipe.stage("count", fp.stages.LineCounter(*scene.counting_line), after="track")
        what = "a synthetic street scene; motion detection, tracking, line counting"
    else:
        video = source_for(source)
        if isinstance(video, fp.sources.VideoFile):
            video = fp.sources.VideoFile(source, loop=True)
        try:
            facts = fp.sources.probe(source) if not isinstance(video, fp.sources.Camera) else {}
        except fp.SourceError as exc:
            raise _fail(f"--source {source}: {exc.detail}", EXIT_USAGE) from None
        width, height = facts.get("width") or 640, facts.get("height") or 480
        pipe.source("video", video)
        weights: str | Path | None = model or _local_model()
        if weights is not None:
            detector: fp.Stage = fp.stages.Detector(weights)
            what = f"{source}; detector {Path(weights).name} at 10 fps, tracking, line counting"
        else:
            detector = fp.stages.Motion()
            what = (
                f"{source}; no model on this machine (pass --model PATH), so motion "
                f"detection, tracking, line counting"
            )
        pipe.stage("detect", detector, after="video", fps=10)
        pipe.stage("track", fp.stages.Tracker("detect"), after=["video", "detect"], join="latest")
        line = ((0.0, 0.6 * height), (float(width), 0.6 * height))
        pipe.stage("count", fp.stages.LineCounter(*line), after="track")
    pipe.stage("annotate", fp.stages.Annotate(trace=True), after="count")
    pipe.sink("web", web, after="annotate", policy="latest")
    pipe.sink("results", fp.sinks.JsonLines(jsonl), after="count")
    return pipe, what


@app.command()
def demo(
    port: PortOption = 7001,
    host: HostOption = "127.0.0.1",
    duration: DurationOption = None,
    source: Annotated[
        str | None,
        typer.Option(
            metavar="PATH_OR_URL",
            help="Use this video (looped) or stream instead of the synthetic scene.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL",
            help="With --source: detector model (path or known name); default: yolox_nano when it "
            "is already on this machine, else motion detection.",
            show_default=False,
        ),
    ] = None,
    jsonl: Annotated[
        Path, typer.Option(metavar="FILE", help="Where the counts go, as JSON Lines.")
    ] = Path("framepipe-demo.jsonl"),
    executor: Annotated[
        str, typer.Option(metavar="EXECUTOR", help=f"{', '.join(executor_names())}.")
    ] = "threads",
    quiet: QuietOption = False,
) -> None:
    """Watch a pipeline work: detection, tracking and line counting, live in the browser.

    Needs no camera, file or download: a synthetic street scene is the default
    source. Open the printed URL; Ctrl-C stops.
    """
    _setup_logging(False)
    _check_run_options(None, executor, duration)
    if model is not None and source is None:
        raise _fail(
            "--model goes with --source (the synthetic scene uses motion detection)", EXIT_USAGE
        )
    try:
        web = fp.sinks.Web(host=host, port=port)
    except ValueError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    pipe, what = demo_pipeline(web=web, jsonl=jsonl, source=source, model=model)

    def announce(run: fp.Run) -> None:
        if not _serving(web, run):
            return  # the run failed to start; execute() reports why
        err.print(f"framepipe demo: {what}")
        err.print(f"open [bold]{web.url}[/]  ·  results: {jsonl}  ·  Ctrl-C stops", highlight=False)
        # The URL on stdout too, alone on its line, for scripts.
        print(web.url, flush=True)

    raise typer.Exit(
        execute(
            pipe,
            RunOptions("realtime", executor, duration),
            quiet=quiet,
            announce=announce,
            note=f"open {web.url}",
        )
    )


# -- profile and plan --------------------------------------------------------------------------

#: A pipeline file (YAML; docs/pipeline-files.md), named in the usage line: typer's
#: help would label it with a raw "<path>".
PipelineArgument = Annotated[
    Path, typer.Argument(metavar="PIPELINE_FILE", hidden=True, show_default=False)
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a key of the file (repeatable).",
        show_default=False,
    ),
]


def _load_for_planning(pipeline: Path, overrides: list[str] | None) -> tuple[fp.Pipeline, str]:
    """The pipeline of a file, and the executor it asks for."""
    try:
        pipe, options = load_pipeline(pipeline, overrides=overrides or ())
    except fp.ConfigError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    return pipe, options.executor


@app.command()
def profile(
    pipeline: PipelineArgument,
    output: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", metavar="FILE", help="Save the profile as JSON here.", show_default=False
        ),
    ] = None,
    duration: Annotated[
        float, typer.Option(metavar="SECONDS", help="Media seconds of each source to play.")
    ] = 10.0,
    set_: SetOption = None,
) -> None:
    """Measure what each node of a pipeline file costs per frame on this machine.

    Replays the file's sources once (no waiting in real time), timing every
    node's real code: wall and CPU time per frame, and the share that holds
    the GIL. Use the JSON with framepipe plan --profile, or
    pipe.run(mode="replay", profile=...). See docs/replay.md.
    """
    from framepipe import planner

    if not duration > 0:
        raise _fail(f"--duration must be > 0 seconds, got {duration:g}", EXIT_USAGE)
    pipe, _ = _load_for_planning(pipeline, set_)
    try:
        measured = planner.measure(pipe, duration=duration)
    except fp.GraphError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except fp.FramepipeError as exc:
        raise _fail(str(exc), EXIT_ERROR) from None
    table = Table(title=f"{pipe.name}: cost per frame on this machine", title_justify="left")
    for column in ("node", "kind", "frames", "wall ms", "CPU ms", "GIL share"):
        table.add_column(column, justify="left" if column in ("node", "kind") else "right")
    for name, cost in measured.nodes.items():
        table.add_row(
            name,
            cost.kind,
            str(cost.frames),
            f"{cost.wall_s * 1000:.2f}",
            f"{cost.cpu_s * 1000:.2f}" if cost.cpu_s is not None else "-",
            f"{cost.gil:.2f}" if cost.gil is not None else "-",
        )
    out.print(table)
    if output is not None:
        measured.save(output)
        err.print(f"profile saved to {output}")


@app.command()
def plan(
    pipeline: PipelineArgument,
    streams: Annotated[
        str, typer.Option(metavar="COUNTS", help="Stream counts to forecast: 1..16, or 1,2,4,8.")
    ] = "1..16",
    profile_file: Annotated[
        Path | None,
        typer.Option(
            "--profile",
            metavar="FILE",
            help="Costs saved by framepipe profile (default: measure them now).",
            show_default=False,
        ),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            metavar="EXECUTOR",
            help="threads, processes or inline (default: the file's).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="With processes: the number of worker processes (default: one per node).",
            show_default=False,
        ),
    ] = None,
    cpus: Annotated[
        float | None,
        typer.Option(
            metavar="N", help="CPU cores to plan for (default: this machine's).", show_default=False
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(metavar="PNG", help="Save the curve as a PNG here.", show_default=False),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the forecast as JSON instead of a table.")
    ] = False,
    set_: SetOption = None,
) -> None:
    """Forecast how many copies of a pipeline's sources this machine carries in real time.

    For each stream count: every node's predicted fps (of the rate it asks
    for), the worst drop share, frame age, CPU and GIL load; then the largest
    count that keeps every node at its rate. See docs/replay.md.
    """
    from framepipe import planner

    if executor is not None and executor not in ("inline", "threads", "processes"):
        raise _fail(
            f"--executor must be inline, threads or processes, got {executor!r}", EXIT_USAGE
        )
    try:
        counts = planner.parse_streams(streams)
    except fp.GraphError as exc:
        raise _fail(f"--{exc}", EXIT_USAGE) from None
    pipe, file_executor = _load_for_planning(pipeline, set_)
    try:
        if profile_file is not None:
            costs = fp.Profile.load(profile_file)
        else:
            err.print("measuring each node's cost (framepipe profile) ...")
            costs = planner.measure(pipe, duration=10.0)
        capacity = planner.forecast(
            pipe,
            costs,
            streams=counts,
            executor=executor or file_executor,
            workers=workers,
            cpus=cpus,
        )
    except fp.GraphError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except fp.FramepipeError as exc:
        raise _fail(str(exc), EXIT_ERROR) from None
    if as_json:
        out.print_json(data=capacity.to_dict())
    else:
        rows = capacity.rows()
        table = Table(
            title=f"{pipe.name}: {capacity.executor} on {capacity.cpus:g} CPUs "
            "(fps: predicted/requested per stream)",
            title_justify="left",
        )
        for column in rows[0]:
            table.add_column(column, justify="right")
        for row in rows[1:]:
            style = None if row[-1] == "ok" else "red"
            table.add_row(*row, style=style)
        out.print(table)
        largest = capacity.largest
        out.print(
            f"largest stream count that keeps every node at its rate: [bold]{largest}[/]"
            if largest
            else "[bold red]no stream count keeps every node at its rate[/]",
            highlight=False,
        )
    if plot is not None:
        capacity.plot(plot)
        err.print(f"plot saved to {plot}")


# -- bench -----------------------------------------------------------------------------------


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="Shorter runs (about a minute and a half in all).", show_default=False
        ),
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME",
            help="Run only this scenario (repeatable): slow_consumer, transport, overhead, "
            "decode, rtsp_latency, detection.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the benchmarks of a framepipe checkout (python -m benchmarks.run).

    Run it from the repository root (where benchmarks/ is). Other options
    (--out FILE, --markdown FILE) are passed on. The table of results is printed
    once, at the end; each measurement is also printed as a JSON line as it comes.
    """
    root = next(
        (
            folder
            for folder in (Path.cwd(), *Path.cwd().parents)
            if (folder / "benchmarks" / "run.py").is_file()
        ),
        None,
    )
    if root is None:
        raise _fail(
            "no benchmarks/run.py here or above: framepipe bench runs the benchmarks "
            "of a framepipe source checkout, from its root",
            EXIT_USAGE,
        )
    args = [*(["--quick"] if quick else []), *(f"--only={name}" for name in only or ()), *ctx.args]
    started = time.monotonic()
    try:
        code = subprocess.call([sys.executable, "-m", "benchmarks.run", *args], cwd=root)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    err.print(f"benchmarks finished in {time.monotonic() - started:.0f} s (exit {code})")
    raise typer.Exit(code)


def main() -> None:
    """Entry point of the ``framepipe`` command.

    While a pipeline runs, framepipe turns SIGTERM into a clean stop and
    ``SystemExit(143)``; ``execute`` reports it as exit code 143.
    """
    try:
        app()
    except ModuleNotFoundError as exc:
        if "framepipe[" not in str(exc):  # not an extra framepipe names: a real bug
            raise
        # An optional part that is not installed (fp.stages, fp.sinks.Web): say which.
        raise SystemExit(_fail(str(exc), EXIT_ERROR).exit_code) from None


if __name__ == "__main__":
    main()
