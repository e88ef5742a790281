"""kangae tour for a user's own model and pictures: the same report, history steps skipped."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from kangae import open_model
from kangae.report.tour import Settings, run_tour

from ..test_cli_models import FACTORY

SMALL = Settings(quick=True, explain_images=3, mask_steps=10, bench_n=6, bench_sanity=4, bench_mask_steps=10,
                 bench_robust=0, rise_masks=50, attack_n=9, pgd_steps=5)


def _pictures(root: Path, labelled: bool) -> Path:
    for k, name in enumerate(("red", "green", "blue")):
        folder = root / name if labelled else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(3):
            c = [30, 30, 30]
            c[k] = 200 + 20 * i
            Image.new("RGB", (20, 24), tuple(c)).save(folder / f"{name}-{i}.png")
    return root


def _run(tmp_path: Path, labelled: bool):
    (tmp_path / "colours.py").write_text(FACTORY)
    card = {"size": 16, "normalizes_itself": True, "classes": ["red", "green", "blue"]}
    pics = _pictures(tmp_path / "pics", labelled)
    return open_model(f"{tmp_path / 'colours.py'}:colour", card=card, images=pics)


def test_tour_of_a_user_model(tmp_path):
    user = _run(tmp_path, labelled=True)
    res = run_tour(tmp_path / "tour", settings=SMALL, progress=False, log=lambda s: None, model=user,
                   only=["models", "ideas", "explain", "learning", "calibration", "fooling", "dreams"])
    assert res["failed"] == []
    report = json.loads((tmp_path / "tour" / "report.json").read_text())["steps"]
    assert report["models"]["numbers"]["yours"]["accuracy"] == 1.0
    assert report["dreams"]["status"] == "skipped"
    # 9 pictures are too few to fit a temperature on half of them: said, not a failure
    assert report["calibration"]["status"] == "skipped"
    assert "skipped" in report["learning"]["numbers"]["dynamics"]
    assert report["fooling"]["numbers"]["pgd"]["table"]["rows"][0][1] == "100.0%"
    assert (tmp_path / "tour" / "ideas" / "gradient" / "grid.png").is_file()
    page = (tmp_path / "tour" / "report.html").read_text()
    assert "Your model <b>colour</b>" in page and "<b>Skipped</b>" in page
    # the first three pictures (the blue folder comes first) are explained as blue
    assert all(line.startswith("blue:") for line in report["explain"]["numbers"]["masks"][:3])
    # kangae serve opens the tour's model on the picture page, the tour's prototypes ready at once
    from fastapi.testclient import TestClient

    from kangae.serve import app_for

    with TestClient(app_for(tmp_path / "tour", allowed_hosts=["testserver"])) as client:
        assert client.get("/api/info").json()["mode"] == "picture"
        proto = client.get("/api/prototypes/2").json()
        assert proto["ready"] and proto["source"] == "precomputed: prototypes.safetensors"


def test_unlabelled_pictures_skip_the_steps_that_need_labels(tmp_path):
    user = _run(tmp_path, labelled=False)
    res = run_tour(tmp_path / "tour", settings=SMALL, progress=False, log=lambda s: None, model=user,
                   only=["models", "learning", "calibration"])
    assert res["failed"] == []
    steps = json.loads((tmp_path / "tour" / "report.json").read_text())["steps"]
    assert steps["models"]["numbers"]["yours"]["accuracy"] is None
    assert steps["models"]["numbers"]["yours"]["predicted"] == {"red": 3, "green": 3, "blue": 3}
    assert steps["calibration"]["status"] == "skipped" and "labelled" in steps["calibration"]["error"]
