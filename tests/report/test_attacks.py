"""``kangae fool`` and ``kangae train --adversarial``: files, tables, numbers and clear errors."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import kangae
from kangae.cli import cli
from kangae.errors import KangaeError
from kangae.training.adversarial import perturb


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def small_run(blob_root, tmp_path_factory):
    """One small MLP on the blobs for every test here (training it once keeps them fast)."""
    tmp = tmp_path_factory.mktemp("fool")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KANGAE_CACHE", str(tmp / "cache"))
        mp.setenv("KANGAE_OFFLINE", "1")
        kangae.train("mlp", data_dir=blob_root, out=tmp / "mlp", epochs=2, batch_size=32, progress=False,
                     tensorboard=False, snapshots=False, model_args={"hidden": 64})
    return tmp / "mlp"


@pytest.fixture
def mlp_run(small_run, blob_data):
    return small_run


def test_fool_pgd_writes_numbers_grids_and_a_curve(mlp_run, tmp_path):
    out = tmp_path / "pgd"
    res = run("fool", mlp_run, "--attack", "pgd", "--eps", "0,0.1,0.3", "--steps", "5", "--n", "40",
              "--out", out)
    assert res.exit_code == 0, res.output
    assert {"fool.json", "originals.png", "adversarials.png", "differences.png", "curve.png"} <= {
        p.name for p in out.iterdir()}
    data = json.loads((out / "fool.json").read_text())
    acc = [row["accuracy"] for row in data["per_eps"]]
    assert data["n"] == 40 and len(acc) == 3
    assert acc[0] == data["curve"]["fgsm"][0] and acc[2] <= acc[0]
    assert all(row["max_linf"] <= row["eps"] + 1e-6 for row in data["per_eps"])
    assert "PGD" not in res.output.splitlines()[0] or "accuracy" in res.output
    assert "FGSM accuracy" in res.output and "fooled" in res.output
    again = run("fool", mlp_run, "--attack", "pgd", "--eps", "0.1", "--steps", "5", "--n", "40",
                "--restarts", "3", "--out", tmp_path / "restarts")
    assert again.exit_code == 0, again.output
    data3 = json.loads((tmp_path / "restarts" / "fool.json").read_text())
    assert data3["restarts"] == 3 and data3["per_eps"][0]["accuracy"] <= acc[1]
    wrong = run("fool", mlp_run, "--attack", "fgsm", "--restarts", "3", "--out", tmp_path / "no")
    assert wrong.exit_code == 2 and "--restarts applies to --attack pgd, not" in wrong.output
    for extra, message in ((["--steps", "5"], "--steps applies to --attack pgd, not fgsm"),
                           (["--alphas", "0,1"], "--alphas applies to --attack template, not fgsm")):
        wrong = run("fool", mlp_run, "--attack", "fgsm", *extra, "--out", tmp_path / "no")
        assert wrong.exit_code == 2 and message in wrong.output  # said, not silently ignored


def test_fool_template_side_by_side_and_alpha_zero(mlp_run, tmp_path):
    out = tmp_path / "tpl"
    res = run("fool", mlp_run, "--attack", "template", "--target", "3", "--alphas", "0,1,3", "--n", "50",
              "--also", mlp_run, "--out", out)
    assert res.exit_code == 0, res.output
    data = json.loads((out / "fool.json").read_text())
    rows = data["models"]
    assert set(rows) == {"mlp", "mlp (2)"}
    assert rows["mlp"]["share_target"] == rows["mlp (2)"]["share_target"]  # the same run twice
    assert rows["mlp"]["share_target"][0] == 0.0  # alpha 0: nothing read as 3 that was not
    assert rows["mlp"]["share_target"][2] >= rows["mlp"]["share_target"][0]
    assert (out / "template.png").is_file() and "% read as 3" in res.output


def test_fool_edit_on_a_picture_and_the_misread_mode(mlp_run, tmp_path):
    pic = np.full((60, 50), 255, np.uint8)  # dark square on white: inverted on reading
    pic[20:40, 15:35] = 0
    Image.fromarray(pic).save(tmp_path / "drawing.png")
    out = tmp_path / "edit"
    res = run("fool", mlp_run, "--attack", "edit", "--target", "7", "--image", tmp_path / "drawing.png",
              "--out", out, "--max-edits", "60")
    assert res.exit_code == 0, res.output
    assert "inverted" in res.output
    data = json.loads((out / "fool.json").read_text())
    row = data["per_image"][0]
    assert data["images"] == ["drawing.png"] and row["target"] == 7
    assert row["pixels_changed"] == len(row["edits"]) and row["success"] == (row["prob_target_after"] >= 0.9)
    assert {"saliency-before.png", "saliency-after.png"} <= {p.name for p in out.iterdir()}


@pytest.mark.parametrize("args,message", [
    (["--attack", "fgsm", "--eps", "0.5,2"], "eps must lie in [0, 1]"),
    (["--attack", "fgsm", "--eps", "x"], "expected numbers"),
    (["--attack", "edit", "--target", "12"], "invalid target"),
    (["--attack", "edit"], "needs --target"),
    (["--attack", "edit", "--image", "missing.png", "--target", "1"], "missing.png: no such file"),
    (["--attack", "edit", "--threshold", "1.5", "--target", "1"], "must be in (0, 1)"),
])
def test_fool_bad_input_exits_2_without_traceback(mlp_run, tmp_path, args, message):
    res = run("fool", mlp_run, *args, "--n", "4", "--out", tmp_path / "x")
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_perturb_stays_in_the_ball_and_raises_the_loss():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    x = torch.rand(32, 1, 28, 28)
    y = torch.arange(32) % 10
    adv = perturb(model, x, y, 0.1, 0.125, 1)
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    loss = torch.nn.functional.cross_entropy
    assert loss(model(adv), y) > loss(model(x), y)
    assert all(p.grad is None for p in model.parameters())  # no parameter gradients touched


def test_adversarial_training_stores_its_settings_and_resume_refuses_changes(blob_data, tmp_path):
    out = tmp_path / "robust"
    res = run("train", "--model", "mlp", "--epochs", "1", "--batch-size", "64", "--out", out,
              "--adversarial", "fgsm-rs", "--eps", "0.2", "--adv-check", "50", "--no-tensorboard",
              "--no-snapshots")
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    assert config["adversarial"] == {"method": "fgsm-rs", "eps": 0.2, "alpha": 0.25, "steps": 1,
                                     "warmup_epochs": 0.0, "check_images": 50, "check_drop": 0.2}
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert 0 <= metrics[0]["train_pgd_acc"] <= 1 and "train_pgd_acc=" in res.output
    bad = run("train", "--model", "mlp", "--epochs", "2", "--out", out, "--resume", "--adversarial", "pgd",
              "--eps", "0.2")
    assert bad.exit_code == 2 and "adversarial=" in bad.output and "Traceback" not in bad.output
    assert run("train", "--eps", "0.2", "--out", tmp_path / "y").exit_code == 2
    assert run("train", "--adversarial", "pgd", "--out", tmp_path / "z").exit_code == 2
    assert kangae.load(out).config["adversarial"]["eps"] == 0.2
    with pytest.raises(KangaeError, match="eps"):
        kangae.train("mlp", out=tmp_path / "w", adversarial="fgsm-rs", eps=2.0, progress=False)


def test_a_model_that_never_becomes_robust_is_called_out(blob_data, tmp_path, capsys):
    # At eps 1 every image can be turned into any other: no model is robust there.
    run_ = kangae.train("mlp", out=tmp_path / "hopeless", epochs=1, batch_size=64, adversarial="fgsm-rs",
                        eps=1.0, adversarial_options={"check_images": 64}, tensorboard=False,
                        snapshots=False)
    assert run_.history[0]["train_pgd_acc"] < 0.1 and not run_.stopped
    assert "the model is not robust" in capsys.readouterr().err


def test_prototype_comparison_writes_both_models_and_their_numbers(small_run, blob_data, tmp_path):
    from kangae.report.attacks import write_prototype_comparison

    run_ = kangae.load(small_run)
    data = run_.dataset("test")
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    res = write_prototype_comparison([("a", run_.model), ("b", other)], run_.classes, tmp_path / "cmp",
                                     data.floats()[:200], data.labels[:200], steps=20)
    assert {"compare.png", "prototypes-a.png", "gradients-b.png"} <= set(res["files"])
    assert all((tmp_path / "cmp" / f).is_file() for f in res["files"])
    a = res["models"]["a"]
    assert set(a["transfer_to"]) == {"b"} and set(a["binarized_read_by"]) == {"a", "b"}
    assert all(0 <= v <= 1 for v in a["binarized_read_by"].values())
    assert -1 <= a["mean_gradient_alignment"] <= 1 and len(a["gradient_alignment"]) == 10
    # A linear model's class-mean input gradient is its weight row: alignment is defined.
    assert len(res["models"]["b"]["prototype_probability"]) == 10


def test_a_run_from_before_the_check_resumes_without_one(blob_data, tmp_path):
    from kangae.training import Callback

    class StopAfterFirstEpoch(Callback):
        def on_epoch_end(self, trainer, logs):
            raise RuntimeError("stop here")

    out = tmp_path / "old"
    options = dict(out=out, epochs=2, batch_size=64, adversarial="fgsm-rs", eps=0.2, tensorboard=False,
                   snapshots=False, progress=False)
    with pytest.raises(RuntimeError, match="stop here"):
        kangae.train("mlp", callbacks=[StopAfterFirstEpoch()], **options)
    config = json.loads((out / "config.json").read_text())
    del config["adversarial"]["check_images"], config["adversarial"]["check_drop"]
    (out / "config.json").write_text(json.dumps(config))
    resumed = kangae.train("mlp", resume=True, **options)  # --adv-check defaults do not differ
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert "train_pgd_acc" in resumed.history[0] and "train_pgd_acc" not in resumed.history[1]
