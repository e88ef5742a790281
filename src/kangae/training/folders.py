"""A run folder's life cycle, shared by classifiers and the GAN: start a new one (refusing
to train over an existing run), or reopen one to resume from its newest checkpoint."""

from __future__ import annotations

import json
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
