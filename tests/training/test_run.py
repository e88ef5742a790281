import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import kangae
from kangae.errors import KangaeError, RunError
from kangae.training import Callback, TrainingInterrupted, find_checkpoint

FAST = dict(model="cnn", epochs=3, batch_size=64, lr=2e-3, progress=False)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_run_folder_is_a_logdir_with_config_metrics_and_checkpoints(blob_data, tmp_path):
    run = kangae.train(out=tmp_path / "r", **FAST)
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"config.json", "metrics.jsonl", "checkpoints"} <= files
    assert any(f.startswith("events.out.tfevents") for f in files)
    lines = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3]
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["model"] == "cnn" and cfg["recipe"]["epochs"] == 3
    assert run.history[-1]["val_acc"] > 0.9
    assert find_checkpoint(tmp_path / "r").name == "epoch-0003"
    assert len(list((tmp_path / "r" / "checkpoints").glob("epoch-*"))) == 2  # keeps the last two


def test_load_gives_the_same_model_and_eval(blob_data, tmp_path):
    run = kangae.train(out=tmp_path / "r", **FAST)
    loaded = kangae.load(tmp_path / "r")
    x = torch.rand(5, 1, 28, 28)
    assert torch.allclose(run.predict(x), loaded.predict(x))
    res = loaded.evaluate()
    assert res["accuracy"] == pytest.approx(run.history[-1]["val_acc"])
    assert len(res["per_class_accuracy"]) == 10
    # the model normalizes with the training set's own statistics
    mean = load_train_mean()
    assert loaded.model.normalize.mean.item() == pytest.approx(mean, rel=1e-5)


def load_train_mean():
    return kangae.load_dataset("mnist").stats()[0]


def test_same_seed_same_weights(blob_data, tmp_path):
    a = kangae.train(out=tmp_path / "a", seed=7, **{**FAST, "epochs": 1})
    b = kangae.train(out=tmp_path / "b", seed=7, **{**FAST, "epochs": 1})
    c = kangae.train(out=tmp_path / "c", seed=8, **{**FAST, "epochs": 1})
    wa, wb, wc = _weights(a.model), _weights(b.model), _weights(c.model)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_interrupt_then_resume_matches_an_uninterrupted_run(blob_data, tmp_path):
    straight = kangae.train(out=tmp_path / "straight", **FAST)

    class CtrlC(Callback):
        def on_batch_end(self, t, loss, n):
            if t.state.epoch == 1 and t.state.batch == 4:
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        kangae.train(out=tmp_path / "split", callbacks=[CtrlC()], **FAST)
    assert find_checkpoint(tmp_path / "split").name == "epoch-0001-batch-00004"
    resumed = kangae.train(out=tmp_path / "split", resume=True, **{**FAST, "epochs": None})
    ws, wr = _weights(straight.model), _weights(resumed.model)
    assert all(torch.equal(ws[k], wr[k]) for k in ws), "resume must continue exactly"
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[-1]["train_loss"] == pytest.approx(straight.history[-1]["train_loss"])


def test_refuses_to_overwrite_and_to_resume_nothing(blob_data, tmp_path):
    kangae.train(out=tmp_path / "r", **{**FAST, "epochs": 1})
    with pytest.raises(KangaeError, match="already holds a run"):
        kangae.train(out=tmp_path / "r", **{**FAST, "epochs": 1})
    with pytest.raises(RunError, match="no such run folder"):
        kangae.train(out=tmp_path / "none", resume=True, **{**FAST, "epochs": None})
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="no checkpoint"):
        kangae.load(tmp_path / "empty")


def test_sigkill_mid_training_loses_at_most_one_epoch(blob_data, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "kangae.cli", "train", "--model", "cnn", "--epochs", "30",
           "--batch-size", "32", "--out", str(out), "--no-tensorboard"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere inside a later epoch, possibly while writing a checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(metrics.read_text().splitlines())
    ckpt = find_checkpoint(out)
    epoch = json.loads((ckpt / "model.json").read_text())["epoch"]
    assert epoch >= done - 1 >= 1, "the newest checkpoint is at most one epoch behind"
    kangae.load(out)  # whole and loadable
    # resume finishes the run; the metrics have each epoch exactly once
    subprocess.run([*cmd[:-3], "--out", str(out), "--resume", "--no-tensorboard"],
                   env=env, check=True, capture_output=True, timeout=300)
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == list(range(1, 31))


def test_resume_refuses_settings_that_differ_from_the_run(blob_data, tmp_path):
    kangae.train(out=tmp_path / "r", **{**FAST, "epochs": 1})
    with pytest.raises(KangaeError, match=r"lr=0.5 \(run has 0.002\)"):
        kangae.train(out=tmp_path / "r", resume=True, **{**FAST, "epochs": None, "lr": 0.5})


def test_leftovers_of_a_killed_first_checkpoint_do_not_block_a_new_run(blob_data, tmp_path):
    junk = tmp_path / "r" / "checkpoints" / ".epoch-0001.abc.tmp"
    junk.mkdir(parents=True)
    (junk / "model.safetensors").write_bytes(b"half")
    kangae.train(out=tmp_path / "r", **{**FAST, "epochs": 1})
    assert not junk.exists() and find_checkpoint(tmp_path / "r").name == "epoch-0001"


def test_a_corrupt_training_state_is_a_run_error(blob_data, tmp_path):
    kangae.train(out=tmp_path / "r", **{**FAST, "epochs": 1})
    (find_checkpoint(tmp_path / "r") / "state.json").write_text("{oops")
    with pytest.raises(RunError, match="unreadable training state"):
        kangae.train(out=tmp_path / "r", resume=True, **{**FAST, "epochs": None})


class _Poison(Callback):
    """Turns a weight into NaN after the first epoch: the second epoch's loss is NaN."""

    def on_epoch_end(self, trainer, logs):
        if logs["epoch"] == 1:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))


def test_a_diverged_epoch_is_an_error_and_the_last_finite_epoch_is_kept(blob_data, tmp_path):
    from kangae.training.trainer import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="diverged in epoch 2: train_loss is nan.*epoch 1's weights"):
        kangae.train(out=tmp_path / "r", callbacks=[_Poison()], tensorboard=True, **FAST)
    assert find_checkpoint(tmp_path / "r").name == "epoch-0001"  # no NaN checkpoint was written
    run = kangae.load(tmp_path / "r")
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]
