"""The model side of ``kangae serve``: one loaded model, bounded thread pools, and the probes.

Every model call runs in a ``ThreadPoolExecutor`` with a few workers (explanations and edit
searches in a second, smaller pool so predictions never wait behind them; the batched forward
passes in a third, so they never wait behind the decoding of newer requests). Predictions are
micro-batched (:class:`~kangae.serve.batcher.MicroBatcher`): requests that arrive within
``batch_window`` seconds share one forward pass. At most ``max_pending`` predictions (and
``max_pending_slow`` explanations or edit searches) may be in progress; past that a request
gets HTTP 503 with ``Retry-After`` at once, and one that waited ``max_wait`` seconds without a
turn gets the same answer instead of hanging. The model is put in eval mode with
``requires_grad`` off once, at start: the probes' save-and-restore of those flags is then the
same from every thread. Class prototypes are computed once, at start, in their own thread
(or loaded from a tour folder), so the page and ``/api/predict`` answer meanwhile.
"""

from __future__ import annotations

import copy
import io
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import KangaeError, UnknownNameError
from ..probes._model import input_shape_of
from ..probes.inputs import ProbeInputError, as_target
from ..probes.registry import ExplainerSpec, get_explainer
from ..training.run import Run
from .batcher import Busy, MicroBatcher, run_by
from .inputs import BadInput, rounded

T = TypeVar("T")
IDEA_METHODS = ("auto", "greedy", "gradient")
GREEDY_BUDGET_S = 15.0  # "auto" uses greedy search when its estimated cost fits this
MAX_WAIT_S = 1.5  # a request not at the model this long after it arrived gets 503: answers within 2 s


class NotAvailable(RuntimeError):
    """Something not ready yet, such as the prototypes while they are computed (HTTP 503)."""

    def __init__(self, message: str, status: int = 503):
        super().__init__(message)
        self.status = status


@dataclass
class Ideas:
    """Class prototypes: ``images`` (K, C, H, W) in [0, 1] and the model's probability of
    each prototype's own class."""

    images: torch.Tensor
    probabilities: list[float]
    method: str
    seconds: float


_round = rounded  # tensors as nested lists of rounded floats, for the JSON answers


def estimate_greedy_seconds(model: nn.Module, shape: tuple[int, ...], num_classes: int,
                            sweeps: int = 4) -> float:
    """Rough cost of a binary greedy search over all classes: forward time per image times
    pixels x 2 levels x classes x sweeps (the incremental first layer makes it an upper bound)."""
    x = torch.rand(256, *shape)
    with torch.inference_mode():
        model(x[:8])
        t0 = time.perf_counter()
        model(x)
        per_image = (time.perf_counter() - t0) / len(x)
    return per_image * shape[-1] * shape[-2] * 2 * num_classes * sweeps


def compute_ideas(model: nn.Module, num_classes: int, method: str = "auto", steps: int = 128) -> Ideas:
    """The class prototypes of post 000 (binary greedy pixel search) when that is quick for
    this model, else gradient activation maximization (post 004); all classes as one batch."""
    from ..probes import activation_maximization, search_prototypes

    shape = input_shape_of(model)
    if method == "auto":
        quick = estimate_greedy_seconds(model, shape, num_classes) <= GREEDY_BUDGET_S
        method = "greedy" if quick else "gradient"
    t0 = time.perf_counter()
    targets = list(range(num_classes))
    if method == "greedy":
        res = search_prototypes(model, targets, method="greedy", frames=2)
    elif method == "gradient":
        res = activation_maximization(model, targets, steps=steps, frames=2)
    else:
        raise ValueError(f"unknown prototype method '{method}'; use {', '.join(IDEA_METHODS)}")
    images = res.images.float().clamp(0, 1)
    with torch.inference_mode():
        probs = F.softmax(model(images), dim=1)
    own = probs[torch.arange(num_classes), torch.arange(num_classes)]
    return Ideas(images, [round(float(p), 4) for p in own], method, time.perf_counter() - t0)


def _explain(model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str,
             classes: list[str]) -> dict[str, Any]:
    """One image's explanation by :func:`kangae.probes.attribution.explain`, with its numbers."""
    from ..probes.attribution import explain

    res = explain(model, x, target, method=method)
    metrics: dict[str, Any] = {k: v for k, v in res.metrics.items() if isinstance(v, (int, float, str))}
    for name in ("prob_after", "area"):
        value = getattr(res, name, None)
        if value is not None and value[0].numel() == 1:
            metrics[name] = round(float(value[0]), 4)
    return {"method": res.method, "attribution": res.attribution.detach(), "metrics": metrics,
            "summary": res.summary(0, classes)}


