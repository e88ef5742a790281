"""The engine under load: batched answers equal unbatched ones, a full queue answers 503 at
once, and a request that waited too long gets 503 instead of hanging."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from kangae.serve.app import create_app
from kangae.serve.engine import Engine
from kangae.training.run import load


class StandIn(nn.Module):
    """A linear model whose logits are exact in float32 (weights k/64, inputs k/8), so a batch
    gives bit for bit the rows of single forwards; it records each call's batch size and can be
    held at a gate."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.linear = nn.Linear(784, 10, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randint(-2, 3, (10, 784), generator=g).float() / 64)
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.delay = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        self.started.set()
        assert self.gate.wait(20), "the test never opened the gate"
        time.sleep(self.delay)
        return self.linear(x.flatten(1))


def _engine(serve_run: Path, **options) -> tuple[Engine, StandIn]:
    model = StandIn()
    run = dataclasses.replace(load(serve_run), model=model)
    engine = Engine(run, compute_ideas_now=False, **options)
    engine.slow_pool.submit(lambda: None).result()  # the warm-up forward is done
    model.calls.clear()
    model.started.clear()
    return engine, model


def _grid(i: int) -> list[list[float]]:
    g = torch.Generator().manual_seed(i)
    return (torch.randint(0, 9, (28, 28), generator=g) / 8).tolist()


def _post_all(client: TestClient, path: str, bodies: list[dict]) -> list:
    """POST every body at once, each from its own thread; the responses in order."""
    out: list = [None] * len(bodies)
    go = threading.Barrier(len(bodies))

    def send(i: int) -> None:
        go.wait()
        out[i] = client.post(path, json=bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_concurrent_predictions_equal_sequential_ones_with_fewer_forwards(serve_run: Path) -> None:
    engine, model = _engine(serve_run, batch_window=0.05)
    model.delay = 0.02  # requests gather while a forward runs
    bodies = [{"image": _grid(i)} for i in range(16)]
    with TestClient(create_app(engine)) as client:
        together = _post_all(client, "/api/predict", bodies)
        batched_calls = list(model.calls)
        model.delay = 0.0
        alone = [client.post("/api/predict", json=b).json() for b in bodies]
    assert all(r.status_code == 200 for r in together), [r.text for r in together]
    assert [r.json()["probabilities"] for r in together] == [a["probabilities"] for a in alone]
    assert [r.json()["predicted"] for r in together] == [a["predicted"] for a in alone]
    assert sum(batched_calls) == 16 and len(batched_calls) < 16  # they shared forward passes
    assert model.calls[len(batched_calls):] == [1] * 16  # one at a time: a forward each


def test_batched_probabilities_of_the_trained_model_equal_single_forwards(serve_run: Path) -> None:
    """The real MLP: a batched matrix product may round differently from a single one, so
    equal within float32 rounding; and the same answer for every image."""
    engine = Engine(load(serve_run), compute_ideas_now=False, batch_window=0.05)
    images = torch.rand(24, 1, 28, 28, generator=torch.Generator().manual_seed(1))

    async def together() -> list[torch.Tensor]:
        far = time.monotonic() + 30
        return await asyncio.gather(*(engine.batcher(x, far) for x in images))

    try:
        batched = torch.stack(asyncio.run(together()))
        single = torch.stack([engine.predict(x) for x in images])
    finally:
        engine.close()
    assert engine.batcher.forwards < 24
    assert torch.allclose(batched, single, atol=1e-6, rtol=0)
    assert torch.equal(batched.argmax(1), single.argmax(1))
    want = torch.softmax(engine.model(images), 1)
    assert torch.allclose(single, want, atol=1e-6, rtol=0)


def test_a_full_queue_answers_503_at_once(serve_run: Path) -> None:
    engine, model = _engine(serve_run, workers=1, max_pending=3, max_wait=30)
    model.gate.clear()  # the model is stuck
    grid = {"image": _grid(0)}
    with TestClient(create_app(engine)) as client:
        held = [threading.Thread(target=client.post, args=("/api/predict",), kwargs={"json": grid})
                for _ in range(3)]
        try:
            for t in held:
                t.start()
            deadline = time.monotonic() + 10
            while engine.pending() < 3:
                assert time.monotonic() < deadline, "the three requests never got in"
                time.sleep(0.01)
            r = client.post("/api/predict", json=grid)
            answered_while_stuck = not model.gate.is_set()
        finally:
            model.gate.set()
            for t in held:
                t.join(20)
        assert r.status_code == 503 and answered_while_stuck  # it did not wait for the model
        assert r.headers["retry-after"] == "1" and "3 requests are waiting" in r.json()["error"]
        assert client.post("/api/predict", json=grid).status_code == 200  # room again


def test_a_request_that_waited_too_long_gets_503(serve_run: Path) -> None:
    engine, model = _engine(serve_run, workers=1, max_wait=0.3)
    model.gate.clear()
    grid = {"image": _grid(0)}
    first: list = []
    with TestClient(create_app(engine)) as client:
        t = threading.Thread(target=lambda: first.append(client.post("/api/predict", json=grid)))
        t.start()
        try:
            assert model.started.wait(10)
            r = client.post("/api/predict", json=grid)  # the one model thread is stuck
            answered_while_stuck = not model.gate.is_set()
            stuck_explain = _explain_while_the_slow_pool_is_stuck(client, engine)
        finally:
            model.gate.set()
            t.join(20)
    assert r.status_code == 503 and answered_while_stuck
    assert r.headers["retry-after"] == "1" and "s for the model" in r.json()["error"]
    assert first[0].status_code == 200  # the request that got its turn is answered
    assert stuck_explain.status_code == 503 and "waited" in stuck_explain.json()["error"]


def _explain_while_the_slow_pool_is_stuck(client: TestClient, engine: Engine):
    gate = threading.Event()
    engine.slow_pool.submit(gate.wait, 20)
    try:
        return client.post("/api/explain", json={"image": _grid(1), "method": "saliency"})
    finally:
        gate.set()


@pytest.mark.parametrize("option", [{"max_batch": 0}, {"batch_window": -1.0}])
def test_bad_batch_settings_are_refused(serve_run: Path, option: dict) -> None:
    with pytest.raises(ValueError):
        Engine(load(serve_run), compute_ideas_now=False, **option)


def test_the_wait_counts_from_the_arrival(serve_run: Path) -> None:
    """A request that arrived max_wait ago (its body was slow, the event loop was busy) is
    refused before anything runs, even with the model idle."""
    from kangae.serve.batcher import TooLate

    engine, model = _engine(serve_run, max_wait=1.0)
    decoded: list[bool] = []

    def decode():
        decoded.append(True)
        raise AssertionError("must not run")

    async def late() -> None:
        with pytest.raises(TooLate):
            await engine.classify(decode, arrived=time.monotonic() - 1.0)
        with pytest.raises(TooLate):
            await engine.call(engine.predict, torch.zeros(1, 28, 28), arrived=time.monotonic() - 5.0)

    try:
        asyncio.run(late())
    finally:
        engine.close()
    assert decoded == [] and model.calls == [] and engine.pending() == 0


def test_a_default_method_the_model_cannot_take_is_refused_at_start(serve_run: Path) -> None:
    from kangae.errors import KangaeError, UnknownNameError

    with pytest.raises(KangaeError, match="--explain gradcam: gradcam needs a convolutional layer"):
        Engine(load(serve_run), compute_ideas_now=False, explain_method="gradcam")
    with pytest.raises(UnknownNameError, match="Did you mean 'saliency'"):
        Engine(load(serve_run), compute_ideas_now=False, explain_method="salincy")
