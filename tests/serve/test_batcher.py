"""Dynamic batching with a stand-in model: requests that arrive together share one call, at most max_batch
items; results go back to their own request in order; one request's failure stays its own; cancelled requests
are skipped; every request's items are released; a full queue is Busy; stop finishes what was queued."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cnnkit.serve.batcher import Batcher, Busy


class Model:
    """predict(items) → [item * 10], recording each call's items; an item < 0 fails the whole call."""

    def __init__(self, delay: float = 0.0):
        self.calls: list[list[int]] = []
        self.delay = delay
        self.thread_names: set[str] = set()

    def __call__(self, items: list[int]) -> list[int]:
        self.thread_names.add(threading.current_thread().name)
        self.calls.append(list(items))
        time.sleep(self.delay)
        if any(i < 0 for i in items):
            raise ValueError(f"bad item in {items}")
        return [i * 10 for i in items]


def test_requests_that_arrive_together_share_one_call_in_one_thread() -> None:
    model, released = Model(delay=0.02), []
    batcher = Batcher(model, max_batch=16, max_wait_s=0.05, release=released.append).start()
    with ThreadPoolExecutor(32) as pool:
        futures = list(pool.map(lambda i: batcher.submit([i, i + 1000]), range(32)))
        results = [f.result(timeout=10) for f in futures]
    batcher.stop()
    assert results == [[i * 10, (i + 1000) * 10] for i in range(32)]  # each request its own results, in order
    assert sum(len(c) for c in model.calls) == 64 and max(len(c) for c in model.calls) <= 16
    assert len(model.calls) < 32  # batched: fewer calls than requests
    assert model.thread_names == {"cnnkit-serve"}
    assert sorted(map(tuple, released)) == sorted((i, i + 1000) for i in range(32))
    assert batcher.stats["requests"] == 32 and batcher.stats["items"] == 64 and batcher.stats["largest_batch"] <= 16


def test_a_request_that_would_overflow_the_batch_opens_the_next_and_a_big_one_goes_alone() -> None:
    model = Model()
    batcher = Batcher(model, max_batch=4, max_wait_s=0.2).start()  # all four arrive within the wait
    futures = [batcher.submit(items) for items in ([1, 2, 3], [4, 5], [6], [7, 8, 9, 10, 11, 12])]
    assert [f.result(timeout=10) for f in futures] == [[10, 20, 30], [40, 50], [60], [70, 80, 90, 100, 110, 120]]
    batcher.stop()
    assert all(len(c) <= 4 for c in model.calls[:-1]) and [7, 8, 9, 10, 11, 12] in model.calls
    assert [x for c in model.calls for x in c] == list(range(1, 13))  # first come, first served


def test_one_requests_failure_is_its_own() -> None:
    model = Model(delay=0.01)
    batcher = Batcher(model, max_batch=16, max_wait_s=0.1).start()
    good, bad, other = batcher.submit([1]), batcher.submit([-1]), batcher.submit([2, 3])
    assert good.result(timeout=10) == [10] and other.result(timeout=10) == [20, 30]
    with pytest.raises(ValueError, match="bad item"):
        bad.result(timeout=10)
    batcher.stop()


def test_a_cancelled_request_is_skipped_and_released() -> None:
    gate = threading.Event()
    model, released = Model(), []

    def slow(items: list[int]) -> list[int]:
        gate.wait(10)
        return model(items)

    batcher = Batcher(slow, max_batch=1, max_wait_s=0, release=released.append).start()
    first = batcher.submit([1])
    time.sleep(0.05)  # the worker is inside the first call now
    second = batcher.submit([2])
    assert second.cancel()
    gate.set()
    assert first.result(timeout=10) == [10]
    batcher.stop()
    assert model.calls == [[1]] and released == [[1], [2]]


def test_a_full_queue_is_busy_and_a_stopped_batcher_refuses() -> None:
    gate = threading.Event()
    batcher = Batcher(lambda items: (gate.wait(10), items)[1], max_batch=2, max_wait_s=0, max_queued=4).start()
    running = batcher.submit([1, 2])
    time.sleep(0.05)
    queued = batcher.submit([3, 4, 5])
    with pytest.raises(Busy, match="3 images are waiting"):
        batcher.submit([6, 7])
    gate.set()
    assert running.result(timeout=10) == [1, 2] and queued.result(timeout=10) == [3, 4, 5]
    batcher.stop()
    assert not batcher.alive
    with pytest.raises(Busy, match="stopping"):
        batcher.submit([8])


def test_stop_finishes_what_was_queued() -> None:
    model = Model(delay=0.02)
    batcher = Batcher(model, max_batch=2, max_wait_s=0).start()
    futures = [batcher.submit([i]) for i in range(6)]
    batcher.stop()
    assert [f.result(timeout=0) for f in futures] == [[i * 10] for i in range(6)]


def test_a_predict_that_returns_the_wrong_count_fails_its_request() -> None:
    batcher = Batcher(lambda items: items[:-1], max_batch=4, max_wait_s=0).start()
    with pytest.raises(RuntimeError, match="gave 1 results for 2 items"):
        batcher.submit([1, 2]).result(timeout=10)
    batcher.stop()
