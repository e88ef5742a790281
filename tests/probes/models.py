"""Models with known answers for probe tests."""

import torch

from kangae.models import create_model


def random_linear(std: float = 0.05):
    """The zoo's softmax regression with random weights (the zoo starts it at zero)."""
    model = create_model("softmax").eval()
    with torch.no_grad():
        model.logits.weight.normal_(0, std)
        model.logits.bias.normal_(0, std)
    return model
