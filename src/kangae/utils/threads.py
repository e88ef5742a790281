"""How many intra-op threads to give torch: the CPUs that are actually free.

Every intra-op parallel region waits for its slowest thread, so on a 2-core machine with
one core taken by another program, two torch threads run 3x slower than one (measured on
occlusion with fast-cnn). kangae therefore counts the CPUs it may run on
(``os.sched_getaffinity``) and subtracts those that other programs keep busy right now,
sampled from ``/proc/stat`` over a short window (our own CPU time taken out), or from the
load average where ``/proc`` is absent.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from .stop import current_stop, stop_when

SAMPLE_SECONDS = 0.1
PIECE = 32  # images in the smallest piece of work handed to a worker (PGD on fast-cnn:
# pieces of 32 beat pieces of 16 and 8 beside a busy program, docs/benchmarks.md)
T = TypeVar("T")


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count chosen, and why: ``cpus`` usable, ``busy`` of them taken by others.

    ``workers``: how many independent pieces of work may run side by side, each on one
    thread, when other programs hold some CPUs. A piece on a shared core runs slower but
    stalls no other piece (unlike an intra-op thread, which every parallel region waits
    for), so probes whose images are independent (PGD) hand out small pieces to
    ``workers`` Python threads and the free core simply takes more of them."""

    threads: int
    cpus: int
    busy: float
    explicit: bool = False

    @property
    def workers(self) -> int:
        return self.cpus if not self.explicit and self.threads == 1 and self.cpus > 1 else 1

    def describe(self) -> str:
        if self.explicit:
            return f"threads: {self.threads} (--threads), {self.cpus} CPUs usable"
        side = f"; independent pieces of work on {self.workers} threads of 1" if self.workers > 1 else ""
        return (f"threads: {self.threads} of {self.cpus} CPUs "
                f"(other programs keep {self.busy:.1f} busy){side}")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _proc_stat() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, or None without /proc."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [float(v) for v in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0.0)  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = sum(ticks[:8])  # guest time is already counted in user
    return (total - idle) / hz, total / hz


def busy_elsewhere(window: float = SAMPLE_SECONDS) -> float:
    """Cores kept busy by other programs right now, our own CPU time taken out."""
    first = _proc_stat()
    if first is None:
        try:
            return max(0.0, os.getloadavg()[0])
        except (AttributeError, OSError):
            return 0.0
    own0, wall0 = time.process_time(), time.perf_counter()
    time.sleep(window)
    second = _proc_stat()
    own = time.process_time() - own0
    wall = time.perf_counter() - wall0
    if second is None or wall <= 0:
        return 0.0
    busy = (second[0] - first[0]) - own
    return max(0.0, busy / wall)


def choose_threads(requested: int | None = None, *, cpus: int | None = None,
                   busy: float | None = None) -> ThreadChoice:
    """``requested`` if given, else the usable CPUs less those other programs keep busy
    (a core counts as taken when another program uses more than half of it), at least 1."""
    cpus = usable_cpus() if cpus is None else cpus
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be at least 1, got {requested}")
        return ThreadChoice(int(requested), cpus, 0.0, explicit=True)
    busy = busy_elsewhere() if busy is None else busy
    taken = math.floor(busy + 0.5)
    return ThreadChoice(max(1, min(cpus, cpus - taken)), cpus, busy)


_workers = 1  # set by apply_threads: the CLI and the tour choose it, a library call gets 1


def apply_threads(requested: int | None = None) -> ThreadChoice:
    """Choose a thread count (see :func:`choose_threads`), give it to torch, and set how
    many :func:`map_pieces` workers run side by side."""
    global _workers
    choice = choose_threads(requested)
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    _workers = choice.workers
    return choice


def set_workers(count: int) -> int:
    """Set the number of :func:`map_pieces` workers (1: run pieces in turn); returns the old."""
    global _workers
    if count < 1:
        raise ValueError(f"workers must be at least 1, got {count}")
    old, _workers = _workers, int(count)
    return old


def workers() -> int:
    """How many pieces of independent work run side by side (see :class:`ThreadChoice`)."""
    return _workers if torch.get_num_threads() == 1 else 1


def pieces(count: int, chunk: int, device: torch.device | str | None = None,
           smallest: int = PIECE) -> list[slice]:
    """``count`` items in slices of at most ``chunk``; with several :func:`workers` and work
    on the CPU, cut finer (about four pieces per worker, none under ``smallest``) so a free
    core can take more."""
    size = max(1, chunk)
    if workers() > 1 and torch.device(device or "cpu").type == "cpu":
        size = min(size, max(smallest, math.ceil(count / (4 * workers()))))
    return [slice(i, min(i + size, count)) for i in range(0, count, size)]


def map_pieces(fn: Callable[[slice], T], parts: Sequence[slice]) -> list[T]:
    """``[fn(p) for p in parts]``, on :func:`workers` Python threads when there are several
    (torch releases the GIL in its kernels; each thread runs its ops on one intra-op
    thread), in order either way. The first exception raised is raised here."""
    if workers() <= 1 or len(parts) <= 1:
        return [fn(p) for p in parts]
    from concurrent.futures import ThreadPoolExecutor

    event = current_stop()  # a stop asked of this thread's work stops its pieces too

    def piece(part: slice) -> T:
        with stop_when(event):
            return fn(part)

    with ThreadPoolExecutor(min(workers(), len(parts)), thread_name_prefix="kangae-piece") as pool:
        return list(pool.map(piece, parts))
