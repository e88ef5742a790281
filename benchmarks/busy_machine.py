"""Heavy probes on a quiet machine and beside one busy program (issue 18, part 4).

Every intra-op parallel region waits for its slowest thread: with one core taken by another
program, two torch threads stall each other. kangae picks its thread count from the CPUs
other programs leave free (``kangae.utils.threads``). This prints, in one run, for each probe:
quiet (threads chosen), busy with the old fixed count (all CPUs), busy with the count kangae
chooses, and the slowdown of each against quiet. Goal: kangae's busy slowdown <= 1.5x.

On the busy machine kangae also hands the images of PGD, both kinds of mask, occlusion, IG and
SmoothGrad out in pieces to one Python thread per CPU,
each on one intra-op thread (``ThreadChoice.workers``): a piece on the shared core runs slower
but stalls no other piece, and the free core takes more of them.

The floor: beside one spinning program, a fair scheduler gives each runnable thread the same
share of the CPUs, so kangae's W workers get at most W x CPUs / (W + 1) of them (4/3 of 2
CPUs). The CPU time the pieced run took, spread over that share, is the fastest that work
could run; "floor" is that against quiet, and "used" is how much of the share it got.

Beside the quiet time it prints the same probe on one thread: a probe that kangae runs on one
thread beside the busy program cannot beat that, so "1 thread / quiet" (the speed-up the second
thread gave) is a floor for its busy slowdown.

Usage: KANGAE_DATA=../shared/datasets python benchmarks/busy_machine.py [--run RUN_DIR] [--n 64]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch

import kangae
from kangae.probes import explain, pgd
from kangae.utils.threads import choose_threads, set_workers, usable_cpus

PIECED = ("occlusion", "extremal", "mask", "ig", "smoothgrad", "pgd-40")  # pieces when busy
SPIN = "import time\nend = time.time() + 3600\nwhile time.time() < end: pass\n"


def _model(run_dir: str | None) -> tuple[torch.nn.Module, str]:
    if run_dir:
        return kangae.load(run_dir).model, run_dir
    out = tempfile.mkdtemp(prefix="kangae-busy-")
    run = kangae.train("fast-cnn", out=out, epochs=1, limit=6000, tensorboard=False, snapshots=False,
                       progress=False)
    return run.model, f"fast-cnn, 1 epoch on 6000 images ({out})"


def _time(fn: Callable[[], object], threads: int, repeats: int, workers: int = 1) -> float:
    """Best of ``repeats`` after a warm-up, on ``threads`` intra-op threads and ``workers``
    side-by-side pieces (kangae.utils.threads; the PIECED probes cut their work into pieces)."""
    return _time_cpu(fn, threads, repeats, workers)[0]


def _time_cpu(fn: Callable[[], object], threads: int, repeats: int,
              workers: int = 1) -> tuple[float, float]:
    """(wall, CPU) seconds of the best of ``repeats`` runs (see :func:`_time`); CPU counts
    every thread of this process."""
    before, old_workers = torch.get_num_threads(), set_workers(workers)
    torch.set_num_threads(threads)
    try:
        fn()  # warm-up
        best = (float("inf"), 0.0)
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            best = min(best, (wall, cpu))
        return best
    finally:
        torch.set_num_threads(before)
        set_workers(old_workers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", help="a kangae run (default: train a small fast-cnn)")
    ap.add_argument("--n", type=int, default=64, help="test digits per probe")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--mask-steps", type=int, default=100)
    ap.add_argument("--probes", help="comma-separated subset of the probes (default: all)")
    args = ap.parse_args()
    model, source = _model(args.run)
    data = kangae.load_dataset("mnist", "test")
    x, y = data.floats()[: args.n], data.labels[: args.n].long()
    probes: dict[str, Callable[[], object]] = {
        "occlusion": lambda: explain(model, x, y, method="occlusion"),
        "extremal": lambda: explain(model, x, y, method="extremal", steps=args.mask_steps),
        "mask": lambda: explain(model, x, y, method="mask", steps=args.mask_steps),
        "ig": lambda: explain(model, x, y, method="ig"),
        "smoothgrad": lambda: explain(model, x, y, method="smoothgrad"),
        "pgd-40": lambda: pgd(model, x, y, 0.3, steps=40),
    }
    if args.probes:
        wanted = args.probes.split(",")
        unknown = [p for p in wanted if p not in probes]
        if unknown:
            ap.error(f"unknown probe(s) {', '.join(unknown)}; choose from {', '.join(probes)}")
        probes = {name: probes[name] for name in wanted}
    cpus = usable_cpus()
    quiet_choice = choose_threads()
    print(f"# kangae {kangae.__version__}, torch {torch.__version__}, {cpus} CPUs, model: {source}, "
          f"{args.n} test digits, best of {args.repeats}, {time.strftime('%Y-%m-%d')}")
    print(f"# quiet: {quiet_choice.describe()}")
    quiet_cpu = {name: _time_cpu(fn, quiet_choice.threads, args.repeats) for name, fn in probes.items()}
    quiet = {name: wall for name, (wall, _) in quiet_cpu.items()}
    # one thread on the quiet machine: the best a single free core can do, so quiet / this is
    # the speed-up of the extra threads, a floor for the busy slowdown of a probe run on one
    single = ({name: _time(fn, 1, args.repeats) for name, fn in probes.items()}
              if quiet_choice.threads > 1 else quiet)
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(1.0)
        busy_choice = choose_threads()
        print(f"# busy (one single-threaded program spinning): {busy_choice.describe()}")
        for name, fn in probes.items():
            fixed = _time(fn, cpus, args.repeats)
            chosen, cpu = _time_cpu(fn, busy_choice.threads, args.repeats, busy_choice.workers)
            ratio = chosen / quiet[name]
            # the same thread count without the side-by-side pieces, for the probes that use them
            plain = ""
            if busy_choice.workers > 1 and name in PIECED:
                alone = _time(fn, busy_choice.threads, args.repeats, 1)
                # a fair scheduler gives our workers and the spinner equal shares of the CPUs:
                # the CPU time this run took, spread over that share, is the best it could do
                share = busy_choice.workers * min(1.0, cpus / (busy_choice.workers + 1))
                plain = (f" (without pieces {alone:5.2f} s, {alone / quiet[name]:4.2f}x; CPU time "
                         f"{cpu:5.2f} s against {quiet_cpu[name][1]:5.2f} s quiet; pieces used "
                         f"{cpu / chosen:4.2f} of the {share:4.2f} CPUs a fair share gives, floor "
                         f"{cpu / share / quiet[name]:4.2f}x)")
            print(f"{name:<11} quiet {quiet[name]:7.2f} s ({quiet_choice.threads} threads; 1 thread "
                  f"{single[name]:6.2f} s, {single[name] / quiet[name]:4.2f}x)   "
                  f"busy, {cpus} threads {fixed:7.2f} s ({fixed / quiet[name]:4.1f}x)   "
                  f"busy, kangae's {busy_choice.threads} {chosen:7.2f} s ({ratio:4.2f}x){plain}   "
                  f"goal <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'}")
    finally:
        spinner.kill()
        spinner.wait()


if __name__ == "__main__":
    main()
