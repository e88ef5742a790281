"""Adversarial training's guard against catastrophic overfitting (Wong et al. 2020, 5.3)."""

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from kangae.models.checkpoint import MODEL_FILE, ModelMeta, read_meta, read_training_state
from kangae.training.adversarial import AdversarialTrainer, settings
from kangae.training.callbacks import Callback, Checkpointer


class ThresholdModel(nn.Module):
    """Class 0 when pixel (0, 0) is above 0.5, class 1 below: the robust answer is known."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        z = self.scale * (x[:, 0, 0, 0] - 0.5)
        return torch.stack([z, -z], dim=1)


def _images(values):
    x = torch.zeros(len(values), 1, 4, 4)
    x[:, 0, 0, 0] = torch.tensor(values)
    return x


class Scripted(AdversarialTrainer):
    """The check's accuracies come from a script, so the stop rule is tested on its own."""

    def __init__(self, *args, script, **kwargs):
        super().__init__(*args, **kwargs)
        self.script = list(script)

    def robust_accuracy(self):
        return self.script[self.state.epoch]


class WeightLog(Callback):
    def __init__(self):
        self.weights = {}

    def on_epoch_end(self, trainer, logs):
        self.weights[int(logs["epoch"])] = trainer.bare_model.scale.detach().clone()


def _trainer(script, callbacks=(), drop=0.2):
    torch.manual_seed(0)
    model = ThresholdModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    adv = settings("fgsm-rs", 0.1, check_drop=drop)
    check = (_images([0.9, 0.1]), torch.tensor([0, 1]))
    return Scripted(model, opt, adversarial=adv, check=check, script=script, callbacks=list(callbacks))


def _batches():
    return [(_images([0.8, 0.2, 0.7, 0.3]), torch.tensor([0, 1, 0, 1]))] * 3


def test_robust_accuracy_is_pgd_accuracy_with_a_known_answer():
    # eps 0.3: 0.9 and 0.1 stay on their side of 0.5, 0.7 and 0.3 can be pushed across.
    model = ThresholdModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    check = (_images([0.9, 0.7, 0.1, 0.3]), torch.tensor([0, 0, 1, 1]))
    trainer = AdversarialTrainer(model, opt, adversarial=settings("fgsm-rs", 0.3), check=check)
    assert trainer.robust_accuracy() == 0.5
    trainer = AdversarialTrainer(model, opt, adversarial=settings("fgsm-rs", 0.15), check=check)
    assert trainer.robust_accuracy() == 1.0
    assert model.training  # the check runs in eval mode and gives the mode back


def test_a_collapse_stops_training_and_keeps_the_best_epoch(tmp_path):
    log = WeightLog()
    meta = ModelMeta(model="threshold", model_args={}, dataset="toy", classes=["a", "b"],
                     input_shape=[1, 4, 4])
    trainer = _trainer([0.5, 0.8, 0.55, 0.9, 0.9], callbacks=[log, Checkpointer(tmp_path, meta)])
    trainer.fit(_batches(), epochs=5)
    history = trainer.state.history
    assert len(history) == 3 and trainer.state.epoch == 3
    assert [h["train_pgd_acc"] for h in history] == [0.5, 0.8, 0.55]
    assert history[-1]["kept_epoch"] == 2 and "kept_epoch" not in history[1]
    assert "80.0% (epoch 2) to 55.0% (epoch 3)" in trainer.state.stopped
    assert torch.equal(trainer.bare_model.scale, log.weights[2])
    assert not torch.equal(log.weights[2], log.weights[1])

    # The checkpoint holds epoch 2's weights and says so; a resume does not train on.
    folder = tmp_path / "checkpoints" / "epoch-0003"
    saved_meta = read_meta(folder)
    assert torch.equal(load_file(str(folder / MODEL_FILE))["scale"], log.weights[2])
    assert saved_meta.epoch == 2 and saved_meta.metrics["train_pgd_acc"] == 0.8
    resumed = _trainer([0.9] * 5)
    resumed.load_training_state(read_training_state(folder))
    resumed.fit(_batches(), epochs=5)
    assert resumed.state.epoch == 3 and resumed.state.stopped
    assert resumed.best["epoch"] == 2 and torch.equal(resumed.best["weights"]["scale"], log.weights[2])


def test_a_small_dip_does_not_stop_training():
    trainer = _trainer([0.5, 0.8, 0.65, 0.7])
    trainer.fit(_batches(), epochs=4)
    assert trainer.state.epoch == 4 and not trainer.state.stopped
    assert "kept_epoch" not in trainer.state.history[-1] and trainer.best["epoch"] == 2


def test_the_best_epoch_survives_a_resume_before_the_collapse():
    first = _trainer([0.5, 0.8, 0.3])
    first.fit(_batches(), epochs=2)
    best_scale = first.bare_model.scale.detach().clone()
    state = first.training_state()

    second = _trainer([0.5, 0.8, 0.3])
    second.bare_model.load_state_dict(first.bare_model.state_dict())
    second.load_training_state(state)
    second.fit(_batches(), epochs=3)
    assert second.state.history[-1]["kept_epoch"] == 2
    assert torch.equal(second.bare_model.scale, best_scale)


def test_settings_reject_a_bad_check():
    from kangae.errors import KangaeError

    with pytest.raises(KangaeError, match="adv-check"):
        settings("fgsm-rs", 0.3, check_images=-1)
    with pytest.raises(KangaeError, match="drop"):
        settings("fgsm-rs", 0.3, check_drop=0)
