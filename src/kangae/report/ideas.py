"""``kangae ideas``: prototypes of a run's classes (or a layer's channels), verified and saved;
and Deep Dream of the user's pictures on a layer (``--method dream``).

Writes ``grid.png``, one PNG per target, ``search.gif`` and ``metrics.json`` to ``out``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import KangaeError, UnknownNameError
from ..models.layers import get_layer
from ..probes import (
    Regularizers,
    activation_maximization,
    deep_dream,
    search_prototypes,
    verify_prototypes,
    weight_templates,
)
from ..probes._model import input_shape_of
from ..probes.actmax import count_targets
from ..probes.result import PrototypeResult
from ..probes.verify import as_model_input
from ..utils.atomic import write_json

METHODS = ("greedy", "mc", "block", "gradient", "template", "dream")


@dataclass(frozen=True)
class TargetSpec:
    objective: str  # "class" or "channel"
    indices: list[int]
    layer: str | None = None
    given: bool = True  # False: ``layer:NAME`` without channels (16 of them; dream: the whole layer)


def read_photos(paths: list[str], shape: tuple[int, ...]) -> torch.Tensor:
    """The pictures at ``paths`` as the model sees them ``(N, C, H, W)`` in [0, 1]: grey or
    RGB as it takes, scaled and centre-cropped to its size. A bad file is one error line."""
    import numpy as np
    from PIL import ImageOps

    from ..data.pictures import decode_picture

    c, h, w = shape
    if c not in (1, 3):
        raise KangaeError(f"the model takes {c} channels; pictures can be given for 1 or 3")
    out = []
    for path in paths:
        img = decode_picture(path).convert("L" if c == 1 else "RGB")
        img = ImageOps.fit(img, (w, h), method=3)  # bicubic
        a = np.asarray(img, dtype=np.float32).reshape(h, w, c) / 255
        out.append(torch.from_numpy(a.copy()).permute(2, 0, 1))
    return torch.stack(out)


def _parse_indices(text: str, limit: int, names: list[str] | None, what: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        if m:
            out += list(range(int(m[1]), int(m[2]) + 1))
        elif part.isdigit() and (names is None or part not in names):
            out.append(int(part))
        elif names and part in names:
            out.append(names.index(part))
        else:
            valid = ", ".join(names) if names else f"0-{limit - 1}"
            raise KangaeError(f"invalid {what} '{part}'; valid: {valid}")
    bad = [i for i in out if not 0 <= i < limit]
    if bad or not out:
        valid = ", ".join(names) if names else f"0-{limit - 1}"
        raise KangaeError(f"invalid {what} {bad or text!r}; valid: {valid}")
    return out


def parse_targets(text: str, model: nn.Module, classes: list[str],
                  input_shape: tuple[int, ...]) -> TargetSpec:
    """``all``, ``3,7``, class names, or ``layer:NAME[:0-15]`` (16 channels by default)."""
    if text.startswith("layer:"):
        _, _, rest = text.partition(":")
        name, _, chans = rest.partition(":")
        get_layer(model, name)
        n = count_targets(model, "channel", name, input_shape)
        idx = _parse_indices(chans, n, None, "channel") if chans else list(range(min(16, n)))
        return TargetSpec("channel", idx, name, given=bool(chans))
    if text == "all":
        return TargetSpec("class", list(range(len(classes))))
    return TargetSpec("class", _parse_indices(text, len(classes), classes, "target"))


def compute_ideas(model: nn.Module, method: str, spec: TargetSpec, *, images: torch.Tensor | None = None,
                  labels: torch.Tensor | None = None, options: dict[str, Any] | None = None
                  ) -> PrototypeResult:
    """Run one prototype method; ``options`` go to the method's function."""
    opts = dict(options or {})
    if method not in METHODS:
        raise UnknownNameError("method", method, METHODS)
    if method == "dream":
        if spec.objective != "channel" or images is None:
            raise KangaeError("dream needs pictures (--image FILE) and a layer (--targets layer:NAME)")
        if not spec.given:
            return deep_dream(model, images, layer=spec.layer, **opts)
        # every picture with every channel given, picture by picture: one batch of N x K dreams
        k = len(spec.indices)
        target = torch.tensor(spec.indices).repeat(len(images))
        return deep_dream(model, images.repeat_interleave(k, 0), layer=spec.layer, target=target, **opts)
    if spec.objective == "channel" and method != "gradient":
        raise KangaeError("layer targets need --method gradient (the channel objective) or dream")
    if method in ("greedy", "mc", "block"):
        return search_prototypes(model, spec.indices, method=method, **opts)
    if method == "gradient":
        reg_fields = set(Regularizers.__dataclass_fields__)
        reg = Regularizers(**{k: opts.pop(k) for k in list(opts) if k in reg_fields})
        objective = opts.pop("objective", "logit" if spec.objective == "class" else "channel")
        wanted = ("logit", "prob") if spec.objective == "class" else ("channel", "neuron")
        if objective not in wanted:
            raise KangaeError(f"objective '{objective}' does not fit "
                              f"{'class' if spec.objective == 'class' else 'layer'} targets; "
                              f"use {' or '.join(wanted)}")
        return activation_maximization(model, spec.indices, objective=objective, layer=spec.layer,
                                       regularizers=reg, **opts)
    result = weight_templates(model, images, labels)
    keep = torch.tensor(spec.indices)
    result.images, result.target, result.scores = result.images[keep], keep, result.scores[keep]
    return result


