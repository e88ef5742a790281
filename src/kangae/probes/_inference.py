"""Scoring many perturbed images (deletion, insertion, ROAD, RISE) through a private copy of
a model that computes the same function with less work, in chunks that stay in cache.

The copy (:func:`scoring_copy`) is the model in eval mode with three exact rewrites:

* an eval-mode batch norm after a ``Conv2d`` or ``Linear`` is folded into that layer's
  weights (``s * (W x + b - mean) + beta`` with ``s = gamma / sqrt(var + eps)``), the
  standard inference fold, so the normalized activations are never stored;
* ``ReLU`` then ``MaxPool2d`` becomes ``MaxPool2d`` then ``ReLU`` (max commutes with a
  monotone map), which applies ReLU to a quarter of the values;
* a conv net's weights and inputs go ``channels_last``, whose pooling kernels are
  vectorized where NCHW's are not;
* a 2 x 2 max-pool (with the ReLU now after it) becomes :class:`PoolReLU`: two elementwise
  maxima over views of the channels-last memory and an in-place ReLU, half the time of
  torch's channels-last pooling kernel;
* ``Flatten`` then ``Linear`` becomes :class:`FlatLinear`, which reads a channels-last
  activation in its own memory order with the weight's columns permuted to match, instead
  of copying it into NCHW order first.

All but the channels-last layout apply to (nested) ``nn.Sequential`` models; any other
module keeps its layers.
The copy is checked against the model on the caller's images and dropped for the plain
eval copy when its logits differ (more than float rounding) or it fails to run. It is made
once per model and kind of image and shared (by a probe's pieces, and by later calls) until
the model's weights change.
"""

from __future__ import annotations

import copy
import math
import threading
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.device import chunk_size
from ._affine import leaves

# the CPU working set of one forward pass's largest activation, per intra-op thread
CACHE_BYTES = 8 << 20


def fold_batchnorm(layer: nn.Module, bn: nn.Module) -> nn.Module | None:
    """``layer`` followed by eval-mode ``bn`` as one layer of the same type, or None when the
    pair does not fold (a subclass, batch statistics, or the wrong kind of batch norm)."""
    pair = {nn.Conv2d: nn.BatchNorm2d, nn.Linear: nn.BatchNorm1d}.get(type(layer))
    if pair is None or type(bn) is not pair or bn.running_mean is None or bn.running_var is None:
        return None
    out = copy.deepcopy(layer)
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
        shift = (bias - bn.running_mean.double()) * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        w = layer.weight.double() * scale.view(-1, *[1] * (layer.weight.ndim - 1))
        out.weight = nn.Parameter(w.to(layer.weight.dtype), requires_grad=False)
        out.bias = nn.Parameter(shift.to(layer.weight.dtype), requires_grad=False)
    return out


