"""Attack speed on MNIST test images, kangae beside a reference, in images/s.

Prints, in one run on this machine:
  1. PGD-40 (eps 0.3, random start) on N test images: kangae's batched ``pgd`` beside
     ART's ``ProjectedGradientDescent`` (same steps, step size, batch size), and the ratio;
  2. the fewest-pixel-edit search (target 9, p >= 0.9, binary levels): kangae batched over
     images beside the same search run one image at a time, and the ratio.

The model is a trained run (``--run``) or, if none is given, the zoo's MLP with its random
initial weights (speed does not depend on the weights; the accuracies then mean nothing).

Usage: KANGAE_DATA=../shared/datasets python benchmarks/attacks_speed.py [--run RUN] [--n 10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

import kangae
from kangae.data import load_dataset
from kangae.models import create_model
from kangae.probes.attacks import fewest_pixel_edits, pgd
from kangae.utils.device import chunk_size


def art_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, alpha: float,
            batch_size: int) -> tuple[float, float]:
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="cpu")
    attack = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps,
                                      num_random_init=1, batch_size=batch_size, verbose=False)
    t0 = time.perf_counter()
    adv = attack.generate(x.numpy(), y=np.eye(10)[y.numpy()])
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        acc = float((model(torch.from_numpy(adv)).argmax(1) == y).float().mean())
    return len(x) / seconds, acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=None, help="A trained run (default: untrained zoo mlp).")
    ap.add_argument("--n", type=int, default=10000, help="Test images for PGD-40.")
    ap.add_argument("--edit-images", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="Images per pass for both (default: kangae's, 128 MNIST images on a CPU).")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = kangae.load(args.run).model if args.run else create_model("mlp").eval()
    name = args.run or "mlp (untrained)"
    data = load_dataset("mnist", "test")
    x, y = data.floats()[: args.n], data.labels[: args.n].long()
    eps, steps = 0.3, 40
    alpha = 2.5 * eps / steps
    print(f"model: {name}; {torch.get_num_threads()} threads; timings are noisy on a shared machine")

    batch = chunk_size(args.batch_size, next(model.parameters()).device, tuple(x.shape[1:]))
    r = pgd(model, x, y, eps, steps=steps, alpha=alpha, batch_size=batch)
    ours = r.metrics["images_per_second"]
    ref, ref_acc = art_pgd(model, x, y, eps, steps, alpha, batch)
    print(f"PGD-40 eps 0.3 on {len(x):,} images, batch {batch}: kangae {ours:,.0f} images/s "
          f"(accuracy {r.metrics['accuracy_after']:.2%}), ART {ref:,.0f} images/s "
          f"(accuracy {ref_acc:.2%}), ratio {ours / ref:.2f}x")

    pick = (y != 9).nonzero().flatten()[: args.edit_images]
    xe = x[pick]
    t0 = time.perf_counter()
    batched = fewest_pixel_edits(model, xe, 9, with_saliency=False)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    singles = [fewest_pixel_edits(model, xe[i : i + 1], 9, with_saliency=False) for i in range(len(xe))]
    t_single = time.perf_counter() - t0
    same = all(torch.equal(s.images[0], batched.images[i]) for i, s in enumerate(singles))
    print(f"edit search (-> 9, p >= 0.9) on {len(xe)} images: kangae batched {len(xe) / t_batched:.2f} "
          f"images/s ({t_batched / len(xe):.2f} s/image, mean {batched.n_changed.float().mean():.1f} "
          f"pixels, {batched.success.float().mean():.0%} reached), one image at a time "
          f"{len(xe) / t_single:.2f} images/s, ratio {t_single / t_batched:.2f}x, same edits: {same}")


if __name__ == "__main__":
    main()
