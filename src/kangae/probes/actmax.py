"""Gradient activation maximization: inputs that excite a class or a channel (post 004).

Post 004 maximizes a class output and conv filters of VGG16 by gradient ascent on the
input, replacing the final softmax by a linear output (Simonyan et al. 2013: with softmax
a class can also be "raised" by pushing the others down), and regularizes the image.
kangae does this for any ``nn.Module``, with every target (10 classes, 16 channels, or
several diverse prototypes per target) optimized together as one batch.

Objectives: ``logit`` (default), ``prob`` (log-probability), ``channel`` (mean activation
of a channel of a layer given by dotted name) and ``neuron`` (the channel's centre unit).
Regularizers: Lp and L1 norms, total variation, blur every k steps, and jitter (random
translation each step, 1 px at 28x28). Parameterizations: ``pixel`` (sigmoid of free
pixels) or ``fourier`` (Lucid's spectrum scaled by 1/frequency, colour-decorrelated for
RGB) which favours smooth images (Olah et al., "Feature Visualization", Distill 2017).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.loader import random_shift
from ..models.layers import capture, get_layer
from ._model import frozen, input_shape_of
from .inputs import Target, as_classes, model_device, renamed
from .result import PrototypeResult

OBJECTIVES = ("logit", "prob", "channel", "neuron")
PARAMS = ("pixel", "fourier")
OPTIMIZERS = ("adam", "rmsprop")

# Lucid's colour correlation (ImageNet), square-root form, for 3-channel decorrelation.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR_SQRT = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


@dataclass(frozen=True)
class Regularizers:
    """Weights of the image priors; zero turns one off. Defaults suit 28x28 digits."""

    lp: float = 0.0
    p: float = 6.0
    l1: float = 0.0
    tv: float = 0.0
    blur_every: int = 0
    blur_sigma: float = 0.5
    jitter: int | None = None  # pixels; None: 1 px per 28 px of image side

    def jitter_for(self, side: int) -> int:
        return self.jitter if self.jitter is not None else max(1, round(side / 28))


class _Image(nn.Module):
    """A batch of images in [0, 1] from free parameters (pixels or a Fourier spectrum)."""

    def __init__(self, n: int, shape: tuple[int, ...], param: str, decay: float,
                 generator: torch.Generator, device: torch.device):
        super().__init__()
        c, h, w = shape
        self.shape, self.kind = shape, param
        if param == "pixel":
            init = torch.randn(n, c, h, w, generator=generator) * 0.01
        elif param == "fourier":
            fy = torch.fft.fftfreq(h)[:, None]
            fx = torch.fft.rfftfreq(w)[None, :]
            freq = (fx**2 + fy**2).sqrt().clamp(min=1.0 / max(h, w))
            self.register_buffer("scale", (1.0 / freq**decay).to(device) / math.sqrt(h * w))
            init = torch.randn(n, c, h, w // 2 + 1, 2, generator=generator) * 0.01
        else:
            raise ValueError(f"unknown parameterization '{param}'; use {' or '.join(PARAMS)}")
        self.raw = nn.Parameter(init.to(device))

    def forward(self) -> torch.Tensor:
        c, h, w = self.shape
        if self.kind == "pixel":
            x = self.raw
        else:
            spectrum = torch.view_as_complex(self.raw) * self.scale
            x = torch.fft.irfft2(spectrum, s=(h, w), norm="ortho") * 4
            if c == 3:
                x = torch.einsum("nchw,dc->ndhw", x, _COLOR_SQRT.to(x))
        return torch.sigmoid(x)

    @torch.no_grad()
    def blur(self, sigma: float) -> None:
        if self.kind != "pixel":
            return
        r = torch.arange(-1, 2, dtype=self.raw.dtype, device=self.raw.device)
        k = torch.exp(-(r**2) / (2 * sigma**2))
        k = (k[:, None] * k[None, :]) / k.sum() ** 2
        c = self.raw.shape[1]
        self.raw.copy_(F.conv2d(F.pad(self.raw, (1, 1, 1, 1), mode="replicate"),
                                k.expand(c, 1, 3, 3), groups=c))


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3)) + \
        (x[..., :, 1:] - x[..., :, :-1]).abs().mean((1, 2, 3))


def _objective(kind: str, logits: torch.Tensor, feats: torch.Tensor | None,
               targets: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(len(targets), device=targets.device)
    if kind == "logit":
        return logits[rows, targets]
    if kind == "prob":
        return F.log_softmax(logits, dim=1)[rows, targets]
    act = feats[rows, targets]  # (N, H, W) for conv layers, (N,) for linear ones
    if act.ndim == 1:
        return act
    if kind == "channel":
        return act.flatten(1).mean(1)
    return act[:, act.shape[1] // 2, act.shape[2] // 2]


def _diversity(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Mean pairwise cosine similarity within each group of prototypes of one target."""
    if groups < 2:
        return x.new_zeros(x.shape[0])
    f = F.normalize((x - x.mean((1, 2, 3), keepdim=True)).flatten(1), dim=1)
    f = f.view(-1, groups, f.shape[1])
    sim = f @ f.transpose(1, 2)
    off = (sim.sum((1, 2)) - groups) / (groups * (groups - 1))
    return off.repeat_interleave(groups)


