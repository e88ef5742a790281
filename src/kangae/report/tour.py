"""``kangae tour``: train, probe, and write one self-contained HTML report.

The report follows the questions a person asks about a classifier: what does it think a 7
is, where does it look, how did it learn, how sure is it (and is that honest), how easily
is it fooled, and what does it dream. Each question is a *step* that writes into its own
folder and records its numbers in ``steps/<name>.json``; a rerun skips finished steps, and
a step that fails is reported in the page while the others still run.
"""

from __future__ import annotations

import base64
import html
import json
import mimetypes
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..utils.atomic import atomic_path, write_bytes, write_json
from ..utils.threads import apply_threads


@dataclass(frozen=True)
class Settings:
    """How big each step is. ``quick`` trades accuracy of every number for time."""

    quick: bool
    main_model: str = "fast-cnn"
    main_epochs: int | None = None  # None: the model's recipe
    mlp_epochs: int | None = None
    softmax_epochs: int | None = None
    explain_images: int = 8
    mask_steps: int = 300
    bench_n: int = 100
    bench_pointing: int = 200
    bench_sanity: int = 32
    bench_mask_steps: int = 150
    bench_robust: int = 16  # images for max-sensitivity
    rise_masks: int = 4000
    cluttered_epochs: int | None = None
    cluttered_limit: int | None = None
    greedy_sweeps: int = 10
    dynamics_neighbors: int = 15
    attack_n: int = 1000
    pgd_steps: int = 40
    edit_images: int = 5
    gan_epochs: int = 3
    gan_limit: int | None = 20000
    gan_judge_n: int = 1000
    gan_lr: float = 1e-3  # 5x Radford's 2e-4: measured FD 73 vs 2047 after 3 epochs of 20k images

    @staticmethod
    def make(quick: bool) -> Settings:
        if not quick:
            return Settings(quick=False)
        return Settings(quick=True, main_epochs=2, mlp_epochs=2, softmax_epochs=2, explain_images=6,
                        mask_steps=150, bench_n=30, bench_pointing=60, bench_sanity=8,
                        bench_mask_steps=60, bench_robust=8, rise_masks=1000,
                        cluttered_epochs=1, cluttered_limit=8000, greedy_sweeps=4,
                        attack_n=300, pgd_steps=10, edit_images=3, gan_epochs=3, gan_limit=10000,
                        gan_judge_n=300)  # GAN: 82% read as the asked-for class (1 epoch: 10%)


class Skipped(Exception):
    """A step that does not apply (e.g. training dynamics of a model kangae did not train)."""


@dataclass
class StepResult:
    name: str
    status: str  # "ok", "failed", "skipped"
    seconds: float
    numbers: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    error: str = ""


