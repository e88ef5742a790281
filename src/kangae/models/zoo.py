"""The model zoo: every model takes images in [0, 1] and normalizes them itself.

Putting normalization inside the model (a ``normalize`` module whose mean and std are
buffers saved with the weights) means every probe, attack and prototype works in pixel
space, where 0 is black, 1 is white and an epsilon of 0.3 means what papers mean.
"""

from __future__ import annotations

import difflib
import inspect
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import KangaeError, UnknownNameError


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with mean and std stored in the checkpoint."""

    def __init__(self, mean: Sequence[float] = (0.1307,), std: Sequence[float] = (0.3081,),
                 required: bool = True):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        self.required = required  # False: a state dict without them (another library's) keeps ours

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        missing = args[2]  # (local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        if not self.required:
            for key in (prefix + "mean", prefix + "std"):
                if key in missing:
                    missing.remove(key)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


@dataclass(frozen=True)
class Recipe:
    """How a zoo model is trained by default (``kangae train`` may override each field)."""

    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    schedule: str = "onecycle"
    weight_decay: float = 0.0
    max_shift: int = 0
    label_smoothing: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    summary: str
    build: Callable[..., nn.Module]
    recipe: Recipe = field(default_factory=Recipe)
    source: str = ""


def _seq(*layers: tuple[str, nn.Module]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


def softmax(num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """Softmax regression: one linear layer on the pixels (post 002).

    Weights start at zero, as in the post: the problem is convex, and pixels that are never
    inked keep a zero weight, so the weight templates show digits rather than init noise.
    """
    model = _seq(
        ("normalize", Normalize((0.1307,) * in_channels, (0.3081,) * in_channels)),
        ("flatten", nn.Flatten()),
        ("logits", nn.Linear(in_channels * image_size**2, num_classes)),
    )
    nn.init.zeros_(model.logits.weight)
    nn.init.zeros_(model.logits.bias)
    return model


def mlp(num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
        hidden: int = 784) -> nn.Module:
    """784-784-10 perceptron with one ReLU hidden layer (post 000)."""
    d = in_channels * image_size**2
    return _seq(
        ("normalize", Normalize((0.1307,) * in_channels, (0.3081,) * in_channels)),
        ("flatten", nn.Flatten()),
        ("hidden", nn.Linear(d, hidden)),
        ("relu", nn.ReLU()),
        ("logits", nn.Linear(hidden, num_classes)),
    )


class SameConv2d(nn.Conv2d):
    """A stride-1 convolution with Keras/TensorFlow 'same' padding, also for even kernels
    (the extra row and column of zeros go at the bottom and right, as in Keras)."""

    def __init__(self, cin: int, cout: int, kernel_size: int):
        super().__init__(cin, cout, kernel_size)
        total = kernel_size - 1
        self.pad = (total // 2, total - total // 2) * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(nn.functional.pad(x, self.pad))


def _seed_block(cin: int, cout: int, dropout: float) -> nn.Sequential:
    return _seq(
        ("conv1", SameConv2d(cin, cout, 2)),
        ("conv2", SameConv2d(cout, cout, 2)),
        ("relu", nn.ReLU()),
        ("pool", nn.MaxPool2d(2)),
        ("dropout", nn.Dropout(dropout)),
    )


def cnn(num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
        channels: int = 32, hidden: int = 512, dropout: float = 0.2) -> nn.Module:
    """The post 003 network: two blocks of two 2x2 convs (Keras 'same' padding), ReLU,
    max-pool and dropout 0.2; then Dense-512 named ``hidden``; then the class logits."""
    side = image_size // 4
    return _seq(
        ("normalize", Normalize((0.1307,) * in_channels, (0.3081,) * in_channels)),
        ("block1", _seed_block(in_channels, channels, dropout)),
        ("block2", _seed_block(channels, channels, dropout)),
        ("flatten", nn.Flatten()),
        ("hidden", nn.Linear(channels * side * side, hidden)),
        ("relu", nn.ReLU()),
        ("logits", nn.Linear(hidden, num_classes)),
    )


def _conv_bn(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return _seq(
        ("conv", nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)),
        ("bn", nn.BatchNorm2d(cout)),
        ("relu", nn.ReLU()),
    )


def fast_cnn(num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
             width: int = 16, hidden: int = 128) -> nn.Module:
    """A small conv net with batch norm, tuned for time to 99% MNIST accuracy on a CPU."""
    side = image_size // 4
    return _seq(
        ("normalize", Normalize((0.1307,) * in_channels, (0.3081,) * in_channels)),
        ("block1", _seq(("conv1", _conv_bn(in_channels, width, 5)), ("pool", nn.MaxPool2d(2)))),
        ("block2", _seq(("conv1", _conv_bn(width, 2 * width)), ("pool", nn.MaxPool2d(2)))),
        ("flatten", nn.Flatten()),
        ("hidden", nn.Linear(2 * width * side * side, hidden)),
        ("relu", nn.ReLU()),
        ("logits", nn.Linear(hidden, num_classes)),
    )


def global_cnn(num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
               width: int = 16) -> nn.Module:
    """Three conv blocks, then a global max over positions: it reads a digit wherever it
    lies on a canvas of any size (for cluttered MNIST and the pointing game)."""
    return _seq(
        ("normalize", Normalize((0.1307,) * in_channels, (0.3081,) * in_channels)),
        ("block1", _seq(("conv1", _conv_bn(in_channels, width, 5)), ("pool", nn.MaxPool2d(2)))),
        ("block2", _seq(("conv1", _conv_bn(width, 2 * width)), ("pool", nn.MaxPool2d(2)))),
        ("block3", _seq(("conv1", _conv_bn(2 * width, 4 * width)))),
        ("pool", nn.AdaptiveMaxPool2d(1)),
        ("hidden", nn.Flatten()),  # the pooled features: the penultimate layer
        ("logits", nn.Linear(4 * width, num_classes)),
    )


def _vgg_block(cin: int, cout: int, convs: int) -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = []
    for i in range(convs):
        layers += [(f"conv{i + 1}", nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1)),
                   (f"relu{i + 1}", nn.ReLU())]
    layers.append(("pool", nn.MaxPool2d(2)))
    return _seq(*layers)


def vgg_small(num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
              widths: Sequence[int] = (32, 64, 128), hidden: int = 256,
              dropout: float = 0.3) -> nn.Module:
    """VGG-style stacks of 3x3 convs, for filter visualizations (post 004)."""
    blocks = [(f"block{i + 1}", _vgg_block(cin, cout, 2))
              for i, (cin, cout) in enumerate(zip((in_channels, *widths[:-1]), widths))]
    side = image_size // 2 ** len(widths)
    return _seq(
        ("normalize", Normalize((0.1307,) * in_channels, (0.3081,) * in_channels)),
        *blocks,
        ("flatten", nn.Flatten()),
        ("hidden", nn.Linear(widths[-1] * side * side, hidden)),
        ("relu", nn.ReLU()),
        ("dropout", nn.Dropout(dropout)),
        ("logits", nn.Linear(hidden, num_classes)),
    )


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG16_CONVS = (2, 2, 3, 3, 3)  # 3x3 convs per block (configuration D)
# post 004's Keras layer names (each includes its ReLU) -> this layout's ReLU after that conv
VGG16_KERAS_NAMES = {
    f"block{b + 1}_conv{k + 1}": f"features.{sum(2 * n + 1 for n in VGG16_CONVS[:b]) + 2 * k + 1}"
    for b, n in enumerate(VGG16_CONVS) for k in range(n)}


def vgg16(num_classes: int = 1000, in_channels: int = 3, image_size: int = 224,
          widths: Sequence[int] = (64, 128, 256, 512, 512), hidden: int = 4096, dropout: float = 0.5,
          mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> nn.Module:
    """VGG16 (Simonyan & Zisserman 2014, configuration D): 13 3x3 convs with ReLU in 5 blocks
    (64-128-256-512-512), a 2x2 max-pool after each block, an adaptive average pool to 7x7,
    then ``hidden``-``hidden``-``num_classes`` fully connected layers with dropout; the last
    one gives the logits (no softmax, as post 004 asks).

    Module names follow torchvision's ``features.N``, ``avgpool`` and ``classifier.N``, so its
    ImageNet state dicts load unchanged (``VGG16_KERAS_NAMES`` maps post 004's Keras layer
    names to them). A ``normalize`` module in front (ImageNet's mean and std for 3 channels;
    a state dict without them keeps these) lets it take pixels in [0, 1]. Random initialization as
    torchvision's; the ReLUs are not in-place, so a hook on a conv sees its own output.
    """
    if image_size < 2 ** len(widths):
        raise ValueError(f"vgg16 needs images of at least {2 ** len(widths)} px (it halves them "
                         f"{len(widths)} times), not {image_size}")
    if len(widths) != len(VGG16_CONVS):
        raise ValueError(f"vgg16 has {len(VGG16_CONVS)} blocks: give {len(VGG16_CONVS)} widths")
    grey = ((0.1307,) * in_channels, (0.3081,) * in_channels)
    mean = tuple(mean) if mean is not None else IMAGENET_MEAN if in_channels == 3 else grey[0]
    std = tuple(std) if std is not None else IMAGENET_STD if in_channels == 3 else grey[1]
    features: list[nn.Module] = []
    cin = in_channels
    for width, convs in zip(widths, VGG16_CONVS):
        for _ in range(convs):
            features += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU()]
            cin = width
        features.append(nn.MaxPool2d(2))
    model = _seq(
        ("normalize", Normalize(mean, std, required=False)),
        ("features", nn.Sequential(*features)),
        ("avgpool", nn.AdaptiveAvgPool2d(7)),
        ("flatten", nn.Flatten()),
        ("classifier", nn.Sequential(
            nn.Linear(cin * 49, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes))),
    )
    for m in model.modules():  # torchvision's VGG initialization
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    model.input_shape = (in_channels, image_size, image_size)
    return model


class BasicBlock(nn.Module):
    """He et al. (2016)'s basic block: two 3x3 conv + batch-norm layers and an identity
    shortcut, ``relu2(bn2(conv2(relu1(bn1(conv1(x))))) + x)``. Where the block halves the
    size and widens, the shortcut is the CIFAR variant's option A: the input subsampled by 2
    with zero channels appended (no parameters). Each ReLU is its own module, used once
    (DeepLIFT and guided backprop hook them)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        short = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.extra:
            short = F.pad(short, (0, 0, 0, 0, 0, self.extra))
        return self.relu2(out + short)


