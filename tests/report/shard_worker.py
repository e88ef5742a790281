"""Run by test_shard.py, under torchrun or alone: explain-bench and fool on a small run, in
blocks of 4 images, each command writing to OUT/<command>."""

import sys

import torch

from kangae.cli import cli
from kangae.report import attacks, explain

# one intra-op thread in every process: kangae would otherwise pick 2 for the lone process and
# 1 for each of the two ranks (each sees the other busy), and matrix products rounded on a
# different number of threads differ in the last bits
torch.set_num_threads(1)
run, out = sys.argv[1], sys.argv[2]
explain.BENCH_BLOCK = attacks.FOOL_BLOCK = 4  # several blocks from a few images
commands = {
    "bench": ["explain-bench", run, "--methods", "saliency,random", "--n", "10", "--sanity", "6",
              "--robust", "3", "--pointing", "0"],
    "pgd": ["fool", run, "--attack", "pgd", "--n", "10", "--eps", "0,0.3", "--steps", "4"],
    "edit": ["fool", run, "--attack", "edit", "--target", "3", "--n", "6", "--max-edits", "5"],
    "template": ["fool", run, "--attack", "template", "--n", "10"],
}
for name, args in commands.items():
    cli.main([*args, "--device", "cpu", "--threads", "1", "--out", f"{out}/{name}"], standalone_mode=False)
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
