"""The result type every prototype method returns; rendering lives in ``kangae.render``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class PrototypeResult:
    """What a model "thinks" each target looks like.

    ``images`` are ``(T, C, H, W)`` in [0, 1] (signed for weight templates), one per ``target``
    (or ``per_target`` of them, target-major); ``frames`` are ``(F, T, C, H, W)`` snapshots of
    the search or optimization, for a GIF; ``metrics`` holds numbers about the run, and
    :func:`kangae.probes.verify.verify_prototypes` adds the verification numbers.
    """

    images: torch.Tensor
    target: torch.Tensor
    scores: torch.Tensor
    method: str
    frames: torch.Tensor | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    signed: bool = False

    @property
    def targets(self) -> torch.Tensor:
        """The former name of ``target``."""
        return self.target
