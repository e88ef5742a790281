"""The micro-batcher on its own: right rows to the right callers, the deadline, one bad input."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from kangae.serve.batcher import MicroBatcher, TooLate, run_by


def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def test_concurrent_inputs_share_forwards_and_get_their_own_rows() -> None:
    sizes: list[int] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        sizes.append(len(x))
        time.sleep(0.01)  # inputs gather while a forward runs
        return _double(x)

    async def main() -> list[torch.Tensor]:
        with ThreadPoolExecutor(2) as pool:
            b = MicroBatcher(forward, pool, max_batch=8, window=0.01)
            far = time.monotonic() + 30
            return await asyncio.gather(*(b(torch.full((3,), float(i)), far) for i in range(20)))

    out = asyncio.run(main())
    assert [o.tolist() for o in out] == [[2.0 * i] * 3 for i in range(20)]
    assert sum(sizes) == 20 and max(sizes) <= 8 and len(sizes) < 20


def test_a_lone_input_waits_only_the_window() -> None:
    async def main() -> torch.Tensor:
        with ThreadPoolExecutor(1) as pool:
            return await MicroBatcher(_double, pool, window=0.0)(torch.ones(2), time.monotonic() + 30)

    assert asyncio.run(main()).tolist() == [2.0, 2.0]


def test_past_the_deadline_a_waiting_input_is_refused_not_left_waiting() -> None:
    gate, started = threading.Event(), threading.Event()

    def stuck(x: torch.Tensor) -> torch.Tensor:
        started.set()
        assert gate.wait(20)
        return x

    async def main() -> None:
        with ThreadPoolExecutor(2) as pool:
            b = MicroBatcher(stuck, pool, window=0.0, concurrency=1)
            first = asyncio.ensure_future(b(torch.zeros(1), time.monotonic() + 30))
            while not started.is_set():
                await asyncio.sleep(0.01)
            with pytest.raises(TooLate, match="waited"):
                await b(torch.ones(1), time.monotonic() + 0.2)  # the only slot is taken
            assert b.waiting == 0 and not gate.is_set()  # refused while the forward still ran
            gate.set()
            assert (await first).tolist() == [0.0]  # the one that started still gets its answer

    asyncio.run(main())


def test_a_cancelled_caller_leaves_the_queue() -> None:
    gate, started = threading.Event(), threading.Event()

    def stuck(x: torch.Tensor) -> torch.Tensor:
        started.set()
        assert gate.wait(20)
        return x

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            b = MicroBatcher(stuck, pool, window=0.0, concurrency=1)
            far = time.monotonic() + 30
            first = asyncio.ensure_future(b(torch.zeros(1), far))
            while not started.is_set():
                await asyncio.sleep(0.01)
            second = asyncio.ensure_future(b(torch.ones(1), far))
            await asyncio.sleep(0.05)
            assert b.waiting == 1
            second.cancel()
            await asyncio.sleep(0)
            assert b.waiting == 0
            gate.set()
            await first
            assert b.forwards == 1 and b.items == 1

    asyncio.run(main())


def test_one_bad_input_does_not_sink_its_batch() -> None:
    def forward(x: torch.Tensor) -> torch.Tensor:
        if torch.isnan(x).any():
            raise ValueError("NaN in the batch")
        return _double(x)

    async def main() -> list:
        with ThreadPoolExecutor(1) as pool:
            b = MicroBatcher(forward, pool, window=0.05)
            far = time.monotonic() + 30
            inputs = [torch.ones(1), torch.tensor([float("nan")]), torch.full((1,), 3.0), torch.zeros(1)]
            out = await asyncio.gather(*(b(x, far) for x in inputs), return_exceptions=True)
            assert b.forwards == 1 + 4  # the shared one failed; then each on its own
            return out

    out = asyncio.run(main())
    assert isinstance(out[1], ValueError)
    assert [o.tolist() for i, o in enumerate(out) if i != 1] == [[2.0], [6.0], [0.0]]


def test_run_by_refuses_a_job_that_could_not_start_in_time() -> None:
    gate = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(gate.wait, 20)  # the only thread is busy
            with pytest.raises(TooLate):
                await run_by(pool, lambda: ran.append("late"), time.monotonic() + 0.1)
            gate.set()
            assert await run_by(pool, lambda: 7, time.monotonic() + 30) == 7

    asyncio.run(main())
    assert ran == []  # the refused job never ran


def test_bad_settings_are_refused() -> None:
    with ThreadPoolExecutor(1) as pool:
        for kw in ({"max_batch": 0}, {"concurrency": 0}, {"window": -1.0}):
            with pytest.raises(ValueError):
                MicroBatcher(_double, pool, **kw)
