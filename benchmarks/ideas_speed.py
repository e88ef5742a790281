"""Prototype speed: kangae's batched searches beside the one-at-a-time methods they replace.

Prints, in one run (goals from issue 4 in brackets):
  1. greedy prototypes of 10 classes on `mlp`: the post-style sequential reference (one
     class at a time, one forward per trial) against kangae, the ratio [>= 50x], and the
     maximum pixel difference between the two [must be 0];
  2. gradient activation maximization of 10 targets, one at a time against one batch,
     and the ratio [>= 5x];
  3. peak memory.

Usage: KANGAE_DATA=../shared/datasets python benchmarks/ideas_speed.py [--run RUN_DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import torch

import kangae
from kangae.probes import activation_maximization, search_prototypes
from kangae.probes.prototypes import reference_search


def best_of(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", help="a trained mlp run (default: train one, about 8 s)")
    ap.add_argument("--threads", type=int, help="torch threads for both sides (default: torch's; "
                    "1 is steadier on a shared machine, where a busy core stalls both threads)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# kangae {kangae.__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.run:
            model = kangae.load(args.run).model
        else:
            model = kangae.train("mlp", out=f"{tmp}/mlp", progress=False, tensorboard=False).model
    classes = list(range(10))

    t_ref, ref = best_of(lambda: reference_search(model, classes), 1)
    t_fast, fast = best_of(lambda: search_prototypes(model, classes), 3)
    diff = (fast.images - ref).abs().max().item()
    print(f"greedy 10 classes, mlp   sequential reference {t_ref:7.2f} s   kangae {t_fast:6.3f} s   "
          f"ratio {t_ref / t_fast:6.1f}x (goal >= 50x)   max pixel difference {diff:g} (must be 0)")
    print(f"   sweeps {fast.metrics['sweeps']}, pixels changed {fast.metrics['changes']}")

    steps = 200
    one, _ = best_of(lambda: [activation_maximization(model, [c], steps=steps, frames=0)
                              for c in classes], 2)
    batch, res = best_of(lambda: activation_maximization(model, classes, steps=steps, frames=0), 2)
    print(f"gradient 10 targets, mlp, {steps} steps   one at a time {one:6.2f} s   "
          f"one batch {batch:6.2f} s   ratio {one / batch:5.1f}x (goal >= 5x)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS): {peak:.0f} MiB")


if __name__ == "__main__":
    main()
