"""Faithfulness speed: kangae's batched metrics beside a per-image loop of the same computation.

Prints, in one run, for ``--n`` test images of a trained model (saliency maps as the
explanation being scored; goals from issue 17 in brackets):

  1. each metric's time per image in kangae's batched code, beside
     * ``per-image``: the same kangae function called on one image at a time, and
     * ``per-step`` (deletion, insertion, ROAD): the plain loop that scores one perturbed
       image per forward pass (ROAD's: a sparse direct solve per image and fraction, as ROAD's
       own code imputes), with both ratios [deletion, insertion, ROAD >= 10x];
  2. RISE images/s at 4,000 masks, batched, beside a loop that scores one mask per forward
     pass [>= 20x], and the largest difference between the two saliencies.

The batched deletion, insertion, ROAD and RISE score through kangae's scoring copy of the
model (printed first; see docs/explain.md); the loops use the model as it is. Batched deletion
and insertion skip the steps that move only pixels already equal to the baseline (the image
is the step before's, so is its score); the line says how many steps were scored.

Usage: KANGAE_DATA=../shared/datasets python benchmarks/faithfulness_speed.py [--run RUN]
       [--n 64] [--loop 8] [--device cpu] [--threads 1] [--repeats 3]
(without --run, fast-cnn is trained for 1 epoch first)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import kangae
from kangae.data.dataset import load_dataset
from kangae.probes._inference import Scorer
from kangae.probes.attribution import explain
from kangae.probes.faithfulness import (
    _ranks,
    cascading_randomization,
    complexity,
    deletion_insertion,
    impute_reference,
    infidelity,
    max_sensitivity,
    random_logit,
    road,
    sparseness,
)
from kangae.probes.rise import rise_masks, rise_reference, rise_saliency

REPEATS = 3  # every timing, kangae's and the loops', is the best of this many calls (--repeats)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Best wall time of REPEATS calls (this machine's timings vary by up to 50% from one
    call to the next), and the last call's result."""
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


@torch.no_grad()
def per_step_deletion(model, x, a, t, kind: str, steps: int = 28) -> torch.Tensor:
    """One image and one step per forward pass: the loop the batched curve replaces."""
    n, c, h, w = x.shape
    rank = _ranks(a.reshape(n, -1), 0).to(x.device)
    counts = torch.round(torch.linspace(0, h * w, steps + 1)).long().tolist()
    out = torch.empty(n, steps + 1)
    for i in range(n):
        for k, count in enumerate(counts):
            m = (rank[i] < count).to(x.dtype).view(1, 1, h, w)
            img = x[i : i + 1] * (1 - m) if kind == "deletion" else x[i : i + 1] * m
            out[i, k] = F.softmax(model(img), 1)[0, t[i]].cpu()
    return out


@torch.no_grad()
def per_step_road(model, x, a, t, fractions=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)) -> torch.Tensor:
    """ROAD as its own code runs it: per image and fraction a sparse direct solve (no noise
    here) and one forward pass, most relevant first."""
    n, c, h, w = x.shape
    rank = _ranks(a.reshape(n, -1), 0)
    out = torch.empty(n, len(fractions))
    for i in range(n):
        for k, f in enumerate(fractions):
            removed = (rank[i] < round(f * h * w)).view(1, h, w)
            img = impute_reference(x[i].cpu(), removed).to(x.device).clamp(0, 1)
            out[i, k] = F.softmax(model(img[None]), 1)[0, t[i]].cpu()
    return out


def line(name: str, n: int, batch_s: float, n_loop: int, loop_s: float, step_s: float | None = None,
         goal: str = "") -> None:
    per_b, per_l = batch_s / n, loop_s / n_loop
    text = (f"{name:22s} batched {1000 * per_b:9.2f} ms/image   per-image loop {1000 * per_l:9.2f} ms/image"
            f"   ratio {per_l / per_b:6.1f}x")
    if step_s is not None:
        per_s = step_s / n_loop
        text += f"   per-step loop {1000 * per_s:9.2f} ms/image   ratio {per_s / per_b:6.1f}x"
    print(text + (f"   {goal}" if goal else ""))


