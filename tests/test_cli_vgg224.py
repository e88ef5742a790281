"""Every command end to end on a VGG16-layout network at 3x224, as a user brings it (``serve``
through its app's API):
``nets.py:vgg`` + ``weights.safetensors`` + ``card.json`` with six class names, and ``--images`` of
twelve generated 224-px ``shapes`` pictures in class folders.

The network is VGG16's layout in plain torch (13 3x3 convs with in-place ReLUs in five blocks,
torchvision's layer names ``features.N`` / ``classifier.N``, an adaptive pool to 7x7, three linear
layers with dropout), randomly initialized, at 1/16 to 1/32 of the width (4-8-8-16-16 channels,
64 hidden units), so that all commands run in seconds on two cores: ~35 MMAC per picture, where
the full width costs 15.5 GMAC. He initialization throughout: torchvision's std 0.01 for the
linear layers gives logits at random that are all but equal (every probability 1/6), and
nothing to explain.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from kangae.cli import cli
from kangae.data.registry import SHAPE_CLASSES

CLASSES = list(SHAPE_CLASSES)
FACTORY = textwrap.dedent("""
    from collections import OrderedDict

    from torch import nn

    def vgg():
        # VGG16's configuration D in plain torch, torchvision's names, 1/16 to 1/32 of the width
        features, cin = [], 3
        for width, convs in zip((4, 8, 8, 16, 16), (2, 2, 3, 3, 3)):
            for _ in range(convs):
                features += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
                cin = width
            features.append(nn.MaxPool2d(2))
        model = nn.Sequential(OrderedDict(
            features=nn.Sequential(*features), avgpool=nn.AdaptiveAvgPool2d(7), flatten=nn.Flatten(),
            classifier=nn.Sequential(nn.Linear(cin * 49, 64), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 6))))
        for m in model.modules():  # He initialization
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        return model
""")


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A folder with nets.py, weights.safetensors, card.json and pics/CLASS/*.png (224 px)."""
    import sys

    from safetensors.torch import save_file

    from kangae.data.shapes import make_shapes

    root = tmp_path_factory.mktemp("vgg224")
    (root / "nets.py").write_text(FACTORY)
    sys.path.insert(0, str(root))
    try:
        import nets

        torch.manual_seed(0)
        state = nets.vgg().state_dict()
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("nets", None)
    save_file({k: v.contiguous() for k, v in state.items()}, str(root / "weights.safetensors"))
    (root / "card.json").write_text(json.dumps({
        "size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "classes": CLASSES,
        "name": "narrow-vgg16"}))
    shapes = make_shapes(12, size=224, seed=3, split="test")  # two pictures per class
    for i, (image, label) in enumerate(zip(shapes.data.images, shapes.data.labels)):
        folder = root / "pics" / CLASSES[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    photo = Image.fromarray(shapes.data.images[0].permute(1, 2, 0).numpy()).resize((300, 200))
    photo.save(root / "photo.jpg")  # a file of another size and format, centre-cropped to 224
    return root


def kangae(user: Path, *args: str, images: bool = True):
    spec = [f"{user / 'nets.py'}:vgg", "--weights", str(user / "weights.safetensors"),
            "--card", str(user / "card.json")]
    if images:
        spec += ["--images", str(user / "pics")]
    res = CliRunner().invoke(cli, [args[0], *spec, *args[1:]])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    return res.output


def picture(path: Path) -> tuple[tuple[int, int], str]:
    with Image.open(path) as im:
        return im.size, im.mode


def test_eval_reads_the_twelve_pictures_with_the_cards_names(user):
    text = kangae(user, "eval", "--json")
    res = json.loads(text[text.index("{"):])
    assert res["n"] == 12 and res["classes"] == CLASSES and res["per_class_n"] == [2] * 6
    assert 0 <= res["accuracy"] <= 1 and math.isfinite(res["loss"])


def test_layers_at_224(user):
    out = kangae(user, "layers", images=False)
    assert "input: 3x224x224" in out and "inferred: channels" in out
    rows = {line.split()[0]: line.split()[2] for line in out.splitlines() if len(line.split()) > 2}
    assert rows["net.features.0"] == "4x224x224" and rows["net.features.30"] == "16x7x7"
    assert rows["net.classifier.6"] == "6"


def test_ideas_gradient_writes_224_px_prototypes(user, tmp_path):
    out = tmp_path / "ideas"
    text = kangae(user, "ideas", "--method", "gradient", "--steps", "2", "--out", str(out))
    assert all(name in text for name in CLASSES)
    saved = load_file(str(out / "prototypes.safetensors"))
    assert saved["images"].shape == (6, 3, 224, 224) and saved["targets"].tolist() == list(range(6))
    assert picture(out / "target-00-circle.png") == ((224, 224), "RGB")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["targets"] == CLASSES and metrics["run"]["param"] == "fourier"
    assert [p["name"] for p in metrics["verification"]["prototypes"]] == CLASSES


@pytest.mark.parametrize("method, options", [("gradcam", ()), ("mask", ("--steps", "3"))])
def test_explain_pictures_and_a_photo_file(user, tmp_path, method, options):
    out = tmp_path / method
    text = kangae(user, "explain", str(user / "photo.jpg"), "--test", "2", "--method", method,
                  *options, "--out", str(out))
    doc = json.loads((out / "explanations.json").read_text())
    assert len(doc["images"]) == 3 and f"wrote {out}/ (3 panels" in text
    for entry in doc["images"]:
        assert entry["summary"].split(":")[0] in CLASSES
        assert picture(out / entry["files"][1]) == ((224, 224), "RGB")  # the picture as the model saw it
        assert (out / entry["files"][0]).is_file()


def test_explain_bench_scores_at_224(user, tmp_path):
    out = tmp_path / "bench"
    text = kangae(user, "explain-bench", "--methods", "gradcam", "--n", "2", "--pointing", "0",
                  "--sanity", "2", "--robust", "0", "--out", str(out))
    assert "pointing.csv" not in text.splitlines()[-1]  # no pointing game without boxes
    bench = json.loads((out / "bench.json").read_text())
    assert bench["n"] == 2 and set(bench["methods"]) == {"gradcam"}
    row = bench["methods"]["gradcam"]
    for key in ("deletion", "insertion", "road_morf", "road_lerf"):
        assert 0 <= row[key][0] <= 1, (key, row[key])
    assert (out / "bench.md").is_file() and (out / "cascade.png").is_file()


def test_fool_pgd_in_pixel_units(user, tmp_path):
    out = tmp_path / "fool"
    kangae(user, "fool", "--attack", "pgd", "--eps", "0,0.05", "--steps", "3", "--out", str(out))
    rows = json.loads((out / "fool.json").read_text())["table"]["rows"]
    assert [r[0] for r in rows] == ["0", "0.05"]
    clean, attacked = (float(r[1].rstrip("%")) for r in rows)
    assert attacked <= clean  # PGD never helps; at 0.05 a random net is fooled on most pictures
    assert picture(out / "adversarials.png")[0][0] >= 224


def test_calibrate_and_confusion(user, tmp_path):
    kangae(user, "calibrate", "--out", str(tmp_path / "cal"))
    cal = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert cal["fit_examples"] + cal["eval_examples"] == 12 and cal["temperature"] > 0
    assert (tmp_path / "cal" / "reliability.png").is_file()
    text = kangae(user, "confusion", "--out", str(tmp_path / "conf"))
    conf = json.loads((tmp_path / "conf" / "confusion.json").read_text())
    assert conf["classes"] == CLASSES and sum(map(sum, conf["matrix"])) == 12
    assert all(p["true"] in CLASSES and p["pred"] in CLASSES for p in conf["pairs"])
    assert "narrow-vgg16" in text


def test_tour_of_the_224_px_model(user, tmp_path):
    """The steps that fit a unit test's time: the prototypes and explanations at 224 px are the
    ``ideas`` and ``explain`` tests above; tests/report/test_tour_user.py runs every step."""
    out = tmp_path / "tour"
    steps = "models,learning,calibration,fooling,dreams"
    text = CliRunner().invoke(cli, [
        "tour", "--model", f"{user / 'nets.py'}:vgg", "--weights", str(user / "weights.safetensors"),
        "--card", str(user / "card.json"), "--images", str(user / "pics"), "--quick", "--only", steps,
        "--out", str(out)])
    assert text.exit_code == 0, text.output
    report = json.loads((out / "report.json").read_text())["steps"]
    assert {k: v["status"] for k, v in report.items()} == {
        "models": "ok", "learning": "ok", "calibration": "ok", "fooling": "ok", "dreams": "skipped"}
    assert report["models"]["numbers"]["yours"]["pictures"] == 12
    eps = [row[0] for row in report["fooling"]["numbers"]["pgd"]["table"]["rows"]]
    assert len(eps) == 5 and float(eps[-1]) == pytest.approx(8 / 255, abs=1e-3)  # photo radii
    assert set(report["learning"]["numbers"]["confusion"]["classes"]) == set(CLASSES)
    assert "narrow-vgg16" in (out / "report.html").read_text()


def test_serve_opens_it_on_the_picture_page_at_224(user):
    """The last command: ``kangae serve SPEC`` builds the picture page for this model, and its
    API answers a photo with the crop at 224, the top-5 in the card's names, a Grad-CAM overlay
    of the crop's size, and a prototype at 224 (few steps)."""
    import base64
    import io

    from fastapi.testclient import TestClient

    from kangae.serve import app_for
    from kangae.serve.app import LOCAL_HOSTS

    app = app_for(f"{user / 'nets.py'}:vgg", weights=user / "weights.safetensors", card=user / "card.json",
                  allowed_hosts=[*LOCAL_HOSTS, "testserver"], mask_steps=2, proto_steps=2)
    photo = base64.b64encode((user / "photo.jpg").read_bytes()).decode()

    def image(url: str) -> Image.Image:
        assert url.startswith("data:image/png;base64,")
        return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))

    with TestClient(app) as client:
        info = client.get("/api/info").json()
        assert info["mode"] == "picture" and info["shape"] == [3, 224, 224] and info["classes"] == CLASSES
        out = client.post("/api/predict", json={"image": "data:image/jpeg;base64," + photo}).json()
        assert image(out["crop"]).size == (224, 224)
        names = [t["name"] for t in out["top"]]
        assert len(names) == 5 and set(names) <= set(CLASSES)
        probs = [t["probability"] for t in out["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        cam = client.post("/api/explain", json={"image": out["crop"], "prepared": True,
                                                "method": "gradcam"}).json()
        assert image(cam["overlay"]).size == (224, 224)
        for _ in range(4):  # the server waits 30 s at most per request
            proto = client.get(f"/api/prototypes/{CLASSES.index(names[0])}?wait=30")
            assert proto.status_code == 200, proto.text[:300]
            if proto.json()["ready"]:
                break
        assert proto.json()["ready"] and image(proto.json()["image"]).size == (224, 224)
        assert proto.json()["name"] == names[0] and proto.json()["settings"]["steps"] == 2