def count_targets(model: nn.Module, objective: str, layer: str | None,
                  input_shape: tuple[int, ...]) -> int:
    """How many targets an objective has: classes for logits, channels for a layer."""
    device = model_device(model)
    with frozen(model), torch.no_grad():
        if objective in ("logit", "prob"):
            return model(torch.zeros(1, *input_shape, device=device)).shape[1]
        with capture(model, [layer]) as out:
            model(torch.zeros(1, *input_shape, device=device))
        return out[layer].shape[1]


@renamed(targets="target")
def activation_maximization(model: nn.Module, target: Target = "all", *,
                            objective: str = "logit", layer: str | None = None,
                            per_target: int = 1, steps: int = 256, lr: float = 0.05,
                            optimizer: str = "adam", param: str = "pixel", decay: float = 1.0,
                            regularizers: Regularizers | None = None, diversity: float = 0.0,
                            input_shape: tuple[int, ...] | None = None, frames: int = 40,
                            seed: int = 0) -> PrototypeResult:
    """Optimize one input per target (``per_target`` each) to maximize ``objective``:
    ``target`` lists classes (logit, prob) or channels of ``layer`` (channel, neuron), or
    ``"all"``.

    All targets are one batch: one forward and backward per step. The model's mode,
    ``requires_grad`` flags and hooks are restored afterwards, even on error.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective '{objective}'; use one of {', '.join(OBJECTIVES)}")
    if objective in ("channel", "neuron"):
        if not layer:
            raise ValueError(f"objective '{objective}' needs a layer name")
        get_layer(model, layer)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer '{optimizer}'; use adam or rmsprop")
    reg = regularizers or Regularizers()
    shape = tuple(input_shape or input_shape_of(model))
    device = model_device(model)
    n_targets = count_targets(model, objective, layer, shape)
    t = as_classes(target, n_targets).repeat_interleave(per_target).to(device)
    gen = torch.Generator().manual_seed(seed)
    image = _Image(len(t), shape, param, decay, gen, device)
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.RMSprop)(image.parameters(), lr=lr)
    jitter = reg.jitter_for(shape[-1])
    frame_at = {round(i * (steps - 1) / max(1, frames - 1)) for i in range(frames)} if frames else set()
    snaps, curve = [], []
    layers = [layer] if objective in ("channel", "neuron") else []
    with frozen(model), capture(model, layers) as feats:
        for step in range(steps):
            x = image()
            seen = random_shift(x, jitter, gen) if jitter else x
            obj = _objective(objective, model(seen), feats.get(layer), t)
            loss = -obj
            if reg.lp:
                loss = loss + reg.lp * x.abs().pow(reg.p).mean((1, 2, 3))
            if reg.l1:
                loss = loss + reg.l1 * x.abs().mean((1, 2, 3))
            if reg.tv:
                loss = loss + reg.tv * _total_variation(x)
            if diversity:
                loss = loss + diversity * _diversity(x, per_target)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            if reg.blur_every and (step + 1) % reg.blur_every == 0:
                image.blur(reg.blur_sigma)
            curve.append(obj.detach())
            if step in frame_at:
                snaps.append(x.detach().cpu())
        with torch.no_grad():
            final = image()
            score = _objective(objective, model(final), feats.get(layer), t)
    return PrototypeResult(
        images=final.detach().cpu(),
        target=t.cpu(),
        scores=score.detach().cpu(),
        method="gradient",
        frames=torch.stack(snaps) if snaps else None,
        metrics={"objective": objective, "layer": layer, "steps": steps, "lr": lr,
                 "optimizer": optimizer, "param": param, "per_target": per_target,
                 "diversity": diversity, "regularizers": {**asdict(reg), "jitter": jitter},
                 "objective_curve": torch.stack(curve).cpu()[:: max(1, steps // 64)].T.tolist()},
    )
