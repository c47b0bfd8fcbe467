"""The engine without its extras: it runs, and a missing extra is named when it is needed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# Modules of the extras made unimportable in a child interpreter, as if not installed.
BLOCK = """
import sys
for name in ("supervision", "scipy", "onnxruntime", "starlette", "uvicorn"):
    sys.modules[name] = None
"""


def python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_engine_runs_without_the_extras(tmp_path: Path) -> None:
    done = python(
        """
        import framepipe as fp
        pipe = fp.Pipeline()
        cam = pipe.source("cam", fp.sources.Synthetic(width=64, height=48, frames=5))
        mean = pipe.stage("mean", lambda f: float(f.image.mean()), after=cam)
        pipe.sink("log", fp.sinks.JsonLines("r.jsonl"), after=mean)
        pipe.sink("rec", fp.sinks.VideoFile("r.mp4"), after=cam)
        print(pipe.run(executor="threads").stats["log"].processed)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"


def test_a_missing_extra_is_named(tmp_path: Path) -> None:
    done = python(
        """
        import framepipe as fp
        for make in (lambda: fp.stages.Motion(), lambda: fp.sinks.Web()):
            try:
                make()
            except ModuleNotFoundError as exc:
                print(exc)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    stages, web = done.stdout.splitlines()
    assert "fp.stages needs supervision" in stages and "pip install 'framepipe[vision]'" in stages
    assert "fp.sinks.Web needs starlette" in web and "pip install 'framepipe[web]'" in web


def test_the_command_names_a_missing_extra_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "sources: [{name: c, type: Synthetic, frames: 3}]\nstages: [{name: m, type: Motion}]\n"
    )
    for args, code in ((["demo", "--duration", "1"], 1), (["run", "p.yaml"], 2)):
        done = python(
            f"""
            import sys
            from framepipe import cli
            sys.argv = ["framepipe", *{args!r}]
            cli.main()
            """,
            tmp_path,
        )
        assert done.returncode == code, done.stderr
        assert "framepipe[" in done.stderr and "Traceback" not in done.stderr
