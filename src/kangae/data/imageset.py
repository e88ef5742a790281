"""The one container every dataset loads into: uint8 images, int64 labels, class names."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ImageSet:
    """Images as uint8 ``(N, C, H, W)`` (C is 1 for the MNIST family, 3 for RGB sets) and
    labels as int64 ``(N,)``.

    Images stay uint8 (MNIST train is 47 MB) so that loading is fast and one copy serves
    every probe; treat the tensors as read-only, since loads are cached and shared.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str
    split: str
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def labelled(self) -> bool:
        """Every item has a class (a flat ``--images`` folder gives -1: unlabelled)."""
        return not bool((self.labels < 0).any())

    @property
    def known_labels(self) -> torch.Tensor | None:
        """``labels``, or None for unlabelled items: callers then use the model's readings."""
        return self.labels if self.labelled else None

    def floats(self) -> torch.Tensor:
        """All images as float32 in [0, 1]."""
        return self.images.float().div_(255)

    def subset(self, n: int | None, seed: int = 0, stratified: bool = True) -> ImageSet:
        """A reproducible subsample of ``n`` items (balanced over classes when stratified)."""
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        if not stratified or not self.labelled:  # unlabelled pictures: plain sample
            idx = torch.randperm(len(self), generator=g)[:n]
        else:
            perm = torch.randperm(len(self), generator=g)
            by_class = [perm[self.labels[perm] == c] for c in range(self.num_classes)]
            per = [len(b) for b in by_class]
            quota = [n * p // len(self) for p in per]
            for c in sorted(range(len(per)), key=lambda c: -per[c])[: n - sum(quota)]:
                quota[c] += 1
            idx = torch.cat([b[:q] for b, q in zip(by_class, quota)])
            idx = idx[torch.randperm(len(idx), generator=g)]
        return ImageSet(self.images[idx], self.labels[idx], self.classes, self.name,
                        self.split, f"{self.source} (subset of {n})")

    def stats(self) -> tuple[float, float]:
        """Mean and standard deviation of pixel values in [0, 1]."""
        n, total, squares = self.images.numel(), 0.0, 0.0
        for chunk in self.images.split(8192):  # no full float64 copy (EMNIST is large)
            c = chunk.to(torch.float64)
            total += float(c.sum())
            squares += float((c * c).sum())
        mean = total / n
        var = max(squares - n * mean * mean, 0.0) / max(n - 1, 1)
        return mean / 255, var**0.5 / 255
