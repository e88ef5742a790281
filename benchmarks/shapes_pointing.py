"""Pointing game on colour pictures: where the zoo's ResNet looks on the ``shapes`` dataset.

Each 64 x 64 test picture is decided by one shape whose box is known, with distractors
elsewhere. For each method, a hit is the map's maximum within ``--tolerance`` px of the box
(Zhang et al. 2016); the centre baseline (TorchRay's "center") is printed beside it.

Usage: python benchmarks/shapes_pointing.py [--run RUN] [--n 96] [--methods gradcam,mask,extremal]
       [--steps 150] [--threads 2]
(without --run, the ResNet is trained as the tests train it (tests/probes/rgb_models.py): 3,000
pictures, 6 epochs; ``--full`` trains the zoo recipe on all 10,000)
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from kangae.data.shapes import load_shapes
from kangae.probes.attribution import explain
from kangae.probes.explanation import degenerate
from kangae.probes.faithfulness import centre_map, pointing_hits
from kangae.training.run import load, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=None)
    ap.add_argument("--full", action="store_true", help="train the zoo recipe on all 10,000 pictures")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--methods", default="gradcam,mask,extremal")
    ap.add_argument("--steps", type=int, default=150, help="mask and extremal steps")
    ap.add_argument("--tolerance", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if args.run:
            run = load(args.run)
        else:
            extra = {} if args.full else {"limit": 3000, "epochs": 6}
            run = train("resnet", "shapes", out=f"{tmp}/run", progress=False, tensorboard=False,
                        snapshots=False, device="cpu", **extra)
        acc = run.history[-1]["val_acc"]
        print(f"model: {run.meta.model} {run.meta.model_args}, test accuracy {acc:.1%} "
              f"({time.perf_counter() - start:.0f} s to load or train)")
        test = load_shapes("test")
        x, y, boxes = test.data.floats()[: args.n], test.data.labels[: args.n], test.boxes[: args.n]
        centre = pointing_hits(centre_map(len(x), tuple(x.shape[-2:])), boxes, args.tolerance).float().mean()
        print(f"pointing game on {len(x)} shapes test pictures, hit within {args.tolerance} px of the box; "
              f"centre baseline {centre:.1%}")
        for method in args.methods.split(","):
            opts = {"steps": args.steps} if method in ("mask", "extremal") else {}
            t = time.perf_counter()
            e = explain(run.model, x, y, method=method, **opts)
            hits = pointing_hits(e.attribution, boxes, args.tolerance).float()
            bad = int(degenerate(e.attribution).sum())
            print(f"  {method:15s} {hits.mean():6.1%}   (centre {centre:.1%}; degenerate {bad}; "
                  f"{time.perf_counter() - t:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
