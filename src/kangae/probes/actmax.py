"""Gradient activation maximization: inputs that excite a class or a channel (post 004).

Post 004 maximizes a class output and conv filters of VGG16 by gradient ascent on the
input, replacing the final softmax by a linear output (Simonyan et al. 2013: with softmax
a class can also be "raised" by pushing the others down), and regularizes the image.
kangae does this for any ``nn.Module`` at any C x H x W, with every target (10 classes,
16 channels, or several diverse prototypes per target) optimized together as one batch.

Objectives: ``logit`` (default), ``prob`` (log-probability), ``channel`` (mean activation
of a channel of a layer given by dotted name) and ``neuron`` (the channel's centre unit);
for a layer the forward pass stops there. Regularizers: Lp and L1 norms, total variation,
blur every k steps, and transformation robustness: a random translation each step (1 px at
28x28) or, from 64 px on, Lucid's standard transforms (pad, jitter, scale, rotate, jitter;
:func:`standard_transforms`). Parameterizations: ``pixel`` (sigmoid of free pixels) or
``fourier`` (Lucid's spectrum scaled by 1/frequency, colour-decorrelated for RGB), which
favours smooth images and is the default from 64 px on (Olah et al., "Feature
Visualization", Distill 2017). :func:`filter_grid` makes post 004's 4x4 grids of a layer's
filters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.loader import random_shift
from ..models.layers import get_layer
from ..utils.rng import RowGenerators, randint, randn, row_seed
from ..utils.stop import check_stop
from ._model import frozen, input_shape_of, stop_at
from .inputs import ProbeInputError, Target, as_classes, model_device, renamed
from .result import PrototypeResult

OBJECTIVES = ("logit", "prob", "channel", "neuron")
PARAMS = ("auto", "pixel", "fourier")
TRANSFORMS = ("auto", "shift", "standard", "none")
LARGE = 64  # px: from this side on, Lucid's defaults (standard transforms, Fourier images)
_FOURIER_GAIN = 1 / 7  # Lucid divides by 4; 1/7 is kangae's earlier 4/sqrt(H*W) at 28x28
OPTIMIZERS = ("adam", "rmsprop")

# Lucid's colour correlation (ImageNet), square-root form, for 3-channel decorrelation.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR_SQRT = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


@dataclass(frozen=True)
class Regularizers:
    """Weights of the image priors; zero turns one off. ``transforms`` (transformation
    robustness): ``shift`` translates by up to ``jitter`` px, filling with zeros (the
    default below 64 px, which suits digits); ``standard`` is Lucid's (the default from
    64 px): pad, jitter ``jitter``, scale by 1 ± ``scale``, rotate by up to ``rotate``
    degrees, jitter ``jitter // 2``; ``none`` shows the model the image as it is."""

    lp: float = 0.0
    p: float = 6.0
    l1: float = 0.0
    tv: float = 0.0
    blur_every: int = 0
    blur_sigma: float = 0.5
    jitter: int | None = None  # pixels; None: 1 px per 28 px of image side (8 at 224)
    transforms: str = "auto"
    scale: float = 0.1
    rotate: int = 10

    def jitter_for(self, side: int) -> int:
        return self.jitter if self.jitter is not None else max(1, round(side / 28))

    def transforms_for(self, side: int) -> str:
        if self.transforms not in TRANSFORMS:
            raise ProbeInputError(f"unknown transforms '{self.transforms}'; "
                                  f"use one of {', '.join(TRANSFORMS)}")
        if self.transforms != "auto":
            return self.transforms
        return "standard" if side >= LARGE else "shift"


def _choice(values: torch.Tensor, n: int, generator: torch.Generator | RowGenerators) -> torch.Tensor:
    return values[randint(generator, len(values), (n,))]


