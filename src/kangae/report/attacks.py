"""``kangae fool``: run one attack on a run's model and write every number and picture.

Writes ``fool.json`` (all numbers), ``originals.png``, ``adversarials.png`` and
``differences.png`` (signed), plus ``curve.png`` (template and FGSM/PGD on test images) or
``saliency-before.png``/``saliency-after.png`` (edits), to ``out``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import KangaeError
from ..probes._model import readings
from ..probes.attacks import fewest_pixel_edits, fgsm, pgd, robustness_curve, template_attack
from ..probes.attacks.edits import EditResult
from ..probes.attacks.gradient import AttackResult
from ..probes.attacks.template import TemplateResult
from ..probes.templates import weight_templates
from ..render import save_grid
from ..render.attacks import GRIDS, SHOW, plot_share_lines, save_before_after
from ..utils import shard
from ..utils.atomic import write_json

ATTACKS = ("template", "fgsm", "pgd", "edit")
# images per block of work (PGD's chunk on a CPU at 28 px): a block's numbers, random starts
# included, do not depend on which process computes it (kangae.utils.shard)
FOOL_BLOCK = 128


def _plot_lines(x: Sequence[float], series: dict[str, Sequence[float]], path: Path, xlabel: str,
                ylabel: str, title: str) -> Path:
    if shard.is_main():
        plot_share_lines(x, series, path, xlabel, ylabel, title)
    return path


def _grids(out: Path, original: torch.Tensor, adversarial: torch.Tensor, titles_before: list[str],
           titles_after: list[str], suptitle: str) -> list[str]:
    if not shard.is_main():
        return list(GRIDS)
    return save_before_after(out, original, adversarial, titles_before, titles_after, suptitle)


def _check_target(target: int | None, classes: list[str]) -> None:
    if target is not None and not 0 <= target < len(classes):
        raise KangaeError(f"invalid target {target}; valid: 0-{len(classes) - 1}")


def write_fool(model: nn.Module, classes: list[str], attack: str, out: str | Path, images: torch.Tensor,
               labels: torch.Tensor | None, *, target: int | torch.Tensor | None = None,
               eps: Sequence[float] = (0, 0.05, 0.1, 0.2, 0.3), steps: int = 40, restarts: int = 1,
               alphas: Sequence[float] = (0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
               levels: Sequence[float] = (0.0, 1.0), threshold: float = 0.9, max_edits: int = 150,
               others: Sequence[tuple[str, nn.Module]] = (), sources: Sequence[str] | None = None,
               seed: int = 0, source: str = "", name: str = "model",
               block: int | None = None) -> dict[str, Any]:
    """Run ``attack`` on ``images`` (float (N, 1, H, W) in [0, 1]) and write the files.

    ``labels`` are the true classes (test images) or None (pictures: the model's reading is
    used as the label to move away from). ``target``: one class, or (edit) one per image.
    ``others`` are extra (name, model) pairs for the template comparison.

    The images are attacked in blocks of ``block`` (default :data:`FOOL_BLOCK`), block ``b``
    seeded ``kangae.utils.shard.block_seed(seed, b)``; under ``torchrun`` the processes share
    the blocks and rank 0 writes the files, with the numbers one process gets.
    """
    if attack not in ATTACKS:
        raise KangaeError(f"unknown attack '{attack}'; use one of {', '.join(ATTACKS)}")
    if torch.is_tensor(target):
        if attack != "edit":
            raise KangaeError("one target per image is for --attack edit")
    else:
        _check_target(target, classes)
    bad = [e for e in eps if not 0 <= e <= 1]
    if bad:
        raise KangaeError(f"invalid eps {bad}: must lie in [0, 1] (pixel values are in [0, 1])")
    out = Path(out)
    if shard.is_main():
        out.mkdir(parents=True, exist_ok=True)
    size = block or FOOL_BLOCK
    t0 = time.perf_counter()
    names = [str(i) for i in range(len(images))] if sources is None else list(sources)
    res: dict[str, Any] = {"attack": attack, "model": source, "classes": classes, "n": len(images),
                           "images": names}
    try:
        if attack == "template":
            res.update(_template(model, classes, out, images, labels, target, alphas,
                                 [(name, model), *others], size))
        elif attack in ("fgsm", "pgd"):
            res.update(_gradient(model, classes, out, attack, images, labels, target, eps, steps, seed,
                                 restarts, size))
        else:
            res.update(_edit(model, classes, out, images, target, levels, threshold, max_edits, size))
    except ValueError as e:  # bad numbers from the probes: a user mistake, not a crash
        raise KangaeError(str(e)) from None
    res["seconds"] = time.perf_counter() - t0
    res["block"], res["processes"] = size, shard.rank_and_world()[1]
    if shard.is_main():
        write_json(out / "fool.json", res)
    return res


def _template(model: nn.Module, classes: list[str], out: Path, x: torch.Tensor, y: torch.Tensor | None,
              target: int | None, alphas: Sequence[float], models: Sequence[tuple[str, nn.Module]],
              size: int = FOOL_BLOCK) -> dict[str, Any]:
    target = 7 if target is None else target
    if y is None and not _is_linear(model):
        y = readings(model, x)  # the model's own readings stand in for labels
    rows: dict[str, Any] = {}
    first = None
    for name, m in models:
        name = name if name not in rows else f"{name} ({len(rows) + 1})"
        r = _template_blocks(m, x, target, alphas, y, size)
        first = first or r
        rows[name] = {"share_target": r.share_target, "mean_prob_target": r.mean_prob_target,
                      "accuracy": r.accuracy, "template": r.metrics["template"],
                      "counted": r.metrics["counted"]}
    assert first is not None
    _plot_lines(first.alphas, {k: v["share_target"] for k, v in rows.items()}, out / "curve.png",
                "alpha (template scaled to max |value| 1)", f"% read as {classes[target]}",
                f"template of {classes[target]} added")
    a = max(0, first.shown_alpha)
    shown = first.original[:SHOW]
    adv = first.images[a, :SHOW]
    before, after = first.predictions[0, :SHOW], first.predictions[a, :SHOW]
    files = _grids(out, shown, adv, [f"read {classes[k]}" for k in before],
                   [f"read {classes[k]}" for k in after], f"alpha = {first.alphas[a]:g}")
    if shard.is_main():
        save_grid(first.template[None], out / "template.png", signed=True,
                  suptitle=f"template of {classes[target]}")
    return {"target": target, "alphas": first.alphas, "models": rows, "shown_alpha": first.alphas[a],
            "files": [*files, "template.png", "curve.png"],
            "table": {"header": ["alpha", *[f"{k}: % read as {classes[target]}" for k in rows]],
                      "rows": [[f"{al:g}", *[f"{v['share_target'][i]:.1%}" for v in rows.values()]]
                               for i, al in enumerate(first.alphas)]}}


def _is_linear(model: nn.Module) -> bool:
    from ..probes.templates import is_linear

    return is_linear(model)


def _gradient(model: nn.Module, classes: list[str], out: Path, attack: str, x: torch.Tensor,
              y: torch.Tensor | None, target: int | None, eps: Sequence[float], steps: int,
              seed: int, restarts: int = 1, size: int = FOOL_BLOCK) -> dict[str, Any]:
    labels = readings(model, x) if y is None else y
    targeted = target is not None
    goal = torch.full_like(labels, target) if targeted else labels
    per_eps = []
    for e in eps:
        def run(part: slice, s: int, e: float = e) -> AttackResult:
            if attack == "fgsm":
                return fgsm(model, x[part], goal[part], e, targeted=targeted)
            return pgd(model, x[part], goal[part], e, steps=steps, targeted=targeted, seed=s,
                       restarts=restarts)

        per_eps.append(_merge_attacks(shard.run_blocks(run, len(x), size, seed)))
    rows = [{"eps": r.eps, "accuracy": float((r.pred_after == labels).float().mean()),
             "success_rate": r.metrics["success_rate"], "max_linf": r.metrics["max_linf"],
             "seconds": r.metrics["seconds"]} for r in per_eps]
    curve: dict[str, Any] = {}
    if not targeted and y is not None and len(eps) > 1:
        other = "pgd" if attack == "fgsm" else "fgsm"
        parts = shard.run_blocks(lambda part, s: robustness_curve(
            model, x[part], labels[part], eps, methods=(other,), steps=steps, seed=s), len(x), size, seed)
        counts = [c.n for c in parts]
        accuracy = [shard.weighted_mean([c.accuracy[other][i] for c in parts], counts)
                    for i in range(len(eps))]
        curve = {attack: [r["accuracy"] for r in rows], other: accuracy}
        _plot_lines(eps, {(f"PGD-{steps}" if k == "pgd" else "FGSM"): v for k, v in curve.items()},
                    out / "curve.png", "eps (L-inf)", "accuracy (%)", "accuracy under attack")
    last = per_eps[-1]
    what = "read" if y is None else "label"
    files = _grids(out, last.original[:SHOW], last.images[:SHOW],
                   [f"{what} {classes[k]}" for k in labels[:SHOW]],
                   [f"read {classes[k]}" for k in last.pred_after[:SHOW]],
                   f"{attack.upper()}{f'-{steps}' if attack == 'pgd' else ''} eps = {last.eps:g}"
                   + (f", target {classes[target]}" if targeted else ""))
    header = ["eps", "accuracy" if y is not None else "still read as before",
              "reads target" if targeted else "fooled"]
    table_rows = [[f"{r['eps']:g}", f"{r['accuracy']:.1%}", f"{r['success_rate']:.1%}"] for r in rows]
    if curve:
        other = next(k for k in curve if k != attack)
        header.append(f"PGD-{steps} accuracy" if other == "pgd" else "FGSM accuracy")
        for row, v in zip(table_rows, curve[other]):
            row.append(f"{v:.1%}")
    return {"eps": list(eps), "targeted": targeted, "target": target,
            "steps": steps if attack == "pgd" else 1, "restarts": restarts if attack == "pgd" else 1,
            "per_eps": rows, "curve": curve,
            "per_image": {"label": labels.tolist(), "pred_after": last.pred_after.tolist(),
                          "success": last.success.tolist()},
            "files": files + (["curve.png"] if curve else []),
            "table": {"header": header, "rows": table_rows}}


def _edit(model: nn.Module, classes: list[str], out: Path, x: torch.Tensor, target: int | torch.Tensor | None,
          levels: Sequence[float], threshold: float, max_edits: int, size: int = FOOL_BLOCK
          ) -> dict[str, Any]:
    if target is None:
        raise KangaeError("--attack edit needs --target K: the class the edited image should be read as")
    goal = target

    def run(part: slice, _seed: int) -> EditResult:
        tp = goal[part] if torch.is_tensor(goal) and goal.ndim else goal
        return fewest_pixel_edits(model, x[part], tp, levels=levels, threshold=threshold, max_edits=max_edits)

    r = _merge_edits(shard.run_blocks(run, len(x), size))
    c = classes
    tgt = r.target.tolist()
    before = [f"read {c[k]}, p({c[t]}) {p:.0%}"
              for k, t, p in zip(r.pred_before.tolist(), tgt, r.prob_before.tolist())]
    after = [f"{c[t]} {p:.0%}, {n} px" for t, p, n in zip(tgt, r.prob_after.tolist(), r.n_changed.tolist())]
    files = _grids(out, r.original[:SHOW], r.images[:SHOW], before[:SHOW], after[:SHOW],
                   f"fewest pixel edits to reach p >= {threshold:.0%}")
    assert r.saliency_before is not None and r.saliency_after is not None
    if shard.is_main():
        save_grid(r.saliency_before[:SHOW], out / "saliency-before.png", signed=True,
                  titles=[f"d logit {c[t]}" for t in tgt[:SHOW]], suptitle="input gradient, before")
        save_grid(r.saliency_after[:SHOW], out / "saliency-after.png", signed=True,
                  titles=[f"d logit {c[t]}" for t in tgt[:SHOW]], suptitle="input gradient, after")
    rows = [{"target": t, "read_before": c[pb], "prob_target_before": p0, "prob_target_after": p1,
             "read_after": c[pa], "pixels_changed": n, "success": s, "direction": f"{c[pb]} -> {c[t]}",
             "edits": [i for i in o if i >= 0]}
            for t, pb, p0, p1, pa, n, s, o in zip(tgt, r.pred_before.tolist(), r.prob_before.tolist(),
                                                  r.prob_after.tolist(), r.pred_after.tolist(),
                                                  r.n_changed.tolist(), r.success.tolist(),
                                                  r.edit_order.tolist())]
    return {"target": tgt, "levels": list(levels), "threshold": threshold, "max_edits": max_edits,
            "per_image": rows, "metrics": r.metrics,
            "files": [*files, "saliency-before.png", "saliency-after.png"],
            "table": {"header": ["image", "read before", "target", "p(target) before", "p(target) after",
                                 "pixels changed", "reached"],
                      "rows": [[str(i), row["read_before"], c[row["target"]],
                                f"{row['prob_target_before']:.1%}",
                                f"{row['prob_target_after']:.1%}", str(row["pixels_changed"]),
                                "yes" if row["success"] else "no"] for i, row in enumerate(rows)]}}


# ----------------------------------------------------------------------------- blocks


def _template_blocks(model: nn.Module, x: torch.Tensor, target: int, alphas: Sequence[float],
                     y: torch.Tensor | None, size: int) -> TemplateResult:
    """:func:`template_attack` block by block with the model's own template, made once from
    all the images (as one call makes it), and the blocks merged as one call's result."""
    from ..probes.attacks._common import as_images, as_labels

    xi = as_images(x)
    labels = None if y is None else as_labels(y, len(xi))
    tpl = shard.same_everywhere(weight_templates(model, xi, labels).images[target])
    parts = shard.run_blocks(lambda part, _s: template_attack(
        model, xi[part], target, alphas, template=tpl, labels=None if labels is None else labels[part],
        keep=SHOW), len(xi), size)
    pred = torch.cat([p.predictions for p in parts], 1)
    counted = (labels != target) if labels is not None else torch.ones(len(xi), dtype=torch.bool)
    share = ((pred == target) & counted).sum(1).float() / counted.sum().clamp(min=1)
    counts = [p.metrics["n"] for p in parts]
    mean_prob = [shard.weighted_mean([p.mean_prob_target[i] for p in parts], counts)
                 for i in range(len(parts[0].alphas))]
    accuracy = (pred == labels).float().mean(1).tolist() if labels is not None else None
    first = parts[0]
    return TemplateResult(first.alphas, target, first.template, share.tolist(), mean_prob, accuracy,
                          torch.cat([p.images for p in parts], 1)[:, :SHOW],
                          torch.cat([p.original for p in parts])[:SHOW], pred,
                          {"n": len(xi), "counted": int(counted.sum()),
                           "seconds": sum(p.metrics["seconds"] for p in parts), "template": "own"})