@dataclass
class Tour:
    out: Path
    settings: Settings
    log: Callable[[str], None] = print
    runs: dict[str, Any] = field(default_factory=dict)
    progress: bool = True  # per-epoch lines (a bar on a terminal) while models train
    user: Any = None  # the user's own model (``kangae tour --model SPEC``): every step probes it

    @property
    def labelled(self) -> bool:
        """Whether the user's pictures carry labels (always true for kangae's own datasets)."""
        data = self.user.images if self.user is not None else None
        return data is None or bool((data.labels >= 0).all())

    def need_labels(self, what: str) -> None:
        if not self.labelled:
            raise Skipped(f"{what} needs labelled pictures: give --images a folder with one subfolder "
                          "per class")

    def run_folder(self, name: str) -> Path:
        return self.out / "runs" / name

    def resumable(self, name: str, what: str, fit: Callable[[Path, bool], Any],
                  load: Callable[[Path], Any]) -> Any:
        """The run folder ``name``: loaded when finished, resumed when stopped, fitted otherwise
        (``fit(folder, resume)``); ``done.json`` marks it finished."""
        folder = self.run_folder(name)
        done = folder / "done.json"
        if done.is_file():
            return load(folder)
        resume = (folder / "checkpoints" / "latest.json").is_file()
        self.log(f"  training {what}{' - resuming' if resume else ''}")
        run = fit(folder, resume)
        write_json(done, {"what": what})
        return run

    def trained(self, name: str, model: str, epochs: int | None, **kwargs: Any) -> Any:
        """The classifier run ``name`` (see :meth:`resumable`), kept for the other steps."""
        from ..training.run import load, train

        if name not in self.runs:
            self.runs[name] = self.resumable(
                name, f"{name} ({model}{f', {epochs} epochs' if epochs else ''})",
                lambda folder, resume: train(model, out=folder, epochs=epochs, resume=resume,
                                             progress=self.progress, device="cpu", **kwargs),
                load)
        return self.runs[name]

    def main_run(self) -> Any:
        if self.user is not None:
            return self.user
        s = self.settings
        return self.trained("main", s.main_model, s.main_epochs)

    def step(self, name: str, fn: Callable[[Tour, Path], dict[str, Any]]) -> StepResult:
        record = self.out / "steps" / f"{name}.json"
        if record.is_file():
            try:
                saved = json.loads(record.read_text())
                if saved.get("status") == "ok" and saved.get("quick") == self.settings.quick:
                    self.log(f"[{name}] done before, skipped")
                    return StepResult(name, "ok", saved["seconds"], saved["numbers"], saved["files"])
            except (OSError, ValueError, KeyError):
                pass
        self.log(f"[{name}] ...")
        folder = self.out / name
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        try:
            numbers = fn(self, folder)
            status, error = "ok", ""
        except Skipped as e:
            numbers, status, error = {}, "skipped", str(e)
            self.log(f"[{name}] skipped: {e}")
        except Exception as e:  # a failing step is reported; the others still run
            numbers = {}
            status = "failed"
            error = f"{e.__class__.__name__}: {e}\n" + "".join(traceback.format_exc(limit=-4))
            self.log(f"[{name}] FAILED: {e.__class__.__name__}: {e}")
        seconds = time.perf_counter() - start
        files = sorted(str(p.relative_to(self.out)) for p in folder.rglob("*")
                       if p.is_file() and p.suffix in (".png", ".gif"))
        write_json(record, {"status": status, "seconds": seconds, "numbers": numbers, "files": files,
                            "error": error, "quick": self.settings.quick})
        if status == "ok":
            self.log(f"[{name}] done in {seconds:.1f} s")
        if status == "skipped":
            record.unlink(missing_ok=True)  # nothing to keep: a rerun decides again
        return StepResult(name, status, seconds, numbers, files, error)


# ----------------------------------------------------------------------------- steps


def _user_models(tour: Tour) -> dict[str, Any]:
    """The user's model: accuracy on labelled pictures, else what it predicts."""
    from ..probes._model import logits_of

    run = tour.user
    data = run.dataset("test")
    row: dict[str, Any] = {"model": run.meta.model, "epochs": "-", "run": run.config.get("spec", ""),
                           "pictures": len(data), "accuracy": None, "loss": None}
    if tour.labelled:
        ev = run.evaluate()
        row.update(accuracy=ev["accuracy"], loss=ev["loss"])
    top = logits_of(run.model, data.images).argmax(1)
    counts = torch.bincount(top, minlength=len(run.classes))
    row["predicted"] = {run.classes[int(k)]: int(counts[k]) for k in counts.argsort(descending=True)[:5]
                        if counts[k]}
    return {"yours": row}


def step_models(tour: Tour, out: Path) -> dict[str, Any]:
    if tour.user is not None:
        return _user_models(tour)
    s = tour.settings
    main = tour.main_run()
    mlp = tour.trained("mlp", "mlp", s.mlp_epochs, snapshots=False)
    soft = tour.trained("softmax", "softmax", s.softmax_epochs, snapshots=False)
    numbers = {}
    for key, run in (("main", main), ("mlp", mlp), ("softmax", soft)):
        ev = run.evaluate()
        numbers[key] = {"model": run.meta.model, "accuracy": ev["accuracy"], "loss": ev["loss"],
                        "epochs": len(run.history), "run": str(run.path.relative_to(tour.out))}
    return numbers


