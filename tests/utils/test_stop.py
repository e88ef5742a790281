"""Stopping work nobody waits for: the flag is per thread, the probes' step loops check it,
map_pieces hands it on, and the app's middleware cancels a request whose client left."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import nn

from kangae.probes.masks import meaningful_perturbation
from kangae.serve.batcher import run_by
from kangae.serve.limits import CancelOnDisconnect
from kangae.utils.stop import Stopped, check_stop, current_stop, stop_when
from kangae.utils.threads import map_pieces, set_workers


def test_check_stop_raises_only_inside_a_block_whose_event_is_set():
    check_stop()  # no block: never stops
    event = threading.Event()
    with stop_when(event):
        check_stop()
        event.set()
        with pytest.raises(Stopped):
            check_stop()
        with stop_when(None):  # an inner block without an event
            check_stop()
        assert current_stop() is event
    assert current_stop() is None
    check_stop()
    other = []  # another thread does not see this thread's event
    with stop_when(event):
        t = threading.Thread(target=lambda: other.append(current_stop()))
        t.start()
        t.join()
    assert other == [None]


def test_pieces_on_worker_threads_stop_with_their_caller():
    event = threading.Event()
    event.set()
    threads, workers = torch.get_num_threads(), set_workers(2)
    torch.set_num_threads(1)
    try:
        seen = []

        def piece(part):
            seen.append(threading.current_thread().name)
            check_stop()

        with stop_when(event), pytest.raises(Stopped):
            map_pieces(piece, [slice(0, 1), slice(1, 2)])
    finally:
        torch.set_num_threads(threads)
        set_workers(workers)
    assert any(name.startswith("kangae-piece") for name in seen)


def test_a_mask_stops_within_a_step_when_asked():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    x = torch.rand(2, 1, 28, 28)
    event, outcome = threading.Event(), []

    def work():
        with stop_when(event):
            try:
                meaningful_perturbation(model, x, steps=50_000)  # minutes of work
                outcome.append("finished")
            except Stopped:
                outcome.append("stopped")

    t = threading.Thread(target=work)
    t.start()
    time.sleep(0.3)
    event.set()
    t.join(5)
    assert not t.is_alive() and outcome == ["stopped"]
    outcome.clear()  # stopped before the first step too, while its shifts are drawn
    event.set()
    started = time.monotonic()
    with stop_when(event), pytest.raises(Stopped):
        meaningful_perturbation(model, x, steps=10**7)  # hours of shifts to draw
    assert time.monotonic() - started < 2


def test_a_request_whose_client_leaves_stops_its_model_call_and_frees_the_worker():
    pool = ThreadPoolExecutor(1)
    started, stopped, finished = threading.Event(), threading.Event(), threading.Event()

    def long_job():
        started.set()
        try:
            for _ in range(10**5):
                check_stop()
                time.sleep(0.001)
        except Stopped:
            stopped.set()
            raise
        finished.set()

    async def app(scope, receive, send):
        await run_by(pool, long_job, time.monotonic() + 60)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    sent: list[dict] = []

    async def scenario():
        messages = asyncio.Queue()
        await messages.put({"type": "http.request", "body": b"{}", "more_body": False})

        async def receive():
            return await messages.get()

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "headers": []}
        request = asyncio.ensure_future(CancelOnDisconnect(app)(scope, receive, send))
        while not started.is_set():
            await asyncio.sleep(0.01)
        await messages.put({"type": "http.disconnect"})  # the page moved on
        await asyncio.wait_for(request, 5)

    asyncio.run(scenario())
    assert stopped.wait(5) and not finished.is_set() and sent == []
    assert pool.submit(lambda: 1).result(timeout=2) == 1  # the worker is free for the next mask
    pool.shutdown()
