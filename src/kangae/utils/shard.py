"""Share a command's images among ``torchrun`` processes (gloo on a CPU, NCCL on GPUs).

The images are cut into fixed blocks of ``size`` images, whatever the number of processes,
and block ``b`` draws its randomness from :func:`block_seed` ``(seed, b)``: a block's numbers
are then the same in whichever process computes it, and a single process, which computes
every block in turn, gets the same merged numbers as any number of processes. Process ``r``
of ``w`` takes blocks ``r, r + w, ...``; :func:`gather` hands every process all blocks'
results, in block order. Without ``torchrun`` (or with one process) nothing is started.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, the number of processes): (0, 1) without a process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes the outputs (rank 0, or the only process)."""
    return rank_and_world()[0] == 0


def start(device: str | torch.device = "auto") -> torch.device:
    """The device this process runs on, after joining the process group when ``torchrun``
    started several (as training does: gloo on a CPU, NCCL and ``cuda:LOCAL_RANK`` on GPUs)."""
    from ..training.run import _dist_env, _setup_distributed
    from .device import pick_device

    _, world, local_rank = _dist_env()
    return _setup_distributed(pick_device(device), world, local_rank)


def blocks(n: int, size: int) -> list[slice]:
    """``n`` images as consecutive blocks of ``size`` (the last may be shorter; no images
    make one empty block, so that a command on none still runs once)."""
    if size < 1:
        raise ValueError(f"block size must be at least 1, got {size}")
    return [slice(i, min(i + size, n)) for i in range(0, n, size)] or [slice(0, 0)]


def block_seed(seed: int, index: int) -> int:
    """The seed of block ``index``: ``seed`` itself for the first block, so a command on one
    block's worth of images draws what it drew before blocks existed."""
    return seed + 104_729 * index


def mine(items: Sequence[T]) -> list[tuple[int, T]]:
    """The (index, item) pairs this process computes: every ``world``-th, from its rank."""
    rank, world = rank_and_world()
    return [(i, item) for i, item in enumerate(items) if i % world == rank]


def gather(local: dict[int, Any], count: int) -> list[Any]:
    """All processes' ``{index: result}`` merged into one list of ``count`` results in index
    order, on every process (``all_gather_object``: results are small CPU objects)."""
    _, world = rank_and_world()
    merged = dict(local)
    if world > 1:
        parts: list[dict[int, Any] | None] = [None] * world
        torch.distributed.all_gather_object(parts, local)
        merged = {k: v for part in parts if part for k, v in part.items()}
    missing = [i for i in range(count) if i not in merged]
    if missing:
        raise RuntimeError(f"results of blocks {missing} are missing after the gather")
    return [merged[i] for i in range(count)]


def run_tasks(tasks: Sequence[Callable[[], T]]) -> list[T]:
    """This process's share of ``tasks`` (see :func:`mine`) run, and every task's result,
    in order, on every process."""
    return gather({i: task() for i, task in mine(tasks)}, len(tasks))


def run_blocks(fn: Callable[[slice, int], T], n: int, size: int, seed: int = 0) -> list[T]:
    """``fn(block, block_seed(seed, b))`` for the blocks of ``n`` images, shared out as
    :func:`run_tasks` does: every block's result, in order, on every process."""
    return run_tasks([lambda part=part, b=b: fn(part, block_seed(seed, b))
                      for b, part in enumerate(blocks(n, size))])


def same_everywhere(value: T) -> T:
    """Rank 0's ``value`` on every process (one broadcast; the value itself without one)."""
    if rank_and_world()[1] == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def main_first(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0 first and then, after a barrier, on the others (for a step that
    fills a shared cache, such as training a model once)."""
    rank, world = rank_and_world()
    if world == 1:
        return fn()
    out = fn() if rank == 0 else None
    torch.distributed.barrier()
    return out if rank == 0 else fn()


def weighted_mean(values: Sequence[float], counts: Sequence[int]) -> float:
    """The mean over all images of per-block means (NaN for no images)."""
    total = sum(counts)
    return sum(v * c for v, c in zip(values, counts)) / total if total else math.nan