def _user_targets(tour: Tour, most: int = 8) -> list[int]:
    """The classes the user's pictures are predicted as most often (up to ``most``)."""
    from ..probes._model import logits_of

    run = tour.user
    if len(run.classes) <= most:
        return list(range(len(run.classes)))
    counts = torch.bincount(logits_of(run.model, run.dataset("test").images).argmax(1),
                            minlength=len(run.classes))
    return [int(k) for k in counts.argsort(descending=True)[:most]]


LARGE_IDEAS = 64  # px: above this side the quick tour optimizes prototypes for 64 steps, not 256


def step_ideas(tour: Tour, out: Path) -> dict[str, Any]:
    from .ideas import write_ideas

    s = tour.settings
    if tour.user is not None:  # the model's idea of the classes it sees most in the pictures
        run = tour.user
        side = max(run.model.input_shape[1:])
        # quick shortens the search only at photo sizes: at 64 px, 64 or even 128 steps leave
        # some prototypes of the shapes ResNet read as another class; 256 make all rank first
        steps = 64 if s.quick and side > LARGE_IDEAS else 256
        options = {"steps": steps, "param": "fourier" if side > 32 else "pixel"}
        targets = ",".join(map(str, _user_targets(tour)))
        return {"gradient": write_ideas(run.model, run.classes, "gradient", targets, out / "gradient",
                                        source=run.meta.model, options=options)}
    main, mlp, soft = tour.main_run(), tour.runs.get("mlp"), tour.runs.get("softmax")
    mlp = mlp or tour.trained("mlp", "mlp", s.mlp_epochs, snapshots=False)
    soft = soft or tour.trained("softmax", "softmax", s.softmax_epochs, snapshots=False)
    numbers = {}
    numbers["gradient"] = write_ideas(main.model, main.classes, "gradient", "all", out / "gradient",
                                      check_with=[mlp.model], source=f"{main.meta.model}",
                                      options={"tv": 0.05, "jitter": 2, "steps": 256})
    numbers["greedy"] = write_ideas(mlp.model, mlp.classes, "greedy", "all", out / "greedy",
                                    check_with=[main.model], source="mlp",
                                    options={"max_sweeps": s.greedy_sweeps})
    numbers["template"] = write_ideas(soft.model, soft.classes, "template", "all", out / "template",
                                      source="softmax")
    return numbers


def tour_shows(spec: Any, model: Any) -> bool:
    """Whether the tour's picture has a column for the method: every explanation (not the
    random baseline), and layer methods only on a model with a conv layer."""
    from torch import nn

    conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return not spec.baseline and (conv or not spec.needs_conv)


LARGE_IMAGE_METHODS = ("saliency", "ig", "smoothgrad", "gradcam", "rise", "extremal", "mask")


