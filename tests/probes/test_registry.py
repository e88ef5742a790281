import pytest
import torch

from kangae.errors import UnknownNameError
from kangae.probes import registry
from kangae.probes.attribution import METHODS, explain
from kangae.probes.registry import explainer_names, explainers, get_explainer, register_explainer

from .explain_models import region_images, region_model


@pytest.fixture
def scratch_registry():
    """Registrations made in a test are removed after it."""
    saved, saved_aliases = dict(registry._REGISTRY), dict(registry._ALIASES)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
    registry._ALIASES.clear()
    registry._ALIASES.update(saved_aliases)


def test_a_new_method_registers_in_one_place_and_explain_uses_it(scratch_registry):
    calls = []

    @register_explainer("double-input", gradient=False, defaults={"factor": 2.0}, aliases=("dbl",),
                        description="the input times a factor")
    def _double(model, x, t, ctx, *, factor, **_):
        calls.append((ctx.seed, ctx.chunk, factor))
        return x * factor

    assert "double-input" in explainer_names() and explainer_names()[-1] == "random"  # baselines last
    spec = get_explainer("dbl")
    assert spec.name == "double-input" and not spec.gradient and spec.description
    model, x = region_model(), region_images(3)
    e = explain(model, x, method="dbl", seed=5)
    assert e.method == "double-input" and torch.equal(e.attribution, 2 * x)
    assert calls == [(5, 128, 2.0)]
    e = explain(model, x, method="double-input", factor=3.0, batch_size=2)
    assert torch.equal(e.attribution, 3 * x) and [c[0] for c in calls[1:]] == [0, 2]  # seed + offset
    with pytest.raises(ValueError, match="already registered"):
        register_explainer("double-input")(_double)


def test_the_four_readers_list_the_registry():
    from kangae.report.tour import tour_shows
    from kangae.serve.app import ExplainIn

    names = explainer_names()
    assert METHODS == names and names[:7] == ("saliency", "inputxgrad", "ig", "smoothgrad", "gradcam",
                                              "occlusion", "deeplift")
    text = ExplainIn.model_fields["method"].description
    assert all(n in text for n in names)
    mlp = region_model()
    shown = [s.name for s in explainers().values() if tour_shows(s, mlp)]
    assert "random" not in shown and "gradcam" not in shown and "saliency" in shown
    with pytest.raises(UnknownNameError, match="Did you mean 'gradcam'"):
        get_explainer("gradcm")
    assert get_explainer("grad-cam").needs_layer and get_explainer("mask").kind == "explanation"
