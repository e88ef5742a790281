"""The engine of ``kangae serve`` for any image classifier that is not a digit model.

Predictions share the micro-batched forward passes of :class:`~kangae.serve.engine.Engine`.
Explanations run off the request thread in their own pools: Grad-CAM (one backward pass) in
the pool for quick explanations, the mask (an optimization of ``mask_steps`` steps, far fewer
than the 300 of ``kangae explain``) in a pool of its own, so a mask never delays a Grad-CAM.

Prototypes cannot be computed for 1,000 classes at start. :class:`Prototypes` computes each
class on demand in one background thread, the classes asked for meanwhile as one batch (up to
``max_batch``), each by ``steps`` steps of gradient activation maximization at the model's
size (post 004), and keeps the answers (at most ``keep`` classes).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..errors import KangaeError
from ..probes.registry import get_explainer
from ..training.run import Run
from .batcher import Busy
from .engine import Engine
from .inputs import BadInput, Picture, png_data_url

TOP_K = 5
PICTURE_METHODS = ("gradcam", "mask", "saliency", "ig", "smoothgrad")  # seconds, not minutes, at 224 px
MASK_STEPS = 40  # the app's mask: ~15x quicker than kangae explain's 300 steps, still a clear region
MASK_WAIT_S = 600.0  # a mask waits for the masks before it (one at a time) this long at most
PROTO_STEPS = 64  # the tour's quick prototypes
PROTO_BATCH = 8


@dataclass(frozen=True)
class Prototype:
    """One class's prototype: a PNG data URL at the model's size and the model's probability
    of the class for it; ``seconds`` and ``batch`` describe the computation that made it."""

    target: int
    image: str
    probability: float
    seconds: float
    batch: int
    source: str = "computed"


def proto_param(side: int) -> str:
    """Pixels for small models, a decorrelated Fourier image from 33 px on (as the tour)."""
    return "fourier" if side > 32 else "pixel"


class Prototypes:
    """Class prototypes computed on demand, batched, cached; :meth:`get` never blocks."""

    def __init__(self, model: nn.Module, shape: tuple[int, ...], *, steps: int = PROTO_STEPS,
                 max_batch: int = PROTO_BATCH, max_queued: int = 64, keep: int = 256):
        self.model, self.shape = model, tuple(shape)
        self.steps, self.max_batch, self.max_queued, self.keep = steps, max_batch, max_queued, keep
        self.param = proto_param(max(self.shape[-2:]))
        self._cond = threading.Condition()
        self._futures: OrderedDict[int, Future[Prototype]] = OrderedDict()  # oldest use first
        self._queue: list[int] = []
        self._running: list[int] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # activation maximizations run (for tests and the log)

    @property
    def settings(self) -> dict[str, Any]:
        return {"method": "gradient activation maximization (post 004)", "steps": self.steps,
                "param": self.param, "size": list(self.shape[-2:]), "max_batch": self.max_batch}

    @property
    def busy(self) -> bool:
        with self._cond:
            return bool(self._queue or self._running)

    def position(self, k: int) -> int:
        """0 while ``k`` is being computed, n when n - 1 classes wait before it, -1 otherwise."""
        with self._cond:
            if k in self._running:
                return 0
            return self._queue.index(k) + 1 if k in self._queue else -1

    def get(self, k: int) -> Future[Prototype]:
        """The future prototype of class ``k``, queued now unless done or on its way;
        :class:`Busy` when ``max_queued`` classes already wait."""
        with self._cond:
            fut = self._futures.get(k)
            if fut is not None:
                self._futures.move_to_end(k)
                return fut
            if len(self._queue) >= self.max_queued:
                raise Busy(f"{len(self._queue)} prototypes are waiting to be computed; try again shortly")
            if self._closed:
                raise Busy("the server is stopping")
            fut = Future()
            self._futures[k] = fut
            self._queue.append(k)
            self._forget_old()
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="kangae-prototypes", daemon=True)
                self._thread.start()
            self._cond.notify()
            return fut

    def preload(self, images: torch.Tensor, targets: list[int], source: str) -> None:
        """Prototypes computed before (a tour's), kept like computed ones."""
        from ..render.images import to_pil

        with torch.inference_mode():
            probs = F.softmax(self.model(images.float()).float(), dim=1)
        with self._cond:
            for i, k in enumerate(targets):
                fut: Future[Prototype] = Future()
                image = png_data_url(to_pil(images[i], scale=1))
                fut.set_result(Prototype(k, image, round(float(probs[i, k]), 4), 0.0, 0, source))
                self._futures[k] = fut

    def _forget_old(self) -> None:
        done = [k for k, f in self._futures.items() if f.done()]
        for k in done[: max(0, len(done) - self.keep)]:
            del self._futures[k]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for k in self._queue:
                self._futures.pop(k).cancel()
            self._queue.clear()
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                self._running = batch
                futures = [self._futures[k] for k in batch]
            for f in futures:
                f.set_running_or_notify_cancel()
            try:
                made = self.compute(batch)
            except Exception as e:  # noqa: BLE001 - each waiting request gets it; a later one retries
                with self._cond:
                    for k in batch:
                        self._futures.pop(k, None)
                for f in futures:
                    f.set_exception(e)
            else:
                for f, p in zip(futures, made):
                    f.set_result(p)
            finally:
                with self._cond:
                    self._running = []

    def compute(self, targets: list[int]) -> list[Prototype]:
        """Prototypes of ``targets``, one batch of activation maximization."""
        from ..probes import activation_maximization
        from ..render.images import to_pil

        t0 = time.perf_counter()
        res = activation_maximization(self.model, targets, steps=self.steps, param=self.param, frames=0,
                                      input_shape=self.shape)
        images = res.images.float().clamp(0, 1)
        with torch.inference_mode():
            probs = F.softmax(self.model(images).float(), dim=1)
        own = probs[torch.arange(len(targets)), torch.tensor(targets)].tolist()
        seconds = time.perf_counter() - t0
        self.batches += 1
        return [Prototype(k, png_data_url(to_pil(img, scale=1)), round(p, 4), round(seconds, 2), len(targets))
                for k, img, p in zip(targets, images, own)]


def _heat_png(attribution: torch.Tensor) -> str:
    """The positive part of an (H, W) map (the evidence for the class) scaled to its maximum,
    as an 8-bit grey PNG."""
    a = attribution.clamp(min=0)
    a = (a / (float(a.max()) or 1.0)).clamp(0, 1)
    return png_data_url(Image.fromarray((a.numpy() * 255).round().astype(np.uint8)))


def picture_info(engine: PictureEngine) -> dict[str, Any]:
    """What the picture page shows about the model and the server's settings."""
    card = engine.card
    h, w = card.size  # type: ignore[misc]
    prep = (f"stretched to {w}x{h}" if card.preprocess == "stretch"
            else f"shorter side resized to {card.resize_to}, centre {w}x{h} cropped")
    return {"preparation": prep, "top_k": TOP_K, "explain": engine.explain_method,
            "methods": [m for m in PICTURE_METHODS if engine._method_problem(get_explainer(m)) is None],
            "mask_steps": engine.mask_steps, "prototypes": engine.prototypes.settings,
            "dataset": engine.run.meta.dataset or card.dataset}


class PictureEngine(Engine):
    """A model that is not a digit model behind the pools of :class:`Engine`; ``run.card``
    says how its pictures are prepared."""

    kind = "picture"

    def __init__(self, run: Run, *, mask_steps: int = MASK_STEPS, proto_steps: int = PROTO_STEPS,
                 proto_batch: int = PROTO_BATCH, **options: Any):
        if run.card is None or run.card.size is None:
            raise ValueError("a picture model needs a card with its input size")
        options.setdefault("explain_method", "gradcam")
        has_conv = any(isinstance(m, nn.Conv2d) for m in run.model.modules())
        if options["explain_method"] == "gradcam" and not has_conv:
            options["explain_method"] = "saliency"
        if get_explainer(options["explain_method"]).name not in PICTURE_METHODS:
            raise KangaeError(f"--explain {options['explain_method']}: the picture page serves "
                              f"{', '.join(PICTURE_METHODS)}")
        super().__init__(run, compute_ideas_now=False, **options)
        self.explain_method = get_explainer(self.explain_method).name
        self.card = run.card
        self.mask_steps = mask_steps
        self.mask_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kangae-mask")
        self.prototypes = Prototypes(self.model, self.shape, steps=proto_steps, max_batch=proto_batch)

    def lane(self, name: str) -> tuple[Any, int, float]:
        if name == "mask":
            return self.mask_pool, self.max_pending_slow, MASK_WAIT_S
        return super().lane(name)

    def close(self) -> None:
        super().close()
        self.mask_pool.shutdown(wait=False, cancel_futures=True)
        self.prototypes.close()

    def ideas_done(self) -> bool:
        return not self.prototypes.busy

    def check_method(self, method: str | None) -> str:
        method = super().check_method(method)
        if method not in PICTURE_METHODS:
            raise BadInput(f"method: the picture page serves {', '.join(PICTURE_METHODS)}, not {method} "
                           "(use kangae explain for the others)")
        return method

    # -- model calls (in the pools) -------------------------------------------------------
    def top(self, probs: torch.Tensor, k: int = TOP_K) -> list[dict[str, Any]]:
        """The ``k`` most probable classes, most probable first."""
        p, i = probs.topk(min(k, len(probs)))
        return [{"index": int(c), "name": self.classes[int(c)], "probability": round(float(v), 4)}
                for v, c in zip(p, i)]

    def explain_picture(self, picture: Picture, target: int | None, method: str) -> dict[str, Any]:
        """``method``'s map for ``target`` (default: the predicted class) over the crop."""
        from ..probes.attribution import explain
        from ..render.explain import overlay_pil

        x = picture.image[None]
        probs = self.predict_batch(x)[0]
        t = int(probs.argmax()) if target is None else self.check_target(target)
        options: dict[str, Any] = {"steps": self.mask_steps} if method == "mask" else {}
        with self.model_for(method) as model:
            res = explain(model, x, torch.tensor([t]), method=method, **options)
        a = torch.nan_to_num(res.attribution.detach().float().cpu()[0].sum(0))  # (H, W)
        if method == "gradcam":  # the paper's ReLU: only the evidence for the class
            a = a.clamp(min=0)
        metrics = {k: v for k, v in res.metrics.items() if isinstance(v, (int, float, str)) or v is None}
        for name in ("prob_after", "area"):
            value = getattr(res, name, None)
            if value is not None and value[0].numel() == 1:
                metrics[name] = round(float(value[0]), 4)
        return {"target": t, "name": self.classes[t], "method": res.method,
                "probability": round(float(probs[t]), 4), "summary": res.summary(0, self.classes),
                "overlay": png_data_url(overlay_pil(picture.image, a[None], scale=1)),
                "heat": _heat_png(a), "size": list(a.shape), "metrics": metrics}