class Engine:
    """A loaded run behind a bounded thread pool."""

    def __init__(self, run: Run, *, workers: int = 2, max_pending: int = 256, max_pending_slow: int = 16,
                 max_wait: float = MAX_WAIT_S, max_batch: int = 64, batch_window: float = 0.002,
                 ideas: torch.Tensor | None = None, ideas_method: str = "auto", ideas_from: str = "",
                 explain_method: str = "mask", compute_ideas_now: bool = True):
        if ideas_method not in IDEA_METHODS:
            raise ValueError(f"unknown prototype method '{ideas_method}'; use {', '.join(IDEA_METHODS)}")
        self.run = run
        self.model = run.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.classes = run.classes
        self.shape = tuple(run.meta.input_shape) if run.meta.input_shape else input_shape_of(self.model)
        self.has_conv = any(isinstance(m, nn.Conv2d) for m in self.model.modules())
        problem = self._method_problem(get_explainer(explain_method))  # UnknownNameError: exit 2
        if problem:
            raise KangaeError(f"--explain {explain_method}: {problem}")
        self.explain_method = explain_method
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kangae-model")
        # the batched forward passes finish requests: their own threads, so that they never
        # queue behind the decoding of newer requests (under a flood that queue is long, and a
        # forward behind it would answer only requests already past their deadline)
        self.forward_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kangae-forward")
        # explanations and edit searches take up to seconds: their own pool, so that live
        # predictions never queue behind them
        self.slow_pool = ThreadPoolExecutor(max_workers=max(1, workers // 2),
                                            thread_name_prefix="kangae-slow")
        self.workers, self.max_pending, self.max_pending_slow = workers, max_pending, max_pending_slow
        self.max_wait = max_wait
        self.batcher = MicroBatcher(self.predict_batch, self.forward_pool, max_batch=max_batch,
                                    window=batch_window, concurrency=workers)
        self._pending = {"fast": 0, "slow": 0}  # in progress, by lane; only the event loop counts
        self._ideas: Future[Ideas] = Future()
        self._ideas_thread: threading.Thread | None = None
        if ideas is not None:
            self._ideas.set_result(self._given_ideas(ideas, ideas_from))
        elif compute_ideas_now:
            self.start_ideas(ideas_method)
        self._layer_lock = threading.Lock()
        self._layer_model: nn.Module | None = None
        self.slow_pool.submit(self.warm_up)

    @contextmanager
    def model_for(self, method: str) -> Iterator[nn.Module]:
        """The model to explain with: for a method that hooks a layer (Grad-CAM), a private
        copy, one call at a time, since a hook on the shared model would also see the forward
        passes other threads run meanwhile; else the shared model."""
        if not get_explainer(method).needs_layer:
            yield self.model
            return
        with self._layer_lock:
            if self._layer_model is None:
                self._layer_model = copy.deepcopy(self.model)
            yield self._layer_model

    def warm_up(self) -> None:
        """One forward pass and the explanation backend's imports, so the first request is quick."""
        self.predict(torch.zeros(self.shape[0], *self.shape[1:])[:1])
        from ..probes import attribution  # noqa: F401  (imports captum)

    # -- plumbing (on the event loop) ------------------------------------------------------
    def lane(self, name: str) -> tuple[Executor, int, float]:
        """(pool, most requests in progress, seconds a request may wait to start) of a lane:
        ``fast`` (decoding and quick calls), ``slow`` (explanations and edit searches)."""
        if name == "slow":
            return self.slow_pool, self.max_pending_slow, self.max_wait
        return self.pool, self.max_pending, self.max_wait

    @contextmanager
    def _admit(self, lane: str, arrived: float | None) -> Iterator[float]:
        """One request in progress; yields its deadline, the lane's wait after it ``arrived``
        (``time.monotonic()``; default now). :class:`Busy` at once when full."""
        _, limit, wait = self.lane(lane)
        if self._pending.get(lane, 0) >= limit:
            raise Busy(f"{self._pending[lane]} requests are waiting for the model; try again shortly")
        self._pending[lane] = self._pending.get(lane, 0) + 1
        try:
            yield (time.monotonic() if arrived is None else arrived) + wait
        finally:
            self._pending[lane] -= 1

    def pending(self, slow: bool = False, lane: str | None = None) -> int:
        """Requests in progress (queued or running) in the fast lane, the ``slow`` one, or ``lane``."""
        return self._pending.get(lane or ("slow" if slow else "fast"), 0)

    async def call(self, fn: Callable[..., T], *args: Any, slow: bool = False, arrived: float | None = None,
                   lane: str | None = None, **kwargs: Any) -> T:
        """Run ``fn`` in the model pool (``slow``: the pool for explanations and edit searches;
        or a named ``lane``); :class:`Busy` when too many calls are in progress, or when it
        could not start within the lane's wait of the request's arrival."""
        lane = lane or ("slow" if slow else "fast")
        with self._admit(lane, arrived) as deadline:
            return await run_by(self.lane(lane)[0], partial(fn, *args, **kwargs), deadline)

    async def classify(self, decode: Callable[[], Any], arrived: float | None = None
                       ) -> tuple[Any, torch.Tensor]:
        """``decode()`` in the pool, then the class probabilities (K,) of its image, computed in
        one forward pass with those of the other requests waiting at the same time."""
        with self._admit("fast", arrived) as deadline:
            seen = await run_by(self.pool, decode, deadline)
            return seen, await self.batcher(seen.image, deadline)

    def close(self) -> None:
        for pool in (self.pool, self.forward_pool, self.slow_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    def batch(self, image: torch.Tensor) -> torch.Tensor:
        """(1, H, W) -> (1, C, H, W) for the model."""
        return image.expand(self.shape[0], *image.shape[1:]).unsqueeze(0).float()

    def check_target(self, target: int) -> int:
        """``target`` as a class index, checked as every probe checks it (:func:`as_target`)."""
        try:
            return int(as_target(target, 1, len(self.classes))[0])
        except ProbeInputError as e:
            raise BadInput(str(e)) from None

    # -- model calls (run in the pool) ----------------------------------------------------
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """Class probabilities (K,) for one (1, H, W) image."""
        return self.predict_batch(image[None])[0]

    def predict_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, K) for (N, 1, H, W) images."""
        x = images.expand(-1, self.shape[0], *images.shape[2:]).float()
        with torch.inference_mode():
            return F.softmax(self.model(x), dim=1).float()

    def _method_problem(self, spec: ExplainerSpec) -> str | None:
        if spec.needs_conv and not self.has_conv:
            return f"{spec.name} needs a convolutional layer, and this model has none"
        return None

    def check_method(self, method: str | None) -> str:
        """``method`` (the server's ``--explain`` when None) if the explanation registry knows
        it and it works on this model; :class:`BadInput` naming the known methods otherwise."""
        if method is None:
            return self.explain_method
        try:
            spec = get_explainer(method)
        except UnknownNameError as e:
            raise BadInput(str(e)) from None
        problem = self._method_problem(spec)
        if problem:
            raise BadInput(f"method: {problem}")
        return method

    def explain(self, image: torch.Tensor, target: int | None, method: str | None = None) -> dict[str, Any]:
        """Attribution (H, W) for ``target`` (the predicted class when None) by ``method``
        (the server's ``--explain`` when None)."""
        x = self.batch(image)
        probs = self.predict(image)
        t = int(probs.argmax()) if target is None else self.check_target(target)
        method = self.check_method(method)
        with self.model_for(method) as model:
            out = _explain(model, x, torch.tensor([t]), method, self.classes)
        a = out["attribution"].detach().float().cpu()
        attr = torch.nan_to_num(a[0].mean(0) if a.ndim == 4 else a.reshape(x.shape[-2:]))
        return {"target": t, "method": out["method"], "attribution": attr, "summary": out["summary"],
                "probability": float(probs[t]), "metrics": out["metrics"]}

    def fix(self, image: torch.Tensor, target: int, max_edits: int, threshold: float) -> dict[str, Any]:
        """The fewest pixel edits that make the model read ``image`` as ``target``."""
        from ..probes.attacks import fewest_pixel_edits

        t = self.check_target(target)
        res = fewest_pixel_edits(self.model, self.batch(image), torch.tensor([t]), levels=(0.0, 1.0),
                                 threshold=threshold, max_edits=max_edits)
        edited = res.images[0].float().mean(0)
        changed = res.changed[0].reshape(-1, *edited.shape).any(0)
        probs = self.predict(res.images[0][:1].float())
        return {"target": t, "success": bool(res.success[0]), "n_changed": int(res.n_changed[0]),
                "prob_before": float(res.prob_before[0]), "prob_after": float(res.prob_after[0]),
                "image": edited, "changed": changed, "probabilities": probs,
                "metrics": {k: v for k, v in res.metrics.items() if isinstance(v, (int, float, str))}}

    # -- prototypes -----------------------------------------------------------------------
    def _given_ideas(self, images: torch.Tensor, source: str) -> Ideas:
        with torch.inference_mode():
            probs = F.softmax(self.model(images.float()), dim=1)
        k = torch.arange(len(self.classes))
        return Ideas(images.float(), [round(float(p), 4) for p in probs[k, k]], f"precomputed: {source}", 0.0)

    def start_ideas(self, method: str = "auto") -> None:
        """Compute the prototypes in a background thread (once)."""
        def work() -> None:
            try:
                self._ideas.set_result(compute_ideas(self.model, len(self.classes), method))
            except Exception as e:  # noqa: BLE001 - reported by /api/ideas
                self._ideas.set_exception(e)

        self._ideas_thread = threading.Thread(target=work, name="kangae-ideas")  # joined at exit
        self._ideas_thread.start()

    def ideas_done(self) -> bool:
        return self._ideas.done() or self._ideas_thread is None

    def ideas(self, wait: float | None = None) -> Ideas | None:
        """The prototypes, or None while they are being computed."""
        if wait is not None and not self._ideas.done():
            try:
                self._ideas.result(timeout=wait)
            except TimeoutError:
                return None
        return self._ideas.result() if self._ideas.done() else None

    def idea_png(self, k: int, scale: int = 4) -> bytes:
        from ..render.images import to_pil

        k = self.check_target(k)
        ideas = self.ideas()
        if ideas is None:
            raise NotAvailable("prototypes are still being computed", 503)
        buf = io.BytesIO()
        to_pil(ideas.images[k], scale=scale).save(buf, format="PNG")
        return buf.getvalue()
