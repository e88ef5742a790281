"""Mask speed: kangae's batched perturbation masks beside a per-image loop, at equal quality.

Prints, in one run (goal from issue 5 in brackets):
  1. meaningful perturbation (deletion game, 300 steps) on MNIST test images: a loop that
     optimizes one image at a time against one batch of all images, in images/s, the
     ratio [>= 10x], and the mean deletion AUC of both (must be equal: the batch is the same
     optimization per image);
  2. the same for extremal perturbation with areas 5/10/20%.

Usage: KANGAE_DATA=../shared/datasets python benchmarks/masks_speed.py [--run RUN] [--n 64]
       [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

import kangae
from kangae.data.dataset import load_dataset
from kangae.probes.faithfulness import deletion_insertion
from kangae.probes.masks import extremal_perturbation, meaningful_perturbation


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def compare(name: str, method, model, x: torch.Tensor, n_loop: int) -> None:
    loop_s, singles = timed(lambda: [method(model, x[i : i + 1]) for i in range(n_loop)])
    batch_s, batched = timed(lambda: method(model, x))
    loop_attr = torch.cat([e.attribution for e in singles])
    t = batched.target
    d_loop = deletion_insertion(model, x[:n_loop], loop_attr, t[:n_loop])["deletion"].mean()
    d_batch = deletion_insertion(model, x[:n_loop], batched.attribution[:n_loop],
                                 t[:n_loop])["deletion"].mean()
    loop_rate, batch_rate = n_loop / loop_s, len(x) / batch_s
    print(f"{name}")
    print(f"  per-image loop   {loop_rate:8.2f} images/s  ({n_loop} images, {loop_s:.1f} s)  "
          f"deletion AUC {d_loop:.4f}")
    print(f"  kangae batched   {batch_rate:8.2f} images/s  ({len(x)} images, {batch_s:.1f} s)  "
          f"deletion AUC {d_batch:.4f} (same {n_loop} images)")
    print(f"  ratio            {batch_rate / loop_rate:8.1f}x   goal >= 10x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", help="a trained run (default: train fast-cnn for 1 epoch)")
    ap.add_argument("--n", type=int, default=64, help="images in the batch")
    ap.add_argument("--loop", type=int, default=8, help="images in the per-image loop")
    ap.add_argument("--threads", type=int, help="torch threads for both (default: torch's); on a "
                    "machine shared with other jobs 1 avoids waiting on a descheduled thread")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# kangae {kangae.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    if args.run:
        run = kangae.load(args.run)
    else:
        tmp = tempfile.mkdtemp()
        run = kangae.train("fast-cnn", out=f"{tmp}/run", epochs=1, progress=False, tensorboard=False,
                           snapshots=False)
    print(f"# model {run.meta.model} ({run.path})")
    x = load_dataset(run.meta.dataset, "test").floats()[: args.n]
    compare("meaningful perturbation, deletion game, 300 steps", meaningful_perturbation, run.model, x,
            args.loop)
    compare("extremal perturbation, areas 5/10/20%, 300 steps", extremal_perturbation, run.model, x,
            args.loop)


if __name__ == "__main__":
    main()
