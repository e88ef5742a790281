"""Training through kangae's Trainer on the synthetic blobs (class k: a bright square at the
k-th of ten places), judged by a small classifier trained on them and cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kangae.errors import KangaeError, RunError
from kangae.gan import Judge, judge_classifier, load_gan, sample, train_gan
from kangae.gan.judge import _cache_dir

FAST = dict(arch="small", batch_size=32, lr=1e-3, judge_n=100, progress=False, tensorboard=False,
            echo=False)


@pytest.fixture(scope="module")
def gan_runs(tmp_path_factory: pytest.TempPathFactory, blob_root: Path) -> dict[str, Path]:
    """One unconditional and one conditional run, trained once for every test of this module."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("gan")
    mp.setenv("KANGAE_DATA", str(blob_root))
    mp.setenv("KANGAE_CACHE", str(tmp / "cache"))
    mp.setenv("KANGAE_OFFLINE", "1")
    try:
        torch.manual_seed(0)
        train_gan(out=tmp / "plain", epochs=4, **{**FAST, "lr": 5e-4})  # 1e-3 collapses after 2
        train_gan(out=tmp / "cond", epochs=COND_EPOCHS, conditional=True, **FAST)
    finally:
        mp.undo()
    return {"plain": tmp / "plain", "cond": tmp / "cond", "cache": tmp / "cache"}


COND_EPOCHS = 10


def test_short_training_lowers_the_frechet_distance(gan_runs: dict[str, Path]) -> None:
    run = load_gan(gan_runs["plain"])
    fd = [e["fd"] for e in run.judgements]
    assert [e["epoch"] for e in run.judgements] == [0, 1, 2, 3, 4]
    assert min(fd[1:]) < 0.8 * fd[0], fd  # untrained vs after up to 4 short epochs (80 steps)
    assert all(e["fd_floor"] < min(fd) for e in run.judgements)  # real data beats the samples
    assert len(run.history) == 4 and run.history[-1]["fd"] == pytest.approx(fd[-1])
    assert {"d_loss", "d_acc", "g_loss", "d_real", "d_fake", "images_per_s", "confidence",
            "entropy_bits"} <= set(run.history[-1])


def test_conditional_samples_are_read_as_their_class(gan_runs: dict[str, Path]) -> None:
    run = load_gan(gan_runs["cond"])
    last = run.judgements[-1]
    assert last["class_match"] > 0.5, [e["class_match"] for e in run.judgements]  # chance: 0.1
    assert run.judgements[0]["class_match"] <= 0.15


def test_run_folder_holds_safetensors_gifs_and_judge_json(gan_runs: dict[str, Path]) -> None:
    folder = gan_runs["plain"]
    doc = json.loads((folder / "judge.json").read_text())
    assert doc["layer"] == "hidden" and doc["n"] == 100 and len(doc["epochs"]) == 5
    hist = doc["epochs"][-1]["histogram"]
    assert len(hist) == 10 and sum(hist) == pytest.approx(1.0)
    frames = load_file(str(folder / "samples" / "frames.safetensors"))
    assert sorted(frames) == [f"epoch-{e:04d}" for e in range(5)]
    assert frames["epoch-0004"].shape == (64, 1, 28, 28) and frames["epoch-0004"].dtype == torch.uint8
    for name in ("progress.gif", "interpolation.gif", "epoch-0004.png"):
        assert (folder / "samples" / name).stat().st_size > 0
    from PIL import Image

    with Image.open(folder / "samples" / "progress.gif") as gif:
        assert gif.n_frames == 5
    assert (folder / "judge.png").is_file()
    assert not list(folder.glob("checkpoints/*/*.pt"))  # safetensors only
    assert (folder / "checkpoints" / "epoch-0004" / "model.safetensors").is_file()


