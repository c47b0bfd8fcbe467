"""Memory of the benchmark's whole process tree: this process and every descendant."""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True, slots=True)
class TreeMemory:
    """One sample, in MB. ``rss`` counts shared pages once per process that maps
    them; ``pss`` splits them between those processes, so it sums correctly."""

    at: float
    processes: int
    rss_mb: float
    pss_mb: float


def sample_tree() -> TreeMemory:
    """RSS and PSS summed over this process and all its children (recursively)."""
    me = psutil.Process()
    rss = pss = 0
    count = 0
    for process in [me, *me.children(recursive=True)]:
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
        count += 1
    return TreeMemory(time.monotonic(), count, rss / 2**20, pss / 2**20)


class MemoryTrace:
    """Samples the process tree about once a second while a run goes on."""

    def __init__(self) -> None:
        self.samples: list[TreeMemory] = []
        self.began = time.monotonic()

    def sample(self) -> None:
        self.samples.append(sample_tree())

    def steady(self, skip: float) -> tuple[TreeMemory, TreeMemory]:
        """The first sample at least ``skip`` seconds in (warmed up), and the last."""
        if not self.samples:
            self.sample()
        later = [s for s in self.samples if s.at - self.began >= skip] or self.samples
        return later[0], later[-1]