def _stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
    return _seq(*[(f"block{i + 1}", BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1))
                  for i in range(blocks)])


def resnet(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, blocks: int = 1,
           width: int = 16, stem_stride: int | None = None) -> nn.Module:
    """The CIFAR ResNet of He et al. (2016, section 4.2): a 3x3 conv stem, three stages of
    ``blocks`` basic blocks with ``width``, 2x and 4x channels (16-32-64), the last two
    halving the size, a global average pool and the class logits: ResNet-(6n+2), so
    ``blocks=1`` is ResNet-8 and ``blocks=3`` ResNet-20. The stem strides by 2 above 32 px
    (``stem_stride``), so at 64 px the stages see 32, 16 and 8 px as they do on CIFAR. The
    recipe shifts the training images by up to 4 px, as the paper pads by 4 and crops."""
    if blocks < 1 or width < 1:
        raise ValueError(f"blocks and width must be at least 1, got {blocks} and {width}")
    stride = stem_stride or (1 if image_size <= 32 else 2)
    model = _seq(
        ("normalize", Normalize((0.5,) * in_channels, (0.25,) * in_channels)),
        ("stem", _seq(("conv", nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)),
                      ("bn", nn.BatchNorm2d(width)), ("relu", nn.ReLU()))),
        ("stage1", _stage(width, width, blocks, 1)),
        ("stage2", _stage(width, 2 * width, blocks, 2)),
        ("stage3", _stage(2 * width, 4 * width, blocks, 2)),
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("hidden", nn.Flatten()),  # the pooled features: the penultimate layer
        ("logits", nn.Linear(4 * width, num_classes)),
    )
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    model.input_shape = (in_channels, image_size, image_size)
    return model