def main() -> None:
    global REPEATS
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", help="a trained run (default: train fast-cnn for 1 epoch)")
    ap.add_argument("--n", type=int, default=64, help="test images for the batched metrics")
    ap.add_argument("--loop", type=int, default=8, help="images in the per-image loops")
    ap.add_argument("--rise-images", type=int, default=8, help="images for batched RISE")
    ap.add_argument("--masks", type=int, default=4000, help="RISE masks per image")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=REPEATS, help="best of this many calls per timing")
    args = ap.parse_args()
    REPEATS = max(1, args.repeats)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"# kangae {kangae.__version__}, torch {torch.__version__}, device {device}, "
          f"threads {torch.get_num_threads()}, best of {REPEATS} calls per timing")
    if args.run:
        run = kangae.load(args.run)
    else:
        tmp = tempfile.mkdtemp()
        run = kangae.train("fast-cnn", out=f"{tmp}/run", epochs=1, progress=False, tensorboard=False,
                           snapshots=False)
    model = run.model.to(device).eval()
    print(f"# model {run.meta.model} ({run.path}); explanation scored: saliency; "
          f"{args.n} images batched, {args.loop} in each loop")
    x = load_dataset(run.meta.dataset, "test").floats()[: args.n].to(device)
    t = explain(model, x, method="saliency").target.to(device)
    a = explain(model, x, t, method="saliency").attribution.to(device)
    score = Scorer(model, x)
    print(f"# scoring copy: {' > '.join(type(m).__name__ for m in score.model.children())}; "
          f"{score.chunk} images per pass")
    xl, al, tl = x[: args.loop], a[: args.loop], t[: args.loop]
    n, k = len(x), args.loop
    sal = lambda m, im, tg: explain(m, im, tg, method="saliency").attribution

    for kind in ("deletion", "insertion"):
        kinds = (kind,)
        deletion_insertion(model, xl[:1], al[:1], tl[:1], kinds=kinds)  # warm up
        b, _ = timed(lambda kinds=kinds: deletion_insertion(model, x, a, t, kinds=kinds))
        lo, _ = timed(lambda kinds=kinds: [deletion_insertion(model, xl[i:i + 1], al[i:i + 1], tl[i:i + 1],
                                                              kinds=kinds) for i in range(k)])
        st, _ = timed(lambda kind=kind: per_step_deletion(model, xl, al, tl, kind))
        scored = deletion_insertion(model, x, a, t, kinds=kinds)["steps_scored"]
        line(kind, n, b, k, lo, st, f"goal >= 10x; {scored} of {n * 29} steps scored (others move no pixel)")
    road(model, xl[:1], al[:1], tl[:1], noise=0.0)  # warm up
    b, _ = timed(lambda: road(model, x, a, t, noise=0.0))
    lo, _ = timed(lambda: [road(model, xl[i:i + 1], al[i:i + 1], tl[i:i + 1], noise=0.0) for i in range(k)])
    st, _ = timed(lambda: per_step_road(model, xl, al, tl))
    # both orders in the batched call and the per-image loop; MoRF only in the per-step loop
    line("ROAD (MoRF + LeRF)", n, b, k, lo, 2 * st, "goal >= 10x (per-step: MoRF time x 2)")
    b, _ = timed(lambda: infidelity(model, x, a, t))
    lo, _ = timed(lambda: [infidelity(model, xl[i:i + 1], al[i:i + 1], tl[i:i + 1]) for i in range(k)])
    line("infidelity", n, b, k, lo)
    b, _ = timed(lambda: max_sensitivity(sal, model, x, t))
    lo, _ = timed(lambda: [max_sensitivity(sal, model, xl[i:i + 1], tl[i:i + 1]) for i in range(k)])
    line("max-sensitivity", n, b, k, lo)
    b, _ = timed(lambda: cascading_randomization(sal, model, x, t))
    lo, _ = timed(lambda: [cascading_randomization(sal, model, xl[i:i + 1], tl[i:i + 1]) for i in range(k)])
    line("cascading random.", n, b, k, lo)
    b, _ = timed(lambda: random_logit(sal, model, x, t, 10))
    lo, _ = timed(lambda: [random_logit(sal, model, xl[i:i + 1], tl[i:i + 1], 10) for i in range(k)])
    line("random logit", n, b, k, lo)
    b, _ = timed(lambda: (sparseness(a), complexity(a)))
    lo, _ = timed(lambda: [(sparseness(al[i:i + 1]), complexity(al[i:i + 1])) for i in range(k)])
    line("sparseness+complexity", n, b, k, lo)

    masks = rise_masks(args.masks, tuple(x.shape[-2:]), seed=0)
    xr, tr = x[: args.rise_images], t[: args.rise_images]
    with torch.no_grad():
        model(xr)  # warm
    b, fast = timed(lambda: rise_saliency(model, xr, tr, masks))
    lo, slow = timed(lambda: rise_reference(model, xr[:1], tr[:1], masks))
    diff = float((fast[:1] - slow).abs().max())
    rate_b, rate_l = len(xr) / b, 1 / lo
    print(f"RISE, {args.masks} masks       batched {rate_b:8.3f} images/s ({len(xr)} images, {b:.1f} s)   "
          f"one mask per forward {rate_l:8.3f} images/s (1 image, {lo:.1f} s)   "
          f"ratio {rate_b / rate_l:6.1f}x   goal >= 20x   max |difference| {diff:.2e}")


if __name__ == "__main__":
    main()