def step_explain(tour: Tour, out: Path) -> dict[str, Any]:
    from PIL import Image

    from ..probes.attribution import explain
    from ..probes.registry import explainers
    from ..render.explain import heat_pil, overlay_pil
    from ..render.images import to_pil
    from .explain import test_images, write_explanations

    s = tour.settings
    main = tour.main_run()
    x, names = test_images(main, s.explain_images)
    masks, _ = write_explanations(main.model, main.classes, x, out / "mask", "mask", "auto", sources=names,
                                  steps=s.mask_steps)
    # one row per image (the first three), one column per registered method, side by side
    methods = [spec for spec in explainers().values() if tour_shows(spec, main.model)]
    if max(x.shape[-2:]) > 64:  # at photo sizes the sampling methods take minutes per image on a CPU
        methods = [spec for spec in methods if spec.name in LARGE_IMAGE_METHODS]
    shown = x[:3]
    columns = []
    for spec in methods:
        opts = {"steps": s.mask_steps} if "steps" in spec.options else {}
        if "n_masks" in spec.options:
            opts["n_masks"] = s.rise_masks
        if spec.name == "mask":  # already computed for every image above: the same masks
            columns.append(masks.attribution[: len(shown)])
            continue
        columns.append(explain(main.model, shown, method=spec.name, **opts).attribution)
    scale = max(1, 112 // max(shown.shape[-2:]))
    rows = [[to_pil(shown[i], scale).convert("RGB"), *(heat_pil(a[i], scale) for a in columns)]
            for i in range(len(shown))]
    w, h = rows[0][0].size
    sheet = Image.new("RGB", (len(rows[0]) * (w + 4) + 4, len(rows) * (h + 4) + 4), (255, 255, 255))
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            sheet.paste(tile, (4 + c * (w + 4), 4 + r * (h + 4)))
    with atomic_path(out / "methods.png") as tmp:
        sheet.save(tmp, format="PNG")
    # one picture per method: the same images, the heat map over each
    (out / "methods").mkdir(exist_ok=True)
    for spec, a in zip(methods, columns):
        strip = Image.new("RGB", (len(shown) * (w + 4) + 4, h + 8), (255, 255, 255))
        for i in range(len(shown)):
            strip.paste(overlay_pil(shown[i], a[i], scale), (4 + i * (w + 4), 4))
        with atomic_path(out / "methods" / f"{spec.name}.png") as tmp:
            strip.save(tmp, format="PNG")
    return {"masks": [masks.summary(i, main.classes) for i in range(len(masks))],
            "methods": ["input", *(m.name for m in methods)],
            "descriptions": {m.name: m.description for m in methods}}


def step_faithfulness(tour: Tour, out: Path) -> dict[str, Any]:
    from .explain import BENCH_METHODS, explain_bench

    s = tour.settings
    main = tour.main_run()
    if tour.user is not None:  # no boxes to point at in the user's pictures: no pointing game
        side = max(main.model.input_shape[1:])
        methods = [m for m in BENCH_METHODS if side <= 64 or m in LARGE_IMAGE_METHODS]
        return explain_bench(main, out, methods, n=min(s.bench_n, len(main.dataset("test"))), n_pointing=0,
                             n_sanity=min(s.bench_sanity, 8), mask_steps=s.bench_mask_steps, n_robust=0,
                             options={"rise": {"n_masks": s.rise_masks}},
                             log=lambda line: tour.log("  " + line))
    clut = tour.trained("cluttered", "global-cnn", s.cluttered_epochs, dataset="cluttered-mnist",
                        limit=s.cluttered_limit, snapshots=False, tensorboard=False)
    res = explain_bench(main, out, n=s.bench_n, n_pointing=s.bench_pointing, n_sanity=s.bench_sanity,
                        mask_steps=s.bench_mask_steps, cluttered_run=clut, n_robust=s.bench_robust,
                        options={"rise": {"n_masks": s.rise_masks}},
                        log=lambda line: tour.log("  " + line))
    return res


def step_learning(tour: Tour, out: Path) -> dict[str, Any]:
    from .diagnostics import write_confusion
    from .dynamics import write_dynamics

    s = tour.settings
    main = tour.main_run()
    if tour.user is not None:
        tour.need_labels("the confusion matrix")
        numbers = {"confusion": write_confusion(main, out)}
        numbers["dynamics"] = {"skipped": "training dynamics need the model's training history, which "
                                          "only a model kangae trained has"}
        return numbers
    numbers = {"confusion": write_confusion(main, out)}
    numbers["dynamics"] = write_dynamics(main, out, compare_unaligned=False,
                                         n_neighbors=s.dynamics_neighbors, progress=tour.progress)
    return numbers


def step_calibration(tour: Tour, out: Path) -> dict[str, Any]:
    from ..probes.calibration import TooFewToFit
    from .diagnostics import write_calibration

    tour.need_labels("calibration")
    try:
        return write_calibration(tour.main_run(), out)
    except TooFewToFit as e:  # too few pictures to fit a temperature on: said, not failed
        raise Skipped(f"calibration: {e}") from None


def step_fooling(tour: Tour, out: Path) -> dict[str, Any]:
    """Post 002's template addition on three models, PGD robustness, and post 000's 0 -> 9."""
    from .attacks import write_fool

    s = tour.settings
    main = tour.main_run()
    if tour.user is not None:  # PGD on the user's model; the template and edit steps are for digits
        from ..probes._model import logits_of

        data = main.dataset("test")
        x = data.floats()[: s.attack_n]
        y = data.labels[: s.attack_n] if tour.labelled else logits_of(main.model, x).argmax(1)
        photo = max(x.shape[-2:]) > 32  # photos: the 1/255-step radii of the robustness literature
        eps = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255) if photo else (0.0, 0.05, 0.1, 0.2, 0.3)
        return {"pgd": write_fool(main.model, main.classes, "pgd", out / "pgd", x, y, steps=s.pgd_steps,
                                  eps=eps, name=main.meta.model, source=main.meta.model)}
    mlp = tour.trained("mlp", "mlp", s.mlp_epochs, snapshots=False)
    soft = tour.trained("softmax", "softmax", s.softmax_epochs, snapshots=False)
    test = main.dataset("test")
    x, y = test.floats()[: s.attack_n], test.labels[: s.attack_n]
    numbers = {}
    numbers["template"] = write_fool(soft.model, soft.classes, "template", out / "template", x, y, target=7,
                                     others=[("mlp", mlp.model), (main.meta.model, main.model)],
                                     name="softmax", source="softmax")
    numbers["pgd"] = write_fool(main.model, main.classes, "pgd", out / "pgd", x, y, steps=s.pgd_steps,
                                name=main.meta.model, source=main.meta.model)
    zeros = (y == 0).nonzero().flatten()[: s.edit_images]
    numbers["edit"] = write_fool(mlp.model, mlp.classes, "edit", out / "edit", x[zeros], y[zeros], target=9,
                                 name="mlp", source="mlp")
    return numbers


