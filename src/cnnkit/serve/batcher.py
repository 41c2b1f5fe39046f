"""Dynamic batching: the requests that arrive together share one model call, made by one worker thread.

    batcher = Batcher(predict, max_batch=16, max_wait_s=0.005)   # predict(items) → one result per item, in order
    batcher.start()
    future = batcher.submit(items)           # a concurrent.futures.Future of this request's results
    results = future.result()
    batcher.stop()

The worker takes the oldest request, then waits at most `max_wait_s` for more while the batch holds fewer than
`max_batch` items; a request that would overflow the batch opens the next one (a request larger than
`max_batch` is a batch of its own). One call of `predict` per batch; its results are split back per request in
order. If the call fails, each request of the batch is tried alone, so that one request's failure is its own.
`release(items)` runs once per request after its model call and before its future is set (or when it was
cancelled before its call), to clean up: the server deletes the request's temporary files there. Submitting
more than `max_queued` waiting items raises Busy: the server answers 503 rather than queueing without bound.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("cnnkit.serve")


class Busy(Exception):
    """The queue is full (or the batcher stopped): try again later."""


@dataclass
class _Job:
    items: list
    future: Future = field(default_factory=Future)


_STOP = object()


class Batcher:
    """One worker thread that owns the model and runs `predict` on batches of submitted items."""

    def __init__(self, predict: Callable[[list], Sequence[Any]], *, max_batch: int = 16, max_wait_s: float = 0.005,
                 max_queued: int = 256, release: Callable[[list], None] | None = None, name: str = "cnnkit-serve"):
        self.predict, self.release = predict, release
        self.max_batch, self.max_wait_s, self.max_queued = max_batch, max_wait_s, max_queued
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._queued = 0  # items submitted and not yet taken by the worker
        self._carry: _Job | None = None  # the request that did not fit into the last batch
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.stats = {"batches": 0, "items": 0, "requests": 0, "largest_batch": 0}

    def start(self) -> Batcher:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def submit(self, items: list) -> Future:
        """Queue one request's items; a Future of their results (a list, in order). Busy when full or stopped."""
        with self._lock:
            if self._stopping or not self._thread.is_alive():
                raise Busy("the server is stopping")
            if self._queued and self._queued + len(items) > self.max_queued:
                raise Busy(f"{self._queued} images are waiting for the model (at most {self.max_queued})")
            self._queued += len(items)
            job = _Job(list(items))
            self._queue.put(job)
        return job.future

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the requests already queued, then end the worker thread."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _take(self, timeout: float | None) -> _Job | object | None:
        """The next job (the carried one first), _STOP, or None when `timeout` passed."""
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        try:
            job = self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None
        if isinstance(job, _Job):
            with self._lock:
                self._queued -= len(job.items)
        return job

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        """The jobs of one batch, starting with `first`; and whether _STOP was met (the loop ends after it)."""
        jobs, size = [first], len(first.items)
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch:
            job = self._take(deadline - time.monotonic())
            if job is None:
                break
            if job is _STOP:
                return jobs, True
            if size + len(job.items) > self.max_batch:
                self._carry = job
                break
            jobs.append(job)
            size += len(job.items)
        return jobs, False

    def _loop(self) -> None:
        stopped = False
        while not stopped or self._carry is not None:
            job = self._take(None) if not stopped else self._take(0)
            if job is _STOP:
                stopped = True
                continue
            if job is None:
                break
            jobs, met_stop = self._gather(job)
            stopped = stopped or met_stop
            self._run(jobs)
        self._drain()

    def _drain(self) -> None:
        """After _STOP: run what is still queued (submitted just before stop), one batch at a time."""
        while True:
            job = self._take(0)
            if job is None:
                return
            if isinstance(job, _Job):
                self._run([job])

    def _run(self, jobs: list[_Job]) -> None:
        """One model call for `jobs` (those not cancelled meanwhile); each request's items are released, then it
        gets its results or its exception (so that a request answered has nothing left behind)."""
        live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        outcomes = self._call(live) if live else []
        for job in jobs:
            self._release(job.items)
        for job, ok, value in outcomes:
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    def _call(self, jobs: list[_Job]) -> list[tuple[_Job, bool, Any]]:
        """(job, True, its results) for each job from one predict call; when it fails, each job alone, so that
        (job, False, exception) names the failing ones only."""
        items = [item for job in jobs for item in job.items]
        try:
            results = list(self.predict(items))
            if len(results) != len(items):
                raise RuntimeError(f"predict gave {len(results)} results for {len(items)} items")
        except Exception as err:  # noqa: BLE001  (any failure goes to the requests; the worker must live on)
            if len(jobs) == 1:
                return [(jobs[0], False, err)]
            return [outcome for job in jobs for outcome in self._call([job])]
        self.stats["batches"] += 1
        self.stats["items"] += len(items)
        self.stats["requests"] += len(jobs)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(items))
        outcomes, start = [], 0
        for job in jobs:
            outcomes.append((job, True, results[start:start + len(job.items)]))
            start += len(job.items)
        return outcomes

    def _release(self, items: list) -> None:
        if self.release is None:
            return
        try:
            self.release(items)
        except Exception:  # cleaning up must not end the worker: logged
            log.exception("could not release a request's items")
