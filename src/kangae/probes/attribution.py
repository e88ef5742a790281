"""One call for every explanation method: Captum's attributions and kangae's masks.

``explain(model, images, target, method=...)`` returns an :class:`Explanation` whatever the
method, so a report, a benchmark or the web app can swap methods freely. The gradient and
perturbation attributions come from Captum (Kokhlikyan et al. 2020) rather than being
rewritten here:

=============  ====================================================================
saliency       |d logit / d x| (Simonyan et al. 2014)
inputxgrad     x * d logit / d x (Shrikumar et al. 2016)
ig             integrated gradients from a black image, 32 steps (Sundararajan et al. 2017)
smoothgrad     saliency averaged over 16 noisy copies, sigma 15% (Smilkov et al. 2017)
gradcam        Grad-CAM on a conv layer, upsampled (Selvaraju et al. 2017)
occlusion      drop in the logit when a 4x4 patch (stride 2; scaled with the image) is blacked out
               (Zeiler & Fergus 2014)
deeplift       DeepLIFT rescale rule from a black image (Shrikumar et al. 2017)
mask           meaningful perturbation, deletion game (Fong & Vedaldi 2017)
extremal       extremal perturbation, areas 5/10/20% (Fong, Patrick & Vedaldi 2019)
random         uniform noise: the baseline every faithfulness score is compared with
=============  ====================================================================

Every hook Captum adds is removed, the model's weights are untouched, and its train/eval
mode and ``requires_grad`` flags are restored on return, even after an error.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import KangaeError, UnknownNameError
from ..models.layers import get_layer
from ..utils.device import chunk_size
from ._model import frozen, resolve_targets
from .explanation import Explanation
from .inputs import model_device
from .masks import extremal_perturbation, meaningful_perturbation

METHODS = ("saliency", "inputxgrad", "ig", "smoothgrad", "gradcam", "occlusion", "deeplift",
           "mask", "extremal", "random")
ALIASES = {"input-x-gradient": "inputxgrad", "integrated-gradients": "ig", "grad-cam": "gradcam"}


def default_cam_layer(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """The last module with a spatial (N, C, H, W) output of more than one pixel: for the
    zoo's conv nets, the last conv block (where Grad-CAM is usually taken)."""
    device = model_device(model)
    found: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(m: nn.Module, i: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-1] * out.shape[-2] > 1:
                found.append(name)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
    convs = [n for n in found if n != "normalize" and not n.startswith("normalize.")]
    if not convs:
        raise KangaeError("Grad-CAM needs a convolutional layer, and this model has none "
                          "(try saliency, ig or mask)")
    top = [n for n in convs if "." not in n]
    return (top or convs)[-1]


def _captum(method: str, model: nn.Module, x: torch.Tensor, t: torch.Tensor, layer: str | None,
            seed: int, options: dict[str, Any]) -> torch.Tensor:
    import captum.attr as ca

    baseline = torch.zeros_like(x)
    # Images per forward pass on a CPU stay near the cache-friendly chunk (see chunk_size).
    chunk = chunk_size(None, x.device, tuple(x.shape[1:]))
    per_image = max(1, chunk // max(1, len(x)))
    if method == "saliency":
        return ca.Saliency(model).attribute(x, target=t, abs=options.get("abs", True))
    if method == "inputxgrad":
        return ca.InputXGradient(model).attribute(x, target=t)
    if method == "ig":
        return ca.IntegratedGradients(model).attribute(
            x, baselines=baseline, target=t, n_steps=options.get("n_steps", 32),
            internal_batch_size=options.get("internal_batch_size", max(chunk, len(x))))
    if method == "smoothgrad":  # Captum draws its noise from the global RNG: seed a fork of it
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(seed)
            return ca.NoiseTunnel(ca.Saliency(model)).attribute(
                x, target=t, nt_type="smoothgrad", nt_samples=options.get("nt_samples", 16),
                nt_samples_batch_size=options.get("nt_samples_batch_size", per_image),
                stdevs=options.get("stdevs", 0.15))
    if method == "gradcam":
        name = layer or default_cam_layer(model, tuple(x.shape[1:]))
        cam = ca.LayerGradCam(model, get_layer(model, name)).attribute(x, target=t)
        return ca.LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")
    if method == "occlusion":
        c = x.shape[1]
        side = min(x.shape[-2:])  # a 4x4 window with stride 2 at 28 px, scaled with the image
        size = options.get("window", max(2, round(side / 7)))
        stride = options.get("stride", max(1, round(side / 14)))
        return ca.Occlusion(model).attribute(
            x, target=t, sliding_window_shapes=(c, size, size), strides=(c, stride, stride),
            baselines=0.0, perturbations_per_eval=options.get("perturbations_per_eval", per_image))
    if method == "deeplift":
        with warnings.catch_warnings():  # Captum announces the hooks it adds, and removes them
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
            return ca.DeepLift(model).attribute(x, baselines=baseline, target=t)
    if method == "random":
        g = torch.Generator().manual_seed(seed)
        return torch.rand(x.shape, generator=g).to(x.device)
    raise AssertionError(method)


def explain(model: nn.Module, images: torch.Tensor,
            target: int | Sequence[int] | torch.Tensor | str | None = "auto",
            method: str = "saliency", *, layer: str | None = None, batch_size: int | None = None,
            seed: int = 0, **options: Any) -> Explanation:
    """Explain ``model``'s decision for ``target`` (default: the predicted class) on a batch.

    ``images`` are (N, C, H, W) floats in [0, 1] (or uint8). ``layer`` picks the Grad-CAM
    layer by dotted name. Extra ``options`` go to the method (e.g. ``areas`` for extremal,
    ``steps`` for the masks, ``n_steps`` for ig).
    """
    method = ALIASES.get(method, method)
    if method not in METHODS:
        raise UnknownNameError("explanation method", method, METHODS)
    if method == "mask":
        return meaningful_perturbation(model, images, None if target == "auto" else target,
                                       seed=seed, **options)
    if method == "extremal":
        return extremal_perturbation(model, images, None if target == "auto" else target,
                                     seed=seed, **options)
    device = model_device(model)
    x = images.to(device)
    x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    if x.ndim == 3:
        x = x.unsqueeze(0)
    batch_size = chunk_size(batch_size, device, tuple(x.shape[1:]))
    if layer is not None:
        get_layer(model, layer)  # a clear error for an unknown name, before any work
    elif method == "gradcam":
        layer = default_cam_layer(model, tuple(x.shape[1:]))
    tt = None  # explicit targets, expanded to one per image once
    if target is not None and not isinstance(target, str):
        tt = torch.as_tensor(target, device=device).long().flatten()
        if tt.numel() == 1:
            tt = tt.expand(len(x))
        if tt.numel() != len(x):
            raise KangaeError(f"{tt.numel()} targets for {len(x)} images")
    parts, targets, probs = [], [], []
    with frozen(model):
        for i in range(0, len(x), batch_size):
            chunk = x[i : i + batch_size]
            with torch.no_grad():
                p = F.softmax(model(chunk).float(), dim=1)
            t = resolve_targets(p, target if tt is None else tt[i : i + batch_size])
            a = _captum(method, model, chunk.clone().requires_grad_(True), t, layer, seed + i, options)
            parts.append(a.detach().float().sum(1, keepdim=True).cpu())
            targets.append(t.cpu())
            probs.append(p.gather(1, t[:, None])[:, 0].cpu())
    return Explanation(method=method, attribution=torch.cat(parts), target=torch.cat(targets),
                       prob=torch.cat(probs), metrics={"method": method, "layer": layer, **options})
