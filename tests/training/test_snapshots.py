import os
import signal

import pytest
import torch

import kangae
from kangae.errors import UnknownNameError
from kangae.models import create_model
from kangae.training import Callback, TrainingInterrupted
from kangae.training.snapshots import default_layer, read_snapshot, read_subset, snapshot_epochs


def test_snapshots_exist_for_epoch_0_to_n_with_a_fixed_stratified_subset(blob_data, tmp_path):
    run = kangae.train("cnn", out=tmp_path / "r", epochs=2, batch_size=64, progress=False,
                       model_args={"hidden": 24})
    assert snapshot_epochs(run.path) == [0, 1, 2]
    subset, meta = read_subset(run.path)
    assert meta["layer"] == "hidden" and meta["n_train"] == 640 and meta["n_test"] == 200
    assert torch.bincount(subset["train_labels"]).tolist() == [64] * 10
    first, last = read_snapshot(run.path, 0), read_snapshot(run.path, 2)
    assert first["train"].dtype == torch.float16 and first["train"].shape == (640, 24)
    assert last["test"].shape == (200, 24)
    assert not torch.equal(first["train"], last["train"])  # training moved the features
    # the last snapshot is the final model's `hidden` output on the recorded images
    from kangae.training.snapshots import layer_features
    again = layer_features(run.model, "hidden", subset["test_images"]).half()
    assert torch.allclose(again.float(), last["test"].float(), atol=1e-2)
    projector = (tmp_path / "r" / "projector_config.pbtxt").read_text()
    assert "hidden (test)" in projector


def test_resume_keeps_epoch_0_and_adds_the_rest(blob_data, tmp_path):
    class CtrlC(Callback):
        def on_batch_end(self, t, loss, n):
            if t.state.epoch == 1 and t.state.batch == 2:
                os.kill(os.getpid(), signal.SIGINT)

    args = {"model": "mlp", "out": tmp_path / "r", "batch_size": 64, "progress": False,
            "tensorboard": False}
    with pytest.raises(TrainingInterrupted):
        kangae.train(epochs=3, callbacks=[CtrlC()], **args)
    assert snapshot_epochs(tmp_path / "r") == [0, 1]
    epoch0 = read_snapshot(tmp_path / "r", 0)["train"]
    kangae.train(resume=True, **args)
    assert snapshot_epochs(tmp_path / "r") == [0, 1, 2, 3]
    assert torch.equal(read_snapshot(tmp_path / "r", 0)["train"], epoch0)


def test_default_layer_is_the_penultimate_representation(blob_data, tmp_path):
    assert default_layer(create_model("cnn")) == "hidden"
    assert default_layer(create_model("softmax")) == "flatten"
    with pytest.raises(UnknownNameError, match="unknown layer 'nope'"):
        kangae.train("mlp", out=tmp_path / "r", epochs=1, progress=False, snapshot_layer="nope")