def standard_transforms(x: torch.Tensor, jitter: int, scale: float, rotate: int,
                        generator: torch.Generator | RowGenerators) -> torch.Tensor:
    """Lucid's (and Lucent's) ``standard_transforms`` on a batch, as one affine map per image
    sampled once (``affine_grid``/``grid_sample``): pad (grey 0.5 outside), jitter by
    0..``jitter``-1 px, scale by one of 11 steps in 1 ± ``scale``, rotate by a whole number
    of degrees in ±``rotate`` (zero five times likelier, as in Lucid), jitter by
    0..``jitter // 2``-1 px; the model sees the same H x W window about the centre.
    Draws come from ``generator`` (or, one image each, from a
    :class:`~kangae.utils.rng.RowGenerators`); integer shifts alone move pixels exactly."""
    n, _, h, w = x.shape
    jitter2 = max(1, jitter // 2)
    t1 = randint(generator, max(1, jitter), (n, 2)) - max(1, jitter) // 2
    t2 = randint(generator, jitter2, (n, 2)) - jitter2 // 2
    scales = 1 + scale * (torch.arange(11, dtype=torch.float64) - 5) / 5
    angles = torch.tensor([*range(-rotate, rotate + 1), *[0] * 5], dtype=torch.float64)
    s = _choice(scales, n, generator)
    a = torch.deg2rad(_choice(angles, n, generator))
    # input point (pixels from the centre) of output point u: R(-a) (u + t2) / s + t1
    rot = torch.stack([torch.stack([a.cos(), a.sin()], 1), torch.stack([-a.sin(), a.cos()], 1)], 1)
    m = rot / s[:, None, None]
    c = (m @ t2.double()[..., None])[..., 0] + t1.double()
    half = torch.tensor([w / 2, h / 2], dtype=torch.float64)
    theta = torch.cat([m * half[None, None, :] / half[None, :, None], (c / half)[..., None]], 2)
    grid = F.affine_grid(theta.to(x), [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5


def _transform(x: torch.Tensor, kind: str, reg: Regularizers, jitter: int,
               generator: RowGenerators) -> torch.Tensor:
    if kind == "shift":
        return random_shift(x, jitter, generator) if jitter else x
    if kind == "standard":
        return standard_transforms(x, jitter, reg.scale, reg.rotate, generator)
    return x


class _Image(nn.Module):
    """A batch of images in [0, 1] from free parameters (pixels or a Fourier spectrum)."""

    def __init__(self, n: int, shape: tuple[int, ...], param: str, decay: float,
                 generator: RowGenerators, device: torch.device):
        super().__init__()
        c, h, w = shape
        self.shape, self.kind = shape, param
        if param == "pixel":
            init = randn(generator, (n, c, h, w)) * 0.01
        elif param == "fourier":
            fy = torch.fft.fftfreq(h)[:, None]
            fx = torch.fft.rfftfreq(w)[None, :]
            freq = (fx**2 + fy**2).sqrt().clamp(min=1.0 / max(h, w))
            self.register_buffer("scale", (1.0 / freq**decay).to(device) * _FOURIER_GAIN)
            init = randn(generator, (n, c, h, w // 2 + 1, 2)) * 0.01
        else:
            raise ValueError(f"unknown parameterization '{param}'; use {' or '.join(PARAMS[1:])}")
        self.raw = nn.Parameter(init.to(device))

    def forward(self) -> torch.Tensor:
        c, h, w = self.shape
        if self.kind == "pixel":
            x = self.raw
        else:
            spectrum = torch.view_as_complex(self.raw) * self.scale
            x = torch.fft.irfft2(spectrum, s=(h, w), norm="ortho")
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
        with stop_at(model, layer) as run:  # type: ignore[arg-type]
            return run(torch.zeros(1, *input_shape, device=device)).shape[1]


@renamed(targets="target")
def activation_maximization(model: nn.Module, target: Target = "all", *,
                            objective: str = "logit", layer: str | None = None,
                            per_target: int = 1, steps: int = 256, lr: float = 0.05,
                            optimizer: str = "adam", param: str = "auto", decay: float = 1.0,
                            regularizers: Regularizers | None = None, diversity: float = 0.0,
                            input_shape: tuple[int, ...] | None = None, frames: int = 40,
                            seed: int = 0) -> PrototypeResult:
    """Optimize one input per target (``per_target`` each) to maximize ``objective``:
    ``target`` lists classes (logit, prob) or channels of ``layer`` (channel, neuron), or
    ``"all"``. ``param="auto"`` is ``pixel`` below 64 px and ``fourier`` from 64 px on; the
    transforms follow the image size too (see :class:`Regularizers`).

    All targets are one batch: one forward and backward per step. Each image draws its start
    and its transforms from its own generator (``seed``, its target, its copy), so a target's
    picture does not depend on the other targets asked with it. The model's mode,
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
    if param not in PARAMS:
        raise ValueError(f"unknown parameterization '{param}'; use {' or '.join(PARAMS)}")
    reg = regularizers or Regularizers()
    shape = tuple(input_shape or input_shape_of(model))
    side = min(shape[-2:])
    param = param if param != "auto" else "fourier" if side >= LARGE else "pixel"
    kind = reg.transforms_for(side)
    device = model_device(model)
    n_targets = count_targets(model, objective, layer, shape)
    t = as_classes(target, n_targets).repeat_interleave(per_target).to(device)
    # one generator per image, from the seed, its target and its copy: a target's picture is
    # the same whichever other targets share the batch (kangae.utils.rng)
    gen = RowGenerators([row_seed(seed, int(k), i % per_target) for i, k in enumerate(t.tolist())])
    image = _Image(len(t), shape, param, decay, gen, device)
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.RMSprop)(image.parameters(), lr=lr)
    jitter = reg.jitter_for(shape[-1]) if kind != "none" else 0
    frame_at = {round(i * (steps - 1) / max(1, frames - 1)) for i in range(frames)} if frames else set()
    snaps, curve = [], []
    with frozen(model), _scorer(model, objective, layer) as score:
        for step in range(steps):
            check_stop()
            x = image()
            obj = score(_transform(x, kind, reg, jitter, gen), t)
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
            final_score = score(final, t)
    transforms = {"transforms": kind, "jitter": jitter}
    if kind == "standard":
        transforms.update(scale=reg.scale, rotate=reg.rotate)
    return PrototypeResult(
        images=final.detach().cpu(),
        target=t.cpu(),
        scores=final_score.detach().cpu(),
        method="gradient",
        frames=torch.stack(snaps) if snaps else None,
        metrics={"objective": objective, "layer": layer, "steps": steps, "lr": lr,
                 "optimizer": optimizer, "param": param, "per_target": per_target,
                 "diversity": diversity, "regularizers": {**asdict(reg), **transforms},
                 "objective_curve": torch.stack(curve).cpu()[:: max(1, steps // 64)].T.tolist()},
    )


@contextmanager
def _scorer(model: nn.Module, objective: str, layer: str | None
            ) -> Iterator[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """``score(x, targets)``: the objective of each image; for a layer, the forward pass
    stops at that layer."""
    if objective in ("logit", "prob"):
        fast = _FastLayout(model)
        yield lambda x, t: _objective(objective, model(fast(x)), None, t)
        return
    with stop_at(model, layer) as run:  # type: ignore[arg-type]
        fast = _FastLayout(run)
        yield lambda x, t: _objective(objective, None, run(fast(x)), t)


class _FastLayout:
    """Lays a CPU image batch out channels-last, oneDNN's fast layout for convolutions (VGG16
    at 224: a forward and backward 1.4x faster), the same numbers up to rounding; leaves it
    as given where the model refuses it (a ``view`` that needs contiguous strides), which one
    forward of one image finds out the first time."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor]):
        self.forward = forward
        self.ok: bool | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.device.type != "cpu":
            return x
        if self.ok is None:
            try:
                with torch.no_grad():
                    self.forward(x[:1].detach().contiguous(memory_format=torch.channels_last))
                self.ok = True
            except RuntimeError:
                self.ok = False
        return x.contiguous(memory_format=torch.channels_last) if self.ok else x


def filter_grid(model: nn.Module, layer: str, target: Target = None, *, count: int = 16,
                steps: int = 256, lr: float = 0.05, param: str = "auto",
                regularizers: Regularizers | None = None, input_shape: tuple[int, ...] | None = None,
                frames: int = 0, seed: int = 0) -> PrototypeResult:
    """Post 004's 4x4 grid of a conv layer's filters: for ``count`` channels of ``layer``
    (``target``; default: ``count`` of them drawn at random with ``seed``, as the post
    picks them, in order), the input that maximizes each channel's mean activation, all
    in one batch. ``result.picture()`` is the grid (4x4 for 16)."""
    shape = tuple(input_shape or input_shape_of(model))
    get_layer(model, layer)
    channels = count_targets(model, "channel", layer, shape)
    if target is None:
        gen = torch.Generator().manual_seed(seed)
        target = torch.randperm(channels, generator=gen)[: min(count, channels)].sort().values
    return activation_maximization(model, target, objective="channel", layer=layer, steps=steps, lr=lr,
                                   param=param, regularizers=regularizers, input_shape=shape,
                                   frames=frames, seed=seed)