def step_dreams(tour: Tour, out: Path) -> dict[str, Any]:
    """The post-001 DCGAN (at a quarter of its width, for CPU time) judged by the main model."""
    import shutil

    from ..gan import load_gan, train_gan

    s = tour.settings
    if tour.user is not None:
        raise Skipped("the GAN trains on a dataset and is judged by a model trained on it; "
                      "this tour probes a model kangae did not train")
    main = tour.main_run()
    what = (f"a conditional DCGAN (arch small, {s.gan_epochs} epochs, {s.gan_limit or 'all'} images, "
            f"lr {s.gan_lr:g})")
    run = tour.resumable("gan", what, lambda folder, resume: train_gan(
        "mnist", out=folder, epochs=s.gan_epochs, conditional=True, arch="small", lr=s.gan_lr,
        limit=s.gan_limit, classifier=main.path, judge_n=s.gan_judge_n, resume=resume,
        progress=tour.progress, tensorboard=False, echo=tour.progress, device="cpu"), load_gan)
    folder = run.path
    for name in ("progress.gif", "interpolation.gif"):
        if (folder / "samples" / name).is_file():
            shutil.copy(folder / "samples" / name, out / name)
    last = sorted((folder / "samples").glob("epoch-*.png"))
    if last:
        shutil.copy(last[-1], out / "samples.png")
    if (folder / "judge.png").is_file():
        shutil.copy(folder / "judge.png", out / "judge.png")
    keys = ("arch", "conditional", "limit", "epochs", "batch_size", "lr")
    return {"judgements": run.judgements, "config": {k: run.config.get(k) for k in keys}}


STEPS: list[tuple[str, str, Callable[[Tour, Path], dict[str, Any]]]] = [
    ("models", "The models", step_models),
    ("ideas", "What does it think a 7 is?", step_ideas),
    ("explain", "Where does it look?", step_explain),
    ("faithfulness", "Are those explanations true?", step_faithfulness),
    ("learning", "How did it learn?", step_learning),
    ("calibration", "How sure is it, and is that honest?", step_calibration),
    ("fooling", "How easily is it fooled?", step_fooling),
    ("dreams", "What does it dream?", step_dreams),
]


