import io
import json
import shutil

import numpy as np
import torch
from click.testing import CliRunner

import kangae
from kangae.cli import cli
from kangae.probes.embeddings import embed_epochs


def _three_epochs():
    """Three "epochs" of the same well-separated clusters, slightly perturbed, embedded."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 16, generator=g) * 8
    labels = torch.arange(500) % 5
    feats = [centers[labels] + torch.randn(500, 16, generator=g) for _ in range(3)]
    test_labels = torch.arange(100) % 5
    tests = [centers[test_labels] + torch.randn(100, 16, generator=g) for _ in range(3)]
    return embed_epochs(feats, labels, tests, test_labels, compare_unaligned=True, n_neighbors=10)


def test_aligned_maps_move_less_than_independent_ones_and_see_the_classes():
    res = _three_epochs()
    assert res.train.shape == (3, 500, 2) and res.test.shape == (3, 100, 2)
    last = res.metrics[-1]
    assert last["knn_map"] == 1.0 and last["knn_features"] == 1.0 and last["silhouette"] > 0.5
    assert last["displacement"] < last["displacement_unaligned"]
    assert np.isfinite(res.train).all()


def test_an_embedding_draws_and_saves_the_files_kangae_dynamics_writes(tmp_path):
    from PIL import Image
    from safetensors.torch import load_file

    res = _three_epochs()
    assert Image.open(io.BytesIO(res._repr_png_())).width > 200
    res.save(tmp_path, classes=list("abcde"), extra={"layer": "hidden"})
    names = sorted(f.name for f in tmp_path.iterdir())
    assert {"dynamics.json", "dynamics.png", "embedding.gif", "tensors.safetensors"} <= set(names)
    meta = json.loads((tmp_path / "dynamics.json").read_text())
    assert meta["layer"] == "hidden" and meta["epochs"] == [0, 1, 2] and len(meta["frames"]) == 3
    assert Image.open(tmp_path / "embedding.gif").n_frames == 3
    saved = load_file(str(tmp_path / "tensors.safetensors"))
    assert np.array_equal(saved["train"].numpy(), res.train)
    assert saved["test_labels"].tolist() == res.test_labels.tolist()


def test_dynamics_cli_writes_gif_metrics_and_json(blob_data, tmp_path):
    kangae.train("mlp", out=tmp_path / "r", epochs=2, batch_size=32, progress=False,
                 tensorboard=False, model_args={"hidden": 16})
    res = CliRunner().invoke(cli, ["dynamics", str(tmp_path / "r"), "--out", str(tmp_path / "d"),
                                   "--neighbors", "10"])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "d" / "dynamics.json").read_text())
    assert out["epochs"] == [0, 1, 2] and out["layer"] == "hidden"
    assert [f["epoch"] for f in out["frames"]] == [0, 1, 2]
    assert out["frames"][-1]["knn_map"] > 0.9  # the blobs separate after training
    from PIL import Image

    assert Image.open(tmp_path / "d" / "embedding.gif").n_frames == 3
    assert (tmp_path / "d" / "embedding.mp4").exists() == bool(shutil.which("ffmpeg"))
    bad = CliRunner().invoke(cli, ["dynamics", str(tmp_path / "r"), "--layer", "logits"])
    assert bad.exit_code == 2 and "recorded layer 'hidden'" in bad.output


def test_runs_without_snapshots_say_so(blob_data, tmp_path):
    kangae.train("mlp", out=tmp_path / "r", epochs=1, progress=False, tensorboard=False,
                 snapshots=False)
    res = CliRunner().invoke(cli, ["dynamics", str(tmp_path / "r")])
    assert res.exit_code == 2 and "no snapshots" in res.output