def _merge_attacks(parts: list[AttackResult]) -> AttackResult:
    """Blocks of one FGSM/PGD attack as one result, with the metrics one call reports."""
    if len(parts) == 1:
        return parts[0]
    cat = lambda key: torch.cat([getattr(p, key) for p in parts])
    x0, adv, y, before, after, success = (cat(k) for k in ("original", "images", "target", "pred_before",
                                                           "pred_after", "success"))
    first, n = parts[0], len(y)
    seconds = sum(p.metrics["seconds"] for p in parts)
    untargeted = not first.targeted
    metrics = {**first.metrics, "n": n, "success_rate": float(success.float().mean()),
               "accuracy_before": float((before == y).float().mean()) if untargeted else None,
               "accuracy_after": float((after == y).float().mean()) if untargeted else None,
               "max_linf": float((adv - x0).flatten(1).abs().amax(1).max()),
               "mean_pixels_changed": float(((adv - x0).abs() > 1e-6).flatten(1).sum(1).float().mean()),
               "seconds": seconds, "images_per_second": n / max(seconds, 1e-9)}
    return AttackResult(adv, x0, y, before, after, cat("prob_before"), cat("prob_after"), success,
                        first.method, first.eps, first.targeted, metrics)


def _merge_edits(parts: list[EditResult]) -> EditResult:
    """Blocks of the fewest-pixel edits as one result, with the metrics one call reports."""
    if len(parts) == 1:
        return parts[0]
    cat = lambda key: torch.cat([getattr(p, key) for p in parts])
    r = EditResult(*(cat(k) for k in ("images", "original", "target", "changed", "n_changed", "prob_before",
                                      "prob_after", "pred_before", "pred_after", "success", "edit_order",
                                      "prob_trace")))
    if all(p.saliency_before is not None for p in parts):
        r.saliency_before, r.saliency_after = cat("saliency_before"), cat("saliency_after")
    n, ok = len(r.success), r.success
    seconds = sum(p.metrics["seconds"] for p in parts)
    r.metrics = {**parts[0].metrics, "n": n, "success_rate": float(ok.float().mean()),
                 "mean_edits_successful": float(r.n_changed[ok].float().mean()) if ok.any() else None,
                 "candidates_scored": sum(p.metrics["candidates_scored"] for p in parts),
                 "seconds": seconds, "images_per_second": n / max(seconds, 1e-9)}
    return r


