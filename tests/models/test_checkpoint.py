import json
import pickle

import pytest
import torch

from kangae.errors import RunError
from kangae.models import create_model
from kangae.models.checkpoint import (
    ModelMeta,
    read_checkpoint,
    read_training_state,
    write_checkpoint,
)


def _meta(**kw):
    return ModelMeta(model="cnn", classes=list("0123456789"), **kw)


def test_round_trip_gives_identical_outputs_and_a_readable_sidecar(tmp_path):
    torch.manual_seed(0)
    model = create_model("cnn").eval()
    model.normalize.mean.fill_(0.2)
    write_checkpoint(tmp_path / "ck", model, _meta(metrics={"val_acc": 0.99}))
    loaded, meta = read_checkpoint(tmp_path / "ck")
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(model(x), loaded(x))
    assert not loaded.training
    side = json.loads((tmp_path / "ck" / "model.json").read_text())
    assert side["model"] == "cnn" and side["metrics"]["val_acc"] == 0.99
    assert side["normalization"]["mean"] == [pytest.approx(0.2)]
    assert {"kangae", "torch"} <= set(side["versions"])


def test_training_state_round_trip_without_pickle(tmp_path):
    model = create_model("mlp")
    opt = torch.optim.Adam(model.parameters(), 1e-3, betas=(0.8, 0.9))
    model(torch.rand(2, 1, 28, 28)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": torch.get_rng_state(), "epoch": 3}
    write_checkpoint(tmp_path / "ck", model, ModelMeta(model="mlp"), state)
    back = read_training_state(tmp_path / "ck")
    assert back["epoch"] == 3 and torch.equal(back["rng"], state["rng"])
    opt2 = torch.optim.Adam(create_model("mlp").parameters(), 1e-3)
    opt2.load_state_dict(back["optimizer"])
    assert opt2.param_groups[0]["betas"] == (0.8, 0.9)
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(opt2.state_dict()["state"][0][k], v)


def test_a_pickle_disguised_as_weights_is_refused_and_never_run(tmp_path):
    write_checkpoint(tmp_path / "ck", create_model("softmax"), ModelMeta(model="softmax"))
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "ck" / "model.safetensors").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(RunError, match="not a readable safetensors file"):
        read_checkpoint(tmp_path / "ck")
    assert not marker.exists()


def test_missing_and_corrupt_sidecars(tmp_path):
    with pytest.raises(RunError, match="no checkpoint here"):
        read_checkpoint(tmp_path)
    write_checkpoint(tmp_path / "ck", create_model("softmax"), ModelMeta(model="softmax"))
    (tmp_path / "ck" / "model.json").write_text("{not json")
    with pytest.raises(RunError, match="not a valid kangae model sidecar"):
        read_checkpoint(tmp_path / "ck")


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    model = create_model("softmax")
    write_checkpoint(tmp_path / "ck", model, ModelMeta(model="softmax", epoch=1))
    import kangae.models.checkpoint as ck

    def explode(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "write_json", explode)
    with pytest.raises(OSError):
        write_checkpoint(tmp_path / "ck", model, ModelMeta(model="softmax", epoch=2))
    _, meta = read_checkpoint(tmp_path / "ck")
    assert meta.epoch == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


def test_checkpoint_files_are_readable_like_any_new_file(tmp_path):
    import os
    import stat

    write_checkpoint(tmp_path / "ck", create_model("softmax"), ModelMeta(model="softmax"))
    mask = os.umask(0)
    os.umask(mask)
    for f in [tmp_path / "ck", *(tmp_path / "ck").iterdir()]:
        mode = stat.S_IMODE(f.stat().st_mode)
        assert mode == (0o777 if f.is_dir() else 0o666) & ~mask, f
