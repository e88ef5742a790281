"""The probe API as one: every probe takes ``target=``, returns CPU tensors, leaves the
global RNG alone, works on a model without parameters, and never imports the front ends."""

from __future__ import annotations

import ast
import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import kangae.probes as p
from kangae.probes.inputs import ProbeInputError, as_classes, as_images, as_target, model_device

from .models import random_linear

PROBES_DIR = Path(p.__file__).parent


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                          nn.Linear(64, 10)).eval()
    model.input_shape = (1, 28, 28)  # a conv net takes any size: it says which one it wants
    return model


def _images(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def _calls() -> dict[str, object]:
    """One small call of every probe that takes a model, each with ``target=``."""
    cnn, lin, x = _tiny_cnn(), random_linear(), _images()
    y = torch.tensor([1, 2, 3, 4])
    calls = {
        "search_prototypes": lambda: p.search_prototypes(lin, target=[1, 2], max_sweeps=1, frames=2),
        "activation_maximization": lambda: p.activation_maximization(cnn, target=[1, 2], steps=3, frames=2),
        "activation_maximization:64px": lambda: p.activation_maximization(
            cnn, target=[1, 2], steps=3, frames=2, input_shape=(1, 64, 64)),  # standard transforms
        "filter_grid": lambda: p.filter_grid(cnn, "1", steps=3),
        "deep_dream": lambda: p.deep_dream(cnn, x, layer="1", target=2, steps=2),
        "weight_templates": lambda: p.weight_templates(cnn, x, target=y),
        "verify_prototypes": lambda: p.verify_prototypes(cnn, x, target=y, noise_samples=2, max_shift=1),
        "fgsm": lambda: p.fgsm(cnn, x, target=y, eps=0.1),
        "pgd": lambda: p.pgd(cnn, x, target=y, eps=0.1, steps=2),
        "robustness_curve": lambda: p.robustness_curve(cnn, x, target=y, eps_list=(0, 0.1), steps=2),
        "saliency": lambda: p.saliency(cnn, x, target=y),
        "template_attack": lambda: p.template_attack(lin, x, target=3, alphas=(0, 0.5)),
        "fewest_pixel_edits": lambda: p.fewest_pixel_edits(lin, x[:2], target=3, max_edits=2),
        "calibration_of": lambda: p.calibration_of(cnn, x, target=y, bins=4),
        "confusion_of": lambda: p.confusion_of(cnn, x, target=y),
        "meaningful_perturbation": lambda: p.meaningful_perturbation(cnn, x, target=y, steps=3),
        "extremal_perturbation": lambda: p.extremal_perturbation(cnn, x, target=y, steps=3),
        "deletion_insertion": lambda: p.deletion_insertion(cnn, x, x.clone(), target=y, steps=4),
    }
    for method in p.EXPLAIN_METHODS:
        options = {"steps": 3} if method in ("mask", "extremal") else {}
        calls[f"explain:{method}"] = (lambda m=method, o=options: p.explain(cnn, x, target=y, method=m, **o))
    return calls


CALLS = _calls()
NUMBERS_ONLY = {"robustness_curve", "verify_prototypes"}  # their results are plain numbers


def _tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [t for f in dataclasses.fields(value) for t in _tensors(getattr(value, f.name))]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


@pytest.mark.parametrize("name", sorted(CALLS))
def test_every_probe_takes_target_returns_cpu_tensors_and_leaves_the_rng_alone(name):
    torch.manual_seed(1234)
    random.seed(5)
    np.random.seed(6)
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    result = CALLS[name]()
    assert torch.equal(torch.get_rng_state(), states[0]), f"{name} changed torch's global RNG"
    assert random.getstate() == states[1], f"{name} changed Python's global RNG"
    assert np.array_equal(np.random.get_state()[1], states[2]), f"{name} changed numpy's global RNG"
    tensors = _tensors(result)
    assert tensors or name in NUMBERS_ONLY, name
    assert all(t.device.type == "cpu" for t in tensors), name
    assert all(not t.requires_grad for t in tensors), name


def test_kangae_probes_exports_every_probe():
    for name in ["search_prototypes", "activation_maximization", "filter_grid", "deep_dream",
                 "weight_templates", "verify_prototypes",
                 "explain", "meaningful_perturbation", "extremal_perturbation", "deletion_insertion",
                 "pointing_hits", "sanity_check", "calibration", "calibration_of", "temperature_scaling",
                 "confusion", "confusion_of", "embed_epochs", "fgsm", "pgd", "robustness_curve",
                 "fewest_pixel_edits", "template_attack", "saliency"]:
        assert name in p.__all__ and callable(getattr(p, name)), name
    assert "reference_search" not in p.__all__  # a test oracle, not the public API


def test_probes_never_import_the_front_ends():
    banned = ("kangae.cli", "kangae.report", "kangae.serve")
    for path in PROBES_DIR.rglob("*.py"):
        package = "kangae." + ".".join(path.relative_to(PROBES_DIR.parent).with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    names = [".".join([*base, node.module] if node.module else base)]
                else:
                    names = [node.module or ""]
            for name in names:
                assert not name.startswith(banned), f"{path.name} imports {name}"


class _NoParams(nn.Module):
    """Logits from fixed pixel sums: a model with no parameters (nor buffers)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return torch.stack([flat[:, :392].sum(1), flat[:, 392:].sum(1)], 1)


def test_a_model_without_parameters_works():
    model = _NoParams()
    assert model_device(model) == torch.device("cpu")
    x = _images(3)
    e = p.explain(model, x, target=1, method="saliency")
    assert e.attribution.shape == (3, 1, 28, 28)
    res = p.search_prototypes(model, target=[0, 1], max_sweeps=2, frames=0, input_shape=(1, 28, 28))
    first, second = res.images.flatten(1)[:, :392], res.images.flatten(1)[:, 392:]
    assert first[0].min() == 1 and second[0].max() == 0  # class 0 fills the first half, only
    assert second[1].min() == 1 and first[1].max() == 0
    assert p.fgsm(model, x, target=torch.tensor([0, 1, 0]), eps=0.1).images.shape == x.shape


def test_targets_are_parsed_in_one_place():
    assert as_target(3, 4).tolist() == [3, 3, 3, 3]
    assert as_target([0, 1], 2, 10).tolist() == [0, 1]
    assert as_target("auto", 2, scores=torch.tensor([[0.1, 0.9], [0.8, 0.2]])).tolist() == [1, 0]
    assert as_target(torch.tensor([2.0]), 2).tolist() == [2, 2]
    assert as_classes("all", 3).tolist() == [0, 1, 2] and as_classes(7, 10).tolist() == [7]
    with pytest.raises(ProbeInputError, match="3 values of target for 2 images"):
        as_target([1, 2, 3], 2)
    with pytest.raises(ProbeInputError, match=r"must lie in 0..9"):
        as_target(10, 1, 10)
    with pytest.raises(ValueError, match="whole class indices"):
        as_target(1.5, 1)
    with pytest.raises(ProbeInputError, match="non-empty"):
        as_classes([], 10)
    with pytest.raises(ProbeInputError, match="the model takes 1x28x28"):
        as_images(torch.zeros(2, 3, 28, 28), shape=(1, 28, 28))
    with pytest.raises(ProbeInputError, match="NaN"):
        as_images(torch.full((1, 1, 2, 2), float("nan")))
    assert as_images(torch.full((1, 2, 2), 255, dtype=torch.uint8)).tolist() == [[[[1.0, 1.0], [1.0, 1.0]]]]


def test_old_keyword_names_still_work_with_a_warning():
    x, y, model = _images(2), torch.tensor([1, 2]), random_linear()
    with pytest.warns(DeprecationWarning, match=r"fgsm\(labels=...\) is now fgsm\(target=...\)"):
        old = p.fgsm(model, x, labels=y, eps=0.1)
    torch.testing.assert_close(old.images, p.fgsm(model, x, target=y, eps=0.1).images)
    with pytest.raises(TypeError, match="multiple values"):
        p.fgsm(model, x, y, 0.1, labels=y)  # positional target and the old keyword


def test_explain_takes_the_old_target_names_and_refuses_options_it_does_not_know():
    """Before, ``targets=`` and any unknown option vanished into a method's ``**rest``, and
    the predicted classes were explained instead of the ones asked for."""
    x, model = _images(2), random_linear()
    with pytest.warns(DeprecationWarning, match=r"explain\(targets=...\) is now explain\(target=...\)"):
        old = p.explain(model, x, targets=[3, 4], method="saliency")
    assert old.target.tolist() == [3, 4]
    with pytest.warns(DeprecationWarning):
        assert p.explain(model, x, labels=[5, 6], method="ig").target.tolist() == [5, 6]
    for method, option in (("saliency", "bogus"), ("ig", "steps"), ("gradcam", "n_steps")):
        with pytest.raises(TypeError, match=rf"'{method}' takes no option '{option}'"):
            p.explain(model, x, method=method, **{option: 1})
    with pytest.raises(TypeError):
        p.explain(model, x, method="mask", bogus=1)
    assert p.explain(model, x, method="ig", n_steps=4).target.shape == (2,)  # a real option


def test_a_given_template_is_used_as_given():
    lin, x = random_linear(), _images(6)
    own = p.template_attack(lin, x, 3, alphas=(0, 0.5))
    given = p.template_attack(lin, x, 3, alphas=(0, 0.5), template=p.weight_templates(lin).images)
    torch.testing.assert_close(own.template, given.template)
    with pytest.raises(ProbeInputError, match="template="):
        p.template_attack(lin, x, torch.zeros(1, 28, 28))
