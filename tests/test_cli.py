import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from kangae.cli import cli


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_models_lists_the_zoo():
    res = run("models")
    assert res.exit_code == 0
    for name in ("softmax", "mlp", "cnn", "fast-cnn (default)", "vgg-small"):
        assert name in res.output


def test_datasets_lists_where_files_are(blob_data):
    res = run("datasets")
    assert res.exit_code == 0
    assert str(blob_data / "mnist") in res.output and "emnist-balanced" in res.output
    assert "cluttered-mnist" in res.output and "generated from mnist" in res.output


def test_train_eval_layers_end_to_end(blob_data, tmp_path):
    out = str(tmp_path / "r")
    res = run("train", "--model", "mlp", "--epochs", "2", "--out", out, "--no-tensorboard")
    assert res.exit_code == 0, res.output
    assert "saved" in res.output and "epoch 2/2" in res.output
    res = run("eval", out, "--json")
    assert res.exit_code == 0
    assert json.loads(res.output)["accuracy"] > 0.9
    res = run("eval", out)
    assert "accuracy" in res.output and res.output.count("%") >= 11
    res = run("layers", out)
    assert res.exit_code == 0 and "hidden" in res.output and "784" in res.output


@pytest.mark.parametrize("args,needle", [
    (["train", "--model", "cnnn"], "Did you mean 'cnn'"),
    (["train", "--dataset", "mnits"], "Did you mean 'mnist'"),
    (["train", "--epochs", "0"], "must be at least 1"),
    (["eval", "/no/such/run"], "no such run folder"),
    (["layers"], "give a SPEC or --model"),
    (["train", "--model", "fast-cnn", "--model-arg", "widht=8"], "Did you mean 'width'"),
    (["train", "--model", "fast-cnn", "--model-arg", "width=wide"], "width takes an integer"),
    (["train", "--model", "fast-cnn", "--model-arg", "width=8.5"], "width takes an integer"),
    (["train", "--model", "mlp", "--model-arg", "hidden"], "expected KEY=VALUE"),
    (["train", "--model", "softmax", "--model-arg", "hidden=3"], "no argument 'hidden' (it takes none)"),
])
def test_usage_errors_exit_2_without_traceback(args, needle):
    res = run(*args)
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output


def test_train_takes_model_arguments(blob_data, tmp_path):
    out = tmp_path / "narrow"
    res = run("train", "--model", "mlp", "--epochs", "1", "--out", str(out), "--no-tensorboard",
              "--no-snapshots", "--model-arg", "hidden=24")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "config.json").read_text())["model_args"] == {"hidden": 24}
    import kangae

    assert kangae.load(out).model.hidden.out_features == 24
    with pytest.raises(kangae.KangaeError, match="Did you mean 'hidden'"):
        kangae.train("mlp", out=tmp_path / "typo", model_args={"hiden": 24}, progress=False)
    res = run("train", "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "neg"), "--model-arg",
              "hidden=-3")
    assert res.exit_code == 2 and "cannot build model 'mlp'" in res.output and "Traceback" not in res.output
    # On --resume the run's own model decides which arguments exist; a change is refused.
    res = run("train", "--epochs", "2", "--out", str(out), "--resume", "--model-arg", "hidden=32")
    assert res.exit_code == 2 and "model_args={'hidden': 32} (run has {'hidden': 24})" in res.output


def test_run_folder_without_checkpoint(tmp_path):
    res = run("eval", str(tmp_path))
    assert res.exit_code == 2 and "no checkpoint" in res.output


def test_console_script_reports_missing_data_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kangae.cli", "eval", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_every_command_takes_threads_and_leaves_torch_as_it_found_it():
    import torch

    from kangae.cli import cli as group

    assert all(any(p.name == "threads" for p in cmd.params) for cmd in group.commands.values())
    before = torch.get_num_threads()
    res = run("models", "--threads", "1")
    assert res.exit_code == 0 and torch.get_num_threads() == before
    res = run("models", "--threads", "0")
    assert res.exit_code == 2 and "--threads" in res.output


def test_library_errors_are_told_in_flags(mlp_run):
    res = run("train", "--model", "mlp", "--out", str(mlp_run), "--epochs", "1")
    assert res.exit_code == 2 and "pass --resume to continue it or choose another --out" in res.output
    res = run("train", "--eps", "0.3", "--out", str(mlp_run) + "-x")
    assert res.exit_code == 2 and "pass --adversarial too" in res.output



@pytest.mark.parametrize("name, shape, rows", [
    ("vgg16", "3x224x224", {"features.0": "64x224x224", "features.30": "512x7x7", "classifier.6": "1000"}),
    ("resnet", "1x28x28", {"stem.conv": "16x28x28", "stage3": "64x7x7", "logits": "10"}),
])
def test_layers_of_a_zoo_model_at_its_own_input_shape(name, shape, rows):
    res = run("layers", "--model", name)
    assert res.exit_code == 0, res.output
    assert f"input: {shape}" in res.output
    table = {line.split()[0]: line.split()[2] for line in res.output.splitlines() if len(line.split()) > 2}
    assert {k: table.get(k) for k in rows} == rows


@pytest.mark.parametrize("option,value,message", [
    ("--lr", "nan", "--lr: must be a finite number, got nan"),
    ("--lr", "inf", "--lr: must be a finite number, got inf"),
    ("--shift", "-3", "--shift: must be at least 0, got -3"),
])
def test_train_refuses_numbers_that_cannot_train(blob_data, tmp_path, option, value, message):
    res = run("train", "--model", "mlp", "--epochs", "1", option, value, "--out", str(tmp_path / "r"))
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()
