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
from dataclasses import dataclass

import torch

SAMPLE_SECONDS = 0.1


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count chosen, and why: ``cpus`` usable, ``busy`` of them taken by others."""

    threads: int
    cpus: int
    busy: float
    explicit: bool = False

    def describe(self) -> str:
        if self.explicit:
            return f"threads: {self.threads} (--threads), {self.cpus} CPUs usable"
        return (f"threads: {self.threads} of {self.cpus} CPUs "
                f"(other programs keep {self.busy:.1f} busy)")


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


def apply_threads(requested: int | None = None) -> ThreadChoice:
    """Choose a thread count (see :func:`choose_threads`) and give it to torch."""
    choice = choose_threads(requested)
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    return choice
