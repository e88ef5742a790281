"""Micro-batching, a bounded queue and a wait deadline for the model calls of ``kangae serve``.

Requests that arrive within a few milliseconds of each other share one forward pass: the
:class:`MicroBatcher` collects pending inputs for up to ``window`` seconds after the first one
arrived (or until ``max_batch`` are waiting), runs one forward in the model's thread pool and
hands each request its row (the dynamic batching of inference servers such as Triton and
TorchServe). While a forward runs, new requests gather for the next one, so under load the
batches grow by themselves; alone, a request waits at most ``window``.

No request waits longer than its deadline: one that has not started by then gets
:class:`TooLate` (HTTP 503 with ``Retry-After``) instead of hanging; :class:`Busy` is the
same answer, given at once, when the queue is full.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from ..utils.stop import stop_when

T = TypeVar("T")


class Busy(RuntimeError):
    """Too many requests are waiting for the model (HTTP 503 with ``Retry-After``)."""


class TooLate(Busy):
    """A request waited past its deadline before the model could take it (HTTP 503)."""


def too_late(waited: float) -> TooLate:
    return TooLate(f"waited {waited:.1f} s for the model without a turn; the server is overloaded, "
                   "try again shortly")


async def run_by(executor: Executor, fn: Callable[[], T], deadline: float) -> T:
    """``fn()`` in ``executor``; :class:`TooLate` if it has not *started* by ``deadline``
    (``time.monotonic()``). A cancelled caller (the client went away) takes its job out of
    the queue when it has not started yet, and asks a running one to stop: the probes' step
    loops check for that (:mod:`kangae.utils.stop`) and end within a step."""
    t0 = time.monotonic()
    if t0 >= deadline:
        raise too_late(0.0)
    stop = threading.Event()

    def guarded() -> T:
        with stop_when(stop):
            return fn()

    job = executor.submit(guarded)
    fut = asyncio.wrap_future(job)  # cancelled with the job
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = job.cancel()  # True while still queued: it never runs

    timer = asyncio.get_running_loop().call_at(deadline, expire)  # the loop's clock is time.monotonic
    try:
        return await fut
    except asyncio.CancelledError:
        if expired:
            raise too_late(time.monotonic() - t0) from None
        if not job.cancel():
            stop.set()  # running: its next step raises Stopped, which nobody waits for
        raise
    finally:
        timer.cancel()


@dataclass(eq=False)
class _Item:
    x: torch.Tensor
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)
    taken: bool = False  # in a batch: its answer comes from that forward
    queued: bool = True


class MicroBatcher:
    """Run ``forward`` ((N, ...) -> (N, ...)) on batches of concurrent single inputs.

    ``await batcher(x, deadline)`` gives ``forward(x[None])[0]``, computed together with the
    inputs of other requests waiting at the same time. At most ``concurrency`` forwards run at
    once, each in ``executor``. ``forwards`` and ``items`` count the forward passes and the
    inputs they answered.
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], executor: Executor, *,
                 max_batch: int = 64, window: float = 0.002, concurrency: int = 1):
        if max_batch < 1 or concurrency < 1 or window < 0:
            raise ValueError("max_batch and concurrency must be >= 1 and window >= 0")
        self.forward, self.executor = forward, executor
        self.max_batch, self.window, self.concurrency = max_batch, window, concurrency
        self.forwards = self.items = 0
        self._queue: deque[_Item] = deque()
        self._collecting = False
        self._running = 0
        self._full: asyncio.Future | None = None  # set when max_batch inputs wait
        self._tasks: set[asyncio.Task] = set()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def __call__(self, x: torch.Tensor, deadline: float) -> torch.Tensor:
        loop = asyncio.get_running_loop()
        item = _Item(x, loop.create_future())
        if item.arrived >= deadline:
            raise too_late(0.0)

        def expire() -> None:
            if not item.taken and not item.future.done():
                item.future.set_exception(too_late(time.monotonic() - item.arrived))

        timer = loop.call_at(deadline, expire)
        self._queue.append(item)
        if len(self._queue) >= self.max_batch and self._full is not None and not self._full.done():
            self._full.set_result(None)
        self._kick()
        try:
            return await item.future
        finally:
            timer.cancel()
            if item.queued:  # late, or the client went away: out of the queue
                self._queue.remove(item)

    def _kick(self) -> None:
        """Start collecting the next batch when a forward slot is free and inputs wait."""
        if self._collecting or not self._queue or self._running >= self.concurrency:
            return
        self._collecting = True
        task = asyncio.get_running_loop().create_task(self._collect_and_run())
        self._tasks.add(task)  # a reference, so the task is not collected while it runs
        task.add_done_callback(self._tasks.discard)

    async def _collect_and_run(self) -> None:
        batch: list[_Item] = []
        try:
            wait = self._queue[0].arrived + self.window - time.monotonic() if self._queue else 0.0
            if wait > 0 and len(self._queue) < self.max_batch:
                self._full = asyncio.get_running_loop().create_future()
                await asyncio.wait({self._full}, timeout=wait)
                self._full = None
            while self._queue and len(batch) < self.max_batch:
                item = self._queue.popleft()
                item.queued = False
                if not item.future.done():  # not answered already (late, or its caller gone)
                    item.taken = True
                    batch.append(item)
        finally:
            self._collecting = False
        if not batch:
            self._kick()
            return
        self._running += 1
        self._kick()  # the rest may start in another slot
        try:
            await self._run(batch)
        finally:
            self._running -= 1
            self._kick()

    async def _run(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        self.forwards += 1
        try:
            out = await loop.run_in_executor(self.executor, self.forward, torch.stack([i.x for i in batch]))
        except Exception as e:  # noqa: BLE001 - handed to the requests
            if len(batch) > 1:  # one bad input must not sink the others: each on its own
                await asyncio.gather(*(self._run([item]) for item in batch))
            elif not batch[0].future.done():
                batch[0].future.set_exception(e)
            return
        self.items += len(batch)
        for item, row in zip(batch, out):
            if not item.future.done():
                item.future.set_result(row)


__all__ = ["Busy", "MicroBatcher", "TooLate", "run_by"]