def write_prototype_comparison(models: Sequence[tuple[str, nn.Module]], classes: list[str], out: str | Path,
                               images: torch.Tensor, labels: torch.Tensor, *, steps: int = 256,
                               seed: int = 0) -> dict[str, Any]:
    """Class prototypes of several models side by side (e.g. standard and adversarially trained).

    For each model: gradient prototypes (``kangae.probes.actmax``, logit objective), verified,
    with transfer to the other models; and class-mean input gradients
    (``kangae.probes.templates``) on ``images``. ``alignment`` is the cosine similarity of
    each class's mean gradient with that class's mean image minus the mean of all images: a
    number for "perceptually aligned gradients" (Santurkar et al. 2019 report robust models
    have them). ``binarized_read_by`` is the share of the prototypes, thresholded at 0.5 (pen
    strokes on black, as a digit is drawn), that each model reads as their class: a prototype
    on a grey background can look like a digit and still be out of another model's
    distribution.
    """
    from ..probes import activation_maximization, verify_prototypes, weight_templates
    from ..probes._model import logits_of

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    k = len(classes)
    y = labels.long()
    means = torch.stack([images[y == c].mean(0) for c in range(k)])
    centred = (means - images.mean(0)).flatten(1)
    rows, grid, titles = {}, [], []
    protos = {}
    for name, m in models:
        protos[name] = activation_maximization(m, list(range(k)), steps=steps, seed=seed)
    for name, m in models:
        p = protos[name]
        others = [(n, o) for n, o in models if n != name]
        check = verify_prototypes(m, p.images, p.target, class_names=classes,
                                  check_with=[o for _, o in others])
        tpl = weight_templates(m, images, y).images
        align = torch.nn.functional.cosine_similarity(tpl.flatten(1), centred, dim=1)
        rows[name] = {"verification": check["summary"],
                      "prototype_probability": [r["probability"] for r in check["prototypes"]],
                      "transfer_to": {n: r for (n, _), r in
                                      zip(others, check["summary"].get("transfer_rate", []))},
                      "binarized_read_by": {n: float((logits_of(o, (p.images > 0.5).float()).argmax(1).cpu()
                                                     == p.target.cpu()).float().mean()) for n, o in models},
                      "gradient_alignment": align.tolist(), "mean_gradient_alignment": float(align.mean())}
        grid += [p.images, tpl / tpl.flatten(1).abs().amax(1).clamp(min=1e-12).view(-1, 1, 1, 1)]
        titles += [f"{name[:10]} {c}" for c in classes] + [f"grad {c}" for c in classes]
        save_grid(p.images, out / f"prototypes-{name}.png", titles=[
            f"{c}: p={r['probability']:.2f}" for c, r in zip(classes, check["prototypes"])],
            suptitle=f"{name}: gradient prototypes")
        save_grid(tpl, out / f"gradients-{name}.png", signed=True, titles=classes,
                  suptitle=f"{name}: class-mean input gradient (alignment {float(align.mean()):.2f})")
    save_grid(torch.cat(grid), out / "compare.png", titles=titles, ncols=k, signed=True,
              suptitle="rows: " + " | ".join(f"{n} prototypes, {n} mean gradients" for n, _ in models))
    res = {"models": rows, "classes": classes, "steps": steps, "n_images": len(images),
           "files": ["compare.png", *[f"prototypes-{n}.png" for n, _ in models],
                     *[f"gradients-{n}.png" for n, _ in models]]}
    write_json(out / "prototypes.json", res)
    return res
