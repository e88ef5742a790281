"""Writes examples/*.ipynb (no outputs): one short notebook per question the report asks."""
from pathlib import Path

import nbformat as nbf

OUT = Path(__file__).resolve().parent
SETUP = '''import kangae
import kangae.probes as probes

run = kangae.train(MODEL, epochs=EPOCHS, limit=LIMIT, out=f"runs/examples-{MODEL}", progress=False,
                   tensorboard=False, snapshots=False)
test = kangae.load_dataset("mnist", "test").subset(N_IMAGES, seed=0)
x, y = test.floats(), test.labels.long()
print(run.evaluate(limit=None)["accuracy"] if False else run.history[-1])'''

BOOKS = {
"01-what-does-it-think-a-7-is": ("What does the model think a 7 is?",
 "Class prototypes three ways: post 000's black-box pixel search, post 004's gradient activation maximization, and post 002's weight templates; each one verified (does the model, and does another, read it as the class?).",
 {"MODEL": "mlp", "EPOCHS": 3, "LIMIT": None, "N_IMAGES": 500, "STEPS": 256, "SWEEPS": 10},
 [("md", "Greedy pixel search: forward passes only, every class in one batch."),
  ("code", "found = probes.search_prototypes(run.model, target=\"all\", max_sweeps=SWEEPS)\nfound"),
  ("code", "check = probes.verify_prototypes(run.model, found.images, target=found.target, class_names=run.classes)\ncheck[\"summary\"]"),
  ("md", "Gradient ascent on each class logit, with jitter so the picture survives small shifts."),
  ("code", "ideas = probes.activation_maximization(run.model, target=\"all\", steps=STEPS,\n                                        regularizers=probes.Regularizers(jitter=2))\nideas"),
  ("code", "ideas.save(\"ideas-gradient\")  # the files `kangae ideas` writes\nprobes.verify_prototypes(run.model, ideas.images, target=ideas.target)[\"summary\"]")]),
"02-where-does-it-look": ("Where does it look?",
 "Which pixels a decision rests on: Captum's saliency and Grad-CAM, and post 001's meaningful-perturbation mask.",
 {"MODEL": "fast-cnn", "EPOCHS": 2, "LIMIT": None, "N_IMAGES": 8, "STEPS": 300},
 [("code", "from kangae.render.explain import panel\n\nmask = probes.explain(run.model, x, target=y, method=\"mask\", steps=STEPS)\nfor i in range(3):\n    print(mask.summary(i, run.classes))\npanel(x[0], mask.attribution[0], mask.perturbed[0], title=mask.summary(0, run.classes))"),
  ("code", "cam = probes.explain(run.model, x, target=y, method=\"gradcam\")\npanel(x[1], cam.attribution[1], title=\"Grad-CAM\")")]),
"03-are-the-explanations-true": ("Are those explanations true?",
 "An explanation is measured, not just shown: deleting the pixels it ranks first should kill the score fastest (deletion AUC, lower is better), and an explanation of a randomized model should differ (Adebayo's sanity check, low rank correlation).",
 {"MODEL": "fast-cnn", "EPOCHS": 2, "LIMIT": None, "N_IMAGES": 16, "STEPS": 150},
 [("code", "import torch\n\nrows = {}\nfor method in [\"saliency\", \"ig\", \"mask\"]:\n    options = {\"steps\": STEPS} if method == \"mask\" else {}\n    e = probes.explain(run.model, x, target=y, method=method, **options)\n    scores = probes.deletion_insertion(run.model, x, e.attribution, target=e.target)\n    rows[method] = float(scores[\"deletion\"].mean())\nrandom = probes.deletion_insertion(run.model, x, torch.rand_like(x), target=y)\nrows[\"random\"] = float(random[\"deletion\"].mean())\nrows"),
  ("code", "from kangae.render.explain import panel\n\npanel(x[0], e.attribution[0], e.perturbed[0], title=f\"mask: deletion AUC {rows['mask']:.3f}\")"),
  ("code", "rho = probes.sanity_check(lambda m, xs, ts: probes.explain(m, xs, target=ts, method=\"saliency\").attribution,\n                          run.model, x, y)\nfloat(rho.mean())")]),
"04-how-did-it-learn": ("How did it learn?",
 "The training curves, and which classes the model still mixes up (post 003).",
 {"MODEL": "mlp", "EPOCHS": 3, "LIMIT": None, "N_IMAGES": 1000},
 [("code", "from kangae.render.plots import as_picture, plot_curves\n\nas_picture(lambda path: plot_curves(run.history, path, title=MODEL))"),
  ("code", "mixed = probes.confusion_of(run.model, x, target=y)\nprint(mixed.pairs[:3])\nmixed")]),
"05-how-sure-is-it": ("How sure is it, and is that honest?",
 "Calibration (post 002): expected calibration error before and after temperature scaling.",
 {"MODEL": "mlp", "EPOCHS": 3, "LIMIT": None, "N_IMAGES": 2000},
 [("code", "from kangae.probes._model import logits_of\n\nscaled = probes.temperature_scaling(logits_of(run.model, x), target=y)\nprint(f\"T = {scaled['temperature']:.2f}: ECE {scaled['before'].metrics['ece']:.2%} -> {scaled['after'].metrics['ece']:.2%}\")\nscaled[\"after\"]")]),
"06-how-easily-is-it-fooled": ("How easily is it fooled?",
 "Post 002's template addition, FGSM and PGD, and post 000's fewest pixel edits.",
 {"MODEL": "mlp", "EPOCHS": 3, "LIMIT": None, "N_IMAGES": 200, "PGD_STEPS": 40},
 [("code", "curve = probes.robustness_curve(run.model, x, target=y, eps_list=(0, 0.05, 0.1, 0.2), steps=PGD_STEPS)\ncurve"),
  ("code", "pushed = probes.template_attack(run.model, x, target=7, alphas=(0, 0.25, 0.5, 1.0), labels=y)\nprint(pushed.share_target)\npushed"),
  ("code", "edits = probes.fewest_pixel_edits(run.model, x[:4], target=9, max_edits=60)\nprint(edits.n_changed.tolist())\nedits")]),
"07-what-does-it-dream": ("What does it dream?",
 "Post 001's DCGAN, judged by the classifier after every epoch: a Fréchet distance in its features, and the share of samples read as the asked-for class.",
 {"MODEL": "mlp", "EPOCHS": 2, "LIMIT": None, "N_IMAGES": 100, "GAN_EPOCHS": 3, "GAN_LIMIT": 10000},
 [("code", "from kangae.gan import train_gan\n\ngan = train_gan(out=\"runs/examples-gan\", epochs=GAN_EPOCHS, limit=GAN_LIMIT, arch=\"small\", conditional=True,\n                lr=1e-3, classifier=run.path, judge_n=500, progress=False, tensorboard=False, echo=False)\ngan.judgements[-1]"),
  ("code", "from IPython.display import Image\n\nImage(filename=str(gan.path / \"judge.png\"))")]),
}

for stem, (title, intro, params, cells) in BOOKS.items():
    nb = nbf.v4.new_notebook()
    nb.cells.append(nbf.v4.new_markdown_cell(f"# {title}\n\n{intro}\n\nThe next cell holds the settings; the test suite runs this notebook with smaller ones."))
    p = nbf.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()))
    p.metadata["tags"] = ["parameters"]
    nb.cells.append(p)
    setup = SETUP if any("probes." in src for _, src in cells) else SETUP.replace("import kangae.probes as probes\n", "")
    nb.cells.append(nbf.v4.new_code_cell(setup.replace('\nprint(run.evaluate(limit=None)["accuracy"] if False else run.history[-1])', '\nrun.history[-1]')))
    for kind, src in cells:
        nb.cells.append(nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbf.write(nb, OUT / f"{stem}.ipynb")
print("ok")
