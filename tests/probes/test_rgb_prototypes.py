"""Known answer on colour pictures: the class prototypes of a small ResNet trained briefly on
``shapes`` (gradient activation maximization with kangae's defaults at 64 px: a Fourier image
with decorrelated colour, Lucid's standard transforms, 256 steps, all six classes in one
batch) are each read as their own class, from Python and from ``kangae ideas``."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from kangae.cli import cli
from kangae.probes.actmax import activation_maximization
from kangae.probes.verify import verify_prototypes


@pytest.fixture(scope="module")
def prototypes(shapes_resnet_run):
    return activation_maximization(shapes_resnet_run.model, "all")


def test_every_class_prototype_ranks_first(shapes_resnet_run, prototypes):
    run, r = shapes_resnet_run, prototypes
    assert r.metrics["param"] == "fourier" and r.metrics["regularizers"]["transforms"] == "standard"
    assert r.images.shape == (6, 3, 64, 64) and r.target.tolist() == list(range(6))
    with torch.no_grad():
        read = run.model(r.images).argmax(1)
    assert read.tolist() == list(range(6)), f"read as {[run.classes[k] for k in read]}"
    check = verify_prototypes(run.model, r.images, r.target, class_names=run.classes)
    assert check["summary"]["all_rank_1"] and check["summary"]["min_probability"] > 0.9


def test_kangae_ideas_on_the_run_gives_the_same_prototypes(shapes_resnet_run, prototypes, tmp_path):
    out = tmp_path / "ideas"
    threads = str(torch.get_num_threads())  # as the fixture's: the same sums in the same order
    res = CliRunner().invoke(cli, ["ideas", str(shapes_resnet_run.path), "--method", "gradient",
                                   "--out", str(out), "--threads", threads])
    assert res.exit_code == 0, res.output
    assert "all rank 1: yes" in res.output
    for name in shapes_resnet_run.classes:
        assert any(line.split()[:2] == [name, "1"] for line in res.output.splitlines()), res.output
    saved = load_file(str(out / "prototypes.safetensors"))
    torch.testing.assert_close(saved["images"], prototypes.images, atol=1e-5, rtol=0)
    check = json.loads((out / "metrics.json").read_text())["verification"]
    assert [p["rank"] for p in check["prototypes"]] == [1] * 6


def test_the_quick_tour_shows_prototypes_that_rank_first(shapes_resnet_run, prototypes, tmp_path):
    """The tour of a 64-px model, even --quick, optimizes as long as the defaults do."""
    from kangae import open_model
    from kangae.report.tour import Settings, run_tour

    user = open_model(str(shapes_resnet_run.path))
    res = run_tour(tmp_path / "tour", settings=Settings.make(True), progress=False, log=lambda s: None,
                   model=user, only=["ideas"])
    assert res["failed"] == []
    steps = json.loads((tmp_path / "tour" / "report.json").read_text())["steps"]
    check = steps["ideas"]["numbers"]["gradient"]["verification"]
    assert check["summary"]["all_rank_1"], [(p["name"], p["rank"]) for p in check["prototypes"]]