class PoolReLU(nn.Module):
    """``MaxPool2d(2)``, then ReLU when ``relu``: on a channels-last activation of even height
    and width, the larger of the two rows and then of the two columns of each window, read
    as views of its (N, H, W, C) memory; any other input goes to ``F.max_pool2d``."""

    def __init__(self, relu: bool) -> None:
        super().__init__()
        self.relu = relu

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, c, height, width = h.shape
        if height % 2 or width % 2 or not h.is_contiguous(memory_format=torch.channels_last):
            out = F.max_pool2d(h, 2)
        else:
            v = h.permute(0, 2, 3, 1).reshape(n, height // 2, 2, width // 2, 2, c)
            rows = torch.maximum(v[:, :, 0], v[:, :, 1])  # (N, H/2, W/2, 2, C)
            out = torch.maximum(rows[:, :, :, 0], rows[:, :, :, 1]).permute(0, 3, 1, 2)
        return out.clamp_min_(0) if self.relu else out


class FlatLinear(nn.Module):
    """``Flatten`` then ``linear``, reading a channels-last (N, C, H, W) activation in its
    memory order, (H, W, C), with the weight's columns permuted to that order once per shape."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        self._weights: dict[tuple[int, int, int], torch.Tensor] = {}

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.ndim != 4 or h.is_contiguous() or not h.is_contiguous(memory_format=torch.channels_last):
            return self.linear(h.flatten(1))  # NCHW memory, or a layout where both orders agree
        n, c, height, width = h.shape
        w = self._weights.get((c, height, width))
        if w is None:
            w = self.linear.weight.view(-1, c, height, width).permute(0, 2, 3, 1).flatten(1)
            w = self._weights.setdefault((c, height, width), w.contiguous())
        return F.linear(h.permute(0, 2, 3, 1).reshape(n, -1), w, self.linear.bias)


def _is_pool2(m: nn.Module) -> bool:
    """A plain 2 x 2, stride-2 max-pool (what :class:`PoolReLU` computes)."""
    pair = lambda v: v in (2, (2, 2))  # noqa: E731
    return (type(m) is nn.MaxPool2d and pair(m.kernel_size) and pair(m.stride or m.kernel_size)
            and m.padding in (0, (0, 0)) and m.dilation in (1, (1, 1)) and not m.return_indices
            and not m.ceil_mode)


def _is_flatten(m: nn.Module) -> bool:
    return type(m) is nn.Flatten and m.start_dim == 1 and m.end_dim == -1


def rewrite(model: nn.Sequential) -> nn.Sequential:
    """The exact rewrites of the module docstring on a flat copy of a Sequential's layers."""
    out: list[nn.Module] = []
    for m in leaves(model):
        folded = fold_batchnorm(out[-1], m) if out else None
        if folded is not None:
            out[-1] = folded
        elif (isinstance(m, nn.MaxPool2d) and not m.return_indices and out
              and type(out[-1]) is nn.ReLU):
            out.insert(len(out) - 1, m)
        else:
            out.append(m)
    fused: list[nn.Module] = []
    for m in out:
        last = fused[-1] if fused else None
        if type(m) is nn.ReLU and isinstance(last, PoolReLU) and not last.relu:
            last.relu = True
        elif _is_pool2(m):
            fused.append(PoolReLU(relu=False))
        elif type(m) is nn.Linear and last is not None and _is_flatten(last):
            fused[-1] = FlatLinear(m)
        else:
            fused.append(m)
    return nn.Sequential(*fused)


def _is_conv_net(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def as_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` in the memory layout the copy runs fastest on."""
    if getattr(model, "_kangae_channels_last", False) and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


# model -> (what its copy was made from, the copy): the pieces of one probe call, and the
# calls after it, share one copy instead of each deep-copying the weights again
_copies: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]] = weakref.WeakKeyDictionary()
_copies_lock = threading.Lock()


def _fingerprint(model: nn.Module, example: torch.Tensor) -> tuple:
    """What a scoring copy depends on: every weight and buffer (its storage and its version,
    which an in-place update such as an optimizer step bumps) and the kind of image."""
    state = tuple((name, t.data_ptr(), t._version, tuple(t.shape), t.dtype, t.device)
                  for name, t in [*model.named_parameters(), *model.named_buffers()])
    return state, tuple(example.shape[1:]), example.dtype, example.device


def scoring_copy(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The scoring copy of ``model`` for images like ``example`` (see :func:`make_scoring_copy`),
    made once and shared until the model's weights change or it is garbage-collected. Its
    forward keeps no state, so threads may share it."""
    try:
        key = _fingerprint(model, example)
    except RuntimeError:  # inference tensors keep no version counter: copy every call
        return make_scoring_copy(model, example)
    with _copies_lock:
        held = _copies.get(model)
        if held is not None and held[0] == key:
            return held[1]
        made = make_scoring_copy(model, example)
        try:
            _copies[model] = (key, made)
        except TypeError:  # a module that cannot be weakly referenced is copied every call
            pass
        return made


@torch.no_grad()
def make_scoring_copy(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """A private eval-mode copy of ``model`` for scoring, rewritten as the module docstring
    says where that gives the model's logits on ``example`` (a few of the caller's images)."""
    plain = copy.deepcopy(model).eval()
    for p in plain.parameters():
        p.requires_grad_(False)
    candidate = rewrite(plain) if isinstance(plain, nn.Sequential) else copy.deepcopy(plain)
    candidate.eval()
    if _is_conv_net(candidate):
        candidate = candidate.to(memory_format=torch.channels_last)
        candidate._kangae_channels_last = True  # type: ignore[assignment]
    try:
        want = plain(example).float()
        got = candidate(as_input(candidate, example)).float()
    except (RuntimeError, TypeError, ValueError):
        return plain
    scale = float(want.abs().max()) + 1e-6
    same = got.shape == want.shape and float((got - want).abs().max()) <= 1e-4 * scale
    return candidate if same else plain


def largest_activation_bytes(model: nn.Module, example: torch.Tensor) -> int:
    """Bytes of the largest output any leaf module of ``model`` writes for one image."""
    sizes: list[int] = [example[0].numel() * example.element_size()]

    def hook(_m: nn.Module, _i: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            sizes.append(out[0].numel() * out.element_size() if out.ndim else 0)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(as_input(model, example[:1]))
    finally:
        for h in handles:
            h.remove()
    return max(sizes)


def scoring_chunk(model: nn.Module, example: torch.Tensor, batch_size: int | None) -> int:
    """Images per forward pass: ``batch_size`` if given; on a CPU the power of two that keeps
    the largest activation near :data:`CACHE_BYTES` per torch thread (fast-cnn at 28 px: 128
    images on one thread, 256 on two; docs/benchmarks.md has the sweep); elsewhere
    :func:`~kangae.utils.device.chunk_size`'s."""
    device = example.device
    if batch_size is not None or device.type != "cpu":
        return chunk_size(batch_size, device, tuple(example.shape[1:]))
    budget = CACHE_BYTES * max(1, torch.get_num_threads())
    per = budget // max(1, largest_activation_bytes(model, example))
    return int(min(1024, max(8, 2 ** max(0, math.floor(math.log2(max(1, per)))))))


class Scorer:
    """Target-class probabilities of many images through :func:`scoring_copy`, ``chunk``
    images per forward pass. ``example`` (on the model's device) picks the copy and chunk."""

    def __init__(self, model: nn.Module, example: torch.Tensor, batch_size: int | None = None):
        self.model = scoring_copy(model, example[:4])
        self.chunk = scoring_chunk(self.model, example, batch_size)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, target: torch.Tensor, *, logits: bool = False) -> torch.Tensor:
        """(B,) float32 probabilities (or, with ``logits``, logits) of ``target[i]`` for
        ``images[i]`` (same device)."""
        out = torch.empty(len(images), device=images.device)
        for i in range(0, len(images), self.chunk):
            z = self.model(as_input(self.model, images[i : i + self.chunk])).float()
            p = z if logits else F.softmax(z, 1)
            out[i : i + self.chunk] = p.gather(1, target[i : i + self.chunk, None].long())[:, 0]
        return out