def write_ideas(model: nn.Module, classes: list[str], method: str, targets: str,
                out: str | Path, *, check_with: list[nn.Module] | None = None,
                images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                options: dict[str, Any] | None = None, source: str = "",
                picture_names: list[str] | None = None) -> dict[str, Any]:
    """Compute, verify and save prototypes; returns what ``metrics.json`` holds. For
    ``dream``, ``images`` are the pictures to dream from and ``picture_names`` name them."""
    shape = input_shape_of(model)
    spec = parse_targets(targets, model, classes, shape)
    t0 = time.perf_counter()
    result = compute_ideas(model, method, spec, images=images, labels=labels, options=options)
    seconds = time.perf_counter() - t0
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if method == "dream":
        names = list(picture_names or [str(i) for i in range(len(images if images is not None else []))])
        if spec.given:  # N pictures x K channels, picture by picture
            names = [f"{n} ch {c}" for n in names for c in spec.indices]
        check = None
        titles = [f"{n}: norm {a:.3g} -> {float(b):.3g}"
                  for n, a, b in zip(names, result.metrics["start_norm"], result.scores)]
    elif spec.objective == "class":
        names = [classes[int(i)] for i in result.target]
        check = verify_prototypes(model, as_model_input(result.images, result.signed), result.target,
                                  class_names=classes, check_with=check_with or [])
        titles = [f"{n}: p={r['probability']:.2f}" for n, r in zip(names, check["prototypes"])]
    else:
        names = [f"{spec.layer}:{int(i)}" for i in result.target]
        check = None
        titles = [f"ch {int(i)}: {float(s):.2f}" for i, s in zip(result.target, result.scores)]
    label = {"template": f"{result.metrics.get('kind', 'template')}",
             "gradient": f"gradient ({result.metrics.get('objective')})",
             "dream": f"deep dream ({spec.layer})"}.get(method, method)
    result.save(out, names=names, titles=titles, title=f"{source} — {label}".strip(" —"))
    metrics = {"method": method, "label": label, "source": source, "targets": names,
               "scores": result.scores.tolist(), "seconds": seconds,
               "run": {k: v for k, v in result.metrics.items() if k not in ("objective_curve",)}}
    if check is not None:
        metrics["verification"] = check
    write_json(out / "metrics.json", json.loads(json.dumps(metrics, default=str)))
    return metrics


def format_table(metrics: dict[str, Any]) -> str:
    """The verification table the CLI prints."""
    check = metrics.get("verification")
    if not check:
        pairs = zip(metrics["targets"], metrics["scores"])
        return "\n".join(f"{n:>20}  objective {s:9.4f}" for n, s in pairs)
    rows = check["prototypes"]
    has_transfer = "transfer" in rows[0]
    head = (f"{'target':>8} {'rank':>4} {'prob':>7} {'margin':>7} {'runner-up':>9} "
            f"{'shift±2':>7} {'noise':>6}")
    lines = [head + ("  transfer" if has_transfer else "")]
    for r in rows:
        line = (f"{r['name']:>8} {r['rank']:>4} {r['probability']:>7.4f} {r['margin']:>7.4f} "
                f"{r['runner_up']:>9} {r['shift_robustness']:>7.0%} {r['noise_robustness']:>6.0%}")
        if has_transfer:
            line += "  " + " ".join("yes" if ok else "no" for ok in r["transfer"])
        lines.append(line)
    s = check["summary"]
    tail = (f"all rank 1: {'yes' if s['all_rank_1'] else 'no'}; "
            f"min probability {s['min_probability']:.4f}; "
            f"shift robustness {s['mean_shift_robustness']:.0%}; "
            f"noise robustness {s['mean_noise_robustness']:.0%}")
    if "transfer_rate" in s:
        tail += "; transfer " + ", ".join(f"{r:.0%}" for r in s["transfer_rate"])
    return "\n".join([*lines, tail])
