"""A pipeline run as a separate program by the shutdown tests.

Usage: python pipeline_script.py EXECUTOR MARKER_FILE [run|start]
Prints "running" once frames flow, then runs until stopped.
Exit codes: 0 normal end, 130 Ctrl-C, 143 SIGTERM, 3 a framepipe error.
"""

import json
import sys
import threading
import time

import framepipe as fp
from stages_for_tests import MarkerSink, Sleepy

if __name__ == "__main__":
    executor, marker = sys.argv[1], sys.argv[2]
    how = sys.argv[3] if len(sys.argv) > 3 else "run"
    pipe = fp.Pipeline()
    cam = pipe.source("cam", fp.sources.Synthetic(width=640, height=480, fps=30))
    fast = pipe.stage("fast", lambda f: f.index, after=cam)
    slow = pipe.stage("slow", Sleepy(0.3), after=cam)
    pipe.sink("out", MarkerSink(marker), after=[fast, slow])

    def announce() -> None:
        while True:
            stats = pipe.stats()
            if "out" in stats and stats["out"].processed >= 10:
                run = pipe._run  # the test needs the workers' pids
                print("running", flush=True)
                print(json.dumps(run.worker_pids() if run is not None else {}), flush=True)
                return
            time.sleep(0.05)

    threading.Thread(target=announce, daemon=True).start()
    try:
        if how == "start":  # the caller keeps doing its own work while the pipeline runs
            with pipe.start(mode="realtime", executor=executor):
                while True:
                    time.sleep(0.05)
        pipe.run(mode="realtime", executor=executor)
    except KeyboardInterrupt:
        sys.exit(130)
    except fp.FramepipeError as exc:
        print(f"error: {exc}", flush=True)
        sys.exit(3)
