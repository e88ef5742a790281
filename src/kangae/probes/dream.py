"""Deep Dream of the user's own pictures: what a layer sees in them, made stronger (post 004).

Post 004 ends on Deep Dream as its next step: the same gradient ascent as filter
visualization, but from a given photo instead of noise, on the norm of a whole layer's
activation (Mordvintsev, Olah & Tyka, "Inceptionism", 2015). Each octave works on the
picture shrunk by ``octave_scale`` (smallest first), so patterns grow at several scales;
after an octave the dreamed picture is enlarged to the next size and the detail that
shrinking lost is added back (as in the Keras example). Every step shifts the picture by a
random roll (jitter), normalizes the gradient per image and clips to [0, 1].

All pictures are one batch. The forward pass stops at the layer; an octave size the layers
before it cannot take (a ``Linear`` on the flattened pixels) is skipped and the metrics say
so.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.layers import get_layer
from ._model import frozen, stop_at
from .inputs import ProbeInputError, Target, as_images, as_target, model_device
from .result import PrototypeResult


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _roll(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Each image rolled (wrapping around) by its own ``shifts[n] = (dy, dx)``."""
    n, _, h, w = x.shape
    rows = (torch.arange(h, device=x.device) - shifts[:, :1].to(x.device)) % h  # (N, H)
    cols = (torch.arange(w, device=x.device) - shifts[:, 1:].to(x.device)) % w  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return x[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _objective(act: torch.Tensor, channels: torch.Tensor | None) -> torch.Tensor:
    """Half the mean squared activation of each image: of the whole layer, or of its channel."""
    if channels is not None:
        act = act[torch.arange(len(act), device=act.device), channels.to(act.device)]
    return 0.5 * act.pow(2).reshape(len(act), -1).mean(1)  # a unit of a flat layer is one value


def _norm(act: torch.Tensor, channels: torch.Tensor | None) -> torch.Tensor:
    if channels is not None:
        act = act[torch.arange(len(act), device=act.device), channels.to(act.device)]
    return act.reshape(len(act), -1).norm(dim=1)


def _octave_sizes(run, x: torch.Tensor, octaves: int, scale: float) -> tuple[list, list]:
    """The sizes to dream at, smallest first, and those skipped (the layers before the
    chosen one cannot take them). The picture's own size always works or raises."""
    h, w = x.shape[-2:]
    sizes, skipped = [], []
    for i in reversed(range(octaves)):
        size = (max(1, round(h / scale**i)), max(1, round(w / scale**i)))
        if i == 0:
            sizes.append(size)
            continue
        try:
            with torch.no_grad():
                run(_resize(x[:1], size))
            sizes.append(size)
        except RuntimeError:
            skipped.append(size)
    return sizes, skipped


def deep_dream(model: nn.Module, images: torch.Tensor, *, layer: str, target: Target = None,
               octaves: int = 3, octave_scale: float = 1.4, steps: int = 20, lr: float = 0.01,
               jitter: int | None = None, seed: int = 0) -> PrototypeResult:
    """Deep Dream of ``images`` (N, C, H, W) in [0, 1] on ``layer`` (a dotted name): gradient
    ascent on the layer's activation norm from the pictures themselves, ``steps`` per octave
    at ``octaves`` sizes (each ``octave_scale`` times the last), by ``lr`` times the gradient
    over its standard deviation, with a random roll of up to ``jitter`` px each step
    (default: 1 px per 28 px of side). ``target``: ``None`` raises the whole layer, a channel
    index (or one per picture) raises that channel.

    ``scores`` are the layer's activation norm on the result (``metrics["start_norm"]`` on
    the pictures given); ``frames`` show the pictures given, then after each octave.
    """
    if octaves < 1 or steps < 0 or octave_scale <= 1 or lr <= 0:
        raise ProbeInputError("deep_dream needs octaves >= 1, steps >= 0, octave_scale > 1 and lr > 0")
    get_layer(model, layer)
    x0 = as_images(images).to(model_device(model))
    n, _, h, w = x0.shape
    jitter = max(1, round(min(h, w) / 28)) if jitter is None else jitter
    gen = torch.Generator().manual_seed(seed)
    with frozen(model), stop_at(model, layer) as run:
        with torch.no_grad():
            start = run(x0)
        channels = None
        if target is not None:
            if start.ndim < 2:
                raise ProbeInputError(f"layer '{layer}' has no channels to choose from")
            channels = as_target(target, n, start.shape[1], name="target")
        start_norm = _norm(start, channels)
        sizes, skipped = _octave_sizes(run, x0, octaves, octave_scale)
        shrunk = _resize(x0, sizes[0])
        img = shrunk.clone()
        frames, curve = [x0.cpu()], []
        for k, size in enumerate(sizes):
            if k:  # enlarge the dream, and put back the detail shrinking took from the picture
                original = _resize(x0, size)
                img = (_resize(img, size) + original - _resize(shrunk, size)).clamp_(0, 1)
                shrunk = original
            for _ in range(steps):
                x = img.detach().requires_grad_(True)
                shifts = torch.randint(-jitter, jitter + 1, (n, 2), generator=gen)
                obj = _objective(run(_roll(x, shifts) if jitter else x), channels)
                (grad,) = torch.autograd.grad(obj.sum(), x)
                std = grad.flatten(1).std(1).clamp(min=1e-12).view(n, 1, 1, 1)
                img = (img + lr * grad / std).clamp_(0, 1)
                curve.append(obj.detach())
            frames.append(_resize(img, (h, w)).detach().cpu())
        with torch.no_grad():
            final = run(img)
        score = _norm(final, channels)
    return PrototypeResult(
        images=img.detach().cpu(),
        target=(channels if channels is not None else torch.full((n,), -1)).cpu(),
        scores=score.detach().cpu(),
        method="dream",
        frames=torch.stack(frames),
        metrics={"layer": layer, "channels": None if channels is None else channels.tolist(),
                 "octaves": [list(s) for s in sizes], "skipped_octaves": [list(s) for s in skipped],
                 "octave_scale": octave_scale, "steps": steps, "lr": lr, "jitter": jitter,
                 "start_norm": start_norm.cpu().tolist(),
                 "objective_curve": torch.stack(curve).cpu().T.tolist() if curve else []},
    )