VGG16_ENTRY = ModelEntry("vgg16", "VGG16 layout (13 3x3 convs 64-512, 4096-4096-N), torchvision's "
                         "names; for ImageNet-scale weights and tests", vgg16,
                         Recipe(epochs=4, batch_size=32, lr=1e-3, optimizer="sgd"), "post 004")

RESNET_ENTRY = ModelEntry("resnet", "CIFAR ResNet-8 (3 stages of basic blocks, 16-32-64, global average "
                          "pool; blocks=3: ResNet-20)", resnet,
                          Recipe(epochs=4, batch_size=64, lr=1e-2, max_shift=4), "He et al. 2016")

MODELS: dict[str, ModelEntry] = {
    e.name: e
    for e in [
        ModelEntry("softmax", "linear softmax regression (784 -> 10)", softmax,
                   Recipe(epochs=5, batch_size=100, lr=0.05, optimizer="gd", schedule="constant"),
                   "post 002"),
        ModelEntry("mlp", "perceptron 784-784-10, ReLU", mlp,
                   Recipe(epochs=5, batch_size=128, lr=1e-3), "post 000"),
        ModelEntry("cnn", "two blocks of 2x2 convs, Dense-512 'hidden'", cnn,
                   Recipe(epochs=4, batch_size=128, lr=2e-3), "post 003"),
        ModelEntry("fast-cnn", "small batch-norm CNN tuned for time to 99% on CPU", fast_cnn,
                   Recipe(epochs=15, batch_size=64, lr=5e-3, max_shift=2), "kangae"),
        ModelEntry("global-cnn", "3 conv blocks + global max pool, any image size", global_cnn,
                   Recipe(epochs=4, batch_size=64, lr=5e-3), "kangae (cluttered MNIST)"),
        ModelEntry("vgg-small", "VGG-style 3x3 conv blocks (32-64-128)", vgg_small,
                   Recipe(epochs=4, batch_size=128, lr=1e-3), "post 004"),
        VGG16_ENTRY,
        RESNET_ENTRY,
    ]
}

