"""A run folder's life cycle, shared by classifiers and the GAN: start a new one (refusing
to train over an existing run), or reopen one to resume from its newest checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import KangaeError, RunError
from ..models.checkpoint import read_training_state
from ..utils.atomic import remove_stale_temporaries


def start_or_resume(run_dir: Path, resume: bool, *, clean: bool = True
                    ) -> tuple[dict[str, Any] | None, Path | None]:
    """``(saved config, checkpoint)`` of the run to resume, or ``(None, None)`` for a new run.
    Half-written checkpoint files of a stopped run are removed first (``clean``; rank 0)."""
    from .run import find_checkpoint

    if clean:
        remove_stale_temporaries(run_dir / "checkpoints")
    if resume:
        checkpoint = find_checkpoint(run_dir)
        try:
            config = json.loads((run_dir / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise RunError(f"{run_dir / 'config.json'}: cannot resume without the run's "
                           f"config ({e})") from None
        return config, checkpoint
    if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("epoch-*")):
        raise KangaeError(f"{run_dir} already holds a run; pass resume=True to continue it "
                          "or choose another out folder")
    return None, None


def restore(trainer: Any, checkpoint: Path, load_weights: Callable[[Path], None]) -> None:
    """Weights (by ``load_weights``) and training state (optimizer, schedule, RNG, position)."""
    load_weights(checkpoint)
    state = read_training_state(checkpoint)
    if state is None:
        raise RunError(f"{checkpoint}: holds weights but no training state to resume from")
    trainer.load_training_state(state)


def cached_run(folder: Path, train_into: Callable[[Path], object],
               is_current: Callable[[Path], bool] = lambda folder: True) -> Path:
    """A run kept in the cache (a judge, the pointing game's model): ``folder`` when it holds
    a finished run that ``is_current`` accepts, else trained once by ``train_into(path)`` in a
    temporary folder beside it and renamed into place, so a killed process never leaves half
    a run. When another process finished first, its run is used."""
    finished = lambda: (folder / "checkpoints" / "latest.json").is_file()  # noqa: E731
    if finished():
        try:
            if is_current(folder):
                return folder
        except KangaeError:
            pass  # unreadable: train again
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    old = folder.parent / f".{folder.name}.old.tmp"
    try:
        train_into(tmp / "run")
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        try:
            os.replace(tmp / "run", folder)
        except OSError:  # another process finished first: use theirs
            if not finished():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return folder
