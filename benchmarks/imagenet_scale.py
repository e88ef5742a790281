"""ImageNet scale: kangae's probes on the VGG16 layout at 3x224 (issue 15, "Performance").

Prints, in one run (goals in brackets):
  1. activation maximization of 8 class logits as post 004 writes it (one class at a time,
     a plain loop: gradient normalized by its RMS, RMSprop, no transforms) and kangae with
     all 8 in one batch (its 224 px defaults: Fourier image, Lucid's standard transforms,
     Adam), in seconds per step of all 8 targets [kangae never slower than the loop];
  2. the model's own bare forward and backward at the same batch of 8 (to the input, the
     parameters frozen, as in both of the above) [kangae's step <= 1.25x it];
  3. extremal perturbation seconds per image, Grad-CAM and integrated gradients images/s
     (through kangae.probes.explain), each at few steps, with the defaults extrapolated;
  4. the achieved GFLOP/s (a direct convolution's multiply-adds counted as 2 FLOPs; a
     backward to the input as many FLOPs as the forward) beside this machine's float32
     matrix-multiply peak measured in the same run (oneDNN's Winograd 3x3 convolutions do
     fewer multiplies, so a conv net can exceed that peak);
  5. peak memory: the process's peak resident set (resource.getrusage, model weights
     included) after kangae's 8-target run [< 4 GB], or torch's peak allocation on CUDA.

The network is random (no ImageNet weights are needed to time it). kangae's seconds per step
are timed between the model's forward passes (a pre-hook stamps each): from the second step
to the scoring of the results, so its set-up (one forward to count the classes, one to score
the results) and its first (warm-up) step are not counted as steps.

Usage: python benchmarks/imagenet_scale.py [--quick] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Callable

import torch
from torch import nn

import kangae
from kangae.models import create_model
from kangae.probes import activation_maximization, explain, extremal_perturbation

CLASSES = [1, 65, 130, 292, 340, 385, 590, 947]  # 8 ImageNet classes (65 is post 004's sea snake)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(device: torch.device, n: int, repeat: int) -> float:
    """GFLOP/s of an n x n float32 matrix product, best of ``repeat``."""
    a, b = torch.rand(n, n, device=device), torch.rand(n, n, device=device)
    a @ b
    return 2 * n**3 / timed(lambda: a @ b, device, repeat) / 1e9


def forward_flops(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> float:
    """FLOPs of one image's forward pass: 2 per multiply-add of every conv and linear layer."""
    total = [0.0]

    def hook(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            total[0] += 2.0 * out[0].numel() * k
        elif isinstance(m, nn.Linear):
            total[0] += 2.0 * m.in_features * m.out_features

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    with torch.no_grad():
        model(torch.zeros(1, *shape, device=device))
    for h in handles:
        h.remove()
    return total[0]


def post_004_loop(model: nn.Module, classes: list[int], steps: int, device: torch.device) -> None:
    """Post 004's visualize_filter('predictions', c) for each class in turn: start from grey
    noise, normalize the gradient by its RMS, take an RMSprop step; one image at a time."""
    gen = torch.Generator().manual_seed(0)
    for c in classes:
        x = ((torch.rand(1, 3, 224, 224, generator=gen) - 0.5) * 20 / 255 + 0.5).to(device)
        cache = torch.zeros_like(x)
        for _ in range(steps):
            x.requires_grad_(True)
            activation = model(x)[0, c]
            (grad,) = torch.autograd.grad(activation, x)
            grad = grad / (grad.pow(2).mean().sqrt() + 1e-5)
            cache = 0.9 * cache + 0.1 * grad.pow(2)
            x = (x.detach() + 0.01 * grad / (cache.sqrt() + 1e-7)).clamp(0, 1)


def bare_step(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> None:
    x = x.detach().requires_grad_(True)
    model(x)[torch.arange(len(x), device=x.device), targets].sum().backward()


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (torch.cuda.max_memory_allocated)"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB on Linux
    return f"{rss:.2f} GiB (peak RSS of the process, resource.getrusage; model weights included)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewest steps (about 2 minutes on 2 CPU threads)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps = 1 if args.quick else 3  # steps timed for each method (kangae: beyond its first step)
    print(f"# kangae {kangae.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{device}, {time.strftime('%Y-%m-%d')}{', --quick' if args.quick else ''}")
    torch.manual_seed(0)
    model = create_model("vgg16").eval().to(device)
    model.requires_grad_(False)  # every method below takes gradients to the input only
    shape = model.input_shape
    flops = forward_flops(model, shape, device)
    step_flops = 2 * flops * len(CLASSES)  # forward + backward to the input, 8 images
    peak = matmul_peak(device, 1024 if args.quick else 2048, 5)
    print(f"vgg16 layout at {'x'.join(map(str, shape))}: {flops / 1e9:.1f} GFLOP per image forward; "
          f"float32 matmul peak {peak:.0f} GFLOP/s")

    bare_step(model, torch.rand(1, *shape, device=device), torch.tensor(CLASSES[:1], device=device))
    loop = timed(lambda: post_004_loop(model, CLASSES, steps, device), device) / steps
    x = torch.rand(len(CLASSES), *shape, generator=torch.Generator().manual_seed(1)).to(device)
    targets = torch.tensor(CLASSES, device=device)
    bare_step(model, x, targets)  # warm-up at batch 8
    bare = timed(lambda: bare_step(model, x, targets), device, 1 if args.quick else 2)

    starts: list[float] = []  # when each forward pass of the model begins

    def stamp(module: nn.Module, inputs: tuple) -> None:
        sync(device)
        starts.append(time.perf_counter())

    handle = model.register_forward_pre_hook(stamp)
    total = timed(lambda: activation_maximization(model, CLASSES, steps=1 + steps, frames=0), device)
    handle.remove()
    # forwards: count the classes, a one-image layout trial, step 1 (warm-up), steps
    # 2..1+steps, score the results: the last `steps` intervals end where the scoring begins
    ours = (starts[-1] - starts[-1 - steps]) / steps
    memory = peak_memory(device)
    print(f"activation maximization, 8 class logits, s per step:  post 004 loop (1 class at a time) "
          f"{loop:6.2f}   kangae (8 in one batch) {ours:6.2f}   loop/kangae {loop / ours:4.2f}x "
          f"(goal >= 1)")
    print(f"   bare forward+backward of the model at batch 8 {bare:6.2f} s   kangae/bare {ours / bare:4.2f}x "
          f"(goal <= 1.25)   whole call of {1 + steps} steps {total:6.2f} s")
    gflops = {name: step_flops / t / 1e9 for name, t in (("loop", loop), ("kangae", ours), ("bare", bare))}
    print(f"   achieved GFLOP/s: loop {gflops['loop']:5.0f}   kangae {gflops['kangae']:5.0f}   "
          f"bare {gflops['bare']:5.0f}   (kangae at {100 * gflops['kangae'] / peak:.0f}% of the matmul peak)")
    print(f"   peak memory after kangae's 8-target run: {memory} (goal < 4 GB)")

    mask_steps = 1 if args.quick else 2
    one = x[:1]
    t_mask = timed(lambda: extremal_perturbation(model, one, CLASSES[:1], steps=mask_steps), device)
    print(f"extremal perturbation (3 areas), {mask_steps} step{'s' * (mask_steps > 1)}: {t_mask:6.2f} s per "
          f"image, set-up included; the default 300 steps: about {t_mask / mask_steps * 300 / 60:.0f} min "
          f"per image")
    cam_batch = 2 if args.quick else 4
    t_cam = timed(lambda: explain(model, x[:cam_batch], targets[:cam_batch], method="gradcam"), device)
    ig_steps = 4 if args.quick else 8
    t_ig = timed(lambda: explain(model, one, targets[:1], method="ig", n_steps=ig_steps), device)
    print(f"Grad-CAM (last conv block, {cam_batch} images): {cam_batch / t_cam:6.2f} images/s   "
          f"IG ({ig_steps} steps, 1 image): {1 / t_ig:6.3f} images/s (the default 32 steps: about "
          f"{ig_steps / t_ig / 32:6.3f} images/s)")
    print(f"peak memory of the whole run: {peak_memory(device)}")
    if device.type == "cpu":  # other programs' work on the same CPUs makes the figures noisy
        print(f"# load average (1 min) at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