def test_resume_continues_and_matches_recorded_samples(
        gan_runs: dict[str, Path], blob_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANGAE_CACHE", str(gan_runs["cache"]))  # the judge trained by the fixture
    out = tmp_path / "r"
    quick = {**FAST, "arch": "tiny", "batch_size": 128, "judge_n": 20}  # mechanics only
    train_gan(out=out, epochs=1, **quick)
    with pytest.raises(KangaeError, match="already holds a run"):
        train_gan(out=out, epochs=2, **quick)
    with pytest.raises(KangaeError, match="configured otherwise"):
        train_gan(out=out, epochs=2, resume=True, **{**quick, "lr": 0.5})
    run = train_gan(out=out, epochs=2, resume=True, **quick)
    assert [h["epoch"] for h in run.history] == [1, 2]
    assert [e["epoch"] for e in load_gan(out).judgements] == [0, 1, 2]
    frames = load_file(str(out / "samples" / "frames.safetensors"))
    loaded = load_gan(out)
    z = torch.randn(64, 100, generator=torch.Generator().manual_seed(1))  # SampleFrames' fixed noise
    from kangae.gan.trainer import generate

    again = (generate(loaded.gan, z) * 255).round().to(torch.uint8)
    assert torch.equal(again, frames["epoch-0002"])


def test_sample_api(gan_runs: dict[str, Path]) -> None:
    plain, cond = load_gan(gan_runs["plain"]), load_gan(gan_runs["cond"])
    a = sample(plain, 8, seed=3)
    assert a.shape == (8, 1, 28, 28) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, plain.sample(8, seed=3))
    sevens = sample(cond, 6, labels=7)
    assert sevens.shape == (6, 1, 28, 28)
    with pytest.raises(KangaeError, match="not conditional"):
        sample(plain, 4, labels=7)
    with pytest.raises(KangaeError, match="0..9"):
        sample(cond, 2, labels=[3, 12])


def test_judge_classifier_is_cached_and_reused(gan_runs: dict[str, Path], blob_data: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANGAE_CACHE", str(gan_runs["cache"]))
    folder = _cache_dir("mnist")
    stamp = (folder / "config.json").stat().st_mtime_ns
    model, path = judge_classifier("mnist", progress=False)
    assert path == folder and (folder / "config.json").stat().st_mtime_ns == stamp
    assert not list(folder.parent.glob(".*.tmp"))


def test_judge_scores_real_images_near_the_floor(gan_runs: dict[str, Path], blob_data: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from kangae.data import load_dataset

    monkeypatch.setenv("KANGAE_CACHE", str(gan_runs["cache"]))
    model, _ = judge_classifier("mnist", progress=False)
    test = load_dataset("mnist", "test")
    judge = Judge(model, test, n=100, seed=0)
    half_b = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[100:200]
    real = judge(test.floats()[half_b], test.labels[half_b])
    assert real.fd == pytest.approx(judge.floor)  # the same half B
    assert real.metrics["class_match"] > 0.9  # a trained classifier reads real blobs
    grey = judge(torch.full((100, 1, 28, 28), 0.5))
    assert grey.fd > 10 * judge.floor
    assert grey.metrics["entropy_bits"] == pytest.approx(0.0)  # all one class: collapse shows


def test_bad_classifier_path_is_an_error(blob_data: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no such run folder"):
        train_gan(out=tmp_path / "x", epochs=1, classifier=tmp_path / "missing", **FAST)


def test_cli_prints_the_distance_every_epoch(gan_runs: dict[str, Path], blob_data: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from kangae.cli import cli

    monkeypatch.setenv("KANGAE_CACHE", str(gan_runs["cache"]))
    out = tmp_path / "cli"
    res = CliRunner().invoke(cli, ["gan", "--dataset", "mnist", "--epochs", "1", "--arch", "tiny",
                                   "--judge-n", "20", "--batch-size", "128", "--no-progress",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "epoch 0: Fréchet distance" in res.output and "epoch 1: Fréchet distance" in res.output
    assert "real-data floor" in res.output and (out / "samples" / "progress.gif").is_file()
    bad = CliRunner().invoke(cli, ["gan", "--epochs", "1", "--classifier", str(tmp_path / "nope"),
                                   "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "error:" in bad.output and "nope" in bad.output
    assert "Traceback" not in bad.output


def test_generator_learns_mnist(real_mnist: Path, tmp_path: Path) -> None:
    """Two short epochs on real MNIST (468 steps of arch small) must bring the samples well
    towards the data: the distance falls below 0.6x its untrained value and the samples are
    read as many classes. Before the initialization fix it stayed at 0.98x."""
    from kangae import train

    train("mlp", "mnist", out=tmp_path / "judge", epochs=1, limit=6000, progress=False)
    torch.manual_seed(0)
    run = train_gan("mnist", out=tmp_path / "gan", epochs=2, arch="small", limit=30000, judge_n=500,
                    classifier=tmp_path / "judge", progress=False, tensorboard=False, echo=False)
    first, last = run.judgements[0], run.judgements[-1]
    assert last["fd"] < 0.6 * first["fd"], [e["fd"] for e in run.judgements]
    assert last["entropy_bits"] > 2.0
    assert run.config["init"] == "pytorch"
