"""The classic failure, handled: a 1 s consumer next to a 30 fps preview, from one decode.

The slow stage always starts on the newest frame (older ones are dropped and
counted), and the fast stage keeps the source's rate because each stage runs in
its own process.
"""

import time

import framepipe as fp


class SlowModel(fp.Stage):
    """Stands in for a heavy model: one second of pure-Python work per frame."""

    def process(self, frame: fp.Frame) -> int:
        deadline = time.perf_counter() + 1.0
        spins = 0
        while time.perf_counter() < deadline:
            spins += 1
        return spins


def build() -> tuple[fp.Pipeline, fp.sinks.Collect]:
    pipe = fp.Pipeline("slow-consumer")
    cam = pipe.source("cam", fp.sources.Synthetic(width=1920, height=1080, fps=30))
    preview = pipe.stage("preview", lambda f: f.index, after=cam)
    slow = pipe.stage("slow", SlowModel(), after=cam)
    collect = fp.sinks.Collect()
    pipe.sink("results", collect, after=[preview, slow])
    return pipe, collect


if __name__ == "__main__":
    pipe, collect = build()
    run = pipe.run(mode="realtime", executor="processes", duration=6)
    print(run.stats)
    fast, slow = run.stats["preview"], run.stats["slow"]
    print(
        f"\npreview: {fast.fps:.1f} fps; slow: {slow.processed} frames, "
        f"frame age when it started p50 {slow.age_ms['p50']:.0f} ms"
    )
