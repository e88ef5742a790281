import os
import signal

import pytest
import torch
import torch.nn.functional as F

from kangae.data import BatchLoader, load_dataset
from kangae.models import create_model
from kangae.training import Callback, Trainer, TrainingInterrupted, evaluate


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_fit_start(self, t):
        self.events.append("fit_start")

    def on_epoch_start(self, t):
        self.events.append(f"epoch_start{t.state.epoch}")

    def on_epoch_end(self, t, logs):
        self.events.append(f"epoch_end{logs['epoch']}")

    def on_fit_end(self, t):
        self.events.append("fit_end")


def _setup(seed=0, model="mlp"):
    torch.manual_seed(seed)
    net = create_model(model)
    return net, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)


def test_trainer_equals_a_hand_written_loop(blob_data):
    data = load_dataset("mnist")
    net, opt = _setup()
    Trainer(net, opt).fit(BatchLoader(data, 64, shuffle=True, seed=0), epochs=2)

    ref, ref_opt = _setup()
    loader = BatchLoader(data, 64, shuffle=True, seed=0)
    for epoch in range(2):
        loader.set_epoch(epoch)
        ref.train()
        for x, y in loader:
            loss = F.cross_entropy(ref(x), y)
            ref_opt.zero_grad()
            loss.backward()
            ref_opt.step()
    for a, b in zip(net.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)


def test_learns_and_reports_per_epoch(blob_data):
    data, test = load_dataset("mnist"), load_dataset("mnist", "test")
    net, opt = _setup()
    rec = Recorder()
    hist = Trainer(net, opt, callbacks=[rec]).fit(
        BatchLoader(data, 64, shuffle=True), BatchLoader(test, 100), epochs=3)
    assert rec.events == ["fit_start", "epoch_start0", "epoch_end1", "epoch_start1", "epoch_end2",
                          "epoch_start2", "epoch_end3", "fit_end"]
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["val_acc"] > 0.95  # blobs are separable by construction


def test_evaluate_known_answer():
    class Fixed(torch.nn.Module):
        def forward(self, x):  # predicts class = first pixel value * 10, as one-hot logits
            return F.one_hot((x[:, 0, 0, 0] * 10).long(), 3).float() * 5

    x = torch.tensor([0.0, 0.1, 0.2, 0.1]).view(4, 1, 1, 1)
    y = torch.tensor([0, 1, 1, 2])
    res = evaluate(Fixed(), [(x, y)], num_classes=3)
    assert res["accuracy"] == 0.5 and res["n"] == 4
    assert res["per_class_accuracy"] == [1.0, 0.5, 0.0]


def test_evaluate_restores_training_mode():
    net = create_model("cnn").train()
    evaluate(net, [(torch.rand(2, 1, 28, 28), torch.tensor([0, 1]))])
    assert net.training


def test_sigint_stops_after_the_batch_and_reports_state(blob_data):
    data = load_dataset("mnist")
    net, opt = _setup()

    class InterruptAt(Callback):
        def on_batch_end(self, t, loss, n):
            if t.state.epoch == 1 and t.state.batch == 3:
                os.kill(os.getpid(), signal.SIGINT)

    saved = []

    class Saver(Callback):
        def on_interrupt(self, t):
            saved.append((t.state.epoch, t.state.batch, t.state.running[2]))

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when run in the background
    with pytest.raises(TrainingInterrupted):
        Trainer(net, opt, callbacks=[InterruptAt(), Saver()]).fit(BatchLoader(data, 64), epochs=3)
    assert saved == [(1, 3, 3 * 64)]
    assert signal.getsignal(signal.SIGINT) is before


def test_callbacks_hear_of_errors_and_the_sigint_handler_is_restored(blob_data):
    data = load_dataset("mnist")
    net, opt = _setup()
    heard = []

    class Boom(Callback):
        def on_batch_end(self, t, loss, n):
            raise RuntimeError("boom")

        def on_error(self, t, error):
            heard.append(str(error))

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(RuntimeError, match="boom"):
        Trainer(net, opt, callbacks=[Boom()]).fit(BatchLoader(data, 64), epochs=1)
    assert heard == ["boom"]
    assert signal.getsignal(signal.SIGINT) is before
