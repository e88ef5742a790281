"""The command line on a model kangae did not train: SPEC, --weights, --card and --images."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from kangae.cli import cli

FACTORY = textwrap.dedent("""
    import torch
    from torch import nn

    def colour():
        # class k is the k-th colour channel's mean brightness: the right answer is known
        # (no ReLU: a pixel PGD's random start puts at 0 would have no gradient there)
        net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))
        with torch.no_grad():
            net[0].weight.copy_(torch.eye(3).view(3, 3, 1, 1)); net[0].bias.zero_()
            net[3].weight.copy_(torch.eye(3) * 8); net[3].bias.zero_()
        return net
""")


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture()
def user(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "colours.py").write_text(FACTORY)
    (tmp_path / "card.json").write_text(json.dumps({"size": 16, "normalizes_itself": True,
                                                    "classes": ["red", "green", "blue"]}))
    for k, name in enumerate(("red", "green", "blue")):
        (tmp_path / "pics" / name).mkdir(parents=True)
        for i in range(3):
            c = [30, 30, 30]
            c[k] = 200 + 20 * i
            Image.new("RGB", (20 + 5 * i, 24), tuple(c)).save(tmp_path / "pics" / name / f"{i}.png")
    (tmp_path / "pics" / "blue" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return tmp_path


def test_eval_on_labelled_pictures_reports_the_bad_file_and_exits_2_after_the_rest(user):
    res = run("eval", "colours.py:colour", "--card", "card.json", "--images", "pics")
    assert res.exit_code == 2, res.output  # the others were evaluated; the bad one named
    assert "accuracy 100.00% (n=9" in res.output
    assert "pics/blue/bad.png: not a readable image" in res.output
    last = res.output.rstrip().splitlines()[-1]
    assert last == "error: 1 picture could not be read (named above); the rest were done"
    Path("pics/blue/bad.png").unlink()
    assert run("eval", "colours.py:colour", "--card", "card.json", "--images", "pics").exit_code == 0


def test_confusion_and_calibrate_name_the_pictures_not_a_test_split(user):
    res = run("confusion", "colours.py:colour", "--card", "card.json", "--images", "pics", "--out", "cm")
    assert res.exit_code == 2, res.output  # pics/blue/bad.png; the rest is written
    assert "on pics images: accuracy 100.00%" in res.output and "on test" not in res.output
    doc = json.loads(Path("cm/confusion.json").read_text())
    assert doc["dataset"] == "pics" and doc["split"] == "images"
    res = run("calibrate", "colours.py:colour", "--card", "card.json", "--images", "pics", "--out", "ca",
              "--bins", "3")  # 9 good pictures: too few to fit a temperature on
    assert res.exit_code == 2 and "needs at least 5 examples to fit T on" in res.output
    for k, name in enumerate(("red", "green", "blue")):
        (Path("many") / name).mkdir(parents=True)
        for i in range(14):
            c = [30 + i, 30, 30]
            c[k] = 120 + 9 * i
            Image.new("RGB", (16, 16), tuple(c)).save(Path("many") / name / f"{i}.png")
    res = run("calibrate", "colours.py:colour", "--card", "card.json", "--images", "many", "--out", "ca",
              "--bins", "3")
    assert res.exit_code == 0, res.output
    assert "many images; numbers on the other" in res.output and "test images" not in res.output


def test_explain_a_photo_file_and_a_folder(user):
    Image.new("RGB", (40, 30), (20, 220, 20)).save("leaf.jpg")
    res = run("explain", "colours.py:colour", "leaf.jpg", "--card", "card.json", "--method", "saliency",
              "--out", "ex")
    assert res.exit_code == 0, res.output
    doc = json.loads(Path("ex/explanations.json").read_text())
    assert doc["images"][0]["summary"].startswith("green")


def test_fool_in_pixel_units(user):
    res = run("fool", "colours.py:colour", "--card", "card.json", "--images", "pics", "--attack", "pgd",
              "--eps", "0,0.5", "--steps", "10", "--out", "fo")
    assert res.exit_code == 2, res.output  # pics/blue/bad.png; the rest is written
    rows = json.loads(Path("fo/fool.json").read_text())["table"]["rows"]
    assert rows[0][:2] == ["0", "100.0%"]  # clean pictures are all right
    assert rows[1][0] == "0.5" and rows[1][1] == "0.0%"  # half the pixel range flips every colour


def test_layers_shows_the_card(user):
    res = run("layers", "colours.py:colour", "--card", "card.json")
    assert res.exit_code == 0, res.output
    assert "inferred: channels" in res.output and "net.0" in res.output


@pytest.mark.parametrize("card,message", [
    ({"normalizes_itself": True}, "'size' is missing"),
    ({"size": 16, "normalizes_itself": True, "classes": ["a"]}, "'classes' has 1 names but the model has 3"),
    ({"size": 16}, "give 'mean' and 'std'"),
])
def test_a_bad_card_exits_2_with_one_line(user, card, message):
    Path("bad.json").write_text(json.dumps(card))
    res = run("eval", "colours.py:colour", "--card", "bad.json", "--images", "pics")
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output
    assert len([line for line in res.output.splitlines() if line.startswith("error:")]) == 1


def test_unlabelled_pictures_refuse_eval_but_explain(user):
    flat = Path("flat")
    flat.mkdir()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(flat / "x.png")
    res = run("eval", "colours.py:colour", "--card", "card.json", "--images", "flat")
    assert res.exit_code == 2 and "needs labels" in res.output
    res = run("explain", "colours.py:colour", "--card", "card.json", "--images", "flat", "--test", "1",
              "--method", "gradcam", "--out", "ex")
    assert res.exit_code == 0, res.output
    assert json.loads(Path("ex/explanations.json").read_text())["images"][0]["summary"].startswith("red")


def test_unlabelled_pictures_are_read_by_the_model_where_a_command_needs_classes(user):
    """fool, ideas --method template and explain-bench stood on the -1 of a flat folder."""
    flat = Path("flat")
    flat.mkdir()
    for i, colour in enumerate([(200, 10, 10), (10, 10, 220), (10, 200, 10)]):
        Image.new("RGB", (16, 16), colour).save(flat / f"{i}.png")
    res = run("fool", "colours.py:colour", "--card", "card.json", "--images", "flat", "--attack", "pgd",
              "--eps", "0,0.5", "--steps", "10", "--out", "fo")
    assert res.exit_code == 0, res.output
    rows = json.loads(Path("fo/fool.json").read_text())["table"]["rows"]
    assert rows[0][:2] == ["0", "100.0%"] and rows[1][1] == "0.0%"  # measured against its readings
    res = run("ideas", "colours.py:colour", "--card", "card.json", "--images", "flat", "--method", "template",
              "--out", "id")
    assert res.exit_code == 0, res.output
    assert "the model reads as that class" in res.output
    res = run("explain-bench", "colours.py:colour", "--card", "card.json", "--images", "flat",
              "--methods", "saliency", "--n", "3", "--pointing", "0", "--sanity", "8", "--robust", "1",
              "--out", "eb")
    assert res.exit_code == 0, res.output
    assert "explanation is of the class the model reads" in res.output
    assert json.loads(Path("eb/bench.json").read_text())["n_sanity"] == 3  # the pictures there are
    res = run("fool", "colours.py:colour", "--card", "card.json", "--images", "flat", "--attack", "edit",
              "--misread", "--out", "fe")
    assert res.exit_code == 2 and "--misread needs labels" in res.output


def test_a_pickled_model_is_refused_from_the_cli(user):
    import importlib
    import sys

    sys.path.insert(0, str(user))
    try:
        colours = importlib.import_module("colours")
        torch.save(colours.colour(), "whole.pt")
    finally:
        sys.path.remove(str(user))
        sys.modules.pop("colours", None)
    res = run("eval", "colours.py:colour", "--weights", "whole.pt", "--card", "card.json", "--images", "pics")
    assert res.exit_code == 2 and "refused" in res.output and "Traceback" not in res.output
