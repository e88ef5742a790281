"""Training-dynamics overhead: epoch time with and without hidden-layer snapshots.

Prints, in one run on this machine (goal from issue 6 in brackets): the time per epoch
of a two-epoch fit of the post 003 `cnn` and of `fast-cnn`, without snapshots and with them
(5,000 train + 1,000 test images of `hidden`, float16, every epoch), and the overhead
[<= 10% of epoch time].

Then the time of one UMAP frame of 6,000 x 512 features (the cnn's `hidden` on 5,000
train and 1,000 test images after training): cold (numba compiling) and warm [<= 10 s].

Usage: KANGAE_DATA=../shared/datasets python benchmarks/dynamics_speed.py
"""

from __future__ import annotations

import tempfile
import time

import torch

import kangae
from kangae.data import BatchLoader, load_dataset
from kangae.models import create_model
from kangae.training import Trainer
from kangae.training.snapshots import Snapshots

EPOCHS = 2


def epoch_time(model_name: str, snapshots: bool, tmp: str, keep: list | None = None) -> float:
    """Seconds per epoch of a short fit (with snapshots: epoch 0 and each epoch included)."""
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    torch.manual_seed(0)
    model = create_model(model_name)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    run_dir = f"{tmp}/{model_name}-{time.time_ns()}"
    callbacks = [Snapshots(run_dir, train, test, tensorboard=False)] if snapshots else []
    if keep is not None and snapshots:
        keep.append(run_dir)
    t0 = time.perf_counter()
    Trainer(model, opt, callbacks=callbacks).fit(BatchLoader(train, 128, shuffle=True), epochs=EPOCHS)
    return (time.perf_counter() - t0) / EPOCHS


def main() -> None:
    print(f"# kangae {kangae.__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp:
        runs: list[str] = []
        for name in ("fast-cnn", "cnn"):
            plain, snap = [], []
            for _ in range(2):  # interleaved, best of two, to tame a noisy machine
                plain.append(epoch_time(name, False, tmp))
                snap.append(epoch_time(name, True, tmp, runs))
            plain, snap = min(plain), min(snap)
            print(f"{name:9s} epoch without snapshots {plain:6.2f} s   with {snap:6.2f} s   "
                  f"overhead {snap / plain - 1:6.1%} (goal <= 10%)")
        umap_frames(runs[-1])


def umap_frames(run_dir: str) -> None:
    from kangae.probes.embeddings import embed_epochs
    from kangae.training.snapshots import read_snapshot, read_subset, snapshot_epochs

    subset, _ = read_subset(run_dir)
    last = read_snapshot(run_dir, snapshot_epochs(run_dir)[-1])
    feats = torch.cat([last["train"], last["test"]])
    labels = torch.cat([subset["train_labels"], subset["test_labels"]])
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        embed_epochs([feats], labels)
        times.append(time.perf_counter() - t0)
    print(f"UMAP frame {feats.shape[0]:,} x {feats.shape[1]}: cold {times[0]:6.1f} s (numba "
          f"compiling)   warm {times[1]:6.1f} s (goal <= 10 s)")


if __name__ == "__main__":
    main()
