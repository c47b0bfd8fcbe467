"""Shared-memory slots: zero-copy views, release flags, reuse, and clean unlinking."""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np

from framepipe.transport._shm import SharedFrames, sweep, unlink


def _read_in_child(handle, queue) -> None:  # type: ignore[no-untyped-def]
    frames = SharedFrames("fp_test_child")
    view = frames.view(handle)
    queue.put((int(view.sum()), view.flags.writeable))
    frames.release(handle, 3)
    frames.close()


def test_a_slot_is_reused_only_after_every_edge_released_it() -> None:
    created: list[str] = []
    frames = SharedFrames(f"fp_test_{os.getpid()}", on_segment=created.append)
    try:
        array, handle = frames.allocate((8, 8, 3))
        array[:] = 5
        frames.lease(handle, 1)
        frames.lease(handle, 2)
        frames.release_owner(handle)
        others = [frames.allocate((8, 8, 3))[1] for _ in range(3)]
        assert handle.slot not in {h.slot for h in others}
        frames.release(handle, 1)
        frames.release(handle, 2)
        again = frames.allocate((8, 8, 3))[1]
        assert again.slot == handle.slot and again.segment == handle.segment
    finally:
        frames.close()
        for name in created:
            unlink(name)


def test_another_process_reads_without_a_copy_and_releases() -> None:
    created: list[str] = []
    frames = SharedFrames(f"fp_test_{os.getpid()}", on_segment=created.append)
    try:
        array, handle = frames.allocate((100, 100, 3))
        array[:] = 1
        frames.lease(handle, 3)
        queue = mp.get_context("spawn").Queue()
        child = mp.get_context("spawn").Process(target=_read_in_child, args=(handle, queue))
        child.start()
        total, writable = queue.get(timeout=60)
        child.join(30)
        assert total == 100 * 100 * 3 and writable is False
        frames.release_owner(handle)
        assert frames.in_use() == 0  # the child cleared its flag
    finally:
        frames.close()
        for name in created:
            unlink(name)


def test_the_pool_grows_when_every_slot_is_held() -> None:
    created: list[str] = []
    frames = SharedFrames(f"fp_test_{os.getpid()}", on_segment=created.append)
    try:
        handles = [frames.allocate((64, 64, 3))[1] for _ in range(10)]
        assert len({(h.segment, h.slot) for h in handles}) == 10
        assert len(created) >= 2
    finally:
        frames.close()
        for name in created:
            unlink(name)
    assert not [n for n in os.listdir("/dev/shm") if n in created]


def test_sweep_removes_segments_by_prefix() -> None:
    from multiprocessing import shared_memory

    prefix = f"fp_sweep_{os.getpid()}"
    shm = shared_memory.SharedMemory(name=f"{prefix}_1", create=True, size=4096)
    shm.close()
    assert sweep(prefix) == [f"{prefix}_1"]
    from multiprocessing import resource_tracker

    resource_tracker.unregister(f"/{prefix}_1", "shared_memory")
    assert not np.any([n.startswith(prefix) for n in os.listdir("/dev/shm")])
