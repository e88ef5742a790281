import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kangae.utils.shard import block_seed, blocks, weighted_mean

WORKER = Path(__file__).with_name("shard_worker.py")
TIMINGS = {"seconds", "images_per_second", "processes"}


def _numbers(value):
    """A result without its timings and process count: what must not depend on sharding."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def _run(args, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_blocks_cover_the_images_once_with_their_own_seeds():
    assert blocks(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert blocks(0, 4) == [slice(0, 0)]
    assert block_seed(7, 0) == 7 and len({block_seed(7, b) for b in range(100)}) == 100
    assert weighted_mean([0.5, 1.0], [2, 1]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="block size"):
        blocks(3, 0)


def test_two_gloo_processes_write_what_one_process_writes(mlp_run, tmp_path):
    """explain-bench and fool under torchrun with 2 processes, each taking its blocks of the
    images: rank 0 writes the same numbers as one process computing every block."""
    _run([str(WORKER), str(mlp_run), str(tmp_path / "one")], tmp_path)
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
          str(mlp_run), str(tmp_path / "two")], tmp_path)
    for name, file in (("bench", "bench.json"), ("pgd", "fool.json"), ("edit", "fool.json"),
                       ("template", "fool.json")):
        one = json.loads((tmp_path / "one" / name / file).read_text())
        two = json.loads((tmp_path / "two" / name / file).read_text())
        assert one["processes"] == 1 and two["processes"] == 2 and one["block"] == 4
        assert _numbers(one) == _numbers(two), name
    bench = json.loads((tmp_path / "two" / "bench" / "bench.json").read_text())
    assert bench["methods"]["saliency"]["n"]["deletion"] == 10  # all three blocks merged
    assert bench["methods"]["saliency"]["sanity_images"] == 6
    pgd = json.loads((tmp_path / "two" / "pgd" / "fool.json").read_text())
    assert len(pgd["per_image"]["label"]) == 10 and (tmp_path / "two" / "pgd" / "curve.png").is_file()
