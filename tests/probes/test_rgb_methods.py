"""Every registered explanation method on colour pictures: 3x64x64 and 3x224x224."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kangae.probes.attribution import default_cam_layer, explain
from kangae.probes.explanation import degenerate
from kangae.probes.masks import extremal_defaults, mask_defaults
from kangae.probes.registry import explainers
from kangae.probes.superpixels import superpixels

from .rgb_models import Wrapped, small_resnet, vgg_like

# the costly methods run few steps or samples here; their defaults are checked apart
CHEAP = {"mask": {"steps": 4}, "extremal": {"steps": 4, "areas": (0.1,)}, "rise": {"n_masks": 64},
         "kernelshap": {"n_samples": 24}, "lime": {"n_samples": 24}, "ig": {"n_steps": 4},
         "smoothgrad": {"nt_samples": 2}, "gradshap": {"n_samples": 2}}


def _pictures(n: int, side: int, seed: int = 0) -> torch.Tensor:
    """Smooth colour pictures with a bright square: not constant, so every map can rank."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, side // 8, side // 8, generator=g)
    x = nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    x[:, :, side // 4: side // 2, side // 4: side // 2] = torch.tensor([1.0, 0.2, 0.1]).view(3, 1, 1)
    return x


@pytest.mark.parametrize("method", list(explainers()))
def test_every_method_explains_a_64px_colour_model(method):
    model, x = small_resnet(), _pictures(2, 64)
    e = explain(model, x, method=method, **CHEAP.get(method, {}))
    assert e.attribution.shape == (2, 1, 64, 64)
    assert torch.isfinite(e.attribution).all()
    assert not degenerate(e.attribution).any(), method
    assert e.target.tolist() == model(x).argmax(1).tolist()


@pytest.fixture(scope="module")
def vgg():
    return vgg_like()


@pytest.mark.parametrize("method", list(explainers()))
def test_every_method_explains_one_224px_picture_of_a_vgg(vgg, method):
    x = _pictures(1, 224)
    e = explain(vgg, x, method=method, **CHEAP.get(method, {}))
    assert e.attribution.shape == (1, 1, 224, 224)
    assert torch.isfinite(e.attribution).all()
    assert not degenerate(e.attribution).any(), method
    if method in ("gradcam", "guided-gradcam"):
        assert e.metrics["layer"] == "0" and e.metrics["layer_chosen"].startswith("default")


def test_masks_take_the_papers_settings_at_224_and_keep_kangaes_below():
    digits = {"perturbation": "constant", "blur_sigma": 2.0, "upsample": 2, "l1": 2.0, "tv": 1.0,
              "lr": 0.05, "jitter": 1}
    for side in (28, 56, 64):
        got = mask_defaults((side, side))
        assert {k: got[k] for k in digits} == digits
        assert extremal_defaults((side, side))["stride"] == 1
        assert extremal_defaults((side, side))["sigma"] == 0.5
    paper = mask_defaults((224, 224))
    assert paper["upsample"] == 8 and paper["perturbation"] == "blur" and paper["blur_sigma"] == 10
    assert paper["jitter"] == 4 and paper["lr"] == 0.1
    assert paper["l1"] == pytest.approx(1e-4 * 28 * 28) and paper["tv"] == pytest.approx(1e-2 * 27 * 28)
    ray = extremal_defaults((224, 224))
    assert (ray["stride"], ray["sigma"], ray["steps"], ray["area_weight"]) == (7, 10.5, 800, 300.0)
    assert ray["perturbation"] == "blur" and ray["blur_sigma"] == 20


def test_a_224px_mask_is_28x28_upsampled_and_says_so(vgg):
    e = explain(vgg, _pictures(1, 224), method="mask", steps=3)
    assert e.metrics["upsample"] == 8 and e.metrics["perturbation"] == "blur"
    assert e.metrics["defaults"].startswith("Fong & Vedaldi")
    # the mask is U L U^T for a 28x28 L, where U is bilinear upsampling along one axis:
    # projecting onto that span (least squares) gives the mask back
    up = nn.functional.interpolate(torch.eye(28)[:, None, :], size=224, mode="linear",
                                   align_corners=False)[:, 0, :].T.double()  # (224, 28)
    m = e.mask[0, 0].double()
    low = torch.linalg.pinv(up) @ m @ torch.linalg.pinv(up).T
    assert (up @ low @ up.T - m).abs().max() < 1e-5
    assert m.std() > 0  # a constant mask would pass trivially
    given = explain(vgg, _pictures(1, 224), method="mask", steps=3, perturbation="constant")
    assert given.metrics["perturbation"] == "constant" and given.metrics["upsample"] == 8


def test_gradcam_takes_the_block_around_the_last_conv_of_any_model():
    from kangae.models.zoo import create_model

    assert default_cam_layer(small_resnet(), (3, 64, 64)) == "stage3"
    assert default_cam_layer(Wrapped(small_resnet()), (3, 64, 64)) == "net.stage3"
    assert default_cam_layer(vgg_like(), (3, 224, 224)) == "0"
    assert default_cam_layer(Wrapped(vgg_like()), (3, 224, 224)) == "net.0"
    flat = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    assert default_cam_layer(flat, (3, 16, 16)) == "2"  # the last conv itself
    # a last conv with a 1x1 output does not count: Grad-CAM would have no map
    squeeze = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Conv2d(4, 2, 1), nn.Flatten())
    assert default_cam_layer(squeeze, (3, 8, 8)) == "0"
    digits = {"fast-cnn": "block2", "cnn": "block2", "global-cnn": "block3", "vgg-small": "block3"}
    for name, layer in digits.items():  # the digit models keep the layers they had
        assert default_cam_layer(create_model(name), (1, 28, 28)) == layer


def test_colour_superpixels_follow_colour_not_brightness():
    # two halves of the same brightness (mean of the channels) but different colours
    x = torch.zeros(1, 3, 32, 32)
    x[0, 0, :, :16] = 0.6
    x[0, 1, :, 16:] = 0.6
    labels = superpixels(x, segments=4, method="slic")[0, 0]
    assert labels.shape == (32, 32)
    left, right = set(labels[:, :16].unique().tolist()), set(labels[:, 16:].unique().tolist())
    assert not left & right  # no segment spans both colours
    grey = superpixels(x.mean(1, keepdim=True), segments=4, method="slic")[0, 0]
    assert set(grey[:, :16].unique().tolist()) & set(grey[:, 16:].unique().tolist())  # one brightness
