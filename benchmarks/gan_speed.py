"""DCGAN training speed and quality on MNIST, on 2 CPU cores (issue 8).

Prints:
  1. training throughput in images/s (generator + discriminator steps, judge excluded) and
     the wall time of one epoch with the judge;
  2. the Fréchet distance in a kangae classifier's penultimate features after 1, 3 and 5
     epochs, beside the real-data floor (two halves of the test set, as many images).

Usage: KANGAE_DATA=../shared/datasets python benchmarks/gan_speed.py [--arch seed] [--limit N]
       [--epochs 5] [--judge-n 5000]
The judge classifier is trained once and cached (kangae cache dir) before the clock starts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from kangae.gan import judge_classifier, train_gan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="seed")
    ap.add_argument("--limit", type=int, default=None, help="train on a subset of this many images")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--judge-n", type=int, default=5000)
    ap.add_argument("--conditional", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    judge_classifier("mnist", progress=False)
    print(f"judge classifier ready in {time.perf_counter() - t0:.1f}s (cached after the first time)")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = train_gan("mnist", out=Path(tmp) / "gan", epochs=args.epochs, arch=args.arch, limit=args.limit,
                        judge_n=args.judge_n, conditional=args.conditional, progress=False,
                        tensorboard=False, echo=False, device="cpu")
        wall = time.perf_counter() - t0
        judgements = run.judgements  # read before the folder goes
    n_train = args.limit or 60000
    speeds = [h["images_per_s"] for h in run.history]
    judge_s = [e["judge_seconds"] for e in judgements]
    print(f"DCGAN arch={args.arch} conditional={args.conditional} on {n_train} MNIST images, "
          f"{args.threads} threads, batch {run.config['batch_size']}")
    print(f"  training throughput: {sum(speeds) / len(speeds):.0f} images/s "
          f"(per epoch: {', '.join(f'{s:.0f}' for s in speeds)})")
    print(f"  wall time: {wall:.1f}s for {args.epochs} epochs, {wall / args.epochs:.1f}s per epoch "
          f"with judging ({sum(judge_s) / len(judge_s):.1f}s per judgement of "
          f"{judgements[0]['n']} samples)")
    floor = judgements[0]["fd_floor"]
    print(f"  {'epoch':>5} {'Fréchet':>9} {'floor':>7} {'ratio':>6} {'conf.':>6} {'entropy':>7}"
          + (f" {'class':>6}" if args.conditional else ""))
    for e in judgements:
        if e["epoch"] in (0, 1, 3, 5) or e["epoch"] == args.epochs:
            line = (f"  {e['epoch']:>5} {e['fd']:>9.2f} {floor:>7.2f} {e['fd'] / floor:>6.1f} "
                    f"{e['confidence']:>6.1%} {e['entropy_bits']:>7.2f}")
            if args.conditional:
                line += f" {e['class_match']:>6.1%}"
            print(line)


if __name__ == "__main__":
    main()
