"""The input shape a probe works at: said by the model, inferred where it can be, else asked for."""

import pytest
from torch import nn

from kangae.models import Normalize, create_model
from kangae.probes import activation_maximization, search_prototypes
from kangae.probes._model import input_shape_of
from kangae.probes.inputs import ProbeInputError


def _conv(c: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 5)).eval()


def test_a_declared_shape_is_read_also_through_simple_wrappers():
    model = _conv()
    model.input_shape = (3, 64, 48)
    assert input_shape_of(model) == (3, 64, 48)
    assert input_shape_of(nn.Sequential(Normalize((0.5,) * 3, (0.2,) * 3), model)) == (3, 64, 48)

    class Scaled(nn.Module):  # one child
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner(x) * 2

    class WithHead(nn.Module):  # several children, the model under a usual name
        def __init__(self):
            super().__init__()
            self.extra = nn.Linear(5, 2)
            self.model = model

        def forward(self, x):
            return self.extra(self.model(x))

    assert input_shape_of(Scaled()) == (3, 64, 48) and input_shape_of(WithHead()) == (3, 64, 48)
    assert input_shape_of(create_model("global-cnn", image_size=56)) == (1, 56, 56)
    assert input_shape_of(create_model("vgg16", widths=(4, 8, 8, 16, 16), hidden=8)) == (3, 224, 224)


def test_a_first_linear_layer_on_flat_pixels_tells_a_square_grey_or_rgb_image():
    assert input_shape_of(nn.Sequential(nn.Flatten(), nn.Linear(784, 10))) == (1, 28, 28)
    assert input_shape_of(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))) == (3, 32, 32)
    with pytest.raises(ProbeInputError, match="takes 50 values.*input_shape=\\(C, H, W\\)"):
        input_shape_of(nn.Sequential(nn.Flatten(), nn.Linear(50, 10)))


def test_a_conv_model_of_unknown_size_is_asked_for_its_shape_never_given_28x28():
    with pytest.raises(ProbeInputError, match=r"give input_shape=\(3, H, W\)"):
        input_shape_of(_conv())
    with pytest.raises(ProbeInputError, match=r"input_shape=\(3, H, W\)"):
        activation_maximization(_conv(), [0], steps=2)
    with pytest.raises(ProbeInputError, match=r"input_shape=\(3, H, W\)"):
        search_prototypes(_conv(), [0], max_sweeps=1)
    r = activation_maximization(_conv(), [0, 1], steps=2, input_shape=(3, 40, 40), frames=0)
    assert r.images.shape == (2, 3, 40, 40)
    bad = _conv()
    bad.input_shape = (3, 64)
    with pytest.raises(ProbeInputError, match=r"input_shape must be \(C, H, W\)"):
        input_shape_of(bad)
