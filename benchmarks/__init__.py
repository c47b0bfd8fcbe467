"""framepipe's core benchmarks: ``python -m benchmarks.run`` (see benchmarks/README.md).

Every scenario measures framepipe next to what a user would otherwise write,
in the same run, and reports the two as ratios.
"""
