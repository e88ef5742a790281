"""Prototype quality: rank, probability and transfer of class prototypes per method.

For each method and regularizer setting it prints whether every class prototype ranks
first with probability >= 0.99 on the model that made it (issue 4's goal for mlp and cnn),
its robustness to +-2 px shifts, and the share that independently trained models read as
the target (transfer).

Usage: python benchmarks/ideas_quality.py RUN [--check-with RUN2 ...]
"""

from __future__ import annotations

import argparse
import time

import kangae
from kangae.probes.verify import as_model_input, verify_prototypes
from kangae.report.ideas import TargetSpec, compute_ideas

SETTINGS = [
    ("greedy", "binary pixels", {}),
    ("greedy", "levels 0,.5,1", {"levels": (0.0, 0.5, 1.0)}),
    ("gradient", "plain (jitter 1)", {}),
    ("gradient", "tv 1", {"tv": 1.0}),
    ("gradient", "jitter 2", {"jitter": 2}),
    ("gradient", "tv 1 + jitter 2", {"tv": 1.0, "jitter": 2}),
    ("gradient", "fourier", {"param": "fourier"}),
    ("gradient", "fourier + jitter 2", {"param": "fourier", "jitter": 2}),
    ("gradient", "blur/4 + tv 1", {"blur_every": 4, "tv": 1.0}),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--check-with", action="append", default=[])
    args = ap.parse_args()
    run = kangae.load(args.run)
    others = [kangae.load(p) for p in args.check_with]
    names = ", ".join(f"{o.meta.model} ({o.path.name})" for o in others)
    print(f"# {run.meta.model} ({run.path.name}); transfer to: {names}; {time.strftime('%Y-%m-%d')}")
    spec = TargetSpec("class", list(range(len(run.classes))))
    for method, label, opts in SETTINGS:
        t0 = time.perf_counter()
        res = compute_ideas(run.model, method, spec, options=opts)
        secs = time.perf_counter() - t0
        check = verify_prototypes(run.model, as_model_input(res.images, res.signed), res.target,
                                  check_with=[o.model for o in others])
        s = check["summary"]
        transfer = " ".join(f"{r:4.0%}" for r in s.get("transfer_rate", []))
        print(f"{method:8s} {label:20s} all rank 1: {'yes' if s['all_rank_1'] else 'NO ':3s} "
              f"min p {s['min_probability']:.4f}  shift±2 {s['mean_shift_robustness']:4.0%}  "
              f"transfer {transfer}  ({secs:.1f}s)")


if __name__ == "__main__":
    main()
