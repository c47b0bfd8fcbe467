"""The inbox: policies, selection, joins, and that every frame is released exactly once."""

from __future__ import annotations

import threading

import pytest

from framepipe._policy import NodeOptions, Queue
from framepipe.runtime._inbox import EMPTY, Inbox, Mark
from framepipe.stats import StatsRecorder
from framepipe.testing import make_frame


class Releases:
    def __init__(self) -> None:
        self.released: list[int] = []

    def __call__(self, index: int):  # type: ignore[no-untyped-def]
        return lambda: self.released.append(index)


def inbox(policy: Queue, **options) -> tuple[Inbox, StatsRecorder]:  # type: ignore[no-untyped-def]
    recorder = StatsRecorder("n", "stage")
    box = Inbox("n", NodeOptions.build("n", **options), recorder)
    box.add_edge(1, "up", policy)
    return box, recorder


def test_latest_keeps_only_the_newest_and_counts_the_rest() -> None:
    box, recorder = inbox(Queue(1, "drop_oldest"))
    rel = Releases()
    for i in range(5):
        box.put(1, make_frame(index=i), rel(i))
    item = box.take(0)
    assert item is not EMPTY and item.frame.index == 4
    assert rel.released == [0, 1, 2, 3]
    assert recorder.dropped_by["policy"] == 4
    item.done()
    assert rel.released == [0, 1, 2, 3, 4]


def test_drop_newest_keeps_the_first() -> None:
    box, recorder = inbox(Queue(2, "drop_newest"))
    rel = Releases()
    for i in range(5):
        box.put(1, make_frame(index=i), rel(i))
    assert [box.take(0).frame.index, box.take(0).frame.index] == [0, 1]
    assert sorted(rel.released) == [2, 3, 4]
    assert recorder.dropped_by["policy"] == 3


def test_block_makes_the_producer_wait_until_there_is_room() -> None:
    box, _ = inbox(Queue(2, "block"))
    for i in range(2):
        box.put(1, make_frame(index=i))
    done = threading.Event()

    def produce() -> None:
        box.put(1, make_frame(index=2))
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    assert not done.wait(0.2)  # full: the producer waits
    assert box.take(0).frame.index == 0
    assert done.wait(5)


def test_close_wakes_a_blocked_producer_and_releases_everything() -> None:
    box, _ = inbox(Queue(1, "block"))
    rel = Releases()
    box.put(1, make_frame(index=0), rel(0))
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(box.put(1, make_frame(index=1), rel(1))))
    thread.start()
    box.close()
    thread.join(5)
    assert result == [False]
    assert sorted(rel.released) == [0, 1]
    assert box.take() is None


def test_end_of_every_input_ends_the_inbox_after_draining() -> None:
    box, _ = inbox(Queue(4, "block"))
    box.put(1, make_frame(index=0))
    box.end(1)
    assert box.take(0).frame.index == 0
    assert box.take(0) is None


def test_rate_selection_is_counted_and_released() -> None:
    box, recorder = inbox(Queue(100, "block"), fps=10)
    rel = Releases()
    for i in range(30):
        box.put(1, make_frame(index=i, pts=i / 30), rel(i))
    kept, marks = [], []
    while (item := box.take(0)) is not EMPTY:
        if isinstance(item, Mark):  # frames skipped by rate go on as watermarks
            marks.append(item.index)
            continue
        kept.append(item.frame.index)
        item.done()
    assert kept == list(range(0, 30, 3))
    assert marks == [i + 2 for i in range(0, 30, 3)]  # one mark per gap, in order
    assert recorder.dropped_by["rate"] == 20
    assert sorted(rel.released) == list(range(30))


def test_windows_hold_frames_until_they_leave_the_window() -> None:
    box, _ = inbox(Queue(100, "block"), window=(2, 1))
    rel = Releases()
    for i in range(3):
        box.put(1, make_frame(index=i), rel(i))
    assert isinstance(box.take(0), Mark)  # frame 0 fills the window: no call for it
    first = box.take(0)
    second = box.take(0)
    assert [f.index for f in first.payload] == [0, 1]
    assert [f.index for f in second.payload] == [1, 2]
    first.done()
    assert rel.released == [0]  # 1 is still in the second window and in the sampler
    second.done()
    box.close()
    assert sorted(rel.released) == [0, 1, 2]


def test_merge_waits_for_the_other_input_or_its_progress() -> None:
    recorder = StatsRecorder("m", "stage")
    box = Inbox("m", NodeOptions.build("m", join="merge"), recorder, ordered=True)
    box.add_edge(1, "a", Queue(10, "block"))
    box.add_edge(2, "b", Queue(10, "block"))
    box.put(1, make_frame(index=0, results={"a": "a0"}))
    assert box.take(0) is EMPTY  # b may still deliver frame 0
    box.put(2, make_frame(index=0, results={"b": "b0"}))
    assert box.take(0).frame.results == {"a": "a0", "b": "b0"}
    box.put(1, make_frame(index=1, results={"a": "a1"}))
    box.put(2, make_frame(index=2, results={"b": "b2"}))  # b is past 1: it skipped it
    assert box.take(0).frame.results == {"a": "a1"}


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_queue_size_must_be_positive(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        Queue(bad)
