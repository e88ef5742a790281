"""One call for every explanation method: Captum's attributions and kangae's masks.

``explain(model, images, target, method=...)`` returns an :class:`Explanation` whatever the
method, so a report, a benchmark or the web app can swap methods freely. The gradient and
perturbation attributions come from Captum (Kokhlikyan et al. 2020) rather than being
rewritten here, with two exceptions that give Captum's numbers faster or more reproducibly:
occlusion scores all its occluded images through kangae's batched scoring copy, and
SmoothGrad runs Captum's saliency on noise drawn per image:

===============  ==================================================================
saliency         |d logit / d x| (Simonyan et al. 2014)
inputxgrad       x * d logit / d x (Shrikumar et al. 2016)
ig               integrated gradients from a black image, 32 steps (Sundararajan et al. 2017)
smoothgrad       saliency averaged over 16 noisy copies, sigma 15% (Smilkov et al. 2017)
gradcam          Grad-CAM on a conv layer, upsampled (Selvaraju et al. 2017)
occlusion        drop in the logit when a 4x4 patch (stride 2; scaled with the image) is
                 blacked out (Zeiler & Fergus 2014)
deeplift         DeepLIFT rescale rule from a black image (Shrikumar et al. 2017)
gradshap         GradientSHAP: expected gradients from a black image, 16 samples (Lundberg & Lee 2017)
lrp              LRP: gamma rule (0.25) on convs, epsilon rule (1e-6) on linear layers and
                 pooling, identity on batch norm and Normalize (see :func:`lrp_rules`)
guided-backprop  guided backpropagation (Springenberg et al. 2015)
deconvolution    deconvnet (Zeiler & Fergus 2014)
guided-gradcam   guided backprop times Grad-CAM (Selvaraju et al. 2017)
kernelshap       KernelSHAP on SLIC superpixels, 200 samples (Lundberg & Lee 2017)
lime             LIME on SLIC superpixels, 200 samples (Ribeiro et al. 2016)
mask             meaningful perturbation, deletion game (Fong & Vedaldi 2017)
extremal         extremal perturbation, areas 5/10/20% (Fong, Patrick & Vedaldi 2019)
rise             RISE, 4000 random masks of 7x7 cells (Petsiuk, Das & Saenko 2018)
random           uniform noise: the baseline every faithfulness score is compared with
===============  ==================================================================

Each method registers itself with :func:`~kangae.probes.registry.register_explainer`;
the CLI, ``explain-bench``, the web app and the tour read the registry.

Every hook Captum adds is removed, the model's weights are untouched, and its train/eval
mode and ``requires_grad`` flags are restored on return, even after an error.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import KangaeError
from ..models.layers import get_layer
from ..utils.device import chunk_size, module_device
from ..utils.threads import PIECE, map_pieces, pieces
from ._inference import Scorer
from ._model import frozen, resolve_targets
from .explanation import Explanation, flag_degenerate
from .inputs import renamed
from .masks import extremal_perturbation, meaningful_perturbation
from .registry import Context, aliases, explainer_names, get_explainer, register_explainer
from .rise import rise
from .superpixels import superpixels


def _spatial(out: Any) -> bool:
    return isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-1] * out.shape[-2] > 1


def default_cam_layer(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """Grad-CAM's layer when none is named, for any model: the last ``nn.Conv2d`` (in the
    order the forward pass runs them) whose output is spatial, taken with the outermost
    module around it whose output is still spatial, so that the map includes what follows
    the convolution in its block (batch norm, ReLU, a residual sum): ``block2`` for the
    zoo's conv nets, ``stage3`` for its ResNet, ``layer4`` for a torchvision ResNet and
    ``features`` for a VGG, as pytorch-grad-cam advises; the conv itself in a flat
    ``nn.Sequential``."""
    device = module_device(model)
    spatial: set[str] = set()
    convs: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(m: nn.Module, i: Any, out: Any, name: str = name) -> None:
            if _spatial(out):
                spatial.add(name)
                if isinstance(m, nn.Conv2d):
                    convs.append(name)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
    if not convs:
        raise KangaeError("Grad-CAM needs a convolutional layer with a spatial output, and this "
                          "model has none (try saliency, ig or mask)")
    parts = convs[-1].split(".")
    outer = [".".join(parts[:k]) for k in range(1, len(parts) + 1)]
    return next(n for n in outer if n in spatial)


def _chunk_options(x: torch.Tensor) -> tuple[int, int]:
    """Images per forward pass on this device, and perturbed copies per image that fill it."""
    chunk = chunk_size(None, x.device, tuple(x.shape[1:]))
    return chunk, max(1, chunk // max(1, len(x)))


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """``torch.manual_seed(seed)`` (and numpy's, which GradientSHAP draws its baselines from)
    inside the block for methods that draw from the global RNGs (Captum's noise and samples);
    the caller's RNG states are restored on exit."""
    import numpy as np

    devices = [device.index or 0] if device.type == "cuda" else []
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            yield
    finally:
        np.random.set_state(numpy_state)


# the smallest piece for methods whose forward passes are filled with many perturbed copies of
# each image (IG's steps, SmoothGrad's noisy copies, occlusion's windows): a piece of a few
# images still runs full-size batches, and the free core can take more of them
FEW = 4


@register_explainer("saliency", pieces=PIECE, defaults={"abs": True},
                    description="|d logit / d x| (Simonyan et al. 2014)")
def _saliency(model: nn.Module, x: torch.Tensor, t: torch.Tensor, ctx: Context, *, abs: bool,
              **_: Any) -> torch.Tensor:
    import captum.attr as ca

    return ca.Saliency(model).attribute(x, target=t, abs=abs)


@register_explainer("inputxgrad", pieces=PIECE, aliases=("input-x-gradient",),
                    description="x * d logit / d x (Shrikumar et al. 2016)")
def _inputxgrad(model: nn.Module, x: torch.Tensor, t: torch.Tensor, ctx: Context, **_: Any) -> torch.Tensor:
    import captum.attr as ca

    return ca.InputXGradient(model).attribute(x, target=t)


@register_explainer("ig", pieces=FEW, aliases=("integrated-gradients",), defaults={"n_steps": 32},
                    description="integrated gradients from a black image, 32 steps "
                                "(Sundararajan et al. 2017)")
def _ig(model: nn.Module, x: torch.Tensor, t: torch.Tensor, ctx: Context, *, n_steps: int,
        internal_batch_size: int | None = None, **_: Any) -> torch.Tensor:
    import captum.attr as ca

    return ca.IntegratedGradients(model).attribute(
        x, baselines=torch.zeros_like(x), target=t, n_steps=n_steps,
        internal_batch_size=internal_batch_size or max(ctx.chunk, len(x)))


@register_explainer("smoothgrad", pieces=FEW, defaults={"nt_samples": 16, "stdevs": 0.15},
                    description="saliency averaged over 16 noisy copies, sigma 15% (Smilkov et al. 2017)")
def _smoothgrad(model: nn.Module, x: torch.Tensor, t: torch.Tensor, ctx: Context, *, nt_samples: int,
                stdevs: float, nt_samples_batch_size: int | None = None, **_: Any) -> torch.Tensor:
    """Captum's saliency (absolute gradients) averaged over ``nt_samples`` noisy copies of each
    image, as Captum's ``NoiseTunnel(Saliency)`` computes it, but with each image's noise drawn
    from its own generator (seeded with ``ctx.seed`` plus its place in the chunk, so with the
    seed plus its index in the batch): an image gets the same noise, so the same map, however
    the images are grouped into chunks or pieces, and no global RNG is touched."""
    import captum.attr as ca

    n, shape = len(x), tuple(x.shape[1:])
    own = [torch.Generator().manual_seed(ctx.seed + j) for j in range(n)]
    noise = torch.stack([torch.randn((nt_samples, *shape), generator=g) for g in own])  # (N, S, C, H, W)
    noise = noise.to(x.device, x.dtype) * stdevs
    per = max(1, min(nt_samples, nt_samples_batch_size or ctx.per_image))
    saliency, total = ca.Saliency(model), torch.zeros_like(x)
    for start in range(0, nt_samples, per):
        k = min(per, nt_samples - start)
        noisy = (x.detach()[:, None] + noise[:, start : start + k]).flatten(0, 1).requires_grad_(True)
        g = saliency.attribute(noisy, target=t.repeat_interleave(k), abs=True)
        total += g.view(n, k, *shape).sum(1)
    return total / nt_samples


@register_explainer("gradcam", aliases=("grad-cam",), needs_layer=True,
                    description="Grad-CAM on a conv layer, upsampled (Selvaraju et al. 2017)")
def _gradcam(model: nn.Module, x: torch.Tensor, t: torch.Tensor, ctx: Context, **_: Any) -> torch.Tensor:
    import captum.attr as ca

    name = ctx.layer or default_cam_layer(model, tuple(x.shape[1:]))
    cam = ca.LayerGradCam(model, get_layer(model, name)).attribute(x, target=t)
    if cam.ndim != 4:
        raise KangaeError(f"Grad-CAM needs a layer with a spatial (N, C, H, W) output, and '{name}' "
                          f"has no height and width (pick a conv layer: `kangae layers`)")
    return ca.LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")


@register_explainer("occlusion", pieces=FEW, gradient=False,
                    description="drop in the logit when a 4x4 patch (stride 2; scaled with the image) is "
                                "blacked out (Zeiler & Fergus 2014)")
def _occlusion(model: nn.Module, x: torch.Tensor, t: torch.Tensor, ctx: Context, *,
               window: int | None = None, stride: int | None = None, **_: Any) -> torch.Tensor:
    """Captum's ``Occlusion`` with a zero baseline and a window over every channel, computed
    as kangae's scoring computes deletion: the (image, window) pairs go through the scoring
    copy (:class:`~kangae.probes._inference.Scorer`) in full chunks, and each pixel gets the
    mean logit drop of the windows that cover it (Captum's windows: ``ceil((D - size) /
    stride) + 1`` per side, the last one cut at the edge). Same numbers as Captum's (tested),
    a few times faster, and no Python work per window."""
    n, c, h, w = x.shape
    side = min(h, w)  # a 4x4 window with stride 2 at 28 px, scaled with the image
    size = min(window or max(2, round(side / 7)), h, w)
    stride = stride or max(1, round(side / 14))
    windows = _occlusion_windows(h, w, size, stride, x.device, x.dtype)  # (K, H * W)
    score, k = Scorer(model, x.detach()), len(windows)
    with torch.no_grad():
        x = x.detach()
        drop = torch.empty(n * k, device=x.device)
        for s in range(0, n * k, score.chunk):
            pair = torch.arange(s, min(s + score.chunk, n * k), device=x.device)
            img, win = pair // k, pair % k
            occluded = x[img] * (1 - windows[win]).view(-1, 1, h, w)
            drop[s : s + len(pair)] = score(occluded, t[img], logits=True)
        drop = score(x, t, logits=True)[:, None] - drop.view(n, k)
        a = (drop @ windows) / windows.sum(0)
    return a.view(n, 1, h, w).expand(n, c, h, w)


def _occlusion_windows(h: int, w: int, size: int, stride: int, device: torch.device,
                       dtype: torch.dtype) -> torch.Tensor:
    """(K, H * W) 0/1: Captum's occlusion windows, rows first, each cut at the image's edge."""
    def spans(length: int) -> torch.Tensor:  # (count, length) 1-D windows
        starts = torch.arange(math.ceil((length - size) / stride) + 1, device=device) * stride
        pos = torch.arange(length, device=device)
        return ((pos >= starts[:, None]) & (pos < starts[:, None] + size)).to(dtype)

    rows, cols = spans(h), spans(w)
    return (rows[:, None, :, None] * cols[None, :, None, :]).reshape(-1, h * w)


@register_explainer("deeplift",
                    description="DeepLIFT rescale rule from a black image (Shrikumar et al. 2017)")
def _deeplift(model: nn.Module, x: torch.Tensor, t: torch.Tensor, ctx: Context, **_: Any) -> torch.Tensor:
    import captum.attr as ca

    with warnings.catch_warnings():  # Captum announces the hooks it adds, and removes them
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
        return ca.DeepLift(model).attribute(x, baselines=torch.zeros_like(x), target=t)


@register_explainer("gradshap", aliases=("gradient-shap",), defaults={"n_samples": 16, "stdevs": 0.1},
                    description="GradientSHAP: expected gradients between a black image and the input, "
                                "16 samples, input noise sigma 0.1 (Lundberg & Lee 2017)")
def _gradshap(model: nn.Module, x: torch.Tensor, t: torch.Tensor, ctx: Context, *, n_samples: int,
              stdevs: float, **_: Any) -> torch.Tensor:
    import captum.attr as ca

    with seeded(ctx.seed, x.device):
        return ca.GradientShap(model).attribute(x, baselines=torch.zeros_like(x[:1]), target=t,
                                                n_samples=n_samples, stdevs=stdevs)


def lrp_rules(model: nn.Module, gamma: float = 0.25, epsilon: float = 1e-6) -> nn.Module:
    """A copy of ``model`` with the LRP rules set on its leaf modules (Montavon et al. 2019's
    composite, as far as Captum's rules go): the gamma rule on convolutions, the epsilon rule
    on linear layers, pooling and reshaping, the identity rule on batch norm and kangae's input
    ``Normalize`` (whose affine map would otherwise divide by inputs near the mean); ReLU and
    dropout pass relevance on. The caller's model never carries a rule."""
    from captum.attr._utils.lrp_rules import EpsilonRule, GammaRule, IdentityRule

    from ..models.zoo import Normalize

    clone = copy.deepcopy(model)
    for m in clone.modules():
        if any(True for _ in m.children()) or isinstance(m, (nn.ReLU, nn.Dropout, nn.Tanh)):
            continue
        if isinstance(m, nn.Conv2d):
            m.rule = GammaRule(gamma=gamma)
        elif isinstance(m, (nn.BatchNorm2d, Normalize)):
            m.rule = IdentityRule()
        else:
            m.rule = EpsilonRule(epsilon=epsilon)
    return clone


@register_explainer("lrp", defaults={"gamma": 0.25, "epsilon": 1e-6},
                    description="layer-wise relevance propagation: gamma rule on convs, epsilon rule on "
                                "linear layers (Bach et al. 2015; Montavon et al. 2019)")
def _lrp(model: nn.Module, x: torch.Tensor, t: torch.Tensor, ctx: Context, *, gamma: float, epsilon: float,
         **_: Any) -> torch.Tensor:
    import captum.attr as ca

    return ca.LRP(lrp_rules(model, gamma, epsilon)).attribute(x, target=t)


@register_explainer("guided-backprop", aliases=("guidedbackprop",),
                    description="guided backpropagation: only positive gradients pass a ReLU "
                                "(Springenberg et al. 2015)")
def _guided_backprop(model: nn.Module, x: torch.Tensor, t: torch.Tensor, ctx: Context, **_: Any
                     ) -> torch.Tensor:
    import captum.attr as ca

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks")
        return ca.GuidedBackprop(model).attribute(x, target=t)


@register_explainer("deconvolution", aliases=("deconvnet",),
                    description="deconvnet: the ReLU applied to the gradient on the way back "
                                "(Zeiler & Fergus 2014)")
def _deconvolution(model: nn.Module, x: torch.Tensor, t: torch.Tensor, ctx: Context, **_: Any
                   ) -> torch.Tensor:
    import captum.attr as ca

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks")
        return ca.Deconvolution(model).attribute(x, target=t)


@register_explainer("guided-gradcam", aliases=("guided-grad-cam",), needs_layer=True,
                    description="guided Grad-CAM: guided backprop times the upsampled Grad-CAM "
                                "(Selvaraju et al. 2017)")
def _guided_gradcam(model: nn.Module, x: torch.Tensor, t: torch.Tensor, ctx: Context, **_: Any
                    ) -> torch.Tensor:
    import captum.attr as ca

    name = ctx.layer or default_cam_layer(model, tuple(x.shape[1:]))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks")
        return ca.GuidedGradCam(model, get_layer(model, name)).attribute(x, target=t,
                                                                        interpolate_mode="bilinear")


def _surrogate(kind: str, model: nn.Module, x: torch.Tensor, t: torch.Tensor, ctx: Context,
               n_samples: int, segments: int, compactness: float) -> torch.Tensor:
    """KernelSHAP or LIME on superpixels: each image's ``n_samples`` perturbations (superpixels
    set to black) in one forward pass, a weighted linear model fitted per image (Captum)."""
    import captum.attr as ca

    features = superpixels(x, segments, compactness).to(x.device)
    method = ca.KernelShap(model) if kind == "kernelshap" else ca.Lime(model)
    with seeded(ctx.seed, x.device), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are providing multiple inputs")
        return method.attribute(x, baselines=0.0, target=t, feature_mask=features, n_samples=n_samples,
                                perturbations_per_eval=min(n_samples, max(1, ctx.chunk)))


SURROGATE_DEFAULTS = {"n_samples": 200, "segments": 50, "compactness": 0.1}


@register_explainer("kernelshap", aliases=("kernel-shap",), gradient=False, defaults=SURROGATE_DEFAULTS,
                    description="KernelSHAP on ~50 SLIC superpixels (or a 4-px grid), 200 samples "
                                "(Lundberg & Lee 2017)")
def _kernelshap(model: nn.Module, x: torch.Tensor, t: torch.Tensor, ctx: Context, *, n_samples: int,
                segments: int, compactness: float, **_: Any) -> torch.Tensor:
    return _surrogate("kernelshap", model, x, t, ctx, n_samples, segments, compactness)


@register_explainer("lime", gradient=False, defaults=SURROGATE_DEFAULTS,
                    description="LIME on ~50 SLIC superpixels (or a 4-px grid), 200 samples, lasso "
                                "(Ribeiro et al. 2016)")
def _lime(model: nn.Module, x: torch.Tensor, t: torch.Tensor, ctx: Context, *, n_samples: int,
          segments: int, compactness: float, **_: Any) -> torch.Tensor:
    return _surrogate("lime", model, x, t, ctx, n_samples, segments, compactness)


MASK_OPTIONS = ("steps", "game", "perturbation")
register_explainer("mask", kind="explanation", options=MASK_OPTIONS,
                   description="meaningful perturbation, deletion game (Fong & Vedaldi 2017)")(
    meaningful_perturbation)
register_explainer("extremal", kind="explanation", options=(*MASK_OPTIONS, "areas"),
                   description="extremal perturbation, areas 5/10/20% (Fong, Patrick & Vedaldi 2019)")(
    extremal_perturbation)
register_explainer("rise", kind="explanation", gradient=False,
                   options=("n_masks", "cells", "keep", "batch_size"),
                   description="RISE: score-weighted mean of random shifted low-res masks "
                               "(Petsiuk, Das & Saenko 2018)")(rise)


@register_explainer("random", gradient=False, baseline=True,
                    description="uniform noise: the baseline every faithfulness score is compared with")
def _random(model: nn.Module, x: torch.Tensor, t: torch.Tensor, ctx: Context, **_: Any) -> torch.Tensor:
    g = torch.Generator().manual_seed(ctx.seed)
    return torch.rand(x.shape, generator=g).to(x.device)


@renamed(targets="target", labels="target")
def explain(model: nn.Module, images: torch.Tensor,
            target: int | Sequence[int] | torch.Tensor | str | None = "auto",
            method: str = "saliency", *, layer: str | None = None, batch_size: int | None = None,
            seed: int = 0, **options: Any) -> Explanation:
    """Explain ``model``'s decision for ``target`` (default: the predicted class) on a batch.

    ``images`` are (N, C, H, W) floats in [0, 1] (or uint8). ``method`` is any name in
    :func:`~kangae.probes.registry.explainers`. ``layer`` picks the Grad-CAM layer by dotted
    name. Extra ``options`` go to the method (e.g. ``areas`` for extremal, ``steps`` for the
    masks, ``n_steps`` for ig).
    """
    spec = get_explainer(method)
    method = spec.name
    if spec.kind == "explanation" and batch_size is not None and "batch_size" in spec.options:
        options = {**options, "batch_size": batch_size}
    settings = spec.settings(options)  # an option the method does not take fails here, first
    if spec.kind == "explanation":
        e = spec.fn(model, images, None if target == "auto" else target, seed=seed, **settings)
        return _with_inputs(flag_degenerate(e), images)
    device = module_device(model)
    x = images.to(device)
    x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    if x.ndim == 3:
        x = x.unsqueeze(0)
    batch_size = chunk_size(batch_size, device, tuple(x.shape[1:]))
    layer_note = {}
    if layer is not None:
        get_layer(model, layer)  # a clear error for an unknown name, before any work
        layer_note = {"layer_chosen": "given"} if spec.needs_layer else {}
    elif spec.needs_layer:
        layer = default_cam_layer(model, tuple(x.shape[1:]))
        layer_note = {"layer_chosen": "default: the module around the last spatial Conv2d"}
    tt = None  # explicit targets, expanded to one per image once
    if target is not None and not isinstance(target, str):
        tt = torch.as_tensor(target, device=device).long().flatten()
        if tt.numel() == 1:
            tt = tt.expand(len(x))
        if tt.numel() != len(x):
            raise KangaeError(f"{tt.numel()} targets for {len(x)} images")

    def one(span: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        chunk = x[span]
        with torch.no_grad():
            p = F.softmax(model(chunk).float(), dim=1)
        t = resolve_targets(p, target if tt is None else tt[span])
        ctx = Context(layer, seed + span.start, *_chunk_options(chunk))
        a = spec.fn(model, chunk.clone().requires_grad_(True), t, ctx, **settings)
        return a.detach().float().sum(1, keepdim=True).cpu(), t.cpu(), p.gather(1, t[:, None])[:, 0].cpu()

    with frozen(model):
        if spec.pieces:  # on a busy machine, side by side on one thread each (utils.threads)
            done = map_pieces(one, pieces(len(x), batch_size, device, smallest=spec.pieces))
        else:
            done = [one(slice(i, min(i + batch_size, len(x)))) for i in range(0, len(x), batch_size)]
    parts, targets, probs = zip(*done)
    return _with_inputs(flag_degenerate(Explanation(
        method=method, attribution=torch.cat(parts), target=torch.cat(targets), prob=torch.cat(probs),
        metrics={"method": method, "layer": layer, **layer_note, **options})), x)


def _with_inputs(e: Explanation, images: torch.Tensor) -> Explanation:
    """``e`` with the images it explains, as CPU floats in [0, 1] (what ``save`` draws on)."""
    x = images.detach().cpu()
    x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    e.inputs = x.unsqueeze(0) if x.ndim == 3 else x
    return e


METHODS = explainer_names()
ALIASES = aliases()