# ----------------------------------------------------------------------------- report


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _plus_minus(v: Any, pct: bool = False) -> str:
    """A (mean, standard error) pair as "m ± se"; "-" where nothing was measured (None or NaN,
    as a resumed step reads it back from strict JSON)."""
    if not v or v[0] is None or v[0] != v[0]:
        return "-"
    mean, se = v[0], v[1] if v[1] is not None and v[1] == v[1] else float("nan")
    return f"{mean:.1%} ± {se:.1%}" if pct else f"{mean:.3f} ± {se:.3f}"


def render_report(out: Path, results: list[StepResult], settings: Settings,
                  titles: dict[str, str], seconds: float, user: dict[str, Any] | None = None) -> Path:
    """Write ``report.html`` (every image inlined) and ``report.json`` (every number)."""
    from importlib.resources import files

    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["pct"] = lambda v: "-" if v is None else f"{v:.1%}"
    env.filters["num"] = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"
    env.filters["pm"] = _plus_minus
    template = env.from_string((files("kangae.report") / "templates" / "tour.html.j2").read_text())
    images = {}
    for r in results:
        for f in r.files:
            images[f] = _data_uri(out / f)
    page = template.render(
        steps=results, user=user, titles=titles, settings=settings, images=images, total_seconds=seconds,
        by_name={r.name: r for r in results}, generated=time.strftime("%Y-%m-%d %H:%M"),
        esc=html.escape)
    write_bytes(out / "report.html", page.encode())
    write_json(out / "report.json", json.loads(json.dumps({
        "quick": settings.quick, "seconds": seconds,
        "steps": {r.name: {"status": r.status, "seconds": r.seconds, "numbers": r.numbers,
                           "files": r.files, "error": r.error} for r in results}}, default=str)))
    return out / "report.html"


def run_tour(out: str | os.PathLike = "tour", quick: bool = False,
             log: Callable[[str], None] = print, only: list[str] | None = None,
             settings: Settings | None = None, progress: bool = True,
             threads: int | None = None, model: Any = None) -> dict[str, Any]:
    """Run every step (skipping finished ones) and write the report; returns report.json's data.

    ``threads`` fixes torch's thread count; by default it is chosen again before every step
    from the CPUs other programs leave free (a busy core stalls every intra-op thread), and
    each choice is logged. ``model`` is the user's own :class:`~kangae.training.run.Run` (see
    :func:`kangae.open_model`, with its ``images``): every step then probes it instead of
    training kangae's models, and steps that need a training history say they were skipped."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = settings or Settings.make(quick)
    quick = settings.quick
    tour = Tour(out, settings, log, progress=progress, user=model)
    mode = "quick: smaller models and settings, numbers are rougher" if quick else "full settings"
    log(f"kangae tour -> {out}/ ({mode})")
    start = time.perf_counter()
    results = []
    torch_threads = torch.get_num_threads()
    try:
        for name, _, fn in STEPS:
            if only and name not in only:
                continue
            log(f"[{name}] {apply_threads(threads).describe()}")
            results.append(tour.step(name, fn))
    finally:
        torch.set_num_threads(torch_threads)
    seconds = time.perf_counter() - start
    titles = {name: title for name, title, _ in STEPS}
    main = tour.run_folder("main")
    info: dict[str, Any] = {"serve_run": str(main.relative_to(out)), "quick": quick}
    if model is not None:
        info = {"serve_model": model.config, "quick": quick}
    protos = out / "ideas" / "gradient" / "prototypes.safetensors"
    if protos.is_file():
        info["prototypes"] = str(protos.relative_to(out))
    write_json(out / "tour.json", info)
    user = None if model is None else {
        "model": model.meta.model, "spec": model.config.get("spec") or str(model.path),
        "pictures": model.images.source if model.images is not None else None}
    path = render_report(out, results, settings, titles, seconds, user)
    failed = [r.name for r in results if r.status == "failed"]
    log(f"wrote {path} in {seconds:.0f} s" + (f"; failed steps: {', '.join(failed)}" if failed else ""))
    return {"report": str(path), "seconds": seconds, "failed": failed}