DEFAULT_MODEL = "fast-cnn"


def get_entry(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownNameError("model", name, MODELS) from None


_SHAPE_ARGUMENTS = ("num_classes", "in_channels", "image_size")  # set from the data


def model_arguments(name: str) -> dict[str, Any]:
    """The arguments a zoo model takes beyond the data's shape, with their defaults
    (e.g. ``{"width": 16, "hidden": 128}`` for fast-cnn)."""
    params = inspect.signature(get_entry(name).build).parameters
    return {k: p.default for k, p in params.items() if k not in _SHAPE_ARGUMENTS}


def check_model_arguments(name: str, args: dict[str, Any]) -> None:
    """Raise a clear error for an argument the model does not take."""
    accepted = list(model_arguments(name))
    for key in args:
        if key not in accepted and key not in _SHAPE_ARGUMENTS:
            close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            takes = f"it takes {', '.join(accepted)}" if accepted else "it takes none"
            raise KangaeError(f"model '{name}' has no argument '{key}' ({takes}).{hint}")


def create_model(name: str, num_classes: int | None = None, in_channels: int | None = None,
                 **kwargs: Any) -> nn.Module:
    """Build a zoo model by name, e.g. ``create_model("cnn", num_classes=10)``; an argument
    left out takes the model's own default (10 grey 28 px digits for most, ImageNet's 1000
    classes at 3x224 for ``vgg16``). The model carries ``input_shape`` (C, H, W)."""
    check_model_arguments(name, kwargs)
    build = get_entry(name).build
    given = {k: v for k, v in (("num_classes", num_classes), ("in_channels", in_channels)) if v is not None}
    model = build(**given, **kwargs)
    if getattr(model, "input_shape", None) is None:
        args = inspect.signature(build).bind(**given, **kwargs)
        args.apply_defaults()
        size = args.arguments.get("image_size", 28)
        model.input_shape = (int(args.arguments.get("in_channels", 1)), int(size), int(size))
    return model
