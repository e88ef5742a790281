"""The DCGAN of post 001 (Radford et al. 2016, "Unsupervised Representation Learning with
Deep Convolutional GANs"), with an optional class-conditional variant.

Generator (``arch="seed"``, as in the post): z (100) -> Linear 1024 + BN + ReLU ->
Linear 256*5*5 + BN + ReLU -> ConvT 3x3 (5->7) + BN + ReLU -> ConvT 4x4 s2 (7->14) + BN
+ ReLU -> ConvT 4x4 s2 (14->28) -> sigmoid. The seed notes that without the BatchNorm in
the linear part the generator never caught up with the discriminator.

Discriminator: the mirror image, built with the post's ``make_layer``: Conv 4x4 s2 (28->14)
-> Conv 4x4 s2 (14->7) + BN -> Conv 3x3 (7->5) + BN -> Linear 1024 + BN -> Linear 1 (a
logit), with DCGAN's leaky ReLU (slope 0.2) where the post's helper has a ReLU (the paper's
choice for the discriminator).

Weights start from PyTorch's default initialization, as in the post (``init="pytorch"``).
Radford et al.'s N(0, 0.02) (``init="dcgan"``) is available but does not train this network
on a CPU budget: with a sigmoid output the generator's last layer starts ~7x smaller than
PyTorch's default, every sample is the same flat grey (per-pixel spread 0.009 across a batch),
and the discriminator's batch norm, computed on an all-fake batch, cannot tell that apart from
noise. Measured on full MNIST, ``arch="small"``, 3 epochs: Fréchet distance 2786 -> 185 with
the default initialization, no progress in 2 epochs with N(0, 0.02).

Conditional (``conditional=True``, Mirza & Osindero 2014): the generator reads z concatenated
with the one-hot class; the discriminator adds a projection term ``<embed(y), h>`` on its
penultimate features (Miyato & Koyama 2018, "cGANs with Projection Discriminator").

``arch="small"`` keeps the same layers at a quarter of the widths, ``"tiny"`` at an eighth,
for quick tours and tests.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnknownNameError


@dataclass(frozen=True)
class Arch:
    hidden: int  # width of the linear part
    channels: tuple[int, int, int]  # 5x5, 7x7 and 14x14 feature maps (generator order)


ARCHS: dict[str, Arch] = {
    "seed": Arch(hidden=1024, channels=(256, 128, 64)),
    "small": Arch(hidden=256, channels=(64, 32, 16)),
    "tiny": Arch(hidden=128, channels=(32, 16, 8)),
}


def get_arch(name: str) -> Arch:
    try:
        return ARCHS[name]
    except KeyError:
        raise UnknownNameError("GAN architecture", name, ARCHS) from None


def make_layer(in_channels: int, out_channels: int, kernel: int = 2, stride: int = 2, padding: int = 1,
               use_batchnorm: bool = True, deconv: bool = False, leak: float = 0.0) -> nn.Sequential:
    """The post's helper: (transposed) convolution, optional BatchNorm, ReLU (leaky if ``leak``)."""
    conv_cls = nn.ConvTranspose2d if deconv else nn.Conv2d
    layers: list[nn.Module] = [conv_cls(in_channels, out_channels, kernel_size=kernel, stride=stride,
                                        padding=padding)]
    if use_batchnorm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(leak, True) if leak else nn.ReLU(True))
    return nn.Sequential(*layers)


def dcgan_init(module: nn.Module) -> None:
    """Weights from N(0, 0.02), batch-norm scales from N(1, 0.02), biases zero (Radford et al.)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


LEAK = 0.2
INITS = ("pytorch", "dcgan")


class Generator(nn.Module):
    """Latent vectors (and, if conditional, class labels) to images in [0, 1] of shape (1, 28, 28)."""

    def __init__(self, z_dim: int = 100, arch: str = "seed", num_classes: int = 10,
                 conditional: bool = False, out_channels: int = 1):
        super().__init__()
        a = get_arch(arch)
        c5, c7, c14 = a.channels
        self.z_dim, self.num_classes, self.conditional = z_dim, num_classes, conditional
        self.c5 = c5
        d_in = z_dim + (num_classes if conditional else 0)
        self.fc = nn.Sequential(
            nn.Linear(d_in, a.hidden), nn.BatchNorm1d(a.hidden), nn.ReLU(True),
            nn.Linear(a.hidden, c5 * 25), nn.BatchNorm1d(c5 * 25), nn.ReLU(True),
        )
        self.upsample = nn.Sequential(
            make_layer(c5, c7, kernel=3, stride=1, padding=0, deconv=True),  # 5 -> 7
            make_layer(c7, c14, kernel=4, stride=2, deconv=True),  # 7 -> 14
            nn.ConvTranspose2d(c14, out_channels, kernel_size=4, stride=2, padding=1),  # 14 -> 28
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            if labels is None:
                raise ValueError("a conditional generator needs class labels")
            z = torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], dim=1)
        h = self.fc(z).view(-1, self.c5, 5, 5)
        return torch.sigmoid(self.upsample(h))


class Discriminator(nn.Module):
    """Images (and labels) to one real-vs-fake logit each: the generator's mirror image."""

    def __init__(self, arch: str = "seed", num_classes: int = 10, conditional: bool = False,
                 in_channels: int = 1):
        super().__init__()
        a = get_arch(arch)
        c5, c7, c14 = a.channels
        self.conditional = conditional
        self.features = nn.Sequential(
            make_layer(in_channels, c14, kernel=4, stride=2, use_batchnorm=False, leak=LEAK),  # 28 -> 14
            make_layer(c14, c7, kernel=4, stride=2, leak=LEAK),  # 14 -> 7
            make_layer(c7, c5, kernel=3, stride=1, padding=0, leak=LEAK),  # 7 -> 5
            nn.Flatten(),
            nn.Linear(c5 * 25, a.hidden), nn.BatchNorm1d(a.hidden), nn.LeakyReLU(LEAK, True),
        )
        self.out = nn.Linear(a.hidden, 1)
        self.embed = nn.Embedding(num_classes, a.hidden) if conditional else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        logit = self.out(h).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("a conditional discriminator needs class labels")
            logit = logit + (self.embed(labels) * h).sum(1)
        return logit


@dataclass(frozen=True)
class GANConfig:
    """What a checkpoint needs to rebuild a :class:`GAN` (stored as ``model_args``)."""

    arch: str = "seed"
    z_dim: int = 100
    num_classes: int = 10
    conditional: bool = False
    channels: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


class GAN(nn.Module):
    """Generator and discriminator in one module, so one checkpoint holds both."""

    def __init__(self, config: GANConfig, init: str = "pytorch"):
        super().__init__()
        if init not in INITS:
            raise UnknownNameError("GAN initialization", init, INITS)
        self.config = config
        self.generator = Generator(config.z_dim, config.arch, config.num_classes, config.conditional,
                                   config.channels)
        self.discriminator = Discriminator(config.arch, config.num_classes, config.conditional,
                                           config.channels)
        if init == "dcgan":
            dcgan_init(self)

    def start_at_mean(self, mean: float) -> None:
        """Set the generator's last bias so that its untrained images have the data's mean
        brightness: the sigmoid starts at 0.5 (grey) otherwise, far from MNIST's 0.13."""
        mean = min(max(mean, 1e-3), 1 - 1e-3)
        nn.init.constant_(self.generator.upsample[-1].bias, math.log(mean / (1 - mean)))

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, labels)
