"""Run framepipe's core benchmarks.

Usage: ``python -m benchmarks.run [--quick] [--only NAME] [--out FILE] [--markdown FILE]``.

Prints one JSON object per line on stdout (first the environment, then one
per measurement, then the end), writes the same lines to ``--out``, and ends
with a table on stderr (and as Markdown to ``--markdown``).

Run it from the repository root, on a machine as quiet as you can get: every
figure is a wall-clock measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import time
from collections.abc import Iterator

from ._report import Measurement, Report, environment, markdown, progress

#: Scenario name -> its module, imported only when it runs: every process the
#: benchmarks spawn imports this module again, and should import no more.
SCENARIOS = {
    "slow_consumer": "benchmarks.slow_consumer",
    "transport": "benchmarks.transport",
    "overhead": "benchmarks.overhead",
    "decode": "benchmarks.decode",
    "rtsp_latency": "benchmarks.rtsp_latency",
    "detection": "benchmarks.detection",
    "ray_transfer": "benchmarks.ray_transfer",
    "streams": "benchmarks.streams",
    "tracker": "benchmarks.tracker",
    "clips": "benchmarks.clips",
}


def scenario(name: str, quick: bool) -> Iterator[Measurement]:
    """The measurements of one scenario, as they come."""
    measurements: Iterator[Measurement] = importlib.import_module(SCENARIOS[name]).run(quick)
    return measurements


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description="framepipe's core benchmarks"
    )
    parser.add_argument(
        "--quick", action="store_true", help="shorter runs (about a minute and a half in all)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(SCENARIOS),
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--out", help="also write the JSON lines to this file")
    parser.add_argument("--markdown", help="also write the table as Markdown to this file")
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    for path in (args.out, args.markdown):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    began = time.monotonic()
    with open(args.out, "w", encoding="utf-8") if args.out else contextlib.nullcontext() as out:
        report = Report(out)
        report.line(environment({"quick": args.quick, "only": names}))
        for name in names:
            for measurement in scenario(name, args.quick):
                report.add(measurement)
        report.line(
            {
                "kind": "end",
                "elapsed_s": round(time.monotonic() - began, 1),
                "load_average": [round(v, 2) for v in os.getloadavg()],
            }
        )
    progress(f"done in {time.monotonic() - began:.0f} s")
    report.table()
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as md:
            md.write(markdown(report.measurements))
    return 0


if __name__ == "__main__":
    sys.exit(main())
