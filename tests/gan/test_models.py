import pytest
import torch

from kangae.errors import UnknownNameError
from kangae.gan import GAN, Discriminator, GANConfig, Generator


@pytest.mark.parametrize("arch", ["seed", "small"])
def test_generator_shape_and_range(arch: str) -> None:
    torch.manual_seed(0)
    g = Generator(arch=arch)
    out = g(torch.randn(8, 100) * 10)  # large latents: the sigmoid still bounds the output
    assert out.shape == (8, 1, 28, 28)
    assert out.min() >= 0 and out.max() <= 1
    assert out.std() > 0  # not a constant image


def test_seed_architecture_layers() -> None:
    g = Generator(arch="seed")
    h = g.fc(torch.randn(4, 100))
    assert g.fc[0].out_features == 1024 and h.shape == (4, 256 * 5 * 5)
    sizes = []
    x = h.view(-1, 256, 5, 5)
    for layer in g.upsample:
        x = layer(x)
        sizes.append(tuple(x.shape[1:]))
    assert sizes == [(128, 7, 7), (64, 14, 14), (1, 28, 28)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in g.fc) == 2  # the seed's lesson
    d = Discriminator(arch="seed")
    assert d(torch.rand(4, 1, 28, 28)).shape == (4,)


def test_conditional_reads_the_label() -> None:
    torch.manual_seed(0)
    gan = GAN(GANConfig(arch="small", conditional=True)).eval()
    z = torch.randn(2, 100).repeat(2, 1)
    labels = torch.tensor([3, 3, 7, 7])
    out = gan(z, labels)
    assert not torch.allclose(out[0], out[2])  # same latent, other class: other image
    assert gan.discriminator(out, labels).shape == (4,)
    with pytest.raises(ValueError, match="labels"):
        gan(z)


def test_unknown_arch_is_named() -> None:
    with pytest.raises(UnknownNameError, match="smal"):
        Generator(arch="smal")


def test_untrained_samples_differ_across_latents() -> None:
    """The regression behind issue 8: with N(0, 0.02) weights every untrained sample was the
    same flat grey and the generator never learned; the seed's default initialization is not."""
    spread = {}
    for init in ("pytorch", "dcgan"):
        torch.manual_seed(0)
        gan = GAN(GANConfig(arch="small"), init=init)
        gan.start_at_mean(0.13)
        spread[init] = gan(torch.randn(64, 100)).std(0).mean().item()
    assert spread["pytorch"] > 0.04 > 0.02 > spread["dcgan"], spread
    with pytest.raises(UnknownNameError, match="pytorh"):
        GAN(GANConfig(arch="tiny"), init="pytorh")
