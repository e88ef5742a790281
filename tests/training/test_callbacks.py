import io
import json

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import kangae
from kangae.training import ProgressBar
from kangae.training.callbacks import read_metrics


def test_tensorboard_gets_scalars_histograms_and_the_graph(blob_data, tmp_path):
    kangae.train("mlp", out=tmp_path / "r", epochs=2, batch_size=32, progress=False)
    acc = EventAccumulator(str(tmp_path / "r"), size_guidance={"histograms": 0}).Reload()
    tags = acc.Tags()
    assert {"accuracy/val_acc", "loss/train_loss", "batch/train_loss"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("accuracy/val_acc")] == [1, 2]
    assert "weights/hidden.weight" in tags["histograms"]
    assert tags["graph"]


def test_progress_is_plain_lines_when_not_a_terminal(blob_data, tmp_path):
    stream = io.StringIO()
    kangae.train("mlp", out=tmp_path / "r", epochs=2, batch_size=32, progress=False,
                 tensorboard=False, callbacks=[ProgressBar(stream)])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2 train_loss=")
    assert "val_acc=" in lines[1] and "\r" not in stream.getvalue()


def test_read_metrics_skips_a_line_cut_short(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"epoch": 1}) + "\n" + '{"epoch": 2, "tra')
    assert read_metrics(path) == [{"epoch": 1}]


def test_kept_epoch_is_the_last_unless_an_early_stop_rolled_back():
    from kangae.training.callbacks import kept_epoch

    assert kept_epoch([]) == 0
    assert kept_epoch([{"epoch": 1}, {"epoch": 2}]) == 2
    assert kept_epoch([{"epoch": 1}, {"epoch": 2}, {"epoch": 3, "kept_epoch": 1}]) == 1
