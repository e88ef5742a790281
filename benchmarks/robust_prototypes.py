"""Standard beside adversarially trained: robustness figures and class prototypes.

For each run: clean accuracy, accuracy under FGSM and PGD-40 at eps 0.05-0.3 on N test
images (``kangae.probes.attacks.robustness_curve``); then the class prototypes and
class-mean input gradients of all runs side by side, verified, with the "gradient alignment"
number (``kangae.report.attacks.write_prototype_comparison``).

Usage: KANGAE_DATA=../shared/datasets python benchmarks/robust_prototypes.py STANDARD_RUN ROBUST_RUN
       [--n 10000] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import kangae
from kangae.probes.attacks import pgd, robustness_curve
from kangae.report.attacks import write_prototype_comparison


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--n", type=int, default=1000, help="Test images for the robustness curve.")
    ap.add_argument("--n-final", type=int, default=10000, help="Test images for PGD at the largest eps.")
    ap.add_argument("--eps", default="0,0.05,0.1,0.2,0.3")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", default="robust-prototypes")
    ap.add_argument("--skip-curve", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    runs = [kangae.load(r) for r in args.runs]
    names = [Path(r).name for r in args.runs]
    data = runs[0].dataset("test")
    x, y = data.floats(), data.labels.long()
    eps = [float(e) for e in args.eps.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves = {}
    if not args.skip_curve:
        for name, run in zip(names, runs):
            c = robustness_curve(run.model, x[: args.n], y[: args.n], eps, steps=args.steps)
            curves[name] = c.to_dict()
            print(f"{name} ({run.meta.model}, adversarial: {run.config.get('adversarial')}) "
                  f"on {c.n:,} test images")
            for i, e in enumerate(c.eps):
                print(f"  eps {e:<5g} FGSM {c.accuracy['fgsm'][i]:7.2%}   "
                      f"PGD-{args.steps} {c.accuracy['pgd'][i]:7.2%}")
            if args.n_final > args.n:
                r = pgd(run.model, x[: args.n_final], y[: args.n_final], eps[-1], steps=args.steps)
                curves[name]["final"] = {"n": args.n_final, "eps": eps[-1], "steps": args.steps,
                                         "clean": float((r.pred_before == r.labels).float().mean()),
                                         "pgd": r.metrics["accuracy_after"]}
                print(f"  on {args.n_final:,} test images: clean {curves[name]['final']['clean']:.2%}, "
                      f"PGD-{args.steps} at eps {eps[-1]:g}: {r.metrics['accuracy_after']:.2%} "
                      f"({r.metrics['seconds']:.0f}s)")
        (out / "robustness.json").write_text(json.dumps(curves, indent=2))
    res = write_prototype_comparison(list(zip(names, [r.model for r in runs])), runs[0].classes, out,
                                     x[:2000], y[:2000])
    for name, row in res["models"].items():
        v = row["verification"]
        transfer = ", ".join(f"read by {n}: {r:.0%}" for n, r in row["transfer_to"].items())
        transfer += "; binarized at 0.5, read by " + ", ".join(
            f"{n}: {r:.0%}" for n, r in row["binarized_read_by"].items())
        print(f"{name}: prototypes all rank 1: {v['all_rank_1']}, min p {v['min_probability']:.3f}, "
              f"shift robustness {v['mean_shift_robustness']:.0%}, noise robustness "
              f"{v['mean_noise_robustness']:.0%}; {transfer}; gradient alignment "
              f"{row['mean_gradient_alignment']:.3f}")
    print(f"wrote {out}/: {', '.join(res['files'])}, prototypes.json, robustness.json")


if __name__ == "__main__":
    main()
